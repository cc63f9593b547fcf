//! The blocked network in int8 (`processing.detection.precision: int8`):
//! every convolution but the first and the head's last ones runs on bytes
//! (`fastconv::nchwc::int8`), each activation quantized by the range it
//! took on calibration frames. The first layer reads the f32 frame (three
//! input channels: little to gain), and the head's last convolutions and
//! the DFL decode stay in f32, so the boxes and scores keep their
//! precision.
//!
//! Calibration runs the f32 network on frames and records each
//! convolution's output range ([`Ranges`], indexed in [`BlockedNet::convs`]'s
//! order); the int8 network is then built from the f32 one by walking the
//! graph with each activation's per-block quantization in hand, so that
//! every layer knows how its input's blocks were quantized (a
//! concatenation's parts keep their own).

use super::blocked::{BlockedNet, BranchB, C2fB, SppfB};
use super::fastconv::nchwc::int8::{QBlocked, QParams, QuantConv};
use super::fastconv::nchwc::{B, Blocked, BlockedConv, LentPool, Pool, max_pool_bytes, upsample2_bytes};
use super::profile::time;
use super::{DetectError, Detector};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// Each convolution's output range over the calibration frames, in
/// [`BlockedNet::convs`]'s order: what `smart-cctv model quantize` writes
/// beside the weights ([`calibration_path`]).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Ranges {
    /// The clip the frames came from, as given.
    #[serde(default)]
    pub clip: String,
    /// The weights calibrated (hex sha256): a calibration of other weights,
    /// even of the same shape, does not fit them.
    #[serde(default)]
    pub weights_sha256: String,
    /// The network input's longer side they were taken at.
    pub size: usize,
    /// Frames the ranges were taken on.
    pub frames: usize,
    pub ranges: Vec<(f32, f32)>,
}

/// Where the calibration of `weights` is kept: beside them,
/// `yolov8n.safetensors` → `yolov8n.int8.json`.
pub fn calibration_path(weights: &Path) -> PathBuf {
    weights.with_extension("int8.json")
}

/// The largest calibration file read (a few kB in practice).
const MAX_CALIBRATION_BYTES: u64 = 1 << 20;

impl Ranges {
    /// Reads and checks a calibration file.
    pub fn read(path: &Path) -> Result<Self, DetectError> {
        let bad = |reason: String| DetectError::Quantize(format!("calibration {}: {reason}", path.display()));
        let file = std::fs::File::open(path).map_err(|e| bad(e.to_string()))?;
        let mut text = String::new();
        std::io::Read::read_to_string(&mut std::io::Read::take(file, MAX_CALIBRATION_BYTES + 1), &mut text)
            .map_err(|e| bad(e.to_string()))?;
        if text.len() as u64 > MAX_CALIBRATION_BYTES {
            return Err(bad(format!("larger than {MAX_CALIBRATION_BYTES} bytes")));
        }
        let ranges: Self = serde_json::from_str(&text).map_err(|e| bad(e.to_string()))?;
        if ranges.frames == 0 {
            return Err(bad("taken on no frames".into()));
        }
        if let Some(i) = ranges.ranges.iter().position(|(lo, hi)| !(lo.is_finite() && hi.is_finite() && lo <= hi)) {
            return Err(bad(format!("ranges[{i}] is not a finite [low, high]")));
        }
        Ok(ranges)
    }

    /// Writes the file whole or not at all (a temporary file renamed over it).
    pub fn write(&self, path: &Path) -> Result<(), DetectError> {
        let bad = |e: std::io::Error| DetectError::Quantize(format!("cannot write {}: {e}", path.display()));
        let text = serde_json::to_string_pretty(self).map_err(|e| bad(std::io::Error::other(e)))?;
        let temporary = path.with_extension("json.partial");
        std::fs::write(&temporary, text + "\n").map_err(bad)?;
        std::fs::rename(&temporary, path).map_err(bad)
    }
}

/// How an int8 detector got its calibration, for the log.
#[derive(Debug, Clone, PartialEq)]
pub enum Calibrated {
    /// Read from this file.
    Read(PathBuf),
    /// Taken on the clip now; saved to the path when it could be.
    Taken { clip: PathBuf, frames: usize, saved: Result<PathBuf, String> },
}

