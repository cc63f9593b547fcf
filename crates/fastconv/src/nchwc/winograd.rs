//! 3×3 stride-1 convolutions by Winograd's minimal filtering F(2×2, 3×3):
//! each 2×2 block of output pixels (a tile) from the 4×4 patch of input
//! around it, in 16 multiplies per pair of channels instead of 36.
//!
//! Why: these layers are over half of the network's time, and the direct
//! kernel already runs close to the core's FMA peak, so the way past it is
//! fewer multiplies. A layer runs as
//! - the input patches transformed, `Bᵀ d B` (additions only);
//! - sixteen products, one per patch position: tiles × input channels times
//!   input × output channels, on the same register tile as a pointwise
//!   convolution (a weight vector per output block, a broadcast per tile);
//! - the output transform, `Aᵀ m A` (additions only), with the bias, SiLU
//!   and the residual applied before the one store.
//!
//! F(2, 3)'s transforms use only 0, ±1 and ½ (the weights' in f64, once at
//! load), so its rounding stays at the direct sum's level; larger tiles
//! (F(4, 3)) save more multiplies but scale values by up to 4 and lose
//! digits.
//!
//! Work is cut into chunks of tiles (row-major over the map) × groups of up
//! to four output blocks; a chunk's transformed input and products live in
//! a per-thread scratch small enough to stay in L2.

use super::{B, BlockedConv, Kernel, SendPtr, block_group};

/// Positions in a 4×4 patch.
const POS: usize = 16;
/// Tiles per chunk at most: a multiple of every product tile's width.
const CHUNK: usize = 48;
/// Tiles per chunk at least, when chunks are cut smaller to feed threads.
const MIN_CHUNK: usize = 12;

/// A 3×3 stride-1 convolution's weights, transformed: `G g Gᵀ` per pair of
/// channels, laid out `[position][out block][in block][in lane][out lane]`.
#[derive(Debug, Clone)]
pub(super) struct Winograd {
    u: Vec<f32>,
}

impl Winograd {
    /// From `[c_out, c_in, 3, 3]` weights (row-major).
    #[allow(clippy::needless_range_loop)]
    pub(super) fn pack(weight: &[f32], c_in: usize, c_out: usize) -> Self {
        let (ib, ob) = (c_in.div_ceil(B), c_out.div_ceil(B));
        let mut u = vec![0.0; POS * ob * ib * B * B];
        // G = [1 0 0; ½ ½ ½; ½ -½ ½; 0 0 1], applied to three values.
        let g = |v: [f64; 3]| [v[0], (v[0] + v[1] + v[2]) / 2.0, (v[0] - v[1] + v[2]) / 2.0, v[2]];
        for co in 0..c_out {
            for ci in 0..c_in {
                let k = &weight[(co * c_in + ci) * 9..(co * c_in + ci) * 9 + 9];
                // Down the columns, then along the rows.
                let cols: [[f64; 4]; 3] = std::array::from_fn(|x| g([k[x] as f64, k[3 + x] as f64, k[6 + x] as f64]));
                for i in 0..4 {
                    let row = g([cols[0][i], cols[1][i], cols[2][i]]);
                    for (j, v) in row.iter().enumerate() {
                        let at = ((((i * 4 + j) * ob + co / B) * ib + ci / B) * B + ci % B) * B + co % B;
                        u[at] = *v as f32;
                    }
                }
            }
        }
        Self { u }
    }

