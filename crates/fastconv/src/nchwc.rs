//! Direct convolution on a blocked layout, NCHWc with c = 16: element
//! `(c, y, x)` of an activation lives at `((c / 16 · h + y) · w + x) · 16 + c % 16`.
//!
//! Why: the im2col + GEMM path writes nine copies of every 3×3 layer's
//! input, under-fills the GEMM's tiles with YOLOv8n's 16–80 output channels,
//! and forces copies for every concatenation. Here each output pixel is
//! accumulated in registers straight from the input: a tile of up to four
//! output-channel blocks × `PX` pixels of one row starts from the bias, takes
//! every input channel of every tap as a broadcast times a 16-wide weight
//! vector, and gets its SiLU (and a residual) before its one store. Channel
//! blocks are contiguous planes, so a concatenation is writing into the next
//! blocks of one buffer, and a split is a sub-slice.
//!
//! The kernel is one generic body compiled three times (AVX-512F, AVX2+FMA,
//! baseline) and chosen at run time; the tests run whichever the machine
//! has and the baseline.

use rayon::prelude::*;

pub mod int8;
mod winograd;

/// Channels per block.
pub const B: usize = 16;

/// An activation in NCHWc16: `blocks` planes of `h × w × 16` values.
#[derive(Debug, Clone, PartialEq)]
pub struct Blocked {
    pub blocks: usize,
    pub h: usize,
    pub w: usize,
    pub data: Vec<f32>,
}

/// Buffers of dropped activations, kept for the next frame on the same
/// thread: a forward pass allocates the same sizes every frame, and taking
/// them back saves the allocator's work, the page faults of fresh memory,
/// and the heap fragmentation of tens of megabytes churned per frame.
/// Reuse is by exact size, so the pool settles at one frame's working set
/// and never drifts upwards (a buffer lent to a smaller use would make the
/// next large one allocate afresh); it is capped in bytes per thread.
const POOL_BYTES: usize = 256 << 20;

/// Buffers kept for reuse, by length.
#[derive(Default)]
pub struct Pool {
    by_len: std::collections::HashMap<usize, Vec<Vec<f32>>>,
    /// The int8 path's activations, by length.
    bytes_by_len: std::collections::HashMap<usize, Vec<Vec<u8>>>,
    bytes: usize,
}

thread_local! {
    static POOL: std::cell::RefCell<Pool> = std::cell::RefCell::new(Pool::default());
}

/// Lends `pool` to this thread for the life of the guard, then takes it
/// back (with what was dropped meanwhile). A caller whose passes run on
/// whichever thread is free (tokio's blocking pool) keeps one pool per
/// concurrent pass this way, instead of one per thread that ever ran one.
pub struct LentPool<'a> {
    home: &'a std::sync::Mutex<Vec<Pool>>,
}

impl<'a> LentPool<'a> {
    pub fn lend(home: &'a std::sync::Mutex<Vec<Pool>>) -> Self {
        let pool = home.lock().unwrap_or_else(std::sync::PoisonError::into_inner).pop().unwrap_or_default();
        POOL.with(|p| *p.borrow_mut() = pool);
        Self { home }
    }
}

impl Drop for LentPool<'_> {
    fn drop(&mut self) {
        let pool = POOL.with(|p| std::mem::take(&mut *p.borrow_mut()));
        self.home.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push(pool);
    }
}

/// An element of pooled buffers: f32 activations, or the int8 path's bytes.
trait Pooled: Sized {
    /// This element's buffers in `pool`, by length.
    fn shelf(pool: &mut Pool) -> &mut std::collections::HashMap<usize, Vec<Vec<Self>>>;
}

impl Pooled for f32 {
    fn shelf(pool: &mut Pool) -> &mut std::collections::HashMap<usize, Vec<Vec<Self>>> {
        &mut pool.by_len
    }
}

impl Pooled for u8 {
    fn shelf(pool: &mut Pool) -> &mut std::collections::HashMap<usize, Vec<Vec<Self>>> {
        &mut pool.bytes_by_len
    }
}

/// A buffer of exactly `len` values with stale contents, when this thread's
/// pool has one.
fn pooled<T: Pooled>(len: usize) -> Option<Vec<T>> {
    POOL.with(|pool| {
        let mut pool = pool.borrow_mut();
        let v = T::shelf(&mut pool).get_mut(&len)?.pop()?;
        pool.bytes -= v.capacity() * std::mem::size_of::<T>();
        Some(v)
    })
}

/// Keeps `data` in this thread's pool for the next buffer of its length,
/// while the pool is under its cap.
fn give_back<T: Pooled>(data: Vec<T>) {
    if data.is_empty() {
        return;
    }
    POOL.with(|pool| {
        let mut pool = pool.borrow_mut();
        let bytes = data.capacity() * std::mem::size_of::<T>();
        if pool.bytes + bytes <= POOL_BYTES {
            pool.bytes += bytes;
            T::shelf(&mut pool).entry(data.len()).or_default().push(data);
        }
    });
}

/// A buffer of `len` values whose contents are stale (every one will be
/// written), from this thread's pool when it has one.
fn buffer_for_overwrite(len: usize) -> Vec<f32> {
    pooled(len).unwrap_or_else(|| vec![0.0; len])
}

/// A zeroed buffer of `len` values, from this thread's pool when it has one.
fn buffer(len: usize) -> Vec<f32> {
    match pooled(len) {
        Some(mut v) => {
            v.fill(0.0);
            v
        }
        None => vec![0.0; len],
    }
}

impl Drop for Blocked {
    fn drop(&mut self) {
        give_back(std::mem::take(&mut self.data));
    }
}

impl Blocked {
    pub fn zeros(channels: usize, h: usize, w: usize) -> Self {
        let blocks = channels.div_ceil(B);
        Self { blocks, h, w, data: buffer(blocks * h * w * B) }
    }

    /// A buffer for an output that will be written whole: not zeroed.
    pub fn for_overwrite(channels: usize, h: usize, w: usize) -> Self {
        let blocks = channels.div_ceil(B);
        Self { blocks, h, w, data: buffer_for_overwrite(blocks * h * w * B) }
    }

    /// `blocks` planes made of `parts`' blocks in order (a concatenation).
    pub fn joined(parts: &[&Blocked]) -> Self {
        let (h, w) = (parts[0].h, parts[0].w);
        let blocks = parts.iter().map(|p| p.blocks).sum::<usize>();
        let mut out = Self::for_overwrite(blocks * B, h, w);
        let mut at = 0;
        for part in parts {
            out.data[at..at + part.data.len()].copy_from_slice(&part.data);
            at += part.data.len();
        }
        out
    }

    /// One block's values.
    pub fn plane_len(&self) -> usize {
        self.h * self.w * B
    }

    /// From NCHW (one image): `channels` planes of `h × w`.
    pub fn from_nchw(values: &[f32], channels: usize, h: usize, w: usize) -> Self {
        let mut out = Self::zeros(channels, h, w);
        for c in 0..channels {
            let (block, lane) = (c / B, c % B);
            let plane = &values[c * h * w..(c + 1) * h * w];
            let dst = &mut out.data[block * h * w * B..(block + 1) * h * w * B];
            for (i, v) in plane.iter().enumerate() {
                dst[i * B + lane] = *v;
            }
        }
        out
    }

    /// To NCHW, the first `channels` channels. Off the frame path (the
    /// head's decode reads blocks): the layer check and tests use it.
    pub fn to_nchw(&self, channels: usize) -> Vec<f32> {
        let n = self.h * self.w;
        let mut out = vec![0.0; channels * n];
        for (planes, src) in out.chunks_mut(B * n).zip(self.data.chunks(B * n)) {
            for (lane, plane) in planes.chunks_exact_mut(n).enumerate() {
                for (v, pixel) in plane.iter_mut().zip(src.chunks_exact(B)) {
                    *v = pixel[lane];
                }
            }
        }
        out
    }
}

/// A convolution with bias and optional SiLU, weights packed at load into
/// `[out block][in block][ky][kx][in lane][out lane]`.
#[derive(Debug, Clone)]
pub struct BlockedConv {
    packed: Vec<f32>,
    /// Padded to whole blocks with zeros.
    bias: Vec<f32>,
    pub c_in: usize,
    pub c_out: usize,
    pub k: usize,
    pub stride: usize,
    pub pad: usize,
    pub silu: bool,
    /// For 3×3 stride-1 layers, the weights for [`winograd`], which runs
    /// them on every kernel. (`packed` is kept for them too: the direct
    /// path takes NCHW input, and tests compare the two.)
    winograd: Option<winograd::Winograd>,
}

