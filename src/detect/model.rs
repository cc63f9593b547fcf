//! YOLOv8 (n/s/m/l/x) on candle, reading weights in candle's `yolo-v8` naming
//! (`net.b1.0.conv.weight`, `fpn.n1.cv1.bn.running_var`, `head.cv3.2.2.bias`,
//! `head.dfl.conv.weight`).
//!
//! Backbone (`net`), neck (`fpn`) and decoupled head (`head`) follow the
//! Ultralytics architecture. Batch norms are folded into their convolutions
//! at load time, so each conv block is one convolution plus SiLU.
//! The output is `[batch, 4 + classes, anchors]`: box centre, width and height
//! in input pixels, then per-class sigmoid scores.

use candle_core::{DType, Module, Result, Tensor};
use candle_nn::{BatchNorm, Conv2d, Conv2dConfig, VarBuilder, batch_norm, conv2d, conv2d_no_bias};

/// Width, depth and channel-ratio multiples of a YOLOv8 size.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Multiples {
    pub depth: f64,
    pub width: f64,
    pub ratio: f64,
}

impl Multiples {
    pub const N: Self = Self { depth: 0.33, width: 0.25, ratio: 2.0 };
    pub const S: Self = Self { depth: 0.33, width: 0.50, ratio: 2.0 };
    pub const M: Self = Self { depth: 0.67, width: 0.75, ratio: 1.5 };
    pub const L: Self = Self { depth: 1.00, width: 1.00, ratio: 1.0 };
    pub const X: Self = Self { depth: 1.00, width: 1.25, ratio: 1.0 };

    /// `n`, `s`, `m`, `l` or `x`.
    pub fn from_variant(variant: &str) -> Option<Self> {
        Some(match variant {
            "n" => Self::N,
            "s" => Self::S,
            "m" => Self::M,
            "l" => Self::L,
            "x" => Self::X,
            _ => return None,
        })
    }

    fn channels(&self, base: f64) -> usize {
        (base * self.width) as usize
    }

    fn repeats(&self, base: f64) -> usize {
        ((base * self.depth).round() as usize).max(1)
    }
}

/// Conv + (folded) batch norm + SiLU.
#[derive(Debug, Clone)]
pub struct ConvBlock {
    conv: Conv2d,
    /// The fused CPU path; `None` on other devices.
    fast: Option<super::fastconv::FusedConv>,
}

impl ConvBlock {
    fn load(vb: VarBuilder, c_in: usize, c_out: usize, k: usize, stride: usize) -> Result<Self> {
        let cfg = Conv2dConfig { padding: k / 2, stride, groups: 1, dilation: 1, cudnn_fwd_algo: None };
        let conv = conv2d_no_bias(c_in, c_out, k, cfg, vb.pp("conv"))?;
        // Ultralytics uses eps 1e-3 for its BatchNorm2d.
        let bn: BatchNorm = batch_norm(c_out, 1e-3, vb.pp("bn"))?;
        let (weight, bias) = bn_folded(&conv, &bn)?;
        let fast = match vb.device() {
            candle_core::Device::Cpu => Some(super::fastconv::FusedConv::new(&weight, &bias, stride, k / 2)?),
            _ => None,
        };
        Ok(Self { conv: Conv2d::new(weight, Some(bias), cfg), fast })
    }

    pub fn conv(&self) -> &Conv2d {
        &self.conv
    }
}

/// Folds `bn(conv(x))` into one convolution's weight and bias.
fn bn_folded(conv: &Conv2d, bn: &BatchNorm) -> Result<(Tensor, Tensor)> {
    let (mean, var) = (bn.running_mean(), bn.running_var());
    let (gamma, beta) =
        bn.weight_and_bias().ok_or_else(|| candle_core::Error::Msg("batch norm without affine weights".into()))?;
    let scale = gamma.broadcast_div(&(var + bn.eps())?.sqrt()?)?;
    let weight = conv.weight().broadcast_mul(&scale.reshape(((), 1, 1, 1))?)?;
    let bias = (beta - mean.mul(&scale)?)?;
    Ok((weight, bias))
}

