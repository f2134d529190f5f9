//! # GELU activation
//!
//! ## Forward
//! The Gaussian Error Linear Unit weights its input by the probability that a standard normal is
//! below it, `Φ(x)`:
//! ```text
//! exact (PyTorch's default):  y = x·Φ(x) = ½·x·(1 + erf(x/√2)) = ½·x·erfc(−x/√2)
//! tanh approximation:         y = ½·x·(1 + tanh(u)),   u = √(2/π)·(x + 0.044715·x³)
//! ```
//! The exact form is evaluated through `erfc`, which stays accurate for very negative `x` where
//! `1 + erf` would cancel to nothing.
//!
//! ## Evaluating it fast
//! `erfc` costs a division, an `exp` and a 10-term polynomial: on the seed preset GELU was the
//! most expensive op of the step. Most inputs are small, and there `Φ` and `gelu'` are smooth odd
//! functions plus ½, so the CPU uses polynomials in `x²` (least-squares fits on Chebyshev nodes in
//! f64, by `|x| ≤ 2.5`; the script is in `docs/gelu_fit.py`):
//! ```text
//! Φ(x) ≈ ½ + x·P(x²)    (degree 8, max abs error 1.1e-7 in f32)
//! gelu'(x) ≈ ½ + x·Q(x²) (degree 9, max abs error 4.8e-7 in f32)
//! ```
//! Eight inputs at a time (one AVX register): when all eight lie in `[−2, 2.5]` the polynomials
//! are used, otherwise the `erfc` formulas. (So an element's last bits can depend on its seven
//! neighbours' range; both ways are accurate to a few 1e-7.) The range stops at −2 on the negative
//! side because `½ + x·P` cancels there: its error of about 1e-7 is absolute, and below −2,
//! where `Φ < 0.023`, it would exceed 1e-5 of `gelu(x)` itself; the `erfc` form keeps every
//! element within 1e-5 relative.
//!
//! ## Backward
//! Element-wise, `dx = G · y'(x)`:
//! ```text
//! exact:  y' = Φ(x) + x·φ(x),          φ(x) = e^{−x²/2}/√(2π)      (product rule; Φ' = φ)
//! tanh:   y' = ½(1 + t) + ½·x·(1 − t²)·√(2/π)·(1 + 3·0.044715·x²),   t = tanh(u)
//! ```
//!
//! ## Fused with the dropout that follows it
//! In the MLP, GELU's output goes straight into dropout. [`Graph::gelu_dropout`] computes both in
//! one pass and never stores `gelu(x)` (on the seed preset that tensor is 512×50×2048 = 210 MB a
//! block):
//! ```text
//! y  = gelu(x) · m            m_i = keep_i / (1 − p)   (the mask of `ops::dropout`)
//! dx = (G · m) · gelu'(x)      chain rule through both; only x is saved
//! (a dropped element's `· m` gives exactly +0, as in plain dropout)
//! ```
//! Same result bit for bit as `dropout(gelu(x))` (a test checks it), with its own gradient check.

use crate::autograd::{Graph, Op, Var};
use crate::backend::cpu::{fastmath, map_into};
use crate::backend::{same_device, Device};
use crate::error::{Error, Result};
use crate::ops::dropout::{check_len, masked, Mask};
use crate::tensor::Tensor;

/// Which GELU formula: defined with the kernels that take it (`backend::cuda::gelu`).
pub use crate::backend::cuda::GeluKind;

const SQRT_2_OVER_PI: f32 = 0.797_884_6;
const FRAC_1_SQRT_2: f32 = std::f32::consts::FRAC_1_SQRT_2;
const FRAC_1_SQRT_2PI: f32 = 0.398_942_3;
const C: f32 = 0.044_715;

#[inline(always)]
pub fn gelu_scalar(x: f32, kind: GeluKind) -> f32 {
    match kind {
        GeluKind::Erf => 0.5 * x * fastmath::erfc(-x * FRAC_1_SQRT_2),
        GeluKind::Tanh => 0.5 * x * (1.0 + fastmath::tanh(SQRT_2_OVER_PI * (x + C * x * x * x))),
    }
}

#[inline(always)]
pub fn gelu_grad_scalar(x: f32, kind: GeluKind) -> f32 {
    match kind {
        GeluKind::Erf => {
            let cdf = 0.5 * fastmath::erfc(-x * FRAC_1_SQRT_2);
            cdf + x * FRAC_1_SQRT_2PI * fastmath::exp(-0.5 * x * x)
        }
        GeluKind::Tanh => {
            let t = fastmath::tanh(SQRT_2_OVER_PI * (x + C * x * x * x));
            0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * SQRT_2_OVER_PI * (1.0 + 3.0 * C * x * x)
        }
    }
}