impl BlockedConv {
    /// From `[c_out, c_in, k, k]` weights (row-major) and `[c_out]` bias.
    pub fn new(weight: &[f32], bias: &[f32], c_in: usize, c_out: usize, k: usize, stride: usize, silu: bool) -> Self {
        assert_eq!(weight.len(), c_out * c_in * k * k);
        assert_eq!(bias.len(), c_out);
        let (ib, ob) = (c_in.div_ceil(B), c_out.div_ceil(B));
        let mut packed = vec![0.0; ob * ib * k * k * B * B];
        for co in 0..c_out {
            for ci in 0..c_in {
                for ky in 0..k {
                    for kx in 0..k {
                        let v = weight[((co * c_in + ci) * k + ky) * k + kx];
                        let at = ((((co / B * ib + ci / B) * k + ky) * k + kx) * B + ci % B) * B + co % B;
                        packed[at] = v;
                    }
                }
            }
        }
        let mut padded = bias.to_vec();
        padded.resize(ob * B, 0.0);
        let winograd = (k == 3 && stride == 1).then(|| winograd::Winograd::pack(weight, c_in, c_out));
        Self { packed, bias: padded, c_in, c_out, k, stride, pad: k / 2, silu, winograd }
    }

    /// The same convolution that always runs direct (tests, comparisons).
    pub fn direct_only(self) -> Self {
        Self { winograd: None, ..self }
    }

    /// Whether this layer runs by Winograd's F(2×2, 3×3) (on blocked input,
    /// every kernel).
    pub fn runs_winograd(&self) -> bool {
        self.winograd.is_some()
    }

    pub fn out_size(&self, h: usize, w: usize) -> (usize, usize) {
        out_size(self.k, self.stride, self.pad, h, w)
    }

    /// FLOPs of one call on an `h × w` input (2 per multiply-add, real channels).
    pub fn flops(&self, h: usize, w: usize) -> f64 {
        flops(self.out_size(h, w), self.c_in, self.c_out, self.k)
    }

    /// Writes the output's blocks into `out` (`c_out / 16` planes of
    /// `oh × ow × 16`, which may be a slice of a larger buffer), reading the
    /// input's first `c_in / 16` blocks from `input` (`h × w`). With
    /// `residual`, a tensor of the output's shape is added after the SiLU.
    pub fn forward(&self, input: &[f32], h: usize, w: usize, out: &mut [f32], residual: Option<&[f32]>) {
        let ib = self.c_in.div_ceil(B);
        assert!(input.len() >= ib * h * w * B, "input too short");
        let layout = InLayout { plane: h * w * B, row: w * B, pixel: B, channel: 1, lanes: B };
        self.run(input, layout, h, w, out, residual);
    }

    /// The same from an NCHW input of at most 16 channels (the first
    /// layer: RGB read as it is, no padded copy of the frame).
    pub fn forward_nchw(&self, input: &[f32], h: usize, w: usize, out: &mut [f32]) {
        assert!(self.c_in <= B && input.len() >= self.c_in * h * w, "NCHW input of up to 16 channels");
        let layout = InLayout { plane: 0, row: w, pixel: 1, channel: h * w, lanes: self.c_in };
        self.run(input, layout, h, w, out, None);
    }

    fn run(&self, input: &[f32], layout: InLayout, h: usize, w: usize, out: &mut [f32], residual: Option<&[f32]>) {
        // A pointwise convolution on blocked input has no rows to respect: its
        // plane is one run of pixels, cut into spans of whole tiles, so no
        // tile is cut short at the end of each row (a 10-pixel row leaves 4
        // of its pixels to 1-pixel tiles).
        if self.k == 1 && self.stride == 1 && layout.pixel == B && h > 1 {
            let n = h * w;
            let flat = InLayout { row: n * B, ..layout };
            return self.run_spans(input, flat, n, out, residual);
        }
        if let Some(winograd) = &self.winograd
            && layout.pixel == B
        {
            return winograd.forward(self, input, h, w, out, residual, kernel());
        }
        let (oh, ow) = self.out_size(h, w);
        let (ib, ob) = (self.c_in.div_ceil(B), self.c_out.div_ceil(B));
        assert_eq!(out.len(), ob * oh * ow * B, "output size");
        if let Some(r) = residual {
            assert_eq!(r.len(), out.len(), "residual size");
        }
        let kernel = kernel();
        // Tasks: groups of up to 4 output blocks × one output row.
        // Deep inputs (8+ blocks: layers on small maps) re-read a large
        // weight panel for every tile; two output blocks × 12 pixels read it
        // a quarter as often per pixel as four blocks × 6.
        let per_group = if kernel == Kernel::Avx512 && ib >= DEEP_INPUT_BLOCKS { DEEP_GROUP } else { 4 };
        let groups = ob.div_ceil(per_group);
        let out_ptr = SendPtr(out.as_mut_ptr());
        let band = band_rows(groups, oh, ow);
        let bands = oh.div_ceil(band);
        let run = |task: usize| {
            let (group, first_row) = (task / bands, task % bands * band);
            let (first, count) = block_group(ob, groups, group);
            for oy in first_row..(first_row + band).min(oh) {
                let rows = Rows {
                    conv: self,
                    input,
                    h,
                    w,
                    ow,
                    ib,
                    oy,
                    first,
                    count,
                    out: out_ptr,
                    oh,
                    residual,
                    kernel,
                    layout,
                    span: (0, ow),
                };
                dispatch(&rows);
            }
        };
        let tasks = groups * bands;
        for_each_task(tasks, run);
    }
}

impl BlockedConv {
    /// A pointwise convolution over `n` pixels as one row (`h` 1, `w` `n`):
    /// tasks are output-block groups × spans of [`SPAN`] pixels.
    fn run_spans(&self, input: &[f32], layout: InLayout, n: usize, out: &mut [f32], residual: Option<&[f32]>) {
        let (ib, ob) = (self.c_in.div_ceil(B), self.c_out.div_ceil(B));
        assert_eq!(out.len(), ob * n * B, "output size");
        if let Some(r) = residual {
            assert_eq!(r.len(), out.len(), "residual size");
        }
        let kernel = kernel();
        let per_group = if kernel == Kernel::Avx512 && ib >= DEEP_INPUT_BLOCKS { DEEP_GROUP } else { 4 };
        let groups = ob.div_ceil(per_group);
        let spans = n.div_ceil(SPAN);
        let out_ptr = SendPtr(out.as_mut_ptr());
        let run = |task: usize| {
            let (group, span) = (task / spans, task % spans);
            let (first, count) = block_group(ob, groups, group);
            let rows = Rows {
                conv: self,
                input,
                h: 1,
                w: n,
                ow: n,
                ib,
                oy: 0,
                first,
                count,
                out: out_ptr,
                oh: 1,
                residual,
                kernel,
                layout,
                span: (span * SPAN, ((span + 1) * SPAN).min(n)),
            };
            dispatch(&rows);
        };
        let tasks = groups * spans;
        for_each_task(tasks, run);
    }
}

/// `run(task)` for every task: on the pool when it has more than one
/// thread and there is more than one task, else here, on the calling
/// thread (a pool of one runs its loop on another core, away from the
/// caches the caller has just filled).
fn for_each_task(tasks: usize, run: impl Fn(usize) + Sync + Send) {
    let helpers = rayon::current_num_threads().saturating_sub(1).min(tasks.saturating_sub(1));
    if helpers == 0 {
        return (0..tasks).for_each(run);
    }
    // Tasks are taken from one counter by whoever is running: the caller
    // starts at once, and a helper that wakes late finds the work done
    // rather than holding the caller at the end of the layer (a pool of
    // two on a VM, its second vCPU slow to wake, ran 2 threads slower
    // than 1 when the tasks were dealt out in advance).
    let next = std::sync::atomic::AtomicUsize::new(0);
    let work = || {
        loop {
            let task = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            if task >= tasks {
                break;
            }
            run(task);
        }
    };
    rayon::scope(|scope| {
        for _ in 0..helpers {
            scope.spawn(|_| work());
        }
        work();
    });
}

/// Output rows per task, for `groups` groups of output blocks over an
/// `oh × ow` output.
fn band_rows(groups: usize, oh: usize, ow: usize) -> usize {
    // Enough pixels that a task outweighs its scheduling on small maps (a
    // 10-pixel row is a few microseconds of work).
    let mut band = (MIN_TASK_PIXELS / ow.max(1)).clamp(1, oh.max(1));
    // A few tasks that do not share out evenly leave a thread idle at the
    // end of the layer (a 20×20 map in bands of 3 rows is 7 tasks for 2
    // threads): narrower bands until they do.
    let threads = rayon::current_num_threads();
    while band > 1 && groups * oh.div_ceil(band) < 4 * threads && !(groups * oh.div_ceil(band)).is_multiple_of(threads)
    {
        band -= 1;
    }
    band
}

/// A convolution's output size on an `h × w` input.
fn out_size(k: usize, stride: usize, pad: usize, h: usize, w: usize) -> (usize, usize) {
    ((h + 2 * pad - k) / stride + 1, (w + 2 * pad - k) / stride + 1)
}