/// The demo camera's clip: int8's calibration frames unless the user took
/// their own (`smart-cctv model quantize --clip`).
pub const DEMO_CLIP: &str = "config/demo/people_walking.mp4";

/// Frames a calibration takes from its clip, spread over it.
pub const CALIBRATION_FRAMES: usize = 32;

/// `detector` in int8: by the calibration beside `weights` when one fits,
/// else calibrated now on `clip` (saved beside the weights when it can be:
/// the next load reads it). A calibration file that does not fit (another
/// model's, damaged) is replaced, with a warning.
pub fn int8_detector(detector: &Detector, weights: &Path, clip: &Path) -> Result<(Detector, Calibrated), DetectError> {
    let path = calibration_path(weights);
    if path.is_file() {
        let fitting = Ranges::read(&path).and_then(|r| {
            if r.weights_sha256 != weights_sha256(weights)? {
                return Err(DetectError::Quantize(format!("calibration {}: of other weights", path.display())));
            }
            detector.in_int8(&r)
        });
        match fitting {
            Ok(d) => return Ok((d, Calibrated::Read(path))),
            Err(e) => tracing::warn!("{e}; calibrating again on {}", clip.display()),
        }
    }
    let ranges = calibrate_on_clip(detector, weights, clip)?;
    let int8 = detector.in_int8(&ranges)?;
    let saved = ranges.write(&path).map(|()| path).map_err(|e| e.to_string());
    Ok((int8, Calibrated::Taken { clip: clip.to_owned(), frames: ranges.frames, saved }))
}

/// The ranges of `detector`'s activations (loaded from `weights`) on
/// [`CALIBRATION_FRAMES`] frames spread over `clip`.
pub fn calibrate_on_clip(detector: &Detector, weights: &Path, clip: &Path) -> Result<Ranges, DetectError> {
    let frames = crate::camera::decode::clip_frames(clip, 0, CALIBRATION_FRAMES, detector.options.size as u32)
        .map_err(|e| DetectError::Quantize(e.to_string()))?;
    let mut ranges = detector.calibrate(&frames)?;
    ranges.clip = clip.display().to_string();
    ranges.weights_sha256 = weights_sha256(weights)?;
    Ok(ranges)
}

fn weights_sha256(weights: &Path) -> Result<String, DetectError> {
    super::weights::sha256_file(weights)
        .map_err(|e| DetectError::Weights { path: weights.display().to_string(), reason: e.to_string() })
}

thread_local! {
    /// While calibrating on this thread: output ranges by convolution address.
    static SEEN: std::cell::RefCell<Option<HashMap<usize, (f32, f32)>>> = const { std::cell::RefCell::new(None) };
}

/// Records `out` as an output of `conv`, when calibrating on this thread.
pub(super) fn observe(conv: &BlockedConv, out: &[f32]) {
    SEEN.with(|seen| {
        if let Some(seen) = seen.borrow_mut().as_mut() {
            let (lo, hi) = out.iter().fold((f32::MAX, f32::MIN), |(l, h), v| (l.min(*v), h.max(*v)));
            let range = seen.entry(conv as *const BlockedConv as usize).or_insert((lo, hi));
            *range = (range.0.min(lo), range.1.max(hi));
        }
    });
}

/// The ranges of `net`'s activations over `frames` (each NCHW `[3, h, w]` in `[0, 1]`).
pub(super) fn calibrate<'a>(net: &BlockedNet, frames: impl IntoIterator<Item = (&'a [f32], usize, usize)>) -> Ranges {
    SEEN.with(|seen| *seen.borrow_mut() = Some(HashMap::new()));
    let mut count = 0;
    for (image, h, w) in frames {
        drop(net.forward(image, h, w));
        count += 1;
    }
    let seen = SEEN.with(|seen| seen.borrow_mut().take()).unwrap_or_default();
    let ranges = net
        .convs()
        .iter()
        .map(|c| seen.get(&(*c as *const BlockedConv as usize)).copied().unwrap_or((0.0, 0.0)))
        .collect();
    Ranges { clip: String::new(), weights_sha256: String::new(), size: 0, frames: count, ranges }
}

