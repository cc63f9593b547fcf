//! The CPU fast path for YOLOv8's convolutions: convolution, bias and SiLU
//! as one GEMM over the input unfolded into columns, with the bias as the
//! GEMM's starting value and SiLU applied in the same pass that finishes
//! each output row.
//!
//! Why: candle 0.11's `conv2d` on the CPU copies its input into a generic
//! im2col layout and then runs a batched matmul per output tile, which for
//! YOLO's many small-channel layers runs at a few GFLOP/s; its SiLU is a
//! separate pass over every activation. Here a 1×1 convolution is a plain
//! GEMM on the input as it lies (no copy at all), a 3×3 one unfolds rows
//! with straight slice copies (stride 1) or a strided gather (stride 2), and
//! the GEMM is `gemm`'s, which candle's own matmul uses.
//!
//! The reference is candle's `conv2d` + `silu` (kept in smart-cctv's model);
//! tests check the two agree on every kind of layer of the real model.

pub mod nchwc;

use candle_core::{Device, Result, Storage, Tensor};
use rayon::prelude::*;
use std::sync::atomic::{AtomicBool, Ordering};

static ENABLED: AtomicBool = AtomicBool::new(true);

/// Nanoseconds spent unfolding, in the GEMM and in the bias/SiLU pass, since
/// the last [`take_stage_times`]; three clock reads per convolution.
static STAGE_NANOS: [std::sync::atomic::AtomicU64; 3] =
    [std::sync::atomic::AtomicU64::new(0), std::sync::atomic::AtomicU64::new(0), std::sync::atomic::AtomicU64::new(0)];

/// (unfold, GEMM, bias + SiLU) time since the last call.
pub fn take_stage_times() -> [std::time::Duration; 3] {
    STAGE_NANOS.each_ref().map(|n| std::time::Duration::from_nanos(n.swap(0, Ordering::Relaxed)))
}

fn add_stage(stage: usize, since: std::time::Instant) {
    STAGE_NANOS[stage].fetch_add(since.elapsed().as_nanos() as u64, Ordering::Relaxed);
}

/// Switches between the fast path (default) and candle's reference path, for
/// tests and benchmarks that compare the two.
pub fn set_enabled(on: bool) {
    ENABLED.store(on, Ordering::Relaxed);
}

pub fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

/// One convolution with its bias and SiLU, ready to run.
#[derive(Debug, Clone)]
pub struct FusedConv {
    /// `c_out × (c_in·k·k)`, row-major: the GEMM's left side.
    weight: Vec<f32>,
    bias: Vec<f32>,
    c_in: usize,
    c_out: usize,
    k: usize,
    stride: usize,
    pad: usize,
    /// SiLU after the bias (false: a plain convolution, as in the head's last layers).
    silu: bool,
}

impl FusedConv {
    /// The same convolution without the SiLU.
    pub fn without_silu(self) -> Self {
        Self { silu: false, ..self }
    }

    /// From candle's `[c_out, c_in, k, k]` weight and `[c_out]` bias.
    pub fn new(weight: &Tensor, bias: &Tensor, stride: usize, pad: usize) -> Result<Self> {
        let (c_out, c_in, k, k2) = weight.dims4()?;
        if k != k2 {
            candle_core::bail!("fast conv: square kernels only, got {k}x{k2}");
        }
        Ok(Self {
            weight: weight.flatten_all()?.to_vec1::<f32>()?,
            bias: bias.to_vec1::<f32>()?,
            c_in,
            c_out,
            k,
            stride,
            pad,
            silu: true,
        })
    }