/// FLOPs of a convolution with output `(oh, ow)`: 2 per multiply-add.
fn flops((oh, ow): (usize, usize), c_in: usize, c_out: usize, k: usize) -> f64 {
    2.0 * (oh * ow * c_out * c_in * k * k) as f64
}

/// `body(i, out chunk i, input chunk i)` for the first `count` chunks of
/// `out` and `input`: on the pool when it has more than one thread and the
/// work is worth a hand-over, else here. (A pass on a one-thread pool waits
/// for that thread to wake, tens of microseconds on a VM, more than a small
/// map's pooling takes.)
fn for_each_chunk<T: Send, U: Sync>(
    out: &mut [T],
    out_chunk: usize,
    input: &[U],
    in_chunk: usize,
    count: usize,
    body: impl Fn(usize, &mut [T], &[U]) + Sync + Send,
) {
    let worth = count > 1 && out_chunk * count >= PARALLEL_VALUES;
    if rayon::current_num_threads() > 1 && worth {
        let chunks = out.par_chunks_mut(out_chunk).zip(input.par_chunks(in_chunk)).take(count);
        chunks.enumerate().for_each(|(i, (o, x))| body(i, o, x));
    } else {
        let chunks = out.chunks_mut(out_chunk).zip(input.chunks(in_chunk)).take(count);
        chunks.enumerate().for_each(|(i, (o, x))| body(i, o, x));
    }
}

/// Values from which pooling, upsampling or quantizing is split over threads.
const PARALLEL_VALUES: usize = 1 << 16;

/// Pixels per task of a pointwise convolution: a multiple of every tile width.
const SPAN: usize = 168;

/// Input blocks from which a layer counts as deep (see `run`), and the
/// output blocks per task then.
const DEEP_INPUT_BLOCKS: usize = 8;
const DEEP_GROUP: usize = 2;
/// Output pixels a task covers at least (whole rows).
const MIN_TASK_PIXELS: usize = 64;

#[derive(Clone, Copy)]
struct SendPtr(*mut f32);
// SAFETY: tasks write disjoint (block, row) ranges of the output; the buffer
// outlives the parallel loop.
unsafe impl Send for SendPtr {}
unsafe impl Sync for SendPtr {}

/// One task: output row `oy` of output blocks `first..first + count`.
struct Rows<'a> {
    conv: &'a BlockedConv,
    input: &'a [f32],
    h: usize,
    w: usize,
    ow: usize,
    oh: usize,
    ib: usize,
    oy: usize,
    first: usize,
    count: usize,
    out: SendPtr,
    residual: Option<&'a [f32]>,
    kernel: Kernel,
    layout: InLayout,
    /// The output pixels of row `oy` this task writes, `[from, to)`.
    span: (usize, usize),
}

/// Where input value (channel `ib·16 + ci`, row `iy`, column `ix`) is:
/// `ib·plane + iy·row + ix·pixel + ci·channel`, for `ci < lanes`.
#[derive(Clone, Copy)]
struct InLayout {
    plane: usize,
    row: usize,
    pixel: usize,
    channel: usize,
    lanes: usize,
}

/// The micro-kernels, best first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kernel {
    Avx512,
    Avx2,
    Generic,
}

/// 0: the best the CPU has; else a forced kernel (tests, benchmarks).
static FORCED: std::sync::atomic::AtomicU8 = std::sync::atomic::AtomicU8::new(0);

/// Forces a kernel (`None`: the best the CPU has). A kernel the CPU lacks
/// falls back to the next one down.
pub fn force_kernel(kernel: Option<Kernel>) {
    let code = match kernel {
        None => 0,
        Some(Kernel::Avx512) => 1,
        Some(Kernel::Avx2) => 2,
        Some(Kernel::Generic) => 3,
    };
    FORCED.store(code, std::sync::atomic::Ordering::Relaxed);
}

/// The kernel convolutions run with now.
pub fn kernel() -> Kernel {
    let forced = FORCED.load(std::sync::atomic::Ordering::Relaxed);
    #[cfg(target_arch = "x86_64")]
    {
        if forced <= 1 && std::arch::is_x86_feature_detected!("avx512f") {
            return Kernel::Avx512;
        }
        if forced <= 2 && std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
            return Kernel::Avx2;
        }
    }
    let _ = forced;
    Kernel::Generic
}

fn dispatch(rows: &Rows) {
    #[cfg(target_arch = "x86_64")]
    match rows.kernel {
        // SAFETY: `kernel()` chose these only where the CPU has the features.
        Kernel::Avx512 => return unsafe { rows_avx512(rows) },
        Kernel::Avx2 => return unsafe { rows_avx2(rows) },
        Kernel::Generic => {}
    }
    rows_generic(rows);
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn rows_avx512(rows: &Rows) {
    rows_generic(rows);
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn rows_avx2(rows: &Rows) {
    rows_generic(rows);
}

#[inline(always)]
fn rows_generic(rows: &Rows) {
    match rows.count {
        4 => row::<4, 6>(rows),
        3 => row::<3, 8>(rows),
        2 => row::<2, 12>(rows),
        _ => row::<1, 14>(rows),
    }
}

/// Group `group` of `ob` output blocks dealt evenly over `groups` groups:
/// its first block and its count. Five blocks (80 channels) go as 3 + 2,
/// not 4 + 1: a lone block's tile has one weight vector for 14 broadcasts
/// and runs at half the rate of the others.
fn block_group(ob: usize, groups: usize, group: usize) -> (usize, usize) {
    let (base, extra) = (ob / groups, ob % groups);
    (group * base + group.min(extra), base + usize::from(group < extra))
}

/// Pixels `ox` whose every tap is inside the row: `ox·s + kx - pad ∈ [0, w)`.
fn interior(w: usize, ow: usize, k: usize, s: usize, pad: usize) -> (usize, usize) {
    let lo = pad.div_ceil(s).min(ow);
    let hi = if w + pad >= k { ((w + pad - k) / s + 1).min(ow) } else { 0 };
    (lo, hi.max(lo))
}

/// Where a tile reads its input: the layer's own, or a zero-padded copy of
/// the patch a border tile covers; `(oy, ox)` is the tile's first output
/// pixel in that input's coordinates.
#[derive(Clone, Copy)]
struct Src<'a> {
    input: &'a [f32],
    layout: InLayout,
    h: usize,
    w: usize,
    oy: usize,
    ox: usize,
}

impl<'a> Src<'a> {
    fn of(r: &Rows<'a>, ox: usize) -> Self {
        Self { input: r.input, layout: r.layout, h: r.h, w: r.w, oy: r.oy, ox }
    }
}

thread_local! {
    /// Border patches, kept per thread so a row allocates nothing.
    static PATCH: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Copies the input a `px`-pixel tile at output `(r.oy, ox)` reads, with
/// zeros where it falls outside the input, into `buf`: the tile then runs
/// without a bound test per tap (blocked input only). The patch's tile sits
/// at output `(1, 1)` of the patch.
fn patch<'b>(r: &Rows, ox: usize, px: usize, buf: &'b mut Vec<f32>) -> Src<'b> {
    let c = r.conv;
    let (k, s, pad) = (c.k, c.stride, c.pad);
    // Rows `s + ky - pad` and columns `s·(1 + p) + kx - pad` of the patch.
    let (h2, w2) = (s + k - pad, s * px + k - pad);
    let l = r.layout;
    buf.clear();
    buf.resize(r.ib * h2 * w2 * B, 0.0);
    for ib in 0..r.ib {
        for y2 in 0..h2 {
            let sy = y2 as isize + (r.oy as isize - 1) * s as isize;
            if sy < 0 || sy >= r.h as isize {
                continue;
            }
            for x2 in 0..w2 {
                let sx = x2 as isize + (ox as isize - 1) * s as isize;
                if sx < 0 || sx >= r.w as isize {
                    continue;
                }
                let from = ib * l.plane + sy as usize * l.row + sx as usize * l.pixel;
                let to = ((ib * h2 + y2) * w2 + x2) * B;
                buf[to..to + B].copy_from_slice(&r.input[from..from + B]);
            }
        }
    }
    let layout = InLayout { plane: h2 * w2 * B, row: w2 * B, pixel: B, channel: 1, lanes: B };
    Src { input: buf, layout, h: h2, w: w2, oy: 1, ox: 1 }
}

