//! The whole network on the blocked layout (`fastconv::nchwc`): the first
//! layer reads the NCHW frame and the head's decode reads the blocks, so
//! nothing is converted; convolutions (3×3 stride-1 ones by Winograd's
//! F(2×2, 3×3), the rest direct) with SiLU (and the bottlenecks' residual)
//! fused into their stores,
//! C2f and SPPF outputs written into their slices of one buffer (so their
//! concatenations cost nothing), and max-pool and upsampling on the blocks.
//!
//! Built from the candle model's folded weights at load, on the CPU, when
//! every layer's channels come in whole blocks (all YOLOv8 sizes do); the
//! candle path stays as the reference.

use super::fastconv::nchwc::{B, Blocked, BlockedConv, LentPool, Pool, max_pool, upsample2};
use super::profile::time;

/// A layer's name in the profile: kind, shape and FLOPs, as `bench --layers` prints it.
pub(super) fn label(conv: &BlockedConv, h: usize, w: usize) -> String {
    format!(
        "nchwc conv {k}x{k} s{s} {ci:>3}->{co:<3} @{h}x{w}{how}",
        k = conv.k,
        s = conv.stride,
        ci = conv.c_in,
        co = conv.c_out,
        how = if conv.runs_winograd() { " winograd" } else { "" }
    )
}

pub(super) fn run(conv: &BlockedConv, input: &[f32], h: usize, w: usize, out: &mut [f32], residual: Option<&[f32]>) {
    let flops = conv.flops(h, w);
    time(|| format!("{} [{:.1} MFLOP]", label(conv, h, w), flops / 1e6), || conv.forward(input, h, w, out, residual));
    super::int8::observe(conv, out);
}

fn apply(conv: &BlockedConv, x: &Blocked) -> Blocked {
    let (oh, ow) = conv.out_size(x.h, x.w);
    let mut out = Blocked::for_overwrite(conv.c_out, oh, ow);
    run(conv, &x.data, x.h, x.w, &mut out.data, None);
    out
}

/// A conv block of the candle model as a blocked convolution.
pub(super) fn convert(
    weight: &candle_core::Tensor,
    bias: &candle_core::Tensor,
    stride: usize,
    silu: bool,
) -> Option<BlockedConv> {
    let (c_out, c_in, k, _) = weight.dims4().ok()?;
    if c_out % B != 0 {
        return None;
    }
    let weight = weight.flatten_all().ok()?.to_vec1::<f32>().ok()?;
    let bias = bias.to_vec1::<f32>().ok()?;
    Some(BlockedConv::new(&weight, &bias, c_in, c_out, k, stride, silu))
}

pub(super) struct BottleneckB {
    pub cv1: BlockedConv,
    pub cv2: BlockedConv,
    pub residual: bool,
}

pub(super) struct C2fB {
    pub cv1: BlockedConv,
    pub cv2: BlockedConv,
    pub bottlenecks: Vec<BottleneckB>,
}

impl C2fB {
    fn forward(&self, x: &Blocked) -> Blocked {
        let hidden = self.cv1.c_out / 2;
        let (h, w) = (x.h, x.w);
        let n = self.bottlenecks.len();
        let chunk = hidden / B * h * w * B;
        // cv1's two halves, then each bottleneck's output: cv2's input.
        let mut joined = Blocked::for_overwrite((2 + n) * hidden, h, w);
        run(&self.cv1, &x.data, h, w, &mut joined.data[..2 * chunk], None);
        let mut inner = Blocked::for_overwrite(hidden, h, w);
        for (i, b) in self.bottlenecks.iter().enumerate() {
            let (done, rest) = joined.data.split_at_mut((2 + i) * chunk);
            let last = &done[(1 + i) * chunk..];
            run(&b.cv1, last, h, w, &mut inner.data, None);
            run(&b.cv2, &inner.data, h, w, &mut rest[..chunk], b.residual.then_some(last));
        }
        apply(&self.cv2, &joined)
    }
}

pub(super) struct SppfB {
    pub cv1: BlockedConv,
    pub cv2: BlockedConv,
    pub k: usize,
}

impl SppfB {
    fn forward(&self, x: &Blocked) -> Blocked {
        let hidden = self.cv1.c_out;
        let (h, w) = (x.h, x.w);
        let chunk = hidden / B * h * w * B;
        let mut joined = Blocked::for_overwrite(4 * hidden, h, w);
        run(&self.cv1, &x.data, h, w, &mut joined.data[..chunk], None);
        time(
            || "nchwc SPPF pools".into(),
            || {
                for i in 0..3 {
                    let (done, rest) = joined.data.split_at_mut((i + 1) * chunk);
                    max_pool(&done[i * chunk..], hidden / B, h, w, self.k, &mut rest[..chunk]);
                }
            },
        );
        apply(&self.cv2, &joined)
    }
}

/// Two 3×3 blocks and the 1×1 prediction, per scale and branch.
pub(super) struct BranchB {
    pub c1: BlockedConv,
    pub c2: BlockedConv,
    pub out: BlockedConv,
}