thread_local! {
    /// When on, every convolution of a pass on this thread runs both paths,
    /// records how far the fast one is from the reference, and passes the
    /// reference output on (so each layer is compared on the same input).
    /// Per thread, so a check covers its own passes only, not those of
    /// other frames the process runs meanwhile (tests run side by side).
    static LAYER_CHECK: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
    static LAYER_DIFFS: std::cell::RefCell<Vec<(String, f32)>> = const { std::cell::RefCell::new(Vec::new()) };
}

fn layer_check_on() -> bool {
    LAYER_CHECK.with(std::cell::Cell::get)
}

/// Turns the layer-by-layer comparison on or off for passes on this thread;
/// answers what was recorded since the last call: (layer, max |fast −
/// reference|) in call order.
pub fn layer_check(on: bool) -> Vec<(String, f32)> {
    LAYER_CHECK.with(|c| c.set(on));
    LAYER_DIFFS.with(|d| std::mem::take(&mut *d.borrow_mut()))
}

impl ConvBlock {
    fn label(&self, xs: &Tensor) -> String {
        let (_, c_in, h, w) = xs.dims4().unwrap_or_default();
        let (c_out, _, k, _) = self.conv.weight().dims4().unwrap_or_default();
        format!("conv {k}x{k} s{} {c_in:>3}->{c_out:<3} @{h}x{w}", self.conv.config().stride)
    }

    fn reference(&self, xs: &Tensor) -> Result<Tensor> {
        use super::profile::time;
        let conv = time(|| self.label(xs), || self.conv.forward(xs))?;
        time(|| "silu".into(), || candle_nn::ops::silu(&conv))
    }
}

impl Module for ConvBlock {
    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        let Some(fast) = self.fast.as_ref().filter(|_| super::fastconv::enabled()) else {
            return self.reference(xs);
        };
        if layer_check_on() {
            let (want, got) = (self.reference(xs)?, fast.forward(xs)?);
            let diff = (&got - &want)?.abs()?.max_all()?.to_scalar::<f32>()?;
            let mut diffs = vec![(self.label(xs), diff)];
            // The blocked path's convolution of the same layer, same input.
            if let Some(blocked) = self
                .conv
                .bias()
                .and_then(|bias| super::blocked::convert(self.conv.weight(), bias, self.conv.config().stride, true))
            {
                let (_, c, h, w) = xs.dims4()?;
                let input = xs.get(0)?.flatten_all()?.to_vec1::<f32>()?;
                let input = super::fastconv::nchwc::Blocked::from_nchw(&input, c, h, w);
                let (oh, ow) = blocked.out_size(h, w);
                let mut out = super::fastconv::nchwc::Blocked::zeros(blocked.c_out, oh, ow);
                blocked.forward(&input.data, h, w, &mut out.data, None);
                let want = want.get(0)?.flatten_all()?.to_vec1::<f32>()?;
                let diff = out.to_nchw(blocked.c_out).iter().zip(&want).map(|(a, b)| (a - b).abs()).fold(0.0, f32::max);
                diffs.push((format!("nchwc {}", self.label(xs)), diff));
            }
            LAYER_DIFFS.with(|d| d.borrow_mut().extend(diffs));
            return Ok(want);
        }
        super::profile::time(|| format!("fused {}", self.label(xs)), || fast.forward(xs))
    }
}

#[derive(Debug, Clone)]
struct Bottleneck {
    cv1: ConvBlock,
    cv2: ConvBlock,
    residual: bool,
}

impl Bottleneck {
    fn load(vb: VarBuilder, c_in: usize, c_out: usize, shortcut: bool) -> Result<Self> {
        Ok(Self {
            cv1: ConvBlock::load(vb.pp("cv1"), c_in, c_out, 3, 1)?,
            cv2: ConvBlock::load(vb.pp("cv2"), c_out, c_out, 3, 1)?,
            residual: shortcut && c_in == c_out,
        })
    }
}