/// One output row for `OB` output blocks, `PX` pixels at a time.
#[inline(always)]
fn row<const OB: usize, const PX: usize>(r: &Rows) {
    let c = r.conv;
    let (k, s, pad) = (c.k, c.stride, c.pad);
    let (from, to) = r.span;
    let (lo, hi) = interior(r.w, r.ow, k, s, pad);
    let (lo, hi) = (lo.clamp(from, to), hi.clamp(from, to));
    let hi = hi.max(lo);
    #[cfg(target_arch = "x86_64")]
    if r.kernel == Kernel::Avx2 {
        // SAFETY: the CPU has AVX2 and FMA (the kernel is chosen only then);
        // pixels outside `lo..hi` are checked tap by tap.
        unsafe {
            if k > 1 && r.layout.pixel == B && to - from >= 6 {
                // Whole 6-pixel tiles from `from`, the last one ending at
                // `to` (it may overlap the one before: those pixels are
                // computed twice, the same). Tiles whose taps leave the
                // input run on a zero-padded patch, so none is cut short.
                let starts = (to - from).div_ceil(6);
                let start = |i: usize| (from + 6 * i).min(to - 6);
                let inside = |ox: usize| ox >= lo && ox + 6 <= hi;
                for block in 0..r.count {
                    for i in 0..starts {
                        if inside(start(i)) {
                            avx2::tile::<6>(r, start(i), block, false);
                        }
                    }
                }
                PATCH.with(|buf| {
                    let mut buf = buf.borrow_mut();
                    for i in (0..starts).filter(|i| !inside(start(*i))) {
                        let src = patch(r, start(i), 6, &mut buf);
                        for block in 0..r.count {
                            avx2::tile_from::<6>(r, start(i), block, false, &src);
                        }
                    }
                });
                return;
            }
            for block in 0..r.count {
                for ox in from..lo {
                    avx2::single(r, ox, block, true);
                }
                let mut ox = lo;
                while ox + 6 <= hi {
                    avx2::tile::<6>(r, ox, block, false);
                    ox += 6;
                }
                for ox in ox..hi {
                    avx2::single(r, ox, block, false);
                }
                for ox in hi..to {
                    avx2::single(r, ox, block, true);
                }
            }
        }
        return;
    }
    #[cfg(target_arch = "x86_64")]
    if r.kernel == Kernel::Avx512 {
        // SAFETY: the CPU has AVX-512F (the kernel is chosen only then); pixels
        // outside `lo..hi` are checked tap by tap, those inside need not be.
        unsafe {
            for ox in from..lo {
                avx512::tile::<OB, 1>(r, ox, true);
            }
            let mut ox = lo;
            while ox + PX <= hi {
                avx512::tile::<OB, PX>(r, ox, false);
                ox += PX;
            }
            // What is left of the interior in one tile of its width: each
            // tile re-reads the whole weight panel, so 8 pixels as 4 + 2 +
            // 1 + 1 read it four times.
            if ox < hi {
                avx512::tile_of_width(r, OB, ox, hi - ox);
            }
            for ox in hi..to {
                avx512::tile::<OB, 1>(r, ox, true);
            }
        }
        return;
    }
    let mut ox = from;
    // Left border, one pixel at a time with bounds.
    while ox < lo {
        tile::<OB, 1>(r, ox, true);
        ox += 1;
    }
    while ox + PX <= hi {
        tile::<OB, PX>(r, ox, false);
        ox += PX;
    }
    while ox < to {
        tile::<OB, 1>(r, ox, ox >= hi);
        ox += 1;
    }
}

