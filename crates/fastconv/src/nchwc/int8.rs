//! int8 convolutions on the blocked layout: activations one byte per value
//! (NCHWc16, `u8` with a scale and zero point per tensor), weights `i8` with
//! one scale per output channel, products summed exactly in `i32` by VNNI's
//! `vpdpbusd` (four byte pairs per lane per instruction: four times the
//! multiply-adds of an f32 FMA of the same width), then the epilogue in f32:
//! scale, bias, SiLU, residual, and the store requantized (or in f32, for
//! the layers that feed the head's last convolutions).
//!
//! Why the input's scales are folded into the weights: a concatenation's
//! parts come from different layers with different ranges. Each keeps its
//! own scale and zero point, and the consumer's weights for those channels
//! absorb them (`w · s_in`, then quantized per output channel), so a
//! concatenation stays a plain write into the next blocks and a split a
//! sub-slice, as in f32. The zero points' share of the sum is a constant per
//! output channel, folded into the bias; taps outside the input read the
//! zero point (border tiles run on a patch padded with it), so the fold is
//! exact everywhere.

use super::{B, Blocked, BlockedConv, block_group, for_each_task};

/// How one tensor's bytes map to values: `value = scale · (q − zero)`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct QParams {
    pub scale: f32,
    pub zero: u8,
}

impl QParams {
    /// The 256 steps spread over `[min, max]`, widened to hold 0 (so that
    /// zero padding is exact).
    pub fn covering(min: f32, max: f32) -> Self {
        let (lo, hi) = (min.min(0.0), max.max(0.0));
        let scale = ((hi - lo) / 255.0).max(1e-12);
        let zero = (-lo / scale).round().clamp(0.0, 255.0) as u8;
        Self { scale, zero }
    }

    pub fn quantize(&self, v: f32) -> u8 {
        (v / self.scale + f32::from(self.zero) + 0.5).clamp(0.0, 255.0) as u8
    }

    pub fn value(&self, q: u8) -> f32 {
        self.scale * (f32::from(q) - f32::from(self.zero))
    }
}

/// An activation in NCHWc16, one byte per value; its blocks' [`QParams`]
/// are known to the layers that read it, not kept here.
#[derive(Debug, PartialEq)]
pub struct QBlocked {
    pub blocks: usize,
    pub h: usize,
    pub w: usize,
    pub data: Vec<u8>,
}

impl Drop for QBlocked {
    fn drop(&mut self) {
        super::give_back(std::mem::take(&mut self.data));
    }
}

impl QBlocked {
    /// A buffer for an output that will be written whole (stale contents),
    /// from this thread's pool when it has one of the size.
    pub fn for_overwrite(channels: usize, h: usize, w: usize) -> Self {
        let blocks = channels.div_ceil(B);
        let len = blocks * h * w * B;
        Self { blocks, h, w, data: super::pooled(len).unwrap_or_else(|| vec![0; len]) }
    }

    pub fn plane_len(&self) -> usize {
        self.h * self.w * B
    }

    /// `x` quantized, block `b` by `params[b]` (the last entry for blocks
    /// past the end): rows in parallel, each vectorised.
    pub fn quantized(x: &Blocked, params: &[QParams]) -> Self {
        let mut out = Self::for_overwrite(x.blocks * B, x.h, x.w);
        let row = (x.w * B).max(1);
        let rows = x.blocks * x.h;
        super::for_each_chunk(&mut out.data, row, &x.data, row, rows, |i, dst, src| {
            let q = params[(i / x.h.max(1)).min(params.len() - 1)];
            #[cfg(target_arch = "x86_64")]
            if std::arch::is_x86_feature_detected!("avx512f") && dst.len().is_multiple_of(B) {
                // SAFETY: the CPU has AVX-512F; whole vectors of 16.
                return unsafe { avx512::quantize(src, dst, q) };
            }
            for (d, v) in dst.iter_mut().zip(src) {
                *d = q.quantize(*v);
            }
        });
        out
    }