impl Module for Bottleneck {
    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        let ys = self.cv2.forward(&self.cv1.forward(xs)?)?;
        if self.residual { xs + ys } else { Ok(ys) }
    }
}

/// CSP bottleneck with two convolutions ("C2f").
#[derive(Debug, Clone)]
struct C2f {
    cv1: ConvBlock,
    cv2: ConvBlock,
    bottlenecks: Vec<Bottleneck>,
}

impl C2f {
    fn load(vb: VarBuilder, c_in: usize, c_out: usize, n: usize, shortcut: bool) -> Result<Self> {
        let hidden = c_out / 2;
        let bottlenecks = (0..n)
            .map(|i| Bottleneck::load(vb.pp(format!("bottleneck.{i}")), hidden, hidden, shortcut))
            .collect::<Result<_>>()?;
        Ok(Self {
            cv1: ConvBlock::load(vb.pp("cv1"), c_in, 2 * hidden, 1, 1)?,
            cv2: ConvBlock::load(vb.pp("cv2"), (2 + n) * hidden, c_out, 1, 1)?,
            bottlenecks,
        })
    }
}

impl Module for C2f {
    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        let mut ys = self.cv1.forward(xs)?.chunk(2, 1)?;
        for b in &self.bottlenecks {
            let next = b.forward(ys.last().ok_or_else(|| candle_core::Error::Msg("empty C2f".into()))?)?;
            ys.push(next);
        }
        let joined = super::profile::time(|| "C2f concat".into(), || Tensor::cat(&ys, 1))?;
        self.cv2.forward(&joined)
    }
}

/// Spatial pyramid pooling, fast: three chained 5×5 max pools.
#[derive(Debug, Clone)]
struct Sppf {
    cv1: ConvBlock,
    cv2: ConvBlock,
    k: usize,
}

impl Sppf {
    fn load(vb: VarBuilder, c_in: usize, c_out: usize, k: usize) -> Result<Self> {
        let hidden = c_in / 2;
        Ok(Self {
            cv1: ConvBlock::load(vb.pp("cv1"), c_in, hidden, 1, 1)?,
            cv2: ConvBlock::load(vb.pp("cv2"), 4 * hidden, c_out, 1, 1)?,
            k,
        })
    }
}

impl Module for Sppf {
    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        let pad = self.k / 2;
        // Replicating the edge is the same as -inf padding for a max pool.
        let pool = |t: &Tensor| -> Result<Tensor> {
            t.pad_with_same(2, pad, pad)?.pad_with_same(3, pad, pad)?.max_pool2d_with_stride(self.k, 1)
        };
        let x1 = self.cv1.forward(xs)?;
        let (x2, x3, x4) = super::profile::time(
            || "SPPF pools and concat".into(),
            || -> Result<_> {
                let x2 = pool(&x1)?;
                let x3 = pool(&x2)?;
                Ok((x2.clone(), x3.clone(), pool(&x3)?))
            },
        )?;
        self.cv2.forward(&Tensor::cat(&[&x1, &x2, &x3, &x4], 1)?)
    }
}

#[derive(Debug, Clone)]
struct Backbone {
    stem: [ConvBlock; 2],
    b2: (C2f, ConvBlock, C2f),
    b3: (ConvBlock, C2f),
    b4: (ConvBlock, C2f),
    sppf: Sppf,
}