/// Why a calibration does not fit a network.
#[derive(Debug, thiserror::Error)]
pub enum QuantizeError {
    #[error("the calibration holds {got} layer ranges, the model has {want} layers")]
    LayerCount { got: usize, want: usize },
    #[error("the calibration has no frames")]
    NoFrames,
    #[error("a layer of {c_in} -> {c_out} channels: int8 takes multiples of 16")]
    Channels { c_in: usize, c_out: usize },
}

pub(super) struct QuantC2f {
    cv1: QuantConv,
    cv2: QuantConv,
    bottlenecks: Vec<(QuantConv, QuantConv)>,
}

pub(super) struct QuantSppf {
    cv1: QuantConv,
    cv2: QuantConv,
    k: usize,
}

pub(super) struct QuantBranch {
    c1: QuantConv,
    /// Stores f32, for `out`.
    c2: QuantConv,
    out: BlockedConv,
}

pub struct QuantNet {
    stem0: BlockedConv,
    stem0_out: QParams,
    stem1: QuantConv,
    b2: (QuantC2f, QuantConv, QuantC2f),
    b3: (QuantConv, QuantC2f),
    b4: (QuantConv, QuantC2f),
    sppf: QuantSppf,
    n1: QuantC2f,
    n2: QuantC2f,
    n3: QuantConv,
    n4: QuantC2f,
    n5: QuantConv,
    n6: QuantC2f,
    boxes: Vec<QuantBranch>,
    scores: Vec<QuantBranch>,
    pools: std::sync::Mutex<Vec<Pool>>,
}

/// An activation's quantization, per block.
type Blocks = Vec<QParams>;

/// The build's walk: each convolution's output quantization from its range.
struct Builder {
    by_conv: HashMap<usize, QParams>,
}

impl Builder {
    fn out(&self, conv: &BlockedConv) -> QParams {
        self.by_conv[&(conv as *const BlockedConv as usize)]
    }

    /// `conv` on `input`, storing bytes: the layer and its output's blocks.
    fn conv(&self, conv: &BlockedConv, input: &[QParams]) -> (QuantConv, Blocks) {
        let q = self.out(conv);
        (QuantConv::new(conv, input, Some(q), None), vec![q; conv.c_out / B])
    }

    fn c2f(&self, f: &C2fB, input: &[QParams]) -> (QuantC2f, Blocks) {
        let (cv1, mut joined) = self.conv(&f.cv1, input);
        let chunk = f.cv1.c_out / 2 / B;
        let mut bottlenecks = Vec::new();
        for (i, b) in f.bottlenecks.iter().enumerate() {
            let last = joined[(1 + i) * chunk..(2 + i) * chunk].to_vec();
            let (cv1, inner) = self.conv(&b.cv1, &last);
            let q = self.out(&b.cv2);
            let cv2 = QuantConv::new(&b.cv2, &inner, Some(q), b.residual.then(|| last[0]));
            joined.extend(std::iter::repeat_n(q, chunk));
            bottlenecks.push((cv1, cv2));
        }
        let (cv2, out) = self.conv(&f.cv2, &joined);
        (QuantC2f { cv1, cv2, bottlenecks }, out)
    }

    fn sppf(&self, s: &SppfB, input: &[QParams]) -> (QuantSppf, Blocks) {
        let (cv1, pooled) = self.conv(&s.cv1, input);
        // Max-pooling keeps the bytes' meaning: four parts alike.
        let joined = pooled.repeat(4);
        let (cv2, out) = self.conv(&s.cv2, &joined);
        (QuantSppf { cv1, cv2, k: s.k }, out)
    }

    fn branch(&self, b: &BranchB, input: &[QParams]) -> QuantBranch {
        let (c1, hidden) = self.conv(&b.c1, input);
        QuantBranch { c1, c2: QuantConv::new(&b.c2, &hidden, None, None), out: b.out.clone() }
    }
}