    /// The values, block `b` read by `params[b]` (tests, calibration checks).
    pub fn values(&self, params: &[QParams]) -> Blocked {
        let mut out = Blocked::for_overwrite(self.blocks * B, self.h, self.w);
        let plane = self.plane_len();
        for (b, (dst, src)) in out.data.chunks_mut(plane).zip(self.data.chunks(plane)).enumerate() {
            let q = params[b.min(params.len() - 1)];
            for (d, v) in dst.iter_mut().zip(src) {
                *d = q.value(*v);
            }
        }
        out
    }
}

/// Whether this CPU runs the int8 kernels natively (AVX-512 with VNNI);
/// elsewhere they run on the portable loop, far slower than f32.
pub fn vnni() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx512f")
            && std::arch::is_x86_feature_detected!("avx512bw")
            && std::arch::is_x86_feature_detected!("avx512vnni")
    }
    #[cfg(not(target_arch = "x86_64"))]
    false
}

/// Bytes of one tap's weights for one (output block, input block) pair:
/// four groups of four input channels, each 16 output lanes × 4 bytes.
const TAP: usize = B * B;

/// An int8 convolution with bias and optional SiLU, from a [`BlockedConv`].
#[derive(Debug, Clone)]
pub struct QuantConv {
    /// `[out block][in block][ky][kx][group of 4 inputs][out lane][4]`.
    packed: Vec<i8>,
    /// Per output channel: the weights' scale (the input's folded in).
    scale: Vec<f32>,
    /// Per output channel: the bias less the zero points' share of the sum.
    bias: Vec<f32>,
    /// Per input block: the zero point, which border taps read.
    zeros: Vec<u8>,
    pub c_in: usize,
    pub c_out: usize,
    pub k: usize,
    pub stride: usize,
    pub pad: usize,
    pub silu: bool,
    /// The output's quantization; `None`: the output is stored in f32.
    pub out: Option<QParams>,
    /// The residual's, for a layer that adds one.
    pub residual: Option<QParams>,
}

impl QuantConv {
    /// `conv` on an input whose block `b` is quantized by `input[b]`.
    pub fn new(conv: &BlockedConv, input: &[QParams], out: Option<QParams>, residual: Option<QParams>) -> Self {
        let (c_in, c_out, k) = (conv.c_in, conv.c_out, conv.k);
        let (ib, ob) = (c_in.div_ceil(B), c_out.div_ceil(B));
        assert!(c_in.is_multiple_of(B) && c_out.is_multiple_of(B), "int8 layers take whole blocks");
        assert_eq!(input.len(), ib, "one input quantization per block");
        let taps = k * k;
        // The f32 weight of (co, ci, tap) from the direct packing, times
        // the input's scale.
        let weight = |co: usize, ci: usize, tap: usize| {
            conv.packed[(((co / B * ib + ci / B) * taps + tap) * B + ci % B) * B + co % B] * input[ci / B].scale
        };
        let mut packed = vec![0i8; ob * ib * taps * TAP];
        let mut scale = vec![0f32; ob * B];
        let mut bias = conv.bias.clone();
        for co in 0..c_out {
            let largest = (0..c_in)
                .flat_map(|ci| (0..taps).map(move |t| (ci, t)))
                .fold(0f32, |m, (ci, t)| m.max(weight(co, ci, t).abs()));
            let s = if largest > 0.0 { largest / 127.0 } else { 1.0 };
            scale[co] = s;
            let mut zero_share = 0i64;
            for ci in 0..c_in {
                for t in 0..taps {
                    let q = (weight(co, ci, t) / s).round().clamp(-127.0, 127.0) as i8;
                    let at = (((co / B * ib + ci / B) * taps + t) * 4 + ci % B / 4) * B * 4 + co % B * 4 + ci % 4;
                    packed[at] = q;
                    zero_share += i64::from(q) * i64::from(input[ci / B].zero);
                }
            }
            bias[co] -= s * zero_share as f32;
        }
        Self {
            packed,
            scale,
            bias,
            zeros: input.iter().map(|q| q.zero).collect(),
            c_in,
            c_out,
            k,
            stride: conv.stride,
            pad: conv.pad,
            silu: conv.silu,
            out,
            residual,
        }
    }