impl Backbone {
    fn load(vb: VarBuilder, m: Multiples) -> Result<Self> {
        let c = |base| m.channels(base);
        let top = c(512.0 * m.ratio);
        Ok(Self {
            stem: [
                ConvBlock::load(vb.pp("b1.0"), 3, c(64.0), 3, 2)?,
                ConvBlock::load(vb.pp("b1.1"), c(64.0), c(128.0), 3, 2)?,
            ],
            b2: (
                C2f::load(vb.pp("b2.0"), c(128.0), c(128.0), m.repeats(3.0), true)?,
                ConvBlock::load(vb.pp("b2.1"), c(128.0), c(256.0), 3, 2)?,
                C2f::load(vb.pp("b2.2"), c(256.0), c(256.0), m.repeats(6.0), true)?,
            ),
            b3: (
                ConvBlock::load(vb.pp("b3.0"), c(256.0), c(512.0), 3, 2)?,
                C2f::load(vb.pp("b3.1"), c(512.0), c(512.0), m.repeats(6.0), true)?,
            ),
            b4: (
                ConvBlock::load(vb.pp("b4.0"), c(512.0), top, 3, 2)?,
                C2f::load(vb.pp("b4.1"), top, top, m.repeats(3.0), true)?,
            ),
            sppf: Sppf::load(vb.pp("b5.0"), top, top, 5)?,
        })
    }

    /// Features at strides 8, 16 and 32.
    fn forward(&self, xs: &Tensor) -> Result<(Tensor, Tensor, Tensor)> {
        let x = self.stem[1].forward(&self.stem[0].forward(xs)?)?;
        let p3 = self.b2.2.forward(&self.b2.1.forward(&self.b2.0.forward(&x)?)?)?;
        let p4 = self.b3.1.forward(&self.b3.0.forward(&p3)?)?;
        let p5 = self.sppf.forward(&self.b4.1.forward(&self.b4.0.forward(&p4)?)?)?;
        Ok((p3, p4, p5))
    }
}

/// The path-aggregation neck.
#[derive(Debug, Clone)]
struct Neck {
    n1: C2f,
    n2: C2f,
    n3: ConvBlock,
    n4: C2f,
    n5: ConvBlock,
    n6: C2f,
}

impl Neck {
    fn load(vb: VarBuilder, m: Multiples) -> Result<Self> {
        let c = |base| m.channels(base);
        let n = m.repeats(3.0);
        Ok(Self {
            n1: C2f::load(vb.pp("n1"), c(512.0 * (1.0 + m.ratio)), c(512.0), n, false)?,
            n2: C2f::load(vb.pp("n2"), c(768.0), c(256.0), n, false)?,
            n3: ConvBlock::load(vb.pp("n3"), c(256.0), c(256.0), 3, 2)?,
            n4: C2f::load(vb.pp("n4"), c(768.0), c(512.0), n, false)?,
            n5: ConvBlock::load(vb.pp("n5"), c(512.0), c(512.0), 3, 2)?,
            n6: C2f::load(vb.pp("n6"), c(512.0 * (1.0 + m.ratio)), c(512.0 * m.ratio), n, false)?,
        })
    }

    fn forward(&self, p3: &Tensor, p4: &Tensor, p5: &Tensor) -> Result<(Tensor, Tensor, Tensor)> {
        use super::profile::time;
        let up = |t: &Tensor| -> Result<Tensor> {
            let (_, _, h, w) = t.dims4()?;
            time(|| "neck upsample".into(), || t.upsample_nearest2d(2 * h, 2 * w))
        };
        let cat = |a: &Tensor, b: &Tensor| time(|| "neck concat".into(), || Tensor::cat(&[a, b], 1));
        let x = self.n1.forward(&cat(&up(p5)?, p4)?)?;
        let h1 = self.n2.forward(&cat(&up(&x)?, p3)?)?;
        let h2 = self.n4.forward(&cat(&self.n3.forward(&h1)?, &x)?)?;
        let h3 = self.n6.forward(&cat(&self.n5.forward(&h2)?, p5)?)?;
        Ok((h1, h2, h3))
    }
}

/// Distribution focal loss decoding: the expected value of 16 bins per side.
#[derive(Debug, Clone)]
struct Dfl {
    conv: Conv2d,
    /// The bin weights, for the fast decoding on the CPU.
    fast_weights: Option<Vec<f32>>,
}

const DFL_BINS: usize = 16;