/// `PX` output pixels from `ox` for `OB` output blocks: accumulate, SiLU,
/// residual, store. `checked`: some taps fall outside the row.
#[inline(always)]
fn tile<const OB: usize, const PX: usize>(r: &Rows, ox: usize, checked: bool) {
    let c = r.conv;
    let (k, s, pad, w, h) = (c.k, c.stride, c.pad, r.w, r.h);
    let tap_stride = B * B;
    let ob_stride = r.ib * k * k * tap_stride;
    let mut acc = [[[0f32; B]; PX]; OB];
    for (b, acc_b) in acc.iter_mut().enumerate() {
        let bias = &c.bias[(r.first + b) * B..(r.first + b + 1) * B];
        for a in acc_b.iter_mut() {
            a.copy_from_slice(bias);
        }
    }
    for ky in 0..k {
        let iy = (r.oy * s + ky) as isize - pad as isize;
        if iy < 0 || iy >= h as isize {
            continue;
        }
        let iy = iy as usize;
        let l = r.layout;
        for ib in 0..r.ib {
            let line = &r.input[ib * l.plane + iy * l.row..];
            for kx in 0..k {
                let weights = &c.packed[r.first * ob_stride + ((ib * k + ky) * k + kx) * tap_stride..];
                if checked {
                    // PX is 1 here.
                    let ix = (ox * s + kx) as isize - pad as isize;
                    if ix < 0 || ix >= w as isize {
                        continue;
                    }
                }
                let x0 = (ox * s + kx).wrapping_sub(pad);
                for ci in 0..l.lanes {
                    let mut wv = [[0f32; B]; OB];
                    for (b, v) in wv.iter_mut().enumerate() {
                        v.copy_from_slice(&weights[b * ob_stride + ci * B..b * ob_stride + ci * B + B]);
                    }
                    for p in 0..PX {
                        let x = line[(x0 + p * s) * l.pixel + ci * l.channel];
                        for b in 0..OB {
                            for lane in 0..B {
                                // Not `mul_add`: without FMA in the
                                // baseline it is a call to libm's `fmaf`
                                // per value (seconds a frame on x86 boxes
                                // without AVX2).
                                acc[b][p][lane] += wv[b][lane] * x;
                            }
                        }
                    }
                }
            }
        }
    }
    let (oh, ow) = (r.oh, r.ow);
    for (b, acc_b) in acc.iter_mut().enumerate() {
        let block = r.first + b;
        for (p, a) in acc_b.iter_mut().enumerate() {
            if c.silu {
                for v in a.iter_mut() {
                    *v /= 1.0 + crate::exp(-*v);
                }
            }
            let at = ((block * oh + r.oy) * ow + ox + p) * B;
            if let Some(res) = r.residual {
                for (v, add) in a.iter_mut().zip(&res[at..at + B]) {
                    *v += add;
                }
            }
            // SAFETY: (block, oy, ox + p) is this task's own output pixel,
            // inside the buffer (its length was asserted).
            unsafe { std::ptr::copy_nonoverlapping(a.as_ptr(), r.out.0.add(at), B) };
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use super::{B, Rows};
    use std::arch::x86_64::*;

    /// `e^x` as the crate's scalar `exp`: `2^n · p(r)`, the scaling by `scalef`.
    #[inline]
    #[target_feature(enable = "avx512f")]
    fn exp(x: __m512) -> __m512 {
        let x = _mm512_min_ps(_mm512_max_ps(x, _mm512_set1_ps(-87.0)), _mm512_set1_ps(88.0));
        let n = _mm512_roundscale_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(_mm512_mul_ps(
            x,
            _mm512_set1_ps(std::f32::consts::LOG2_E),
        ));
        let r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693_359_4), x);
        let r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.121_944_4e-4), r);
        let mut p = _mm512_set1_ps(1.0 / 720.0);
        for c in [1.0 / 120.0, 1.0 / 24.0, 1.0 / 6.0, 0.5, 1.0, 1.0] {
            p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(c));
        }
        _mm512_scalef_ps(p, n)
    }

    /// `v / (1 + e^-v)` by a reciprocal estimate and one Newton step (about
    /// 1e-7 relative): a 512-bit divide takes ~16 cycles, as long as a
    /// shallow layer's whole accumulation of one vector.
    #[inline]
    #[target_feature(enable = "avx512f")]
    pub(super) fn silu(v: __m512) -> __m512 {
        let d = _mm512_add_ps(_mm512_set1_ps(1.0), exp(_mm512_sub_ps(_mm512_setzero_ps(), v)));
        let r = _mm512_rcp14_ps(d);
        let r = _mm512_mul_ps(r, _mm512_fnmadd_ps(d, r, _mm512_set1_ps(2.0)));
        _mm512_mul_ps(v, r)
    }

    /// Every tap in kernel rows `ky_from..ky_to` (those inside the input)
    /// into the tile of output pixels `ox..` of row `r.oy`, the pixels
    /// `STEP` values apart: 16 or 32 on blocked input (16 × the stride),
    /// whose 16 lanes are then a constant count (a runtime one had the
    /// accumulators stored and reloaded after every tap); else 2, the first
    /// layer's stride on the NCHW frame, its lanes a plane apart.
    ///
    /// # Safety
    /// The CPU has AVX-512F; the input is blocked (or, with `STEP` 2, the
    /// NCHW frame), and every tap of the tile's pixels in those rows lies
    /// inside it.
    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn interior_taps<const OB: usize, const PX: usize, const STEP: usize>(
        acc: &mut [[__m512; PX]; OB],
        r: &Rows,
        weights: *const f32,
        ob_stride: usize,
        ox: usize,
        (ky_from, ky_to): (usize, usize),
    ) {
        let c = r.conv;
        let (k, s, pad, l) = (c.k, c.stride, c.pad, r.layout);
        let tap = B * B;
        let blocked = STEP.is_multiple_of(B);
        let pixel = if blocked { B } else { 1 };
        // SAFETY: as the caller promised.
        unsafe {
            for ib in 0..r.ib {
                for ky in ky_from..ky_to {
                    let line = r.input.as_ptr().add(ib * l.plane + (r.oy * s + ky - pad) * l.row);
                    let wrow = weights.add((ib * k + ky) * k * tap);
                    for kx in 0..k {
                        let (wp, xp) = (wrow.add(kx * tap), line.add((ox * s + kx - pad) * pixel));
                        if blocked {
                            // Four lanes per iteration: the loop's own
                            // counting and jumping is then a small part of
                            // each pass.
                            for ci in (0..B).step_by(4) {
                                for u in ci..ci + 4 {
                                    step_lane::<OB, PX>(acc, wp.add(u * B), ob_stride, xp.add(u), STEP);
                                }
                            }
                        } else {
                            for ci in 0..l.lanes {
                                step_lane::<OB, PX>(acc, wp.add(ci * B), ob_stride, xp.add(ci * l.channel), STEP);
                            }
                        }
                    }
                }
            }
        }
    }

    /// One input channel of one tap into the tile: a weight vector per
    /// block, a broadcast per pixel, an FMA for each pair.
    ///
    /// # Safety
    /// The CPU has AVX-512F; the weights and input are in bounds.
    #[allow(clippy::needless_range_loop)]
    #[inline]
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn step_lane<const OB: usize, const PX: usize>(
        acc: &mut [[__m512; PX]; OB],
        wp: *const f32,
        ob_stride: usize,
        xp: *const f32,
        step: usize,
    ) {
        // SAFETY: as the caller promised.
        unsafe {
            let mut wv = [_mm512_setzero_ps(); OB];
            for (b, v) in wv.iter_mut().enumerate() {
                *v = _mm512_loadu_ps(wp.add(b * ob_stride));
            }
            for p in 0..PX {
                let x = _mm512_set1_ps(*xp.add(p * step));
                for b in 0..OB {
                    acc[b][p] = _mm512_fmadd_ps(wv[b], x, acc[b][p]);
                }
            }
        }
    }

    /// An interior tile of `blocks` output blocks × `width` pixels (fewer
    /// than the row's widest tile): the const tile for it.
    ///
    /// # Safety
    /// As [`tile`], unchecked.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn tile_of_width(r: &Rows, blocks: usize, ox: usize, width: usize) {
        macro_rules! widths {
            ($($ob:literal: $($n:literal)*;)*) => {
                match (blocks, width) {
                    $($(($ob, $n) => unsafe { tile::<$ob, $n>(r, ox, false) },)*)*
                    _ => unreachable!("no tile of {blocks} blocks × {width} pixels"),
                }
            };
        }
        widths! {
            1: 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20 21 22 23;
            2: 1 2 3 4 5 6 7 8 9 10 11;
            3: 1 2 3 4 5 6 7;
            4: 1 2 3 4 5;
        }
    }

    /// The interior tile: `OB` output blocks × `PX` pixels in registers,
    /// every tap inside the input row.
    ///
    /// # Safety
    /// The CPU has AVX-512F, and unless `checked` (then `PX` is 1, and taps
    /// outside the row are skipped), for every pixel `ox..ox + PX` every tap
    /// `(ox + p)·stride + kx - pad` lies in `[0, w)`.
    // Indexed loops on purpose: one broadcast feeds every block's FMA, and
    // constant indices keep the whole tile in registers.
    #[allow(clippy::needless_range_loop)]
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn tile<const OB: usize, const PX: usize>(r: &Rows, ox: usize, checked: bool) {
        let c = r.conv;
        let (k, s, pad, w, h) = (c.k, c.stride, c.pad, r.w, r.h);
        let tap = B * B;
        let ob_stride = r.ib * k * k * tap;
        let mut acc = [[_mm512_setzero_ps(); PX]; OB];
        // SAFETY (all pointer arithmetic below): the packed weights hold
        // `ob × ib × k × k × 16 × 16` values and `first + OB <= ob`; the
        // input holds `ib` planes of `h × w × 16` and (iy, ix) is inside.
        unsafe {
            for (b, acc_b) in acc.iter_mut().enumerate() {
                let bias = _mm512_loadu_ps(c.bias.as_ptr().add((r.first + b) * B));
                for a in acc_b.iter_mut() {
                    *a = bias;
                }
            }
            let weights = c.packed.as_ptr().add(r.first * ob_stride);
            let l = r.layout;
            let blocked = l.lanes == B && l.channel == 1 && l.pixel == B;
            // The first layer reads the NCHW frame: pixels 1 apart.
            let frame = l.pixel == 1;
            if !checked && ((blocked && s <= 2) || (frame && s == 2)) {
                // The interior: the rows of taps inside the input found
                // once, and the pixel step a constant, so the loop nest is
                // plain and one pointer reaches every pixel (a runtime step
                // took a register per pixel: a 12-pixel tile ran out of them
                // and reloaded its pointers from the stack inside the loop).
                let top = r.oy * s;
                let rows = (pad.saturating_sub(top), (h + pad).saturating_sub(top).min(k));
                match (blocked, s) {
                    (true, 1) => interior_taps::<OB, PX, B>(&mut acc, r, weights, ob_stride, ox, rows),
                    (true, _) => interior_taps::<OB, PX, { 2 * B }>(&mut acc, r, weights, ob_stride, ox, rows),
                    (false, _) => interior_taps::<OB, PX, 2>(&mut acc, r, weights, ob_stride, ox, rows),
                }
            } else {
                for ky in 0..k {
                    let iy = (r.oy * s + ky) as isize - pad as isize;
                    if iy < 0 || iy >= h as isize {
                        continue;
                    }
                    for ib in 0..r.ib {
                        let line = r.input.as_ptr().add(ib * l.plane + iy as usize * l.row);
                        for kx in 0..k {
                            let ix = (ox * s + kx) as isize - pad as isize;
                            if checked && (ix < 0 || ix >= w as isize) {
                                continue;
                            }
                            let wp = weights.add(((ib * k + ky) * k + kx) * tap);
                            let xp = line.offset(ix * l.pixel as isize);
                            for ci in 0..l.lanes {
                                step_lane::<OB, PX>(
                                    &mut acc,
                                    wp.add(ci * B),
                                    ob_stride,
                                    xp.add(ci * l.channel),
                                    s * l.pixel,
                                );
                            }
                        }
                    }
                }
            }
            for (b, acc_b) in acc.iter().enumerate() {
                for (p, v) in acc_b.iter().enumerate() {
                    let mut v = *v;
                    if c.silu {
                        v = silu(v);
                    }
                    let at = (((r.first + b) * r.oh + r.oy) * r.ow + ox + p) * B;
                    if let Some(res) = r.residual {
                        v = _mm512_add_ps(v, _mm512_loadu_ps(res.as_ptr().add(at)));
                    }
                    _mm512_storeu_ps(r.out.0.add(at), v);
                }
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use super::{B, Rows, Src};
    use std::arch::x86_64::*;

    /// `e^x` as the crate's scalar `exp`, 8 lanes; `2^n` built in the exponent bits.
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    fn exp(x: __m256) -> __m256 {
        let x = _mm256_min_ps(_mm256_max_ps(x, _mm256_set1_ps(-87.0)), _mm256_set1_ps(88.0));
        let n = _mm256_round_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(_mm256_mul_ps(
            x,
            _mm256_set1_ps(std::f32::consts::LOG2_E),
        ));
        let r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693_359_4), x);
        let r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.121_944_4e-4), r);
        let mut p = _mm256_set1_ps(1.0 / 720.0);
        for c in [1.0 / 120.0, 1.0 / 24.0, 1.0 / 6.0, 0.5, 1.0, 1.0] {
            p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(c));
        }
        let scale = _mm256_castsi256_ps(_mm256_slli_epi32::<23>(_mm256_add_epi32(
            _mm256_cvtps_epi32(n),
            _mm256_set1_epi32(127),
        )));
        _mm256_mul_ps(p, scale)
    }

    /// `v / (1 + e^-v)`, 8 lanes (an 8-lane divide is cheap on these cores).
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    pub(super) fn silu(v: __m256) -> __m256 {
        let e = exp(_mm256_sub_ps(_mm256_setzero_ps(), v));
        _mm256_div_ps(v, _mm256_add_ps(_mm256_set1_ps(1.0), e))
    }

    /// One output block × one pixel (borders and what is left of a row).
    /// One pixel has only two accumulators, and each FMA would wait for the
    /// last (latency bound: a fifth of the FMA units' rate); here the input
    /// channels are dealt over four pairs, summed at the end.
    ///
    /// # Safety
    /// As [`tile`] with `PX` 1.
    #[allow(clippy::needless_range_loop)]
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn single(r: &Rows, ox: usize, block: usize, checked: bool) {
        let c = r.conv;
        let (k, s, pad, w, h) = (c.k, c.stride, c.pad, r.w, r.h);
        let tap = B * B;
        let ob = r.first + block;
        let mut acc = [[_mm256_setzero_ps(); 2]; 4];
        // SAFETY: as in `tile`: weights, bias and input in bounds.
        unsafe {
            acc[0] = [_mm256_loadu_ps(c.bias.as_ptr().add(ob * B)), _mm256_loadu_ps(c.bias.as_ptr().add(ob * B + 8))];
            let weights = c.packed.as_ptr().add(ob * r.ib * k * k * tap);
            let l = r.layout;
            for ky in 0..k {
                let iy = (r.oy * s + ky) as isize - pad as isize;
                if iy < 0 || iy >= h as isize {
                    continue;
                }
                for ib in 0..r.ib {
                    let line = r.input.as_ptr().add(ib * l.plane + iy as usize * l.row);
                    for kx in 0..k {
                        let ix = (ox * s + kx) as isize - pad as isize;
                        if checked && (ix < 0 || ix >= w as isize) {
                            continue;
                        }
                        let wp = weights.add(((ib * k + ky) * k + kx) * tap);
                        let xp = line.offset(ix * l.pixel as isize);
                        let mut ci = 0;
                        while ci < l.lanes {
                            let j = ci % 4;
                            let x = _mm256_broadcast_ss(&*xp.add(ci * l.channel));
                            acc[j][0] = _mm256_fmadd_ps(_mm256_loadu_ps(wp.add(ci * B)), x, acc[j][0]);
                            acc[j][1] = _mm256_fmadd_ps(_mm256_loadu_ps(wp.add(ci * B + 8)), x, acc[j][1]);
                            ci += 1;
                        }
                    }
                }
            }
            let at = ((ob * r.oh + r.oy) * r.ow + ox) * B;
            for half in 0..2 {
                let mut v =
                    _mm256_add_ps(_mm256_add_ps(acc[0][half], acc[1][half]), _mm256_add_ps(acc[2][half], acc[3][half]));
                if c.silu {
                    v = silu(v);
                }
                if let Some(res) = r.residual {
                    v = _mm256_add_ps(v, _mm256_loadu_ps(res.as_ptr().add(at + 8 * half)));
                }
                _mm256_storeu_ps(r.out.0.add(at + 8 * half), v);
            }
        }
    }

    /// One output block × `PX` pixels, each block as two 8-lane halves:
    /// 2·`PX` accumulators, two weight registers and a broadcast.
    ///
    /// # Safety
    /// The CPU has AVX2 and FMA; `block < r.count`; unless `checked` (then
    /// `PX` is 1 and taps outside the row are skipped) every tap of pixels
    /// `ox..ox + PX` lies in `[0, w)`.
    #[allow(clippy::needless_range_loop)]
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn tile<const PX: usize>(r: &Rows, ox: usize, block: usize, checked: bool) {
        // SAFETY: as the caller promised.
        unsafe { tile_from::<PX>(r, ox, block, checked, &Src::of(r, ox)) }
    }

    /// [`tile`] reading its input from `src` (the layer's input, or a
    /// zero-padded patch of it), writing output pixels `ox..ox + PX` of row
    /// `r.oy`.
    ///
    /// # Safety
    /// As [`tile`], for `src`'s input and bounds.
    #[allow(clippy::needless_range_loop)]
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn tile_from<const PX: usize>(r: &Rows, ox: usize, block: usize, checked: bool, src: &Src) {
        let c = r.conv;
        let (k, s, pad, w, h) = (c.k, c.stride, c.pad, src.w, src.h);
        let tap = B * B;
        let ob = r.first + block;
        let mut acc = [[_mm256_setzero_ps(); 2]; PX];
        // SAFETY: as in the AVX-512 tile: weights, bias and input in bounds.
        unsafe {
            let bias = [_mm256_loadu_ps(c.bias.as_ptr().add(ob * B)), _mm256_loadu_ps(c.bias.as_ptr().add(ob * B + 8))];
            for a in acc.iter_mut() {
                *a = bias;
            }
            let weights = c.packed.as_ptr().add(ob * r.ib * k * k * tap);
            for ky in 0..k {
                let iy = (src.oy * s + ky) as isize - pad as isize;
                if iy < 0 || iy >= h as isize {
                    continue;
                }
                let l = src.layout;
                for ib in 0..r.ib {
                    let line = src.input.as_ptr().add(ib * l.plane + iy as usize * l.row);
                    for kx in 0..k {
                        let ix = (src.ox * s + kx) as isize - pad as isize;
                        if checked && (ix < 0 || ix >= w as isize) {
                            continue;
                        }
                        let wp = weights.add(((ib * k + ky) * k + kx) * tap);
                        let xp = line.offset(ix * l.pixel as isize);
                        for ci in 0..l.lanes {
                            let lo = _mm256_loadu_ps(wp.add(ci * B));
                            let hi = _mm256_loadu_ps(wp.add(ci * B + 8));
                            for p in 0..PX {
                                let x = _mm256_broadcast_ss(&*xp.add(p * s * l.pixel + ci * l.channel));
                                acc[p][0] = _mm256_fmadd_ps(lo, x, acc[p][0]);
                                acc[p][1] = _mm256_fmadd_ps(hi, x, acc[p][1]);
                            }
                        }
                    }
                }
            }
            for (p, halves) in acc.iter().enumerate() {
                let at = ((ob * r.oh + r.oy) * r.ow + ox + p) * B;
                for (half, v) in halves.iter().enumerate() {
                    let mut v = *v;
                    if c.silu {
                        v = silu(v);
                    }
                    if let Some(res) = r.residual {
                        v = _mm256_add_ps(v, _mm256_loadu_ps(res.as_ptr().add(at + 8 * half)));
                    }
                    _mm256_storeu_ps(r.out.0.add(at + 8 * half), v);
                }
            }
        }
    }
}