    pub fn out_size(&self, h: usize, w: usize) -> (usize, usize) {
        super::out_size(self.k, self.stride, self.pad, h, w)
    }

    /// Multiply-adds of one call on an `h × w` input, times 2.
    pub fn flops(&self, h: usize, w: usize) -> f64 {
        super::flops(self.out_size(h, w), self.c_in, self.c_out, self.k)
    }

    /// Writes the quantized output's blocks into `out` (which may be a slice
    /// of a larger buffer), from the input's first `c_in / 16` blocks
    /// (`h × w`); with `residual` (quantized by `self.residual`), adds it
    /// after the SiLU.
    pub fn forward(&self, input: &[u8], h: usize, w: usize, out: &mut [u8], residual: Option<&[u8]>) {
        assert!(self.out.is_some(), "a layer with a quantized output");
        assert_eq!(residual.is_some(), self.residual.is_some(), "a residual exactly where one was calibrated");
        self.run(input, h, w, Out::Bytes(out.as_mut_ptr()), out.len(), residual);
    }

    /// The same, the output stored in f32 (for a layer whose reader is in f32).
    pub fn forward_f32(&self, input: &[u8], h: usize, w: usize, out: &mut [f32]) {
        assert!(self.out.is_none() && self.residual.is_none(), "a layer with an f32 output");
        self.run(input, h, w, Out::Floats(out.as_mut_ptr()), out.len(), None);
    }

    fn run(&self, input: &[u8], h: usize, w: usize, out: Out, out_len: usize, residual: Option<&[u8]>) {
        let (ib, ob) = (self.c_in / B, self.c_out / B);
        assert!(input.len() >= ib * h * w * B, "input too short");
        let (oh, ow) = self.out_size(h, w);
        assert_eq!(out_len, ob * oh * ow * B, "output size");
        if let Some(r) = residual {
            assert_eq!(r.len(), out_len, "residual size");
        }
        let native = vnni() && super::kernel() == super::Kernel::Avx512 && !portable_forced();
        let per_group = if ib >= super::DEEP_INPUT_BLOCKS { super::DEEP_GROUP } else { 4 };
        let groups = ob.div_ceil(per_group);
        // A pointwise layer's plane is one run of pixels: cut into spans.
        let flat = self.k == 1 && self.stride == 1;
        let (rows_h, rows_w) = if flat { (1, h * w) } else { (oh, ow) };
        let (band, span) = if flat { (1, super::SPAN) } else { (super::band_rows(groups, oh, ow), ow) };
        let (bands, spans) = (rows_h.div_ceil(band), rows_w.div_ceil(span));
        let run = |task: usize| {
            let group = task / (bands * spans);
            let (row_band, span_at) = (task / spans % bands, task % spans);
            let (first, count) = block_group(ob, groups, group);
            for oy in row_band * band..((row_band + 1) * band).min(rows_h) {
                let rows = Row {
                    conv: self,
                    input,
                    h: if flat { 1 } else { h },
                    w: if flat { h * w } else { w },
                    oh: rows_h,
                    ow: rows_w,
                    oy,
                    first,
                    count,
                    out,
                    residual,
                    span: (span_at * span, ((span_at + 1) * span).min(rows_w)),
                };
                #[cfg(target_arch = "x86_64")]
                if native {
                    // SAFETY: `vnni()` found AVX-512F, BW and VNNI.
                    unsafe { avx512::row(&rows) };
                    continue;
                }
                let _ = native;
                portable_row(&rows);
            }
        };
        for_each_task(groups * bands * spans, run);
    }
}

/// Where a task stores: bytes (requantized) or floats.
#[derive(Clone, Copy)]
enum Out {
    Bytes(*mut u8),
    Floats(*mut f32),
}
// SAFETY: tasks write disjoint (block, row, span) ranges of the output,
// which outlives the parallel loop.
unsafe impl Send for Out {}
unsafe impl Sync for Out {}

/// One task's output row `oy`, pixels `span`, blocks `first..first + count`.
struct Row<'a> {
    conv: &'a QuantConv,
    input: &'a [u8],
    h: usize,
    w: usize,
    oh: usize,
    ow: usize,
    oy: usize,
    first: usize,
    count: usize,
    out: Out,
    residual: Option<&'a [u8]>,
    span: (usize, usize),
}