    /// `silu(conv(x) + bias)` for an NCHW f32 tensor on the CPU.
    pub fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        let (n, c_in, h, w) = xs.dims4()?;
        if c_in != self.c_in {
            candle_core::bail!("fast conv: {c_in} input channels, expected {}", self.c_in);
        }
        let oh = (h + 2 * self.pad - self.k) / self.stride + 1;
        let ow = (w + 2 * self.pad - self.k) / self.stride + 1;
        let xs = xs.contiguous()?;
        let (storage, layout) = xs.storage_and_layout();
        let Storage::Cpu(cpu) = &*storage else {
            candle_core::bail!("fast conv: CPU tensors only");
        };
        let input = &cpu.as_slice::<f32>()?[layout.start_offset()..];
        let plane = c_in * h * w;
        let mut out = vec![0f32; n * self.c_out * oh * ow];
        for (image, dst) in input.chunks_exact(plane).take(n).zip(out.chunks_exact_mut(self.c_out * oh * ow)) {
            self.forward_image(image, h, w, oh, ow, dst);
        }
        drop(storage);
        Tensor::from_vec(out, (n, self.c_out, oh, ow), &Device::Cpu)
    }

    /// One image, in tiles of output pixels: each tile's unfolded input
    /// stays in cache between the unfold and the GEMM, its bias and SiLU are
    /// applied while its output is still in cache, and threads share out the
    /// tiles (or split the GEMM itself when there are too few tiles).
    fn forward_image(&self, image: &[f32], h: usize, w: usize, oh: usize, ow: usize, dst: &mut [f32]) {
        let pixels = oh * ow;
        let depth = self.c_in * self.k * self.k;
        let direct = self.k == 1 && self.stride == 1 && self.pad == 0;
        // About 256 KB of unfolded input per tile.
        let tile = if direct { pixels.clamp(1, 4096) } else { (65_536 / depth).clamp(64, 4096) };
        let tiles = pixels.div_ceil(tile);
        // The pool this call runs in (a test's or the service's), not the
        // machine's core count.
        let threads = rayon::current_num_threads();
        let gemm_threads = if tiles < threads { threads } else { 1 };
        let out = OutPtr(dst.as_mut_ptr());
        assert!(dst.len() == self.c_out * pixels && image.len() >= self.c_in * h * w);
        let run = |t: usize| {
            let (p0, p1) = (t * tile, ((t + 1) * tile).min(pixels));
            let width = p1 - p0;
            // The buffer is taken out of the thread-local for the tile, not
            // borrowed: a rayon worker waiting inside the GEMM below may run
            // another tile on this same thread, which then finds an empty
            // buffer instead of a borrowed one.
            let mut columns = COLUMNS.with(|cell| cell.take());
            {
                let (rhs, rhs_rs) = if direct {
                    (image[p0..].as_ptr(), pixels as isize)
                } else {
                    let started = std::time::Instant::now();
                    columns.resize(depth * width, 0.0);
                    self.unfold_tile(image, h, w, ow, p0, p1, &mut columns);
                    add_stage(0, started);
                    (columns.as_ptr(), width as isize)
                };
                let started = std::time::Instant::now();
                // SAFETY: tiles cover disjoint column ranges [p0, p1) of the
                // c_out × pixels output, so no two tasks write the same
                // element; every row slice lies inside `dst` (asserted above).
                let row = |c: usize| unsafe { std::slice::from_raw_parts_mut(out.get().add(c * pixels + p0), width) };
                for (c, b) in self.bias.iter().enumerate() {
                    row(c).fill(*b);
                }
                let parallelism =
                    if gemm_threads > 1 { gemm::Parallelism::Rayon(gemm_threads) } else { gemm::Parallelism::None };
                // SAFETY: dst is the tile (c_out × width, row stride `pixels`)
                // inside the output, lhs the c_out × depth weights, rhs the
                // depth × width columns (row stride `rhs_rs`), all in bounds:
                // the unfolded buffer holds depth × width values, and a direct
                // input depth rows of `pixels` from p0 on.
                unsafe {
                    gemm::gemm(
                        self.c_out,
                        width,
                        depth,
                        out.get().add(p0),
                        1,
                        pixels as isize,
                        true,
                        self.weight.as_ptr(),
                        1,
                        depth as isize,
                        rhs,
                        1,
                        rhs_rs,
                        1.0,
                        1.0,
                        false,
                        false,
                        false,
                        parallelism,
                    );
                }
                add_stage(1, started);
                if self.silu {
                    let started = std::time::Instant::now();
                    for c in 0..self.c_out {
                        silu_in_place(row(c));
                    }
                    add_stage(2, started);
                }
            }
            // Keep the larger buffer for the next tile on this thread.
            COLUMNS.with(|cell| {
                if cell.borrow().capacity() < columns.capacity() {
                    *cell.borrow_mut() = columns;
                }
            });
        };
        if tiles > 1 && threads > 1 {
            (0..tiles).into_par_iter().for_each(run);
        } else {
            (0..tiles).for_each(run);
        }
    }

    /// im2col for output pixels `p0..p1`: row `(c·k + ky)·k + kx` of `out`
    /// holds, for each of those pixels, the input value that kernel tap sees
    /// (zero outside the image).
    #[allow(clippy::too_many_arguments)]
    fn unfold_tile(&self, image: &[f32], h: usize, w: usize, ow: usize, p0: usize, p1: usize, out: &mut [f32]) {
        let (k, stride, pad) = (self.k, self.stride, self.pad);
        let width = p1 - p0;
        for (row, out) in out.chunks_exact_mut(width).enumerate() {
            let (c, tap) = (row / (k * k), row % (k * k));
            let (ky, kx) = (tap / k, tap % k);
            let channel = &image[c * h * w..(c + 1) * h * w];
            // Output columns whose input column ox·stride + kx - pad is inside.
            let first = pad.saturating_sub(kx).div_ceil(stride);
            let last = (w + pad - kx).div_ceil(stride).min(ow);
            let mut p = p0;
            while p < p1 {
                let (oy, ox0) = (p / ow, p % ow);
                let ox1 = ow.min(ox0 + (p1 - p));
                let line = &mut out[p - p0..p - p0 + (ox1 - ox0)];
                p += ox1 - ox0;
                let iy = (oy * stride + ky) as isize - pad as isize;
                if iy < 0 || iy >= h as isize {
                    line.fill(0.0);
                    continue;
                }
                let src = &channel[iy as usize * w..(iy as usize + 1) * w];
                let (a, b) = (first.clamp(ox0, ox1), last.clamp(ox0, ox1).max(first.clamp(ox0, ox1)));
                line[..a - ox0].fill(0.0);
                if stride == 1 {
                    let start = a + kx - pad;
                    line[a - ox0..b - ox0].copy_from_slice(&src[start..start + (b - a)]);
                } else {
                    for (i, v) in line[a - ox0..b - ox0].iter_mut().enumerate() {
                        *v = src[(a + i) * stride + kx - pad];
                    }
                }
                line[b - ox0..].fill(0.0);
            }
        }
    }
}