/// Where the polynomials below are used: `FAST_LO ≤ x ≤ FAST_HI` (they are fitted on |x| ≤ 2.5;
/// see the module doc for why the negative side stops at −2).
const FAST_LO: f32 = -2.0;
const FAST_HI: f32 = 2.5;
/// `Φ(x) ≈ ½ + x·P(x²)` on `|x| ≤ 2.5`: the coefficients of `P`, lowest power first.
const PHI_POLY: [f32; 9] = [
    0.398_942_3,
    -0.066_490_31,
    0.009_973_227,
    -0.001_186_731_6,
    0.000_114_902_65,
    -9.177_384e-6,
    5.855_069e-7,
    -2.639_677_6e-8,
    6.090_227e-10,
];
/// `gelu'(x) ≈ ½ + x·Q(x²)` on `|x| ≤ 2.5`: the coefficients of `Q`, lowest power first.
const DGELU_POLY: [f32; 10] = [
    0.797_884_6,
    -0.265_961_4,
    0.059_840_68,
    -0.009_497_133,
    0.001_152_672_6,
    -0.000_112_259_55,
    8.898_173e-6,
    -5.528_432e-7,
    2.377_768_7e-8,
    -5.156_805_5e-10,
];

/// `½ + x·poly(x²)` by Horner's rule with fused multiply-adds.
#[inline(always)]
fn half_plus_odd<const N: usize>(x: f32, coeffs: &[f32; N]) -> f32 {
    let t = x * x;
    let mut p = coeffs[N - 1];
    for &c in coeffs[..N - 1].iter().rev() {
        p = p.mul_add(t, c);
    }
    x.mul_add(p, 0.5)
}

/// Eight inputs, all within the polynomials' range? (Counted, not short-circuited, so it
/// vectorises; NaN counts as in range and stays NaN.)
#[inline(always)]
fn all_in_fast_range(x: &[f32; LANES]) -> bool {
    x.iter().map(|&v| (v < FAST_LO || v > FAST_HI) as u32).sum::<u32>() == 0
}

const LANES: usize = 8;

/// `out[i] = gelu(x[i]) · f[i]` (`f` = 1 when `None`): the forward of `gelu` and `gelu_dropout`.
fn values_into(kind: GeluKind, x: &[f32], factors: Option<&[f32]>, out: &mut [f32]) {
    let n = out.len();
    let x = &x[..n];
    let split = n - n % LANES;
    if kind == GeluKind::Erf {
        for (o, xv) in out[..split].chunks_exact_mut(LANES).zip(x.chunks_exact(LANES)) {
            let xv: &[f32; LANES] = xv.try_into().expect("chunk of LANES");
            if all_in_fast_range(xv) {
                for k in 0..LANES {
                    o[k] = xv[k] * half_plus_odd(xv[k], &PHI_POLY);
                }
            } else {
                for k in 0..LANES {
                    o[k] = gelu_scalar(xv[k], kind);
                }
            }
        }
    }
    let start = if kind == GeluKind::Erf { split } else { 0 };
    for (o, &v) in out[start..].iter_mut().zip(&x[start..]) {
        *o = gelu_scalar(v, kind);
    }
    if let Some(f) = factors {
        for (o, &m) in out.iter_mut().zip(f) {
            *o = masked(*o, m);
        }
    }
}

/// `out[i] = (g[i] · f[i]) · gelu'(x[i])` (`f` = 1 when `None`): the backward of both.
///
/// (The same loop structure as [`values_into`], written out on purpose: one generic version
/// taking the two formulas as closures measured 2.3× slower here, the polynomial loop no longer
/// vectorised.)
fn grads_into(kind: GeluKind, x: &[f32], g: &[f32], factors: Option<&[f32]>, out: &mut [f32]) {
    let n = out.len();
    let (x, g) = (&x[..n], &g[..n]);
    let split = n - n % LANES;
    if kind == GeluKind::Erf {
        for (o, xv) in out[..split].chunks_exact_mut(LANES).zip(x.chunks_exact(LANES)) {
            let xv: &[f32; LANES] = xv.try_into().expect("chunk of LANES");
            if all_in_fast_range(xv) {
                for k in 0..LANES {
                    o[k] = half_plus_odd(xv[k], &DGELU_POLY);
                }
            } else {
                for k in 0..LANES {
                    o[k] = gelu_grad_scalar(xv[k], kind);
                }
            }
        }
    }
    let start = if kind == GeluKind::Erf { split } else { 0 };
    for (o, &v) in out[start..].iter_mut().zip(&x[start..]) {
        *o = gelu_grad_scalar(v, kind);
    }
    match factors {
        Some(f) => {
            for ((o, &gv), &m) in out.iter_mut().zip(g).zip(f) {
                *o *= masked(gv, m);
            }
        }
        None => {
            for (o, &gv) in out.iter_mut().zip(g) {
                *o *= gv;
            }
        }
    }
}

fn check_same_shape(g: &Tensor, x: &Tensor) -> Result<()> {
    if g.shape() != x.shape() {
        return Err(Error::shape(
            "gelu backward",
            g.shape(),
            x.shape(),
            "the gradient must have x's shape",
        ));
    }
    Ok(())
}