    /// As [`BlockedConv::forward`] on blocked input, for a 3×3 stride-1 `conv`.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn forward(
        &self,
        conv: &BlockedConv,
        input: &[f32],
        h: usize,
        w: usize,
        out: &mut [f32],
        residual: Option<&[f32]>,
        kernel: Kernel,
    ) {
        let (ib, ob) = (conv.c_in.div_ceil(B), conv.c_out.div_ceil(B));
        assert!(input.len() >= ib * h * w * B, "input too short");
        assert_eq!(out.len(), ob * h * w * B, "output size");
        if let Some(r) = residual {
            assert_eq!(r.len(), out.len(), "residual size");
        }
        let tw = w.div_ceil(2);
        let tiles = h.div_ceil(2) * tw;
        let groups = ob.div_ceil(4);
        // Smaller chunks until every thread has a few tasks.
        let threads = rayon::current_num_threads();
        let mut chunk = CHUNK.min(tiles);
        while threads > 1 && chunk > MIN_CHUNK && groups * tiles.div_ceil(chunk) < 4 * threads {
            chunk = chunk.div_ceil(2);
        }
        let chunks = tiles.div_ceil(chunk);
        let out = SendPtr(out.as_mut_ptr());
        let run = |task: usize| {
            let (group, at) = (task / chunks, task % chunks * chunk);
            let (first, count) = block_group(ob, groups, group);
            let job = Job {
                u: &self.u,
                bias: &conv.bias,
                silu: conv.silu,
                input,
                h,
                w,
                tw,
                ib,
                ob,
                first,
                count,
                tiles: (at, chunk.min(tiles - at)),
                out,
                residual,
            };
            SCRATCH.with(|scratch| {
                let mut scratch = scratch.borrow_mut();
                let need = POS * (ib + count) * job.tiles.1 * B;
                if scratch.len() < need {
                    scratch.resize(need, 0.0);
                }
                job.run(kernel, &mut scratch[..need]);
            });
        };
        super::for_each_task(groups * chunks, run);
    }
}

thread_local! {
    /// A chunk's transformed input and products, kept per thread.
    static SCRATCH: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// One task: tiles `tiles.0 .. tiles.0 + tiles.1` for output blocks
/// `first .. first + count`.
struct Job<'a> {
    u: &'a [f32],
    bias: &'a [f32],
    silu: bool,
    input: &'a [f32],
    h: usize,
    w: usize,
    /// Tiles per row of the map.
    tw: usize,
    ib: usize,
    ob: usize,
    first: usize,
    count: usize,
    tiles: (usize, usize),
    out: SendPtr,
    residual: Option<&'a [f32]>,
}

impl Job<'_> {
    fn run(&self, kernel: Kernel, scratch: &mut [f32]) {
        let (v, m) = scratch.split_at_mut(POS * self.ib * self.tiles.1 * B);
        // SAFETY: `kernel()` chose each only where the CPU has its
        // features; `v` and `m` are the job's scratch.
        #[cfg(target_arch = "x86_64")]
        match kernel {
            Kernel::Avx512 => return unsafe { avx512::run(self, v, m) },
            Kernel::Avx2 => return unsafe { avx2::run(self, v, m) },
            Kernel::Generic => {}
        }
        let _ = kernel;
        // SAFETY: the portable kernel needs no features.
        unsafe { portable::run(self, v, m) }
    }
}