/// Runs `f` compiled for AVX-512F or AVX2 when the CPU has them: the
/// lane loops of pooling and upsampling then vectorise 16 wide.
#[inline(always)]
fn wide(f: impl FnOnce()) {
    #[cfg(target_arch = "x86_64")]
    {
        #[target_feature(enable = "avx512f")]
        fn avx512(f: impl FnOnce()) {
            f()
        }
        #[target_feature(enable = "avx2")]
        fn avx2(f: impl FnOnce()) {
            f()
        }
        if std::arch::is_x86_feature_detected!("avx512f") {
            // SAFETY: the CPU has the feature.
            return unsafe { avx512(f) };
        }
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: as above.
            return unsafe { avx2(f) };
        }
    }
    f()
}

/// `out = max over a k × k window` (stride 1, edges ignored), per block:
/// the maximum along rows, then along columns of that.
pub fn max_pool(input: &[f32], blocks: usize, h: usize, w: usize, k: usize, out: &mut [f32]) {
    max_pool_of(input, blocks, h, w, k, out);
}

/// The same on the int8 path's bytes (the maximum keeps their meaning).
pub fn max_pool_bytes(input: &[u8], blocks: usize, h: usize, w: usize, k: usize, out: &mut [u8]) {
    max_pool_of(input, blocks, h, w, k, out);
}

/// A value pooling takes the maximum of (statically dispatched, so the lane
/// loops vectorise).
trait Lane: Copy + Default + Send + Sync {
    fn max(self, other: Self) -> Self;
}

impl Lane for f32 {
    #[inline(always)]
    fn max(self, other: Self) -> Self {
        f32::max(self, other)
    }
}

impl Lane for u8 {
    #[inline(always)]
    fn max(self, other: Self) -> Self {
        Ord::max(self, other)
    }
}

#[inline(always)]
fn max_lanes<T: Lane>(into: &mut [T], from: &[T]) {
    for (a, b) in into.iter_mut().zip(from) {
        *a = a.max(*b);
    }
}

fn max_pool_of<T: Lane>(input: &[T], blocks: usize, h: usize, w: usize, k: usize, out: &mut [T]) {
    let pad = k / 2;
    let plane = h * w * B;
    for_each_chunk(out, plane, input, plane, blocks, |_, dst, src| {
        wide(|| {
            let mut rows = vec![T::default(); plane];
            for y in 0..h {
                for x in 0..w {
                    let at = (y * w + x) * B;
                    rows[at..at + B].copy_from_slice(&src[at..at + B]);
                    for xx in x.saturating_sub(pad)..(x + pad + 1).min(w) {
                        let from = (y * w + xx) * B;
                        max_lanes(&mut rows[at..at + B], &src[from..from + B]);
                    }
                }
            }
            for y in 0..h {
                for x in 0..w {
                    let at = (y * w + x) * B;
                    dst[at..at + B].copy_from_slice(&rows[at..at + B]);
                    for yy in y.saturating_sub(pad)..(y + pad + 1).min(h) {
                        let from = (yy * w + x) * B;
                        max_lanes(&mut dst[at..at + B], &rows[from..from + B]);
                    }
                }
            }
        })
    });
}