/// `gelu(x)` element-wise.
pub fn forward(x: &Tensor, kind: GeluKind) -> Result<Tensor> {
    match x.device() {
        Device::Cuda => Tensor::gpu_output(x.shape(), |dev, y| dev.gelu_fwd(x.cuda()?, y, x.numel(), kind)),
        Device::Cpu => {
            let mut y = Tensor::scratch(x.shape());
            let xd = x.data();
            map_into(y.data_mut(), |off, out| values_into(kind, &xd[off..], None, out));
            Ok(y)
        }
    }
}

/// `G ⊙ gelu'(x)`.
pub fn backward(g: &Tensor, x: &Tensor, kind: GeluKind) -> Result<Tensor> {
    check_same_shape(g, x)?;
    match same_device("gelu backward", &[g, x])? {
        Device::Cuda => Tensor::gpu_output(x.shape(), |dev, dx| {
            dev.gelu_bwd(g.cuda()?, x.cuda()?, dx, x.numel(), kind)
        }),
        Device::Cpu => {
            let mut dx = Tensor::scratch(x.shape());
            let (gd, xd) = (g.data(), x.data());
            map_into(dx.data_mut(), |off, out| {
                grads_into(kind, &xd[off..], &gd[off..], None, out)
            });
            Ok(dx)
        }
    }
}

/// `gelu(x) ⊙ m` (see the module doc).
pub fn forward_dropout(x: &Tensor, kind: GeluKind, mask: &Mask) -> Result<Tensor> {
    check_len("gelu_dropout", x)?;
    match x.device() {
        Device::Cuda => Tensor::gpu_output(x.shape(), |dev, y| {
            dev.gelu_dropout_fwd(x.cuda()?, y, x.numel(), kind, mask.p(), mask.seed())
        }),
        Device::Cpu => {
            let mut y = Tensor::scratch(x.shape());
            let xd = x.data();
            mask.map_into(y.data_mut(), |off, out, fac| {
                values_into(kind, &xd[off..], Some(fac), out)
            });
            Ok(y)
        }
    }
}

/// `(G ⊙ m) ⊙ gelu'(x)`.
pub fn backward_dropout(g: &Tensor, x: &Tensor, kind: GeluKind, mask: &Mask) -> Result<Tensor> {
    check_len("gelu_dropout", x)?;
    check_same_shape(g, x)?;
    match same_device("gelu_dropout backward", &[g, x])? {
        Device::Cuda => Tensor::gpu_output(x.shape(), |dev, dx| {
            dev.gelu_dropout_bwd(g.cuda()?, x.cuda()?, dx, x.numel(), kind, mask.p(), mask.seed())
        }),
        Device::Cpu => {
            let mut dx = Tensor::scratch(x.shape());
            let (gd, xd) = (g.data(), x.data());
            mask.map_into(dx.data_mut(), |off, out, fac| {
                grads_into(kind, &xd[off..], &gd[off..], Some(fac), out)
            });
            Ok(dx)
        }
    }
}

struct Gelu(GeluKind);

impl Op for Gelu {
    fn name(&self) -> &'static str {
        "gelu"
    }
    fn forward(&mut self, x: &[&Tensor]) -> Result<Tensor> {
        forward(x[0], self.0)
    }
    fn backward(&self, g: &Tensor, x: &[&Tensor], _y: &Tensor, _n: &[bool]) -> Result<Vec<Option<Tensor>>> {
        Ok(vec![Some(backward(g, x[0], self.0)?)])
    }
}

struct GeluDropout {
    kind: GeluKind,
    mask: Mask,
}

impl Op for GeluDropout {
    fn name(&self) -> &'static str {
        "gelu_dropout"
    }
    fn forward(&mut self, x: &[&Tensor]) -> Result<Tensor> {
        forward_dropout(x[0], self.kind, &self.mask)
    }
    fn backward(&self, g: &Tensor, x: &[&Tensor], _y: &Tensor, _n: &[bool]) -> Result<Vec<Option<Tensor>>> {
        Ok(vec![Some(backward_dropout(g, x[0], self.kind, &self.mask)?)])
    }
}

impl Graph {
    /// GELU, exact (erf) or tanh-approximated.
    pub fn gelu(&mut self, x: Var, kind: GeluKind) -> Result<Var> {
        self.apply(Gelu(kind), &[x])
    }

    /// `dropout(gelu(x), p, seed)` fused (see the module doc); with `p = 0` a plain GELU.
    pub fn gelu_dropout(&mut self, x: Var, kind: GeluKind, p: f32, seed: u64) -> Result<Var> {
        let mask = Mask::new(p, seed)?;
        if p == 0.0 {
            return self.gelu(x, kind);
        }
        self.apply(GeluDropout { kind, mask }, &[x])
    }
}