impl Dfl {
    fn load(vb: VarBuilder) -> Result<Self> {
        let conv = conv2d_no_bias(DFL_BINS, 1, 1, Default::default(), vb.pp("conv"))?;
        let fast_weights = match vb.device() {
            candle_core::Device::Cpu => Some(conv.weight().flatten_all()?.to_vec1::<f32>()?),
            _ => None,
        };
        Ok(Self { conv, fast_weights })
    }
}

impl Module for Dfl {
    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        let (b, _, anchors) = xs.dims3()?;
        let xs = xs.reshape((b, 4, DFL_BINS, anchors))?.transpose(2, 1)?;
        let xs = candle_nn::ops::softmax(&xs, 1)?;
        self.conv.forward(&xs)?.reshape((b, 4, anchors))
    }
}

/// Two 3×3 conv blocks then a 1×1 prediction conv.
#[derive(Debug, Clone)]
struct Branch {
    c1: ConvBlock,
    c2: ConvBlock,
    out: Conv2d,
    /// The fused CPU path for `out` (no SiLU); `None` on other devices.
    out_fast: Option<super::fastconv::FusedConv>,
}

impl Branch {
    fn load(vb: VarBuilder, c_in: usize, hidden: usize, c_out: usize) -> Result<Self> {
        let out = conv2d(hidden, c_out, 1, Default::default(), vb.pp("2"))?;
        let out_fast = match (vb.device(), out.bias()) {
            (candle_core::Device::Cpu, Some(bias)) => {
                Some(super::fastconv::FusedConv::new(out.weight(), bias, 1, 0)?.without_silu())
            }
            _ => None,
        };
        Ok(Self {
            c1: ConvBlock::load(vb.pp("0"), c_in, hidden, 3, 1)?,
            c2: ConvBlock::load(vb.pp("1"), hidden, hidden, 3, 1)?,
            out,
            out_fast,
        })
    }
}

impl Module for Branch {
    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        let hidden = self.c2.forward(&self.c1.forward(xs)?)?;
        match self.out_fast.as_ref().filter(|_| super::fastconv::enabled()) {
            Some(fast) => super::profile::time(|| "fused head conv 1x1".into(), || fast.forward(&hidden)),
            None => super::profile::time(|| "head conv 1x1".into(), || self.out.forward(&hidden)),
        }
    }
}

#[derive(Debug, Clone)]
struct Head {
    dfl: Dfl,
    boxes: Vec<Branch>,
    scores: Vec<Branch>,
    classes: usize,
}

const STRIDES: [usize; 3] = [8, 16, 32];

impl Head {
    fn load(vb: VarBuilder, m: Multiples, classes: usize) -> Result<Self> {
        let inputs = [m.channels(256.0), m.channels(512.0), m.channels(512.0 * m.ratio)];
        let score_hidden = inputs[0].max(classes.min(100));
        let box_hidden = (inputs[0] / 4).max(DFL_BINS * 4);
        let mut boxes = Vec::new();
        let mut scores = Vec::new();
        for (i, &c_in) in inputs.iter().enumerate() {
            boxes.push(Branch::load(vb.pp(format!("cv2.{i}")), c_in, box_hidden, 4 * DFL_BINS)?);
            scores.push(Branch::load(vb.pp(format!("cv3.{i}")), c_in, score_hidden, classes)?);
        }
        Ok(Self { dfl: Dfl::load(vb.pp("dfl"))?, boxes, scores, classes })
    }

