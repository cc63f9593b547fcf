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

use candle_core::{Device, Result, Storage, Tensor};
use rayon::prelude::*;
use std::sync::atomic::{AtomicBool, Ordering};

static ENABLED: AtomicBool = AtomicBool::new(true);

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
}

impl FusedConv {
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
        let mut columns = Vec::new();
        for (image, dst) in input.chunks_exact(plane).take(n).zip(out.chunks_exact_mut(self.c_out * oh * ow)) {
            let rhs: &[f32] = if self.k == 1 && self.stride == 1 && self.pad == 0 {
                image
            } else {
                columns.resize(c_in * self.k * self.k * oh * ow, 0.0);
                self.unfold(image, h, w, oh, ow, &mut columns);
                &columns
            };
            self.gemm_bias_silu(rhs, oh * ow, dst);
        }
        drop(storage);
        Tensor::from_vec(out, (n, self.c_out, oh, ow), &Device::Cpu)
    }

    /// im2col: row `(c·k + ky)·k + kx` holds, for every output pixel, the
    /// input value that kernel tap sees (zero outside the image).
    fn unfold(&self, image: &[f32], h: usize, w: usize, oh: usize, ow: usize, columns: &mut [f32]) {
        let (k, stride, pad) = (self.k, self.stride, self.pad);
        columns.par_chunks_mut(oh * ow).enumerate().for_each(|(row, out)| {
            let (c, tap) = (row / (k * k), row % (k * k));
            let (ky, kx) = (tap / k, tap % k);
            let channel = &image[c * h * w..(c + 1) * h * w];
            for oy in 0..oh {
                let line = &mut out[oy * ow..(oy + 1) * ow];
                let iy = (oy * stride + ky) as isize - pad as isize;
                if iy < 0 || iy >= h as isize {
                    line.fill(0.0);
                    continue;
                }
                let src = &channel[iy as usize * w..(iy as usize + 1) * w];
                // Output columns whose input column ox·stride + kx - pad is inside.
                let first = (pad.saturating_sub(kx)).div_ceil(stride);
                let last = ((w + pad - kx).div_ceil(stride)).min(ow);
                line[..first.min(ow)].fill(0.0);
                if first < last {
                    if stride == 1 {
                        let start = first + kx - pad;
                        line[first..last].copy_from_slice(&src[start..start + (last - first)]);
                    } else {
                        for (ox, v) in line[first..last].iter_mut().enumerate() {
                            *v = src[(first + ox) * stride + kx - pad];
                        }
                    }
                }
                line[last.max(first).min(ow)..].fill(0.0);
            }
        });
    }

    /// `dst = silu(weight × rhs + bias)`, `rhs` being `K × pixels` row-major.
    fn gemm_bias_silu(&self, rhs: &[f32], pixels: usize, dst: &mut [f32]) {
        let depth = self.c_in * self.k * self.k;
        for (row, b) in dst.chunks_exact_mut(pixels).zip(&self.bias) {
            row.fill(*b);
        }
        let threads = candle_core::utils::get_num_threads();
        let parallelism = if threads > 1 { gemm::Parallelism::Rayon(threads) } else { gemm::Parallelism::None };
        // SAFETY: the pointers and strides describe the three row-major
        // buffers exactly: dst is c_out × pixels, weight c_out × depth, rhs
        // depth × pixels (checked by the slice lengths below), and none overlap.
        assert!(
            dst.len() == self.c_out * pixels && rhs.len() >= depth * pixels && self.weight.len() == self.c_out * depth
        );
        unsafe {
            gemm::gemm(
                self.c_out,
                pixels,
                depth,
                dst.as_mut_ptr(),
                1,
                pixels as isize,
                true,
                self.weight.as_ptr(),
                1,
                depth as isize,
                rhs.as_ptr(),
                1,
                pixels as isize,
                1.0,
                1.0,
                false,
                false,
                false,
                parallelism,
            );
        }
        dst.par_chunks_mut(16 * 1024).for_each(silu_in_place);
    }
}

/// `v = v · sigmoid(v)` over a slice, with AVX2 and FMA where the CPU has
/// them (checked at run time), else the same code on the baseline.
fn silu_in_place(values: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
            // SAFETY: the CPU supports the features the function is compiled for.
            unsafe { silu_avx2(values) };
            return;
        }
    }
    silu_portable(values);
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn silu_avx2(values: &mut [f32]) {
    silu_portable(values);
}

/// Branch-free so that the compiler vectorises it.
#[inline(always)]
fn silu_portable(values: &mut [f32]) {
    for v in values {
        *v /= 1.0 + exp(-*v);
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
    let scale = f32::from_bits(((n as i32 + 127) as u32) << 23);
    p * scale
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
        let mut state = seed | 1;
        let n: usize = shape.iter().product();
        let values: Vec<f32> = (0..n)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                (state % 2001) as f32 / 1000.0 - 1.0
            })
            .collect();
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
            let got = FusedConv::new(&weight, &bias, stride, k / 2).unwrap().forward(&x).unwrap();
            assert_eq!(got.dims(), want.dims(), "shape {i}");
            let diff = (got - want).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
            assert!(diff <= 1e-4, "layer kind {i}: max |diff| {diff}");
        }
    }
}