thread_local! {
    /// Each thread's unfolded-input buffer, reused across layers and frames.
    static COLUMNS: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// The output buffer, shared by the tasks that fill disjoint tiles of it.
#[derive(Clone, Copy)]
struct OutPtr(*mut f32);

// SAFETY: tasks only write disjoint tiles through it (see `forward_image`),
// and the buffer outlives them: the parallel loop returns before it is used.
unsafe impl Send for OutPtr {}
unsafe impl Sync for OutPtr {}

impl OutPtr {
    fn get(self) -> *mut f32 {
        self.0
    }
}

/// YOLOv8's head decoding for one image and one scale: `raw` is the head's
/// `[4·bins + classes, anchors]` output at that scale; for each anchor the
/// distribution of each box side over `bins` is softmaxed and its
/// expectation taken with the DFL weights (`dfl`, one per bin), the
/// distances become a centre-size box around the anchor (`anchor_xy`:
/// `[2, anchors]`, in grid cells) scaled by `stride`, and the class logits
/// go through a sigmoid. Writes columns `column..column + anchors` of `out`,
/// which is `[4 + classes, total]` row-major, as the reference path lays it out.
#[allow(clippy::too_many_arguments)]
pub fn decode_head(
    raw: &[f32],
    anchors: usize,
    bins: usize,
    dfl: &[f32],
    anchor_xy: &[f32],
    stride: f32,
    out: &mut [f32],
    total: usize,
    column: usize,
) {
    let classes = raw.len() / anchors - 4 * bins;
    assert!(raw.len() == (4 * bins + classes) * anchors && out.len() == (4 + classes) * total && dfl.len() == bins);
    // Anchor-inner loops over whole rows, so that they vectorise; the four
    // sides, and then the class rows, are independent, and run in parallel.
    let parallel = rayon::current_num_threads() > 1;
    let mut distance = vec![0f32; 4 * anchors];
    let side_distances = |(side, distance): (usize, &mut [f32])| {
        let row = |bin: usize| &raw[(side * bins + bin) * anchors..(side * bins + bin + 1) * anchors];
        let mut max = vec![f32::NEG_INFINITY; anchors];
        for bin in 0..bins {
            for (m, v) in max.iter_mut().zip(row(bin)) {
                *m = m.max(*v);
            }
        }
        let (mut sum, mut weighted) = (vec![0f32; anchors], vec![0f32; anchors]);
        for (bin, w) in dfl.iter().enumerate() {
            for (((s, wt), v), m) in sum.iter_mut().zip(weighted.iter_mut()).zip(row(bin)).zip(&max) {
                let e = exp(v - m);
                *s += e;
                *wt += e * w;
            }
        }
        for ((d, wt), s) in distance.iter_mut().zip(&weighted).zip(&sum) {
            *d = wt / s;
        }
    };
    // On one thread, here (see `nchwc::for_each_task`).
    if parallel {
        distance.par_chunks_mut(anchors).enumerate().for_each(side_distances);
    } else {
        distance.chunks_mut(anchors).enumerate().for_each(side_distances);
    }
    let out_row = |r: usize| r * total + column;
    for a in 0..anchors {
        let (x, y) = (anchor_xy[a], anchor_xy[anchors + a]);
        let (x0, y0) = (x - distance[a], y - distance[anchors + a]);
        let (x1, y1) = (x + distance[2 * anchors + a], y + distance[3 * anchors + a]);
        out[out_row(0) + a] = (x0 + x1) * 0.5 * stride;
        out[out_row(1) + a] = (y0 + y1) * 0.5 * stride;
        out[out_row(2) + a] = (x1 - x0) * stride;
        out[out_row(3) + a] = (y1 - y0) * stride;
    }
    let class_scores = |(c, row): (usize, &mut [f32])| {
        let scores = &mut row[column..column + anchors];
        scores.copy_from_slice(&raw[(4 * bins + c) * anchors..(4 * bins + c + 1) * anchors]);
        sigmoid_in_place(scores);
    };
    if parallel {
        out.par_chunks_mut(total).skip(4).take(classes).enumerate().for_each(class_scores);
    } else {
        out.chunks_mut(total).skip(4).take(classes).enumerate().for_each(class_scores);
    }
}

fn sigmoid_in_place(values: &mut [f32]) {
    map_in_place(values, |v| 1.0 / (1.0 + exp(-v)));
}

fn silu_in_place(values: &mut [f32]) {
    map_in_place(values, |v| v / (1.0 + exp(-v)));
}

/// `v = f(v)` over a slice, compiled for AVX2 and FMA where the CPU has them
/// (checked at run time), else the same code on the baseline. `f` must be
/// branch-free for the loop to vectorise.
#[inline(always)]
fn map_in_place(values: &mut [f32], f: impl Fn(f32) -> f32 + Copy) {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
            // SAFETY: the CPU supports the features the function is compiled for.
            unsafe { map_avx2(values, f) };
            return;
        }
    }
    map_portable(values, f);
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn map_avx2(values: &mut [f32], f: impl Fn(f32) -> f32 + Copy) {
    map_portable(values, f);
}