    fn forward(&self, features: [&Tensor; 3]) -> Result<Tensor> {
        let b = features[0].dim(0)?;
        let outputs = 4 * DFL_BINS + self.classes;
        let mut flat = Vec::with_capacity(3);
        let mut anchors = Vec::with_capacity(3);
        let mut strides = Vec::with_capacity(3);
        for (i, xs) in features.into_iter().enumerate() {
            let ys = Tensor::cat(&[self.boxes[i].forward(xs)?, self.scores[i].forward(xs)?], 1)?;
            let (_, _, h, w) = ys.dims4()?;
            flat.push(ys.reshape((b, outputs, h * w))?);
            let (points, stride) = anchor_grid(h, w, STRIDES[i], xs.device())?;
            anchors.push(points);
            strides.push(stride);
        }
        super::profile::time(
            || "head decode (DFL, boxes, sigmoid)".into(),
            || match self.dfl.fast_weights.as_ref().filter(|_| super::fastconv::enabled()) {
                Some(weights) => decode_fast(&flat, &anchors, &STRIDES, weights),
                None => self.decode(&flat, &anchors, &strides),
            },
        )
    }

    fn decode(&self, flat: &[Tensor], anchors: &[Tensor], strides: &[Tensor]) -> Result<Tensor> {
        let all = Tensor::cat(flat, 2)?;
        let anchors = Tensor::cat(anchors, 1)?.unsqueeze(0)?; // [1, 2, N]
        let strides = Tensor::cat(strides, 1)?.unsqueeze(0)?; // [1, 1, N]
        let distances = self.dfl.forward(&all.narrow(1, 0, 4 * DFL_BINS)?)?; // [b, 4, N]
        let lt = distances.narrow(1, 0, 2)?;
        let rb = distances.narrow(1, 2, 2)?;
        let top_left = anchors.broadcast_sub(&lt)?;
        let bottom_right = anchors.broadcast_add(&rb)?;
        let centre = ((&top_left + &bottom_right)? * 0.5)?;
        let size = (bottom_right - top_left)?;
        let boxes = Tensor::cat(&[centre, size], 1)?.broadcast_mul(&strides)?;
        let scores = candle_nn::ops::sigmoid(&all.narrow(1, 4 * DFL_BINS, self.classes)?)?;
        Tensor::cat(&[boxes, scores], 1)
    }
}

/// The head's decoding in one pass per image and scale (the fast path).
fn decode_fast(flat: &[Tensor], anchors: &[Tensor], strides: &[usize], dfl: &[f32]) -> Result<Tensor> {
    let (b, rows, _) = flat[0].dims3()?;
    let total: usize = flat.iter().map(|f| f.dim(2)).sum::<Result<usize>>()?;
    let per_image = (rows - 4 * DFL_BINS + 4) * total;
    let mut out = vec![0f32; b * per_image];
    let mut column = 0;
    for ((scale, xy), stride) in flat.iter().zip(anchors).zip(strides) {
        let n = scale.dim(2)?;
        let raw = scale.flatten_all()?.to_vec1::<f32>()?;
        let xy = xy.flatten_all()?.to_vec1::<f32>()?;
        for (image, out) in raw.chunks_exact(rows * n).zip(out.chunks_exact_mut(per_image)) {
            super::fastconv::decode_head(image, n, DFL_BINS, dfl, &xy, *stride as f32, out, total, column);
        }
        column += n;
    }
    Tensor::from_vec(out, (b, rows - 4 * DFL_BINS + 4, total), flat[0].device())
}

/// Anchor centres `[2, h*w]` (x then y, in grid cells) and strides `[1, h*w]`.
fn anchor_grid(h: usize, w: usize, stride: usize, device: &candle_core::Device) -> Result<(Tensor, Tensor)> {
    let xs = Tensor::arange(0u32, w as u32, device)?.to_dtype(DType::F32)?.affine(1.0, 0.5)?;
    let ys = Tensor::arange(0u32, h as u32, device)?.to_dtype(DType::F32)?.affine(1.0, 0.5)?;
    let grid_x = xs.reshape((1, w))?.repeat((h, 1))?.flatten_all()?;
    let grid_y = ys.reshape((h, 1))?.repeat((1, w))?.flatten_all()?;
    let points = Tensor::stack(&[grid_x, grid_y], 0)?;
    let strides = Tensor::full(stride as f32, (1, h * w), device)?;
    Ok((points, strides))
}