/// The transforms and the job's run for a kernel with `$lanes`-wide
/// vectors (a block is `16 / $lanes` of them), its features enabled by
/// the attributes `$attr`: written once here for every kernel, each on its
/// own vectors (plain lane loops on arrays did not vectorise: the patches
/// stayed in memory).
macro_rules! transforms {
    ($(#[$attr:meta])*, $v:ty, $lanes:literal, $load:ident, $store:ident, $add:ident, $sub:ident, $zero:ident, $silu:ident) => {
        /// Transform in, products, transform out.
        ///
        /// # Safety
        /// The CPU has the kernel's features; `v` and `m` are the job's scratch.
        $(#[$attr])*
        pub(super) unsafe fn run(job: &Job, v: &mut [f32], m: &mut [f32]) {
            // SAFETY: as the caller promised.
            unsafe {
                transform_input(job, v);
                products(job, v, m);
                transform_output(job, m);
            }
        }

        /// `Bᵀ x` for four vectors.
        #[inline]
        $(#[$attr])*
        fn b_t(x: [$v; 4]) -> [$v; 4] {
            [$sub(x[0], x[2]), $add(x[1], x[2]), $sub(x[2], x[1]), $sub(x[1], x[3])]
        }

        /// `Aᵀ x` for four vectors.
        #[inline]
        $(#[$attr])*
        fn a_t(x: [$v; 4]) -> [$v; 2] {
            [$add($add(x[0], x[1]), x[2]), $sub($sub(x[1], x[2]), x[3])]
        }

        /// `Bᵀ d B` of every tile's 4×4 patch (zeros outside the map) into
        /// `v`, laid out `[in block][tile][position][lane]`.
        ///
        /// # Safety
        /// The CPU has the kernel's features.
        #[allow(clippy::needless_range_loop)]
        $(#[$attr])*
        unsafe fn transform_input(job: &Job, v: &mut [f32]) {
            let (h, w, n) = (job.h as isize, job.w as isize, job.tiles.1);
            assert!(v.len() >= POS * job.ib * n * B && job.input.len() >= job.ib * job.h * job.w * B);
            let out = v.as_mut_ptr();
            for ib in 0..job.ib {
                for i in 0..n {
                    let t = job.tiles.0 + i;
                    let (y0, x0) = (2 * (t / job.tw) as isize - 1, 2 * (t % job.tw) as isize - 1);
                    let inside = y0 >= 0 && x0 >= 0 && y0 + 4 <= h && x0 + 4 <= w;
                    for half in (0..B).step_by($lanes) {
                        // SAFETY: pixels are read only inside the map
                        // (checked, unless the whole patch is), stores stay
                        // inside `v` (asserted).
                        unsafe {
                            let plane = job.input.as_ptr().add(ib * job.h * job.w * B + half);
                            let mut d = [[$zero(); 4]; 4];
                            for r in 0..4 {
                                for c in 0..4 {
                                    let (y, x) = (y0 + r as isize, x0 + c as isize);
                                    if inside || (y >= 0 && x >= 0 && y < h && x < w) {
                                        d[r][c] = $load(plane.add((y * w + x) as usize * B));
                                    }
                                }
                            }
                            let e = [0, 1, 2, 3].map(|c| b_t([d[0][c], d[1][c], d[2][c], d[3][c]]));
                            for r in 0..4 {
                                let row = b_t([e[0][r], e[1][r], e[2][r], e[3][r]]);
                                for c in 0..4 {
                                    $store(out.add(((ib * n + i) * POS + r * 4 + c) * B + half), row[c]);
                                }
                            }
                        }
                    }
                }
            }
        }

        /// `Aᵀ m A` of every tile's products (`[block of the group][tile]
        /// [position][lane]`), plus the bias, then SiLU and the residual,
        /// stored to the output pixels inside the map.
        ///
        /// # Safety
        /// The CPU has the kernel's features.
        #[allow(clippy::needless_range_loop)]
        $(#[$attr])*
        unsafe fn transform_output(job: &Job, m: &[f32]) {
            let n = job.tiles.1;
            assert!(m.len() >= POS * job.count * n * B && job.bias.len() >= (job.first + job.count) * B);
            let (h, w) = (job.h, job.w);
            for b in 0..job.count {
                let block = job.first + b;
                for i in 0..n {
                    let t = job.tiles.0 + i;
                    let (ty, tx) = (t / job.tw, t % job.tw);
                    for half in (0..B).step_by($lanes) {
                        // SAFETY: loads stay inside `m` and the bias
                        // (asserted); each store is this task's own output
                        // pixel inside the map.
                        unsafe {
                            let bias = $load(job.bias.as_ptr().add(block * B + half));
                            let q: [$v; POS] =
                                std::array::from_fn(|pos| $load(m.as_ptr().add(((b * n + i) * POS + pos) * B + half)));
                            let cols = [0, 1, 2, 3].map(|c| a_t([q[c], q[4 + c], q[8 + c], q[12 + c]]));
                            for dy in 0..2 {
                                let y = 2 * ty + dy;
                                if y >= h {
                                    break;
                                }
                                let row = a_t([cols[0][dy], cols[1][dy], cols[2][dy], cols[3][dy]]);
                                for dx in 0..2 {
                                    let x = 2 * tx + dx;
                                    if x >= w {
                                        break;
                                    }
                                    let mut v = $add(row[dx], bias);
                                    if job.silu {
                                        v = $silu(v);
                                    }
                                    let at = ((block * h + y) * w + x) * B + half;
                                    if let Some(res) = job.residual {
                                        v = $add(v, $load(res.as_ptr().add(at)));
                                    }
                                    $store(job.out.0.add(at), v);
                                }
                            }
                        }
                    }
                }
            }
        }
    };
}

/// The portable kernel: a block's 16 lanes as an array (what the compiler
/// makes of them), and the products one output vector at a time.
mod portable {
    use super::{B, Job, POS};

    type Lanes = [f32; B];

    /// # Safety
    /// `p` points at 16 readable values.
    #[inline(always)]
    unsafe fn load(p: *const f32) -> Lanes {
        // SAFETY: as the caller promised.
        unsafe { p.cast::<Lanes>().read_unaligned() }
    }

    /// # Safety
    /// `p` points at 16 writable values.
    #[inline(always)]
    unsafe fn store(p: *mut f32, v: Lanes) {
        // SAFETY: as the caller promised.
        unsafe { p.cast::<Lanes>().write_unaligned(v) }
    }

    #[inline(always)]
    fn add(mut a: Lanes, b: Lanes) -> Lanes {
        for (a, b) in a.iter_mut().zip(b) {
            *a += b;
        }
        a
    }

    #[inline(always)]
    fn sub(mut a: Lanes, b: Lanes) -> Lanes {
        for (a, b) in a.iter_mut().zip(b) {
            *a -= b;
        }
        a
    }

    #[inline(always)]
    fn zero() -> Lanes {
        [0.0; B]
    }

    #[inline(always)]
    fn silu(mut v: Lanes) -> Lanes {
        for v in v.iter_mut() {
            *v /= 1.0 + crate::exp(-*v);
        }
        v
    }

    transforms!(, Lanes, 16, load, store, add, sub, zero, silu);

    /// The products: per position, block and tile, the sum over input
    /// channels.
    fn products(job: &Job, v: &[f32], m: &mut [f32]) {
        let n = job.tiles.1;
        let ob_stride = job.ib * B * B;
        for pos in 0..POS {
            for b in 0..job.count {
                let weights = &job.u[(pos * job.ob + job.first + b) * ob_stride..][..ob_stride];
                for i in 0..n {
                    let mut acc = [0.0f32; B];
                    for ib in 0..job.ib {
                        let x = &v[((ib * n + i) * POS + pos) * B..][..B];
                        for (ci, x) in x.iter().enumerate() {
                            let wv = &weights[(ib * B + ci) * B..][..B];
                            for (a, wv) in acc.iter_mut().zip(wv) {
                                // Not `mul_add` (see the direct kernel's tile).
                                *a += wv * x;
                            }
                        }
                    }
                    let at = ((b * n + i) * POS + pos) * B;
                    m[at..at + B].copy_from_slice(&acc);
                }
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use super::super::avx512::{silu, step_lane};
    use super::{B, Job, POS};
    use std::arch::x86_64::*;

    transforms!(
        #[target_feature(enable = "avx512f")],
        __m512,
        16,
        _mm512_loadu_ps,
        _mm512_storeu_ps,
        _mm512_add_ps,
        _mm512_sub_ps,
        _mm512_setzero_ps,
        silu
    );

    /// The products: per position, a register tile of `OB` blocks × `PX`
    /// tiles at a time (the rest of the chunk in one narrower tile).
    ///
    /// # Safety
    /// The CPU has AVX-512F; `v` and `m` are the job's scratch.
    #[target_feature(enable = "avx512f")]
    unsafe fn products(job: &Job, v: &[f32], m: &mut [f32]) {
        assert!(v.len() >= POS * job.ib * job.tiles.1 * B && m.len() >= POS * job.count * job.tiles.1 * B);
        macro_rules! widths {
            ($ob:literal, $px:literal: $($n:literal)*) => {{
                let n = job.tiles.1;
                for pos in 0..POS {
                    let mut t = 0;
                    while t + $px <= n {
                        // SAFETY: the scratch's sizes were asserted above.
                        unsafe { tile::<$ob, $px>(job, v, m, pos, t) };
                        t += $px;
                    }
                    match n - t {
                        0 => {}
                        // SAFETY: as above.
                        $($n => unsafe { tile::<$ob, $n>(job, v, m, pos, t) },)*
                        rest => unreachable!("{rest} tiles left"),
                    }
                }
            }};
        }
        match job.count {
            4 => widths!(4, 6: 1 2 3 4 5),
            3 => widths!(3, 8: 1 2 3 4 5 6 7),
            2 => widths!(2, 12: 1 2 3 4 5 6 7 8 9 10 11),
            _ => widths!(1, 12: 1 2 3 4 5 6 7 8 9 10 11),
        }
    }

    /// `OB` blocks × `PX` tiles from tile `t` at position `pos`.
    ///
    /// # Safety
    /// The CPU has AVX-512F; `t + PX` tiles and the job's blocks are inside
    /// the scratch and the weights.
    #[allow(clippy::needless_range_loop)]
    #[target_feature(enable = "avx512f")]
    unsafe fn tile<const OB: usize, const PX: usize>(job: &Job, v: &[f32], m: &mut [f32], pos: usize, t: usize) {
        let n = job.tiles.1;
        let ob_stride = job.ib * B * B;
        let mut acc = [[_mm512_setzero_ps(); PX]; OB];
        // SAFETY: as the caller promised.
        unsafe {
            let weights = job.u.as_ptr().add((pos * job.ob + job.first) * ob_stride);
            let x = v.as_ptr().add((t * POS + pos) * B);
            for ib in 0..job.ib {
                let (wp, xp) = (weights.add(ib * B * B), x.add(ib * n * POS * B));
                for ci in (0..B).step_by(4) {
                    for u in ci..ci + 4 {
                        step_lane::<OB, PX>(&mut acc, wp.add(u * B), ob_stride, xp.add(u), POS * B);
                    }
                }
            }
            let out = m.as_mut_ptr();
            for b in 0..OB {
                for p in 0..PX {
                    _mm512_storeu_ps(out.add(((b * n + t + p) * POS + pos) * B), acc[b][p]);
                }
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use super::super::avx2::silu;
    use super::{B, Job, POS};
    use std::arch::x86_64::*;

    transforms!(
        #[target_feature(enable = "avx2,fma")],
        __m256,
        8,
        _mm256_loadu_ps,
        _mm256_storeu_ps,
        _mm256_add_ps,
        _mm256_sub_ps,
        _mm256_setzero_ps,
        silu
    );

    /// The products on AVX2: a block as two 8-lane halves, one block × 6
    /// tiles in registers (12 accumulators, two weight vectors and a
    /// broadcast of the 16 registers), the rest of the chunk in one
    /// narrower tile.
    ///
    /// # Safety
    /// The CPU has AVX2 and FMA; `v` and `m` are the job's scratch.
    #[target_feature(enable = "avx2,fma")]
    unsafe fn products(job: &Job, v: &[f32], m: &mut [f32]) {
        let n = job.tiles.1;
        assert!(v.len() >= POS * job.ib * n * B && m.len() >= POS * job.count * n * B);
        for pos in 0..POS {
            for b in 0..job.count {
                let mut t = 0;
                // SAFETY (each tile): the scratch's sizes were asserted above.
                while t + 6 <= n {
                    unsafe { tile::<6>(job, v, m, pos, b, t) };
                    t += 6;
                }
                match n - t {
                    0 => {}
                    1 => unsafe { tile::<1>(job, v, m, pos, b, t) },
                    2 => unsafe { tile::<2>(job, v, m, pos, b, t) },
                    3 => unsafe { tile::<3>(job, v, m, pos, b, t) },
                    4 => unsafe { tile::<4>(job, v, m, pos, b, t) },
                    5 => unsafe { tile::<5>(job, v, m, pos, b, t) },
                    rest => unreachable!("{rest} tiles left"),
                }
            }
        }
    }

    /// Block `b` of the group × `PX` tiles from tile `t` at position `pos`.
    ///
    /// # Safety
    /// The CPU has AVX2 and FMA; `t + PX` tiles are inside the scratch.
    #[target_feature(enable = "avx2,fma")]
    unsafe fn tile<const PX: usize>(job: &Job, v: &[f32], m: &mut [f32], pos: usize, b: usize, t: usize) {
        let n = job.tiles.1;
        let mut acc = [[_mm256_setzero_ps(); 2]; PX];
        // SAFETY: as the caller promised.
        unsafe {
            let weights = job.u.as_ptr().add((pos * job.ob + job.first + b) * job.ib * B * B);
            let x = v.as_ptr().add((t * POS + pos) * B);
            for ib in 0..job.ib {
                let (wp, xp) = (weights.add(ib * B * B), x.add(ib * n * POS * B));
                for ci in 0..B {
                    let lo = _mm256_loadu_ps(wp.add(ci * B));
                    let hi = _mm256_loadu_ps(wp.add(ci * B + 8));
                    for (p, acc) in acc.iter_mut().enumerate() {
                        let x = _mm256_broadcast_ss(&*xp.add(p * POS * B + ci));
                        acc[0] = _mm256_fmadd_ps(lo, x, acc[0]);
                        acc[1] = _mm256_fmadd_ps(hi, x, acc[1]);
                    }
                }
            }
            for (p, acc) in acc.iter().enumerate() {
                let at = ((b * n + t + p) * POS + pos) * B;
                _mm256_storeu_ps(m.as_mut_ptr().add(at), acc[0]);
                _mm256_storeu_ps(m.as_mut_ptr().add(at + 8), acc[1]);
            }
        }
    }
}