/// Nearest-neighbour ×2 upsampling, per block.
pub fn upsample2(input: &[f32], blocks: usize, h: usize, w: usize, out: &mut [f32]) {
    upsample2_of(input, blocks, h, w, out);
}

/// The same on the int8 path's bytes.
pub fn upsample2_bytes(input: &[u8], blocks: usize, h: usize, w: usize, out: &mut [u8]) {
    upsample2_of(input, blocks, h, w, out);
}

fn upsample2_of<T: Copy + Send + Sync>(input: &[T], blocks: usize, h: usize, w: usize, out: &mut [T]) {
    let (oh, ow) = (2 * h, 2 * w);
    for_each_chunk(out, oh * ow * B, input, h * w * B, blocks, |_, dst, src| {
        wide(|| {
            for y in 0..oh {
                let line = &src[(y / 2) * w * B..(y / 2 + 1) * w * B];
                let to = &mut dst[y * ow * B..(y + 1) * ow * B];
                for (x, pair) in to.chunks_exact_mut(2 * B).enumerate() {
                    pair[..B].copy_from_slice(&line[x * B..(x + 1) * B]);
                    pair[B..].copy_from_slice(&line[x * B..(x + 1) * B]);
                }
            }
        })
    });
}

/// Anchors per task of [`decode_head`] (a multiple of 16).
const DECODE_ANCHORS: usize = 512;

/// The head's decoding straight from one scale's blocked output, as
/// [`crate::decode_head`] does from NCHW: blocks 0–3 are the four box
/// sides, each side's 16 bins its lanes; the class logits follow from
/// block 4. Per anchor (pixel, row-major): each side's softmax expectation
/// over its bins with the DFL weights (`dfl`, 16), the centre-size box
/// around the anchor's cell centre scaled by `stride`, and the class
/// sigmoids. Writes columns `column..column + h·w` of `out`
/// (`[4 + classes, total]` row-major).
///
/// Why here: the NCHW copy of the head's outputs cost as much as the decode
/// itself (3 ms at 640), and the decode's anchor-wise passes each went
/// through memory; here sixteen anchors at a time are turned so that they
/// are the lanes, and everything after is lane-wise.
#[allow(clippy::too_many_arguments)]
pub fn decode_head(
    raw: &[f32],
    h: usize,
    w: usize,
    classes: usize,
    dfl: &[f32],
    stride: f32,
    out: &mut [f32],
    total: usize,
    column: usize,
) {
    let n = h * w;
    assert!(
        dfl.len() == B
            && raw.len() >= (4 + classes.div_ceil(B)) * n * B
            && out.len() == (4 + classes) * total
            && column + n <= total,
        "decode_head: sizes"
    );
    let out = SendPtr(out.as_mut_ptr());
    let job = Decode { raw, n, w, classes, dfl, stride, out, total, column };
    let chunks = n.div_ceil(DECODE_ANCHORS);
    let run = |chunk: usize| job.run(chunk * DECODE_ANCHORS..((chunk + 1) * DECODE_ANCHORS).min(n));
    for_each_task(chunks, run);
}

/// One scale's decoding (see [`decode_head`]).
struct Decode<'a> {
    raw: &'a [f32],
    n: usize,
    w: usize,
    classes: usize,
    dfl: &'a [f32],
    stride: f32,
    out: SendPtr,
    total: usize,
    column: usize,
}