/// The whole network.
#[derive(Clone)]
pub struct YoloV8 {
    backbone: Backbone,
    neck: Neck,
    head: Head,
    /// The same network on the blocked layout (the CPU's fast path).
    blocked: Option<std::sync::Arc<super::blocked::BlockedNet>>,
    /// The blocked network in int8, when asked for and calibrated.
    int8: Option<std::sync::Arc<super::int8::QuantNet>>,
}

impl std::fmt::Debug for YoloV8 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("YoloV8")
            .field("classes", &self.head.classes)
            .field("blocked", &self.blocked.is_some())
            .field("int8", &self.int8.is_some())
            .finish()
    }
}

/// Which CPU path runs: the blocked direct convolutions (default) or the
/// im2col + GEMM fused path, for `bench detector --conv` and tests.
static BLOCKED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(true);

pub fn set_blocked(on: bool) {
    BLOCKED.store(on, std::sync::atomic::Ordering::Relaxed);
}

impl YoloV8 {
    pub fn load(vb: VarBuilder, m: Multiples, classes: usize) -> Result<Self> {
        let mut model = Self {
            backbone: Backbone::load(vb.pp("net"), m)?,
            neck: Neck::load(vb.pp("fpn"), m)?,
            head: Head::load(vb.pp("head"), m, classes)?,
            blocked: None,
            int8: None,
        };
        if matches!(vb.device(), candle_core::Device::Cpu) {
            model.blocked = model.to_blocked().map(std::sync::Arc::new);
        }
        Ok(model)
    }

    /// The ranges of the blocked network's activations over `frames`
    /// (prepared inputs `[1, 3, h, w]`); `None` without a blocked network
    /// (not on the CPU).
    pub fn calibrate(&self, frames: &[Tensor]) -> Result<Option<super::int8::Ranges>> {
        let Some(net) = &self.blocked else { return Ok(None) };
        let frames = frames
            .iter()
            .map(|f| {
                let (_, _, h, w) = f.dims4()?;
                Ok((f.flatten_all()?.to_vec1::<f32>()?, h, w))
            })
            .collect::<Result<Vec<_>>>()?;
        let mut ranges = super::int8::calibrate(net, frames.iter().map(|(v, h, w)| (&v[..], *h, *w)));
        ranges.size = frames.iter().map(|(_, h, w)| *h.max(w)).max().unwrap_or(0);
        Ok(Some(ranges))
    }

    pub fn is_int8(&self) -> bool {
        self.int8.is_some()
    }

    /// The same model running in int8 by `ranges`; `None` without a blocked network.
    pub fn in_int8(
        &self,
        ranges: &super::int8::Ranges,
    ) -> Option<std::result::Result<Self, super::int8::QuantizeError>> {
        let net = self.blocked.as_ref()?;
        Some(
            super::int8::QuantNet::build(net, ranges)
                .map(|q| Self { int8: Some(std::sync::Arc::new(q)), ..self.clone() }),
        )
    }