impl Row<'_> {
    /// Where output pixel `ox` of output block `b` is.
    fn at(&self, b: usize, ox: usize) -> usize {
        ((b * self.oh + self.oy) * self.ow + ox) * B
    }

    /// The epilogue of one output vector (16 lanes of block `b` at pixel
    /// `ox`) from its sums: scale, bias, SiLU, residual, store.
    fn finish(&self, b: usize, ox: usize, sums: &[i32; B]) {
        let c = self.conv;
        let at = self.at(b, ox);
        for (lane, sum) in sums.iter().enumerate() {
            let co = b * B + lane;
            let mut v = *sum as f32 * c.scale[co] + c.bias[co];
            if c.silu {
                v /= 1.0 + (-v).exp();
            }
            if let (Some(res), Some(q)) = (self.residual, c.residual) {
                v += q.value(res[at + lane]);
            }
            // SAFETY: `at + lane` is inside the output (asserted in `run`),
            // and this task alone writes it.
            unsafe {
                match (self.out, c.out) {
                    (Out::Bytes(p), Some(q)) => *p.add(at + lane) = q.quantize(v),
                    (Out::Floats(p), _) => *p.add(at + lane) = v,
                    (Out::Bytes(_), None) => unreachable!("checked in forward"),
                }
            }
        }
    }
}

