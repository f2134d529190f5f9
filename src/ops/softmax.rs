//! # Softmax over the last axis
//!
//! ## Forward
//! For each row `x` of length `n` (attention scores: one row per query, `n` = number of keys):
//! ```text
//! y_i = e^{x_i - m} / Σ_j e^{x_j - m}        m = max_j x_j
//! ```
//! Subtracting the row maximum changes nothing mathematically (it cancels between numerator and
//! denominator) but keeps every exponent ≤ 0, so nothing overflows: the numerically stable form.
//!
//! ## Backward
//! The Jacobian is `∂y_i/∂x_k = y_i (δ_ik − y_k)`. With G = dL/dy:
//! ```text
//! dx_k = Σ_i G_i y_i (δ_ik − y_k) = y_k (G_k − Σ_i G_i y_i)
//! ```
//! so each row needs one dot product `⟨G, y⟩` and uses only the saved output `y`.

use crate::autograd::{Graph, Op, Var};
use crate::backend::cpu::{fastmath, for_each_row};
use crate::backend::cuda::RowKernel;
use crate::backend::{same_device, Device};
use crate::error::{Error, Result};
use crate::tensor::Tensor;

fn row_len(x: &Tensor) -> Result<usize> {
    match x.shape().last() {
        Some(&n) if n > 0 => Ok(n),
        _ => Err(Error::shape(
            "softmax",
            x.shape(),
            &[],
            "needs a non-empty last dimension",
        )),
    }
}

/// Softmax of each row (last axis).
pub fn forward(x: &Tensor) -> Result<Tensor> {
    let n = row_len(x)?;
    match x.device() {
        Device::Cuda => Tensor::gpu_output(x.shape(), |dev, y| {
            dev.softmax_fwd(RowKernel::Auto, x.cuda()?, y, x.numel() / n, n)
        }),
        Device::Cpu => {
            let mut y = Tensor::scratch(x.shape());
            let xd = x.data();
            for_each_row(y.data_mut(), n, |r, out| {
                let row = &xd[r * n..(r + 1) * n];
                let m = row.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b));
                let mut sum = 0.0f32;
                for (o, &v) in out.iter_mut().zip(row) {
                    *o = fastmath::exp(v - m);
                    sum += *o;
                }
                let inv = 1.0 / sum;
                out.iter_mut().for_each(|o| *o *= inv);
            });
            Ok(y)
        }
    }
}

/// The softmax of one row of logits, on the host with the standard `exp` (for reporting a
/// prediction's class probabilities, not for training).
pub fn probabilities(row: &[f32]) -> Vec<f32> {
    let m = row.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b));
    let e: Vec<f32> = row.iter().map(|&v| (v - m).exp()).collect();
    let s: f32 = e.iter().sum();
    e.iter().map(|v| v / s).collect()
}

/// `dx = y ⊙ (G − ⟨G, y⟩)` row by row.
pub fn backward(g: &Tensor, y: &Tensor) -> Result<Tensor> {
    let n = row_len(y)?;
    if g.shape() != y.shape() {
        return Err(Error::shape(
            "softmax backward",
            g.shape(),
            y.shape(),
            "the gradient must have y's shape",
        ));
    }
    match same_device("softmax backward", &[g, y])? {
        Device::Cuda => Tensor::gpu_output(y.shape(), |dev, dx| {
            dev.softmax_bwd(RowKernel::Auto, g.cuda()?, y.cuda()?, dx, y.numel() / n, n)
        }),
        Device::Cpu => {
            let mut dx = Tensor::scratch(y.shape());
            let (gd, yd) = (g.data(), y.data());
            for_each_row(dx.data_mut(), n, |r, out| {
                let (gr, yr) = (&gd[r * n..(r + 1) * n], &yd[r * n..(r + 1) * n]);
                let dot = fastmath::dot(gr, yr);
                for ((o, &gi), &yi) in out.iter_mut().zip(gr).zip(yr) {
                    *o = yi * (gi - dot);
                }
            });
            Ok(dx)
        }
    }
}

struct Softmax;

impl Op for Softmax {
    fn name(&self) -> &'static str {
        "softmax"
    }
    fn forward(&mut self, x: &[&Tensor]) -> Result<Tensor> {
        forward(x[0])
    }
    fn backward(&self, g: &Tensor, _x: &[&Tensor], y: &Tensor, _n: &[bool]) -> Result<Vec<Option<Tensor>>> {
        Ok(vec![Some(backward(g, y)?)])
    }
}

impl Graph {
    /// Softmax over the last axis.
    pub fn softmax(&mut self, x: Var) -> Result<Var> {
        self.apply(Softmax, &[x])
    }
}