#[inline(always)]
fn map_portable(values: &mut [f32], f: impl Fn(f32) -> f32 + Copy) {
    for v in values {
        *v = f(*v);
    }
}

/// `e^x` to under 1e-6 relative error, branch-free: `2^n · e^r` with `n` the
/// nearest integer to `x·log2(e)`, `r = x - n·ln 2` (|r| ≤ 0.35) and `e^r` a
/// degree-6 Taylor polynomial. Saturates to 0 below -87 and to ~1.7e38 above 88,
/// which is all SiLU needs (it only forms `1 + e^-x`).
#[inline(always)]
fn exp(x: f32) -> f32 {
    const ROUND: f32 = 12_582_912.0; // 1.5 · 2^23: adding it rounds to an integer
    let x = x.clamp(-87.0, 88.0);
    // Cody-Waite: ln 2 in two parts, so that x - n·ln 2 stays exact.
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    let n = (x * std::f32::consts::LOG2_E + ROUND) - ROUND;
    let r = (x - n * LN2_HI) - n * LN2_LO;
    let p = 1.0 + r * (1.0 + r * (0.5 + r * (1.0 / 6.0 + r * (1.0 / 24.0 + r * (1.0 / 120.0 + r * (1.0 / 720.0))))));
    // 2^n from the bits of n + 127 + 1.5·2^23, whose low mantissa bits
    // then hold the integer n + 127: a float-to-int conversion (saturating
    // in Rust) would keep the lane loops that call this from vectorising.
    let scale = f32::from_bits((n + (ROUND + 127.0)).to_bits() << 23);
    p * scale
}