/// The plain loop: every tap checked, outside ones reading the zero point.
/// The reference the native kernel is tested against, and the path of CPUs
/// without VNNI.
fn portable_row(r: &Row) {
    let c = r.conv;
    let (k, s, pad, ib) = (c.k, c.stride, c.pad, c.c_in / B);
    let taps = k * k;
    for b in r.first..r.first + r.count {
        for ox in r.span.0..r.span.1 {
            let mut sums = [0i32; B];
            for i in 0..ib {
                for ky in 0..k {
                    for kx in 0..k {
                        let (iy, ix) = ((r.oy * s + ky) as isize - pad as isize, (ox * s + kx) as isize - pad as isize);
                        let inside = iy >= 0 && ix >= 0 && (iy as usize) < r.h && (ix as usize) < r.w;
                        let at = ((i * r.h + iy.max(0) as usize) * r.w + ix.max(0) as usize) * B;
                        let weights = &c.packed[((b * ib + i) * taps + ky * k + kx) * TAP..][..TAP];
                        for ci in 0..B {
                            let x = i32::from(if inside { r.input[at + ci] } else { c.zeros[i] });
                            let group = &weights[ci / 4 * B * 4..];
                            for (co, sum) in sums.iter_mut().enumerate() {
                                *sum += x * i32::from(group[co * 4 + ci % 4]);
                            }
                        }
                    }
                }
            }
            r.finish(b, ox, &sums);
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use super::{B, Out, Row, TAP};
    use std::arch::x86_64::*;

    thread_local! {
        /// Border patches, per thread.
        static PATCH: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
    }

    /// `dst = q.quantize(src)`, 16 at a time (a saturating `as u8` is scalar).
    ///
    /// # Safety
    /// The CPU has AVX-512F; both lengths are the same multiple of 16.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn quantize(src: &[f32], dst: &mut [u8], q: super::QParams) {
        let (inv, zero) = (_mm512_set1_ps(1.0 / q.scale), _mm512_set1_ps(f32::from(q.zero)));
        for (d, v) in dst.chunks_exact_mut(B).zip(src.chunks_exact(B)) {
            // SAFETY: 16 values in, 16 bytes out.
            unsafe {
                let scaled = _mm512_fmadd_ps(_mm512_loadu_ps(v.as_ptr()), inv, zero);
                let ints = _mm512_max_epi32(_mm512_cvtps_epi32(scaled), _mm512_setzero_si512());
                _mm_storeu_si128(d.as_mut_ptr().cast(), _mm512_cvtusepi32_epi8(ints));
            }
        }
    }

    /// The widest tile per count of output blocks (accumulators, weight
    /// vectors and a broadcast within 32 registers).
    const fn widest(blocks: usize) -> usize {
        match blocks {
            4 => 6,
            3 => 8,
            2 => 12,
            _ => 16,
        }
    }

    /// One task's row: tiles as wide as the row allows, spread evenly (20
    /// pixels as 4 × 5, not 6 + 6 + 6 + 2); the last one ends at the row's
    /// end (overlapping the one before when it must: those pixels are
    /// computed twice, the same). Tiles whose taps leave the input run on a
    /// patch padded with the zero points.
    ///
    /// # Safety
    /// The CPU has AVX-512F, BW and VNNI.
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    pub(super) unsafe fn row(r: &Row) {
        let c = r.conv;
        let (k, s, pad) = (c.k, c.stride, c.pad);
        let (from, to) = r.span;
        let width = to - from;
        let tiles = width.div_ceil(widest(r.count));
        let px = width.div_ceil(tiles);
        let top = (r.oy * s) as isize - pad as isize;
        let rows_inside = top >= 0 && top as usize + k <= r.h;
        for i in 0..tiles {
            let ox = (from + i * px).min(to - px);
            let left = (ox * s) as isize - pad as isize;
            let inside = rows_inside && left >= 0 && (ox + px - 1) * s + k <= r.w + pad;
            if inside {
                let src = Src {
                    base: r.input.as_ptr().wrapping_add((top as usize * r.w + left as usize) * B),
                    plane: r.h * r.w * B,
                    row: r.w * B,
                };
                // SAFETY: every tap of the tile is inside the input.
                unsafe { tile_of(r, ox, px, src) };
            } else {
                PATCH.with(|buf| {
                    let mut buf = buf.borrow_mut();
                    let src = patch(r, top, left, px, &mut buf);
                    // SAFETY: the patch holds every tap of the tile.
                    unsafe { tile_of(r, ox, px, src) };
                });
            }
        }
    }

    /// Where a tile reads: its first pixel's first tap at `base`, input
    /// blocks `plane` bytes apart, rows `row`.
    #[derive(Clone, Copy)]
    struct Src {
        base: *const u8,
        plane: usize,
        row: usize,
    }

    /// The `k` rows × the columns a `px`-pixel tile reads from input
    /// `(top, left)` on, every input block, with the block's zero point
    /// where they fall outside.
    fn patch(r: &Row, top: isize, left: isize, px: usize, buf: &mut Vec<u8>) -> Src {
        let c = r.conv;
        let (k, s, ib) = (c.k, c.stride, c.c_in / B);
        let w2 = (px - 1) * s + k;
        buf.clear();
        buf.resize(ib * k * w2 * B, 0);
        for i in 0..ib {
            for y in 0..k {
                let sy = top + y as isize;
                for x in 0..w2 {
                    let sx = left + x as isize;
                    let to = ((i * k + y) * w2 + x) * B;
                    if sy < 0 || sx < 0 || sy as usize >= r.h || sx as usize >= r.w {
                        buf[to..to + B].fill(c.zeros[i]);
                    } else {
                        let from = ((i * r.h + sy as usize) * r.w + sx as usize) * B;
                        buf[to..to + B].copy_from_slice(&r.input[from..from + B]);
                    }
                }
            }
        }
        Src { base: buf.as_ptr(), plane: k * w2 * B, row: w2 * B }
    }

    /// The const tile for `r.count` blocks × `px` pixels.
    ///
    /// # Safety
    /// As [`tile`].
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    unsafe fn tile_of(r: &Row, ox: usize, px: usize, src: Src) {
        macro_rules! widths {
            ($($ob:literal: $($n:literal)*;)*) => {
                match (r.count, px) {
                    $($(($ob, $n) => unsafe { tile::<$ob, $n>(r, ox, src) },)*)*
                    _ => unreachable!("no tile of {} blocks × {px} pixels", r.count),
                }
            };
        }
        widths! {
            1: 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16;
            2: 1 2 3 4 5 6 7 8 9 10 11 12;
            3: 1 2 3 4 5 6 7 8;
            4: 1 2 3 4 5 6;
        }
    }

    /// `OB` output blocks × `PX` pixels: the sums in registers, each
    /// broadcast of four input bytes multiplied with every block's weights.
    ///
    /// # Safety
    /// The CPU has AVX-512F, BW and VNNI; `src` holds every tap of the
    /// tile's pixels for every input block.
    #[allow(clippy::needless_range_loop)]
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    unsafe fn tile<const OB: usize, const PX: usize>(r: &Row, ox: usize, src: Src) {
        let c = r.conv;
        let (k, s, ib) = (c.k, c.stride, c.c_in / B);
        let ob_stride = ib * k * k * TAP;
        let step = s * B;
        let mut acc = [[_mm512_setzero_si512(); PX]; OB];
        // SAFETY (pointer arithmetic): the weights hold `ob × ib × k² × 256`
        // bytes with `first + OB <= ob`; `src` as promised.
        unsafe {
            let weights = c.packed.as_ptr().add(r.first * ob_stride);
            for i in 0..ib {
                for ky in 0..k {
                    for kx in 0..k {
                        let xp = src.base.add(i * src.plane + ky * src.row + kx * B);
                        let wp = weights.add(((i * k + ky) * k + kx) * TAP);
                        for g in 0..4 {
                            let mut wv = [_mm512_setzero_si512(); OB];
                            for (b, v) in wv.iter_mut().enumerate() {
                                *v = _mm512_loadu_si512(wp.add(b * ob_stride + g * 64).cast());
                            }
                            for p in 0..PX {
                                let x =
                                    _mm512_set1_epi32(std::ptr::read_unaligned(xp.add(p * step + 4 * g).cast::<i32>()));
                                for b in 0..OB {
                                    acc[b][p] = _mm512_dpbusd_epi32(acc[b][p], x, wv[b]);
                                }
                            }
                        }
                    }
                }
            }
            for b in 0..OB {
                let block = r.first + b;
                let scale = _mm512_loadu_ps(c.scale.as_ptr().add(block * B));
                let bias = _mm512_loadu_ps(c.bias.as_ptr().add(block * B));
                for p in 0..PX {
                    let mut v = _mm512_fmadd_ps(_mm512_cvtepi32_ps(acc[b][p]), scale, bias);
                    if c.silu {
                        v = super::super::avx512::silu(v);
                    }
                    let at = r.at(block, ox + p);
                    if let (Some(res), Some(q)) = (r.residual, c.residual) {
                        let bytes = _mm512_cvtepu8_epi32(_mm_loadu_si128(res.as_ptr().add(at).cast()));
                        let centred = _mm512_sub_epi32(bytes, _mm512_set1_epi32(i32::from(q.zero)));
                        v = _mm512_fmadd_ps(_mm512_cvtepi32_ps(centred), _mm512_set1_ps(q.scale), v);
                    }
                    match (r.out, c.out) {
                        (Out::Bytes(out), Some(q)) => {
                            let scaled =
                                _mm512_fmadd_ps(v, _mm512_set1_ps(1.0 / q.scale), _mm512_set1_ps(f32::from(q.zero)));
                            let ints = _mm512_max_epi32(_mm512_cvtps_epi32(scaled), _mm512_setzero_si512());
                            _mm_storeu_si128(out.add(at).cast(), _mm512_cvtusepi32_epi8(ints));
                        }
                        (Out::Floats(out), _) => _mm512_storeu_ps(out.add(at), v),
                        (Out::Bytes(_), None) => unreachable!("checked in forward"),
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::random_values as random;

    /// Each kind of YOLOv8 layer, int8 against f32 on the same
    /// (dequantized) input: within the quantization's error; and the native
    /// kernel against the portable loop: the same sums, so the same bytes
    /// but for a rounding tie in the epilogue's approximations.
    #[test]
    fn int8_layers_match_f32_within_quantization_and_the_kernels_agree() {
        // (c_in, c_out, k, stride, h, w, residual)
        for (i, &(c_in, c_out, k, s, h, w, with_residual)) in [
            (16, 16, 3, 1, 20, 21, true),
            (32, 64, 3, 2, 21, 17, false),
            (48, 32, 1, 1, 10, 12, false),
            (16, 16, 3, 1, 1, 1, false),
            (64, 80, 3, 1, 5, 9, false),
            (80, 80, 3, 1, 6, 30, true),
            (128, 32, 3, 1, 7, 45, false),
            (256, 48, 1, 1, 4, 43, false),
        ]
        .iter()
        .enumerate()
        {
            let weight: Vec<f32> = random(c_out * c_in * k * k, 7 + i as u64).iter().map(|v| v * 0.2).collect();
            let bias = random(c_out, 3 + i as u64);
            let conv = BlockedConv::new(&weight, &bias, c_in, c_out, k, s, true);
            // Inputs as SiLU leaves them: mostly positive, a small negative
            // tail; each block quantized on its own range.
            let x: Vec<f32> = random(c_in * h * w, 11 + i as u64).iter().map(|v| v * 2.0 + 0.7).collect();
            let x = Blocked::from_nchw(&x, c_in, h, w);
            let in_q: Vec<QParams> = (0..c_in / B)
                .map(|b| {
                    let plane = &x.data[b * x.plane_len()..(b + 1) * x.plane_len()];
                    let (lo, hi) = plane.iter().fold((0f32, 0f32), |(l, h), v| (l.min(*v), h.max(*v)));
                    QParams::covering(lo, hi)
                })
                .collect();
            let xq = QBlocked::quantized(&x, &in_q);
            let x_seen = xq.values(&in_q);
            let (oh, ow) = conv.out_size(h, w);
            let residual = with_residual.then(|| {
                let r = Blocked::from_nchw(&random(c_out * oh * ow, 5), c_out, oh, ow);
                let q = QParams::covering(-1.0, 1.0);
                let rq = QBlocked::quantized(&r, &[q]);
                (rq.values(&[q]), rq, q)
            });
            let mut want = Blocked::zeros(c_out, oh, ow);
            conv.forward(&x_seen.data, h, w, &mut want.data, residual.as_ref().map(|r| &r.0.data[..]));
            let (lo, hi) = want.data.iter().fold((0f32, 0f32), |(l, h), v| (l.min(*v), h.max(*v)));
            let out_q = QParams::covering(lo, hi);
            let quant = QuantConv::new(&conv, &in_q, Some(out_q), residual.as_ref().map(|r| r.2));
            let run = |native: bool| {
                FORCE_PORTABLE.with(|f| f.set(!native));
                let mut got = QBlocked::for_overwrite(c_out, oh, ow);
                quant.forward(&xq.data, h, w, &mut got.data, residual.as_ref().map(|r| &r.1.data[..]));
                FORCE_PORTABLE.with(|f| f.set(false));
                got
            };
            let portable = run(false);
            let got = portable.values(&[out_q]);
            // The weights' rounding (half a step of 127 per channel, over
            // every product) and the output's own step.
            let worst = got.data.iter().zip(&want.data).map(|(a, b)| (a - b).abs()).fold(0.0, f32::max);
            let bound = 1.5 * out_q.scale + 0.02 * hi.max(-lo);
            assert!(worst <= bound, "kind {i}: max |int8 - f32| {worst} > {bound}");
            if vnni() {
                let native = run(true);
                let apart = native.data.iter().zip(&portable.data).map(|(a, b)| a.abs_diff(*b)).max();
                assert!(apart <= Some(1), "kind {i}: native and portable bytes {apart:?} apart");
            }
            // The f32 output of the same layer (a head's hidden layer).
            let plain = QuantConv::new(&conv, &in_q, None, None);
            let mut floats = Blocked::zeros(c_out, oh, ow);
            plain.forward_f32(&xq.data, h, w, &mut floats.data);
            if residual.is_none() {
                let worst = floats.data.iter().zip(&want.data).map(|(a, b)| (a - b).abs()).fold(0.0, f32::max);
                assert!(worst <= 0.02 * hi.max(-lo) + 1e-3, "kind {i}: f32 output {worst} apart");
            }
        }
    }
}

fn portable_forced() -> bool {
    #[cfg(test)]
    return FORCE_PORTABLE.with(|f| f.get());
    #[cfg(not(test))]
    false
}

#[cfg(test)]
thread_local! {
    /// Tests run the portable loop on this thread when set.
    static FORCE_PORTABLE: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}