// Indexed lane loops on purpose: the same index runs over several arrays.
#[allow(clippy::needless_range_loop)]
impl Decode<'_> {
    /// Anchors `anchors`, compiled for the widest vectors the CPU has: the
    /// lane loops then run 16 anchors in one or two instructions.
    fn run(&self, anchors: std::ops::Range<usize>) {
        #[cfg(target_arch = "x86_64")]
        {
            #[target_feature(enable = "avx512f")]
            fn avx512(job: &Decode, anchors: std::ops::Range<usize>) {
                job.anchors(anchors)
            }
            #[target_feature(enable = "avx2,fma")]
            fn avx2(job: &Decode, anchors: std::ops::Range<usize>) {
                job.anchors(anchors)
            }
            if std::arch::is_x86_feature_detected!("avx512f") {
                // SAFETY: the CPU has the feature.
                return unsafe { avx512(self, anchors) };
            }
            if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
                // SAFETY: as above.
                return unsafe { avx2(self, anchors) };
            }
        }
        self.anchors(anchors)
    }

    /// Block `block`'s 16 lanes for the `count` anchors from `a0`, turned:
    /// `[lane][anchor]`.
    #[inline(always)]
    fn turned(&self, block: usize, a0: usize, count: usize) -> [[f32; B]; B] {
        let mut t = [[0f32; B]; B];
        for j in 0..count {
            let at = (block * self.n + a0 + j) * B;
            for (lane, v) in self.raw[at..at + B].iter().enumerate() {
                t[lane][j] = *v;
            }
        }
        t
    }

    /// Anchors `anchors`, sixteen at a time.
    #[inline(always)]
    fn anchors(&self, anchors: std::ops::Range<usize>) {
        for a0 in anchors.clone().step_by(B) {
            let count = (anchors.end - a0).min(B);
            let turned = |block: usize| self.turned(block, a0, count);
            let mut distance = [[0f32; B]; 4];
            for (side, distance) in distance.iter_mut().enumerate() {
                let bins = turned(side);
                let mut max = bins[0];
                for bin in &bins[1..] {
                    for (m, v) in max.iter_mut().zip(bin) {
                        *m = m.max(*v);
                    }
                }
                let (mut sum, mut weighted) = ([0f32; B], [0f32; B]);
                for (bin, weight) in bins.iter().zip(self.dfl) {
                    for j in 0..B {
                        let e = crate::exp(bin[j] - max[j]);
                        sum[j] += e;
                        weighted[j] += e * weight;
                    }
                }
                for j in 0..B {
                    distance[j] = weighted[j] / sum[j];
                }
            }
            let mut boxes = [[0f32; B]; 4];
            for j in 0..B {
                let a = a0 + j;
                let (x, y) = ((a % self.w) as f32 + 0.5, (a / self.w) as f32 + 0.5);
                let (x0, y0) = (x - distance[0][j], y - distance[1][j]);
                let (x1, y1) = (x + distance[2][j], y + distance[3][j]);
                boxes[0][j] = (x0 + x1) * 0.5 * self.stride;
                boxes[1][j] = (y0 + y1) * 0.5 * self.stride;
                boxes[2][j] = (x1 - x0) * self.stride;
                boxes[3][j] = (y1 - y0) * self.stride;
            }
            for (row, values) in boxes.iter().enumerate() {
                self.write(row, a0, &values[..count]);
            }
            for block in 0..self.classes.div_ceil(B) {
                let mut scores = turned(4 + block);
                for (lane, row) in scores.iter_mut().enumerate().take(self.classes - block * B) {
                    for v in row.iter_mut() {
                        *v = 1.0 / (1.0 + crate::exp(-*v));
                    }
                    self.write(4 + block * B + lane, a0, &row[..count]);
                }
            }
        }
    }

    /// `values` into row `row` of the output from anchor `a0`.
    #[inline(always)]
    fn write(&self, row: usize, a0: usize, values: &[f32]) {
        let at = row * self.total + self.column + a0;
        // SAFETY: the output holds `(4 + classes) × total` values (asserted)
        // and `column + a0 + values.len() <= column + n <= total`; tasks
        // write disjoint anchors.
        unsafe { std::ptr::copy_nonoverlapping(values.as_ptr(), self.out.0.add(at), values.len()) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::random_values as random;

    /// The plain definition, NCHW.
    #[allow(clippy::too_many_arguments)]
    fn reference(
        x: &[f32],
        c_in: usize,
        h: usize,
        w: usize,
        weight: &[f32],
        bias: &[f32],
        c_out: usize,
        k: usize,
        s: usize,
        silu: bool,
    ) -> Vec<f32> {
        let pad = k / 2;
        let (oh, ow) = ((h + 2 * pad - k) / s + 1, (w + 2 * pad - k) / s + 1);
        let mut out = vec![0.0; c_out * oh * ow];
        for co in 0..c_out {
            for oy in 0..oh {
                for ox in 0..ow {
                    let mut sum = bias[co] as f64;
                    for ci in 0..c_in {
                        for ky in 0..k {
                            for kx in 0..k {
                                let (iy, ix) =
                                    ((oy * s + ky) as isize - pad as isize, (ox * s + kx) as isize - pad as isize);
                                if iy >= 0 && ix >= 0 && (iy as usize) < h && (ix as usize) < w {
                                    sum += (weight[((co * c_in + ci) * k + ky) * k + kx]
                                        * x[(ci * h + iy as usize) * w + ix as usize])
                                        as f64;
                                }
                            }
                        }
                    }
                    let v = sum as f32;
                    out[(co * oh + oy) * ow + ox] = if silu { v / (1.0 + (-v).exp()) } else { v };
                }
            }
        }
        out
    }

    fn check(kernel: Kernel) {
        force_kernel(Some(kernel));
        let mut by_winograd = 0;
        // (c_in, c_out, k, stride, h, w): YOLOv8's kinds, odd sizes, 1 to 5 output blocks.
        for (i, &(c_in, c_out, k, s, h, w)) in [
            (3, 16, 3, 2, 33, 40),
            (16, 16, 3, 1, 20, 21),
            (32, 64, 3, 2, 21, 17),
            (48, 32, 1, 1, 10, 12),
            (16, 16, 3, 1, 1, 1),
            (64, 80, 3, 1, 5, 9),
            (64, 48, 1, 1, 3, 30),
            // Five output blocks, dealt as 3 + 2 (and as 2 + 2 + 1 when deep)
            // over rows wide enough for whole tiles.
            (80, 80, 3, 1, 6, 30),
            (128, 80, 3, 1, 4, 27),
            // Deep inputs (8+ blocks): two output blocks x 12 pixels per tile.
            (128, 32, 3, 1, 7, 45),
            (256, 48, 1, 1, 4, 43),
        ]
        .iter()
        .enumerate()
        {
            let x = random(c_in * h * w, 11 + i as u64);
            let weight: Vec<f32> = random(c_out * c_in * k * k, 7 + i as u64).iter().map(|v| v * 0.2).collect();
            let bias = random(c_out, 3 + i as u64);
            // 3×3 stride-1 layers both by Winograd and direct.
            let variants = [true, false].into_iter().flat_map(|silu| {
                let conv = BlockedConv::new(&weight, &bias, c_in, c_out, k, s, silu);
                let direct = conv.winograd.is_some().then(|| conv.clone().direct_only());
                [Some(conv), direct].into_iter().flatten().map(move |conv| (silu, conv))
            });
            for (silu, conv) in variants {
                by_winograd += usize::from(conv.runs_winograd());
                let (oh, ow) = conv.out_size(h, w);
                let input = Blocked::from_nchw(&x, c_in, h, w);
                let mut out = Blocked::zeros(c_out, oh, ow);
                conv.forward(&input.data, h, w, &mut out.data, None);
                let want = reference(&x, c_in, h, w, &weight, &bias, c_out, k, s, silu);
                let got = out.to_nchw(c_out);
                let worst = got.iter().zip(&want).map(|(a, b)| (a - b).abs()).fold(0.0, f32::max);
                assert!(worst <= 1e-4, "kind {i} silu {silu}: max |diff| {worst}");
                if c_in <= B {
                    // Straight from NCHW, as the first layer reads the frame.
                    let mut direct = Blocked::zeros(c_out, oh, ow);
                    conv.forward_nchw(&x, h, w, &mut direct.data);
                    // Border pixels may sum in another order (patched tiles
                    // on blocked input, split accumulators on NCHW).
                    let worst = direct.to_nchw(c_out).iter().zip(&want).map(|(a, b)| (a - b).abs()).fold(0.0, f32::max);
                    assert!(worst <= 1e-4, "kind {i} from NCHW: max |diff| {worst}");
                }
                // With a residual: the same plus the residual.
                let residual = Blocked::from_nchw(&random(c_out * oh * ow, 5), c_out, oh, ow);
                let mut with = Blocked::zeros(c_out, oh, ow);
                conv.forward(&input.data, h, w, &mut with.data, Some(&residual.data));
                let sum: Vec<f32> = out.data.iter().zip(&residual.data).map(|(a, b)| a + b).collect();
                assert!(with.data.iter().zip(&sum).all(|(a, b)| (a - b).abs() <= 1e-5), "kind {i} residual");
            }
        }
        // Every 3×3 stride-1 kind, with and without SiLU.
        let expected = 2 * 6;
        assert_eq!(by_winograd, expected, "layers run by Winograd on {kernel:?}");
        force_kernel(None);
    }

    /// Every kernel this machine can run (a forced kernel the CPU lacks
    /// falls back to the next one down, so each is at least the baseline).
    #[test]
    fn every_kernel_agrees_with_the_definition_on_every_kind_of_layer() {
        for kernel in [Kernel::Avx512, Kernel::Avx2, Kernel::Generic] {
            check(kernel);
        }
    }

    /// The pool settles at one frame's working set: the same sizes, frame
    /// after frame, reuse the same buffers and the pool does not grow.
    #[test]
    fn the_buffer_pool_reuses_by_exact_size_and_settles() {
        let pooled_bytes = || POOL.with(|p| p.borrow().bytes);
        let frame = || {
            let a = Blocked::for_overwrite(32, 40, 40);
            let b = Blocked::zeros(16, 80, 80);
            let c = Blocked::for_overwrite(32, 20, 20);
            drop(a);
            let d = Blocked::for_overwrite(32, 40, 40);
            assert!(b.data.iter().all(|v| *v == 0.0), "zeros() is zeroed even when reused");
            (b, c, d)
        };
        drop(frame());
        let settled = pooled_bytes();
        for _ in 0..10 {
            let mut kept = frame();
            kept.0.data.fill(7.0);
            drop(kept);
            assert_eq!(pooled_bytes(), settled);
        }
    }

    /// A lent pool comes home with what was dropped, and the next pass on
    /// another thread gets the same buffers.
    #[test]
    fn a_lent_pool_follows_the_pass_not_the_thread() {
        let home = std::sync::Mutex::new(Vec::new());
        // One pass on a thread of its own: where its buffer was.
        let pass_on_a_new_thread = || {
            std::thread::scope(|s| {
                s.spawn(|| {
                    let _lent = LentPool::lend(&home);
                    let a = Blocked::for_overwrite(16, 30, 30);
                    a.data.as_ptr() as usize
                })
                .join()
                .unwrap()
            })
        };
        let first = pass_on_a_new_thread();
        assert_eq!(home.lock().unwrap().len(), 1);
        let second = pass_on_a_new_thread();
        assert_eq!(first, second, "the buffer was not reused across threads");
        assert_eq!(home.lock().unwrap().len(), 1);
    }

    /// The decoding from blocks gives what the NCHW decoding gives, odd
    /// sizes and a class count that is not whole blocks included.
    #[test]
    fn the_head_decodes_from_blocks_as_from_nchw() {
        for (h, w, classes) in [(20, 20, 80), (3, 7, 20), (1, 1, 16)] {
            let (n, rows) = (h * w, 64 + classes);
            let raw: Vec<f32> = random(rows * n, 13).iter().map(|v| v * 8.0).collect();
            let dfl: Vec<f32> = (0..B).map(|i| i as f32).collect();
            let xy: Vec<f32> =
                (0..2 * n).map(|i| if i < n { (i % w) as f32 + 0.5 } else { ((i - n) / w) as f32 + 0.5 }).collect();
            let (total, column) = (n + 5, 3);
            let mut want = vec![0f32; (4 + classes) * total];
            crate::decode_head(&raw, n, B, &dfl, &xy, 8.0, &mut want, total, column);
            let blocked = Blocked::from_nchw(&raw, rows, h, w);
            let mut got = vec![0f32; (4 + classes) * total];
            decode_head(&blocked.data, h, w, classes, &dfl, 8.0, &mut got, total, column);
            let worst = got.iter().zip(&want).map(|(a, b)| (a - b).abs()).fold(0.0, f32::max);
            assert!(worst <= 1e-4, "{h}x{w}, {classes} classes: max |diff| {worst}");
        }
    }

    #[test]
    fn the_layout_round_trips_and_pool_and_upsample_match_their_definitions() {
        let (c, h, w) = (20, 5, 7);
        let x = random(c * h * w, 9);
        let blocked = Blocked::from_nchw(&x, c, h, w);
        assert_eq!(blocked.to_nchw(c), x);
        let mut pooled = Blocked::zeros(c, h, w);
        max_pool(&blocked.data, blocked.blocks, h, w, 5, &mut pooled.data);
        let pooled = pooled.to_nchw(c);
        for ch in 0..c {
            for y in 0..h {
                for xx in 0..w {
                    let mut m = f32::NEG_INFINITY;
                    for yy in y.saturating_sub(2)..(y + 3).min(h) {
                        for x2 in xx.saturating_sub(2)..(xx + 3).min(w) {
                            m = m.max(x[(ch * h + yy) * w + x2]);
                        }
                    }
                    assert_eq!(pooled[(ch * h + y) * w + xx], m);
                }
            }
        }
        let mut up = Blocked::zeros(c, 2 * h, 2 * w);
        upsample2(&blocked.data, blocked.blocks, h, w, &mut up.data);
        let up = up.to_nchw(c);
        assert_eq!(up[(3 * 2 * h + 5) * 2 * w + 9], x[(3 * h + 2) * w + 4]);
    }
}