/// Values in [-1, 1] from a xorshift seeded with `seed`, for tests.
#[cfg(test)]
pub(crate) fn random_values(n: usize, seed: u64) -> Vec<f32> {
    let mut state = seed | 1;
    (0..n)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state % 2001) as f32 / 1000.0 - 1.0
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_nn::{Conv2d, Conv2dConfig, Module};

    #[test]
    fn the_fast_exp_is_close_and_silu_matches_the_plain_formula() {
        let mut worst: f32 = 0.0;
        for i in -87_000..=88_000 {
            let x = i as f32 / 1000.0;
            let (got, want) = (exp(x), (x as f64).exp() as f32);
            worst = worst.max(((got - want) / want).abs());
        }
        assert!(worst < 1e-6, "worst relative error {worst}");
        assert_eq!(exp(-200.0).min(1e-37), exp(-200.0));
        let mut values: Vec<f32> = (-2000..2000).map(|i| i as f32 / 50.0).collect();
        let want: Vec<f32> = values.iter().map(|v| v / (1.0 + (-v).exp())).collect();
        silu_in_place(&mut values);
        for (g, w) in values.iter().zip(&want) {
            assert!((g - w).abs() <= 1e-5 * w.abs().max(1.0), "{g} vs {w}");
        }
    }

    fn random(shape: &[usize], seed: u64) -> Tensor {
        let values = random_values(shape.iter().product(), seed);
        Tensor::from_vec(values, shape, &Device::Cpu).unwrap()
    }

    #[test]
    fn agrees_with_candle_conv_and_silu_on_every_kind_of_layer() {
        // (c_in, c_out, k, stride, h, w): YOLOv8's kinds, odd sizes included.
        for (i, &(c_in, c_out, k, stride, h, w)) in [
            (3, 16, 3, 2, 64, 48),
            (16, 16, 3, 1, 20, 20),
            (32, 64, 3, 2, 21, 17),
            (48, 32, 1, 1, 10, 12),
            (8, 8, 3, 1, 1, 1),
            (64, 80, 3, 1, 5, 9),
        ]
        .iter()
        .enumerate()
        {
            let x = random(&[2, c_in, h, w], 11 + i as u64);
            let weight = (random(&[c_out, c_in, k, k], 7 + i as u64) * 0.2).unwrap();
            let bias = random(&[c_out], 3 + i as u64);
            let config = Conv2dConfig { padding: k / 2, stride, groups: 1, dilation: 1, cudnn_fwd_algo: None };
            let reference = Conv2d::new(weight.clone(), Some(bias.clone()), config);
            let want = candle_nn::ops::silu(&reference.forward(&x).unwrap()).unwrap();
            let fused = FusedConv::new(&weight, &bias, stride, k / 2).unwrap();
            let got = fused.clone().forward(&x).unwrap();
            assert_eq!(got.dims(), want.dims(), "shape {i}");
            let diff = (got - want).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
            assert!(diff <= 1e-4, "layer kind {i}: max |diff| {diff}");
            let plain = fused.without_silu().forward(&x).unwrap();
            let diff = (plain - reference.forward(&x).unwrap()).unwrap().abs().unwrap().max_all().unwrap();
            assert!(diff.to_scalar::<f32>().unwrap() <= 1e-4, "layer kind {i} without SiLU");
        }
    }

    /// Layers of several tiles but fewer tiles than threads, on an 8-thread
    /// pool: the tiles run in parallel and each GEMM is split across threads
    /// too, so a worker waiting in one GEMM runs other tiles on its own
    /// thread. Several calls at once, as several inference workers make.
    #[test]
    fn several_tiles_on_an_eight_thread_pool_agree_with_candle() {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(8).build().unwrap();
        // (c_in, c_out, k, stride, h, w): 2 to 6 tiles of unfolded input each.
        let shapes: [(usize, usize, usize, usize, usize, usize); 4] =
            [(64, 64, 3, 1, 20, 20), (32, 32, 3, 1, 24, 24), (128, 64, 3, 2, 40, 40), (16, 32, 3, 1, 32, 32)];
        pool.install(|| {
            shapes.par_iter().enumerate().for_each(|(i, &(c_in, c_out, k, stride, h, w))| {
                let depth = c_in * k * k;
                let (oh, ow) = ((h + 2 * (k / 2) - k) / stride + 1, (w + 2 * (k / 2) - k) / stride + 1);
                let tiles = (oh * ow).div_ceil((65_536 / depth).clamp(64, 4096));
                assert!((2..8).contains(&tiles), "shape {i} has {tiles} tiles");
                let x = random(&[1, c_in, h, w], 21 + i as u64);
                let weight = (random(&[c_out, c_in, k, k], 17 + i as u64) * 0.1).unwrap();
                let bias = random(&[c_out], 5 + i as u64);
                let config = Conv2dConfig { padding: k / 2, stride, groups: 1, dilation: 1, cudnn_fwd_algo: None };
                let reference = Conv2d::new(weight.clone(), Some(bias.clone()), config);
                let want = candle_nn::ops::silu(&reference.forward(&x).unwrap()).unwrap();
                let fused = FusedConv::new(&weight, &bias, stride, k / 2).unwrap();
                for _ in 0..3 {
                    let got = fused.forward(&x).unwrap();
                    let diff = (got - &want).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
                    assert!(diff <= 1e-3, "shape {i}: max |diff| {diff}");
                }
            });
        });
    }
}
