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
//! ```
//! Same result bit for bit as `dropout(gelu(x))` (a test checks it), with its own gradient check.

use crate::autograd::{Graph, Op, Var};
use crate::backend::cpu::{fastmath, map_into};
use crate::backend::Device;
use crate::error::Result;
use crate::ops::dropout::{check_len, Mask};
use crate::tensor::Tensor;

/// Which GELU formula.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum GeluKind {
    /// `x·Φ(x)` with the error function (PyTorch `approximate='none'`).
    Erf,
    /// The tanh approximation (PyTorch `approximate='tanh'`).
    Tanh,
}

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

/// `gelu(x)` element-wise.
pub fn forward(x: &Tensor, kind: GeluKind) -> Result<Tensor> {
    match x.device() {
        Device::Cpu => {
            let mut y = Tensor::scratch(x.shape());
            let xd = x.data();
            map_into(y.data_mut(), |off, out| {
                for (o, &v) in out.iter_mut().zip(&xd[off..]) {
                    *o = gelu_scalar(v, kind);
                }
            });
            Ok(y)
        }
    }
}

/// `G ⊙ gelu'(x)`.
pub fn backward(g: &Tensor, x: &Tensor, kind: GeluKind) -> Result<Tensor> {
    match x.device() {
        Device::Cpu => {
            let mut dx = Tensor::scratch(x.shape());
            let (gd, xd) = (g.data(), x.data());
            map_into(dx.data_mut(), |off, out| {
                for ((o, &v), &gv) in out.iter_mut().zip(&xd[off..]).zip(&gd[off..]) {
                    *o = gv * gelu_grad_scalar(v, kind);
                }
            });
            Ok(dx)
        }
    }
}

/// `gelu(x) ⊙ m` (see the module doc).
pub fn forward_dropout(x: &Tensor, kind: GeluKind, mask: &Mask) -> Result<Tensor> {
    check_len("gelu_dropout", x)?;
    match x.device() {
        Device::Cpu => {
            let mut y = Tensor::scratch(x.shape());
            let xd = x.data();
            mask.map_into(y.data_mut(), |off, out, fac| {
                for ((o, &v), &m) in out.iter_mut().zip(&xd[off..]).zip(fac) {
                    *o = gelu_scalar(v, kind) * m;
                }
            });
            Ok(y)
        }
    }
}

/// `(G ⊙ m) ⊙ gelu'(x)`.
pub fn backward_dropout(g: &Tensor, x: &Tensor, kind: GeluKind, mask: &Mask) -> Result<Tensor> {
    check_len("gelu_dropout", x)?;
    match x.device() {
        Device::Cpu => {
            let mut dx = Tensor::scratch(x.shape());
            let (gd, xd) = (g.data(), x.data());
            mask.map_into(dx.data_mut(), |off, out, fac| {
                for (((o, &v), &gv), &m) in out.iter_mut().zip(&xd[off..]).zip(&gd[off..]).zip(fac) {
                    *o = (gv * m) * gelu_grad_scalar(v, kind);
                }
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