pub(super) struct BlockedNet {
    pub stem: [BlockedConv; 2],
    pub b2: (C2fB, BlockedConv, C2fB),
    pub b3: (BlockedConv, C2fB),
    pub b4: (BlockedConv, C2fB),
    pub sppf: SppfB,
    pub n1: C2fB,
    pub n2: C2fB,
    pub n3: BlockedConv,
    pub n4: C2fB,
    pub n5: BlockedConv,
    pub n6: C2fB,
    pub boxes: Vec<BranchB>,
    pub scores: Vec<BranchB>,
    pub dfl: Vec<f32>,
    pub classes: usize,
    /// Activation buffers of finished passes, one pool per pass that ran
    /// at the same time (see `LentPool`).
    pub pools: std::sync::Mutex<Vec<Pool>>,
}

/// `[up(a), b]` along channels, into one buffer.
fn up_and_join(a: &Blocked, b: &Blocked) -> Blocked {
    time(
        || "nchwc upsample and join".into(),
        || {
            let mut joined = Blocked::for_overwrite((a.blocks + b.blocks) * B, b.h, b.w);
            let split = a.blocks * b.plane_len();
            upsample2(&a.data, a.blocks, a.h, a.w, &mut joined.data[..split]);
            joined.data[split..].copy_from_slice(&b.data);
            joined
        },
    )
}

fn join(a: &Blocked, b: &Blocked) -> Blocked {
    time(|| "nchwc join".into(), || Blocked::joined(&[a, b]))
}

impl C2fB {
    fn convs(&self) -> impl Iterator<Item = &BlockedConv> {
        std::iter::once(&self.cv1)
            .chain(self.bottlenecks.iter().flat_map(|b| [&b.cv1, &b.cv2]))
            .chain(std::iter::once(&self.cv2))
    }
}

impl BlockedNet {
    /// Every convolution, in the order of the graph (calibrations index by it).
    pub fn convs(&self) -> Vec<&BlockedConv> {
        let mut all: Vec<&BlockedConv> = self.stem.iter().collect();
        all.extend(self.b2.0.convs());
        all.push(&self.b2.1);
        all.extend(self.b2.2.convs());
        all.push(&self.b3.0);
        all.extend(self.b3.1.convs());
        all.push(&self.b4.0);
        all.extend(self.b4.1.convs());
        all.extend([&self.sppf.cv1, &self.sppf.cv2]);
        all.extend(self.n1.convs());
        all.extend(self.n2.convs());
        all.push(&self.n3);
        all.extend(self.n4.convs());
        all.push(&self.n5);
        all.extend(self.n6.convs());
        for branch in self.boxes.iter().chain(&self.scores) {
            all.extend([&branch.c1, &branch.c2, &branch.out]);
        }
        all
    }

    /// One image, NCHW `[3, h, w]` in `[0, 1]`, to the head's raw outputs
    /// per scale, blocked: the box distributions in blocks 0–3, then the
    /// class logits.
    pub fn forward(&self, image: &[f32], h: usize, w: usize) -> Vec<Blocked> {
        // Activation buffers come from this net's pools, whichever thread
        // runs the pass; declared first, so it is dropped last.
        let _pool = LentPool::lend(&self.pools);
        self.forward_in_pool(image, h, w)
    }

    /// A pass whose outputs go back to the pool too: `then` reads them
    /// (the head's decode) before they are dropped, so that they are reused
    /// next frame rather than allocated and faulted in afresh.
    pub fn forward_then<R>(&self, image: &[f32], h: usize, w: usize, then: impl FnOnce(&[Blocked]) -> R) -> R {
        let _pool = LentPool::lend(&self.pools);
        then(&self.forward_in_pool(image, h, w))
    }

    fn forward_in_pool(&self, image: &[f32], h: usize, w: usize) -> Vec<Blocked> {
        // The first layer reads the frame as it is (NCHW, 3 channels).
        let stem = &self.stem[0];
        let (sh, sw) = stem.out_size(h, w);
        let mut x = Blocked::for_overwrite(stem.c_out, sh, sw);
        let flops = stem.flops(h, w);
        time(
            || format!("{} from NCHW [{:.1} MFLOP]", label(stem, h, w), flops / 1e6),
            || stem.forward_nchw(image, h, w, &mut x.data),
        );
        super::int8::observe(stem, &x.data);
        let x = apply(&self.stem[1], &x);
        let p3 = self.b2.2.forward(&apply(&self.b2.1, &self.b2.0.forward(&x)));
        let p4 = self.b3.1.forward(&apply(&self.b3.0, &p3));
        let p5 = self.sppf.forward(&self.b4.1.forward(&apply(&self.b4.0, &p4)));
        let top = self.n1.forward(&up_and_join(&p5, &p4));
        let h1 = self.n2.forward(&up_and_join(&top, &p3));
        let h2 = self.n4.forward(&join(&apply(&self.n3, &h1), &top));
        let h3 = self.n6.forward(&join(&apply(&self.n5, &h2), &p5));
        [&h1, &h2, &h3]
            .iter()
            .enumerate()
            .map(|(i, x)| {
                let (bx, sc) = (&self.boxes[i], &self.scores[i]);
                let mut out = Blocked::for_overwrite(bx.out.c_out + sc.out.c_out, x.h, x.w);
                let split = bx.out.c_out / B * x.plane_len();
                for (branch, dst) in [(bx, 0..split), (sc, split..out.data.len())] {
                    let hidden = apply(&branch.c2, &apply(&branch.c1, x));
                    run(&branch.out, &hidden.data, x.h, x.w, &mut out.data[dst], None);
                }
                out
            })
            .collect()
    }
}