impl QuantNet {
    /// `net` in int8, its activations quantized by `ranges`.
    pub(super) fn build(net: &BlockedNet, ranges: &Ranges) -> Result<Self, QuantizeError> {
        let convs = net.convs();
        if ranges.frames == 0 {
            return Err(QuantizeError::NoFrames);
        }
        if ranges.ranges.len() != convs.len() {
            return Err(QuantizeError::LayerCount { got: ranges.ranges.len(), want: convs.len() });
        }
        // Every layer after the first reads and writes whole blocks (all
        // YOLOv8 sizes do); a model that does not stays in f32.
        if let Some(c) = convs.iter().skip(1).find(|c| c.c_in % B != 0 || c.c_out % B != 0) {
            return Err(QuantizeError::Channels { c_in: c.c_in, c_out: c.c_out });
        }
        let by_conv = convs
            .iter()
            .zip(&ranges.ranges)
            .map(|(c, (lo, hi))| (*c as *const BlockedConv as usize, QParams::covering(*lo, *hi)))
            .collect();
        let b = Builder { by_conv };
        let stem0_out = b.out(&net.stem[0]);
        let (stem1, x) = b.conv(&net.stem[1], &vec![stem0_out; net.stem[0].c_out / B]);
        let (b2_0, x) = b.c2f(&net.b2.0, &x);
        let (b2_1, x) = b.conv(&net.b2.1, &x);
        let (b2_2, p3) = b.c2f(&net.b2.2, &x);
        let (b3_0, x) = b.conv(&net.b3.0, &p3);
        let (b3_1, p4) = b.c2f(&net.b3.1, &x);
        let (b4_0, x) = b.conv(&net.b4.0, &p4);
        let (b4_1, x) = b.c2f(&net.b4.1, &x);
        let (sppf, p5) = b.sppf(&net.sppf, &x);
        let (n1, top) = b.c2f(&net.n1, &[p5.clone(), p4].concat());
        let (n2, h1) = b.c2f(&net.n2, &[top.clone(), p3].concat());
        let (n3, x) = b.conv(&net.n3, &h1);
        let (n4, h2) = b.c2f(&net.n4, &[x, top].concat());
        let (n5, x) = b.conv(&net.n5, &h2);
        let (n6, h3) = b.c2f(&net.n6, &[x, p5].concat());
        let heads = [h1, h2, h3];
        Ok(Self {
            stem0: net.stem[0].clone(),
            stem0_out,
            stem1,
            b2: (b2_0, b2_1, b2_2),
            b3: (b3_0, b3_1),
            b4: (b4_0, b4_1),
            sppf,
            n1,
            n2,
            n3,
            n4,
            n5,
            n6,
            boxes: net.boxes.iter().zip(&heads).map(|(br, x)| b.branch(br, x)).collect(),
            scores: net.scores.iter().zip(&heads).map(|(br, x)| b.branch(br, x)).collect(),
            pools: std::sync::Mutex::new(Vec::new()),
        })
    }
}

/// A layer's name in the profile, as `bench --layers` prints it.
fn label(conv: &QuantConv, h: usize, w: usize) -> String {
    let (k, s, ci, co) = (conv.k, conv.stride, conv.c_in, conv.c_out);
    let flops = conv.flops(h, w);
    format!("int8 conv {k}x{k} s{s} {ci:>3}->{co:<3} @{h}x{w} [{:.1} MFLOP]", flops / 1e6)
}

fn run(conv: &QuantConv, input: &[u8], h: usize, w: usize, out: &mut [u8], residual: Option<&[u8]>) {
    time(|| label(conv, h, w), || conv.forward(input, h, w, out, residual));
}

fn apply(conv: &QuantConv, x: &QBlocked) -> QBlocked {
    let (oh, ow) = conv.out_size(x.h, x.w);
    let mut out = QBlocked::for_overwrite(conv.c_out, oh, ow);
    run(conv, &x.data, x.h, x.w, &mut out.data, None);
    out
}