    fn to_blocked(&self) -> Option<super::blocked::BlockedNet> {
        use super::blocked::{BottleneckB, BranchB, C2fB, SppfB, convert};
        let conv = |c: &ConvBlock| convert(c.conv.weight(), c.conv.bias()?, c.conv.config().stride, true);
        let c2f = |c: &C2f| -> Option<C2fB> {
            Some(C2fB {
                cv1: conv(&c.cv1)?,
                cv2: conv(&c.cv2)?,
                bottlenecks: c
                    .bottlenecks
                    .iter()
                    .map(|b| Some(BottleneckB { cv1: conv(&b.cv1)?, cv2: conv(&b.cv2)?, residual: b.residual }))
                    .collect::<Option<_>>()?,
            })
        };
        let branch = |b: &Branch| -> Option<BranchB> {
            Some(BranchB { c1: conv(&b.c1)?, c2: conv(&b.c2)?, out: convert(b.out.weight(), b.out.bias()?, 1, false)? })
        };
        let (bb, n) = (&self.backbone, &self.neck);
        if (bb.b2.0.cv1.conv.weight().dim(0).ok()? / 2) % super::fastconv::nchwc::B != 0 {
            return None;
        }
        Some(super::blocked::BlockedNet {
            stem: [conv(&bb.stem[0])?, conv(&bb.stem[1])?],
            b2: (c2f(&bb.b2.0)?, conv(&bb.b2.1)?, c2f(&bb.b2.2)?),
            b3: (conv(&bb.b3.0)?, c2f(&bb.b3.1)?),
            b4: (conv(&bb.b4.0)?, c2f(&bb.b4.1)?),
            sppf: SppfB { cv1: conv(&bb.sppf.cv1)?, cv2: conv(&bb.sppf.cv2)?, k: bb.sppf.k },
            n1: c2f(&n.n1)?,
            n2: c2f(&n.n2)?,
            n3: conv(&n.n3)?,
            n4: c2f(&n.n4)?,
            n5: conv(&n.n5)?,
            n6: c2f(&n.n6)?,
            boxes: self.head.boxes.iter().map(branch).collect::<Option<_>>()?,
            scores: self.head.scores.iter().map(branch).collect::<Option<_>>()?,
            dfl: self.head.dfl.fast_weights.clone()?,
            classes: self.head.classes,
            pools: std::sync::Mutex::new(Vec::new()),
        })
    }

    /// The blocked path: each image through the network, then the head's
    /// decoding into `[b, 4 + classes, anchors]`.
    fn forward_blocked(&self, net: &super::blocked::BlockedNet, xs: &Tensor) -> Result<Tensor> {
        let (b, _, h, w) = xs.dims4()?;
        // The frame is read where it lies: a copy of it (4.9 MB at 640) was
        // a fresh allocation, and its page faults, every frame.
        let xs = xs.contiguous()?;
        let (storage, layout) = xs.storage_and_layout();
        let input = match (&*storage, layout.contiguous_offsets()) {
            (candle_core::Storage::Cpu(cpu), Some((from, to))) => &cpu.as_slice::<f32>()?[from..to],
            _ => candle_core::bail!("the blocked path runs on contiguous f32 frames in CPU memory"),
        };
        let rows = 4 + self.head.classes;
        let total: usize = STRIDES.iter().map(|s| (h / s) * (w / s)).sum();
        let mut out = vec![0f32; b * rows * total];
        for (image, dst) in input.chunks_exact(3 * h * w).zip(out.chunks_exact_mut(rows * total)) {
            let decode = |scales: &[super::fastconv::nchwc::Blocked]| {
                super::profile::time(
                    || "head decode (DFL, boxes, sigmoid)".into(),
                    || {
                        let mut column = 0;
                        for (raw, stride) in scales.iter().zip(STRIDES) {
                            super::fastconv::nchwc::decode_head(
                                &raw.data,
                                raw.h,
                                raw.w,
                                net.classes,
                                &net.dfl,
                                stride as f32,
                                dst,
                                total,
                                column,
                            );
                            column += raw.h * raw.w;
                        }
                    },
                )
            };
            match &self.int8 {
                Some(int8) => int8.forward_then(image, h, w, decode),
                None => net.forward_then(image, h, w, decode),
            }
        }
        Tensor::from_vec(out, (b, rows, total), xs.device())
    }
}

impl Module for YoloV8 {
    /// `[b, 3, h, w]` RGB in `[0, 1]`, `h` and `w` multiples of 32, to `[b, 4 + classes, anchors]`.
    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        if let Some(net) = self.blocked.as_ref().filter(|_| {
            super::fastconv::enabled() && BLOCKED.load(std::sync::atomic::Ordering::Relaxed) && !layer_check_on()
        }) {
            return self.forward_blocked(net, xs);
        }
        let (p3, p4, p5) = self.backbone.forward(xs)?;
        let (h1, h2, h3) = self.neck.forward(&p3, &p4, &p5)?;
        self.head.forward([&h1, &h2, &h3])
    }
}