impl QuantC2f {
    fn forward(&self, x: &QBlocked) -> QBlocked {
        let hidden = self.cv1.c_out / 2;
        let (h, w) = (x.h, x.w);
        let n = self.bottlenecks.len();
        let chunk = hidden * h * w;
        let mut joined = QBlocked::for_overwrite((2 + n) * hidden, h, w);
        run(&self.cv1, &x.data, h, w, &mut joined.data[..2 * chunk], None);
        let mut inner = QBlocked::for_overwrite(hidden, h, w);
        for (i, (cv1, cv2)) in self.bottlenecks.iter().enumerate() {
            let (done, rest) = joined.data.split_at_mut((2 + i) * chunk);
            let last = &done[(1 + i) * chunk..];
            run(cv1, last, h, w, &mut inner.data, None);
            run(cv2, &inner.data, h, w, &mut rest[..chunk], cv2.residual.is_some().then_some(last));
        }
        apply(&self.cv2, &joined)
    }
}

impl QuantSppf {
    fn forward(&self, x: &QBlocked) -> QBlocked {
        let hidden = self.cv1.c_out;
        let (h, w) = (x.h, x.w);
        let chunk = hidden * h * w;
        let mut joined = QBlocked::for_overwrite(4 * hidden, h, w);
        run(&self.cv1, &x.data, h, w, &mut joined.data[..chunk], None);
        time(
            || "int8 SPPF pools".into(),
            || {
                for i in 0..3 {
                    let (done, rest) = joined.data.split_at_mut((i + 1) * chunk);
                    max_pool_bytes(&done[i * chunk..], hidden / B, h, w, self.k, &mut rest[..chunk]);
                }
            },
        );
        apply(&self.cv2, &joined)
    }
}

/// `[up(a), b]` along channels.
fn up_and_join(a: &QBlocked, b: &QBlocked) -> QBlocked {
    time(
        || "int8 upsample and join".into(),
        || {
            let mut joined = QBlocked::for_overwrite((a.blocks + b.blocks) * B, b.h, b.w);
            let split = a.blocks * b.plane_len();
            upsample2_bytes(&a.data, a.blocks, a.h, a.w, &mut joined.data[..split]);
            joined.data[split..].copy_from_slice(&b.data);
            joined
        },
    )
}

fn join(a: &QBlocked, b: &QBlocked) -> QBlocked {
    time(
        || "int8 join".into(),
        || {
            let mut joined = QBlocked::for_overwrite((a.blocks + b.blocks) * B, a.h, a.w);
            joined.data[..a.data.len()].copy_from_slice(&a.data);
            joined.data[a.data.len()..].copy_from_slice(&b.data);
            joined
        },
    )
}

impl QuantNet {
    /// As [`BlockedNet::forward`]: one NCHW image to the head's raw outputs per scale.
    /// As [`BlockedNet::forward_then`].
    pub fn forward_then<R>(&self, image: &[f32], h: usize, w: usize, then: impl FnOnce(&[Blocked]) -> R) -> R {
        let _pool = LentPool::lend(&self.pools);
        then(&self.forward_in_pool(image, h, w))
    }

    fn forward_in_pool(&self, image: &[f32], h: usize, w: usize) -> Vec<Blocked> {
        let stem = &self.stem0;
        let (sh, sw) = stem.out_size(h, w);
        let mut first = Blocked::for_overwrite(stem.c_out, sh, sw);
        time(
            || format!("{} from NCHW [{:.1} MFLOP]", super::blocked::label(stem, h, w), stem.flops(h, w) / 1e6),
            || stem.forward_nchw(image, h, w, &mut first.data),
        );
        let x = time(|| "int8 quantize the first layer".into(), || QBlocked::quantized(&first, &[self.stem0_out]));
        drop(first);
        let x = apply(&self.stem1, &x);
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
                let split = bx.out.c_out / B * out.plane_len();
                for (branch, dst) in [(bx, 0..split), (sc, split..out.data.len())] {
                    let c1 = apply(&branch.c1, x);
                    let mut hidden = Blocked::for_overwrite(branch.c2.c_out, x.h, x.w);
                    time(
                        || label(&branch.c2, x.h, x.w),
                        || branch.c2.forward_f32(&c1.data, x.h, x.w, &mut hidden.data),
                    );
                    super::blocked::run(&branch.out, &hidden.data, x.h, x.w, &mut out.data[dst], None);
                }
                out
            })
            .collect()
    }
}
