//! # Layer normalisation (over the last axis, affine)
//!
//! ## Forward
//! For each row `x` of length `D` (one token's features), with learned `γ, β: [D]`:
//! ```text
//! μ = (1/D) Σ_i x_i          σ² = (1/D) Σ_i (x_i − μ)²       (biased variance, as PyTorch)
//! r = 1/√(σ² + eps)          x̂_i = (x_i − μ)·r               y_i = γ_i x̂_i + β_i
//! ```
//! `μ` and `r` are saved per row for the backward.
//!
//! ## Backward
//! With G = dL/dy, the affine part gives `dβ = Σ_rows G`, `dγ = Σ_rows G ⊙ x̂` and
//! `dx̂ = G ⊙ γ`. Through the normalisation, using `∂x̂_i/∂x_k = r(δ_ik − 1/D − x̂_i x̂_k / D)`
//! (μ and σ both depend on every x_k):
//! ```text
//! dx_k = r · ( dx̂_k − mean_i(dx̂_i) − x̂_k · mean_i(dx̂_i x̂_i) )
//! ```
//! Two row means and one pass: no D×D Jacobian is ever formed.

use crate::autograd::{Graph, Op, Var};
use crate::backend::cpu::{fastmath, for_each_row};
use crate::backend::cuda::CudaDevice;
use crate::backend::{same_device, Device};
use crate::error::{Error, Result};
use crate::tensor::Tensor;
use rayon::prelude::*;

fn check(x: &[usize], gamma: &[usize], beta: &[usize]) -> Result<usize> {
    let d = *x.last().unwrap_or(&0);
    if d == 0 || gamma != [d] || beta != [d] {
        return Err(Error::shape(
            "layernorm",
            x,
            gamma,
            "need x [..., D] with gamma and beta [D]",
        ));
    }
    Ok(d)
}

/// `(y, mean, rstd)`: the output and the per-row statistics the backward needs.
pub fn forward(x: &Tensor, gamma: &Tensor, beta: &Tensor, eps: f32) -> Result<(Tensor, Tensor, Tensor)> {
    let d = check(x.shape(), gamma.shape(), beta.shape())?;
    let rows = x.numel() / d;
    let mut stat_shape = x.shape().to_vec();
    stat_shape.pop();
    match same_device("layernorm", &[x, gamma, beta])? {
        Device::Cuda => {
            let dev = CudaDevice::global()?;
            let (mut y, mut mean, mut rstd) = (dev.alloc(x.numel())?, dev.alloc(rows)?, dev.alloc(rows)?);
            dev.layernorm_fwd(
                x.cuda()?,
                gamma.cuda()?,
                beta.cuda()?,
                &mut y,
                &mut mean,
                &mut rstd,
                rows,
                d,
                eps,
            )?;
            Ok((
                Tensor::from_cuda(y, x.shape())?,
                Tensor::from_cuda(mean, &stat_shape)?,
                Tensor::from_cuda(rstd, &stat_shape)?,
            ))
        }
        Device::Cpu => {
            let mut y = Tensor::scratch(x.shape());
            let mut stats = vec![0.0f32; 2 * rows];
            let (xd, gd, bd) = (x.data(), gamma.data(), beta.data());
            let chunk_rows = (crate::backend::cpu::PAR_GRAIN / d).max(1);
            y.data_mut()
                .par_chunks_mut(d * chunk_rows)
                .zip(stats.par_chunks_mut(2 * chunk_rows))
                .enumerate()
                .for_each(|(c, (ys, st))| {
                    for (i, yr) in ys.chunks_mut(d).enumerate() {
                        let r = c * chunk_rows + i;
                        let xr = &xd[r * d..(r + 1) * d];
                        let mean = fastmath::sum(xr) / d as f32;
                        let var = fastmath::sum_sq_dev(xr, mean) / d as f32;
                        let rstd = 1.0 / (var + eps).sqrt();
                        for (((o, &v), &g), &b) in yr.iter_mut().zip(xr).zip(gd).zip(bd) {
                            *o = (v - mean) * rstd * g + b;
                        }
                        st[2 * i] = mean;
                        st[2 * i + 1] = rstd;
                    }
                });
            let (mean, rstd): (Vec<f32>, Vec<f32>) = stats.chunks(2).map(|s| (s[0], s[1])).unzip();
            Ok((
                y,
                Tensor::from_vec(mean, &stat_shape)?,
                Tensor::from_vec(rstd, &stat_shape)?,
            ))
        }
    }
}

/// `(dx, dγ, dβ)` from G and the saved statistics.
pub fn backward(
    g: &Tensor,
    x: &Tensor,
    gamma: &Tensor,
    mean: &Tensor,
    rstd: &Tensor,
) -> Result<(Tensor, Tensor, Tensor)> {
    let d = check(x.shape(), gamma.shape(), gamma.shape())?;
    let rows = x.numel() / d;
    if g.shape() != x.shape() || mean.numel() != rows || rstd.numel() != rows {
        return Err(Error::shape(
            "layernorm backward",
            x.shape(),
            g.shape(),
            "the gradient must have x's shape and the statistics one value per row",
        ));
    }
    match same_device("layernorm backward", &[g, x, gamma, mean, rstd])? {
        Device::Cuda => {
            let dev = CudaDevice::global()?;
            let (mut dx, mut dgamma, mut dbeta) = (dev.alloc(x.numel())?, dev.alloc(d)?, dev.alloc(d)?);
            dev.layernorm_bwd(
                g.cuda()?,
                x.cuda()?,
                gamma.cuda()?,
                mean.cuda()?,
                rstd.cuda()?,
                &mut dx,
                &mut dgamma,
                &mut dbeta,
                rows,
                d,
            )?;
            Ok((
                Tensor::from_cuda(dx, x.shape())?,
                Tensor::from_cuda(dgamma, &[d])?,
                Tensor::from_cuda(dbeta, &[d])?,
            ))
        }
        Device::Cpu => {
            let (gd, xd, gam, md, rd) = (g.data(), x.data(), gamma.data(), mean.data(), rstd.data());
            let mut dx = Tensor::scratch(x.shape());
            for_each_row(dx.data_mut(), d, |r, out| {
                let (gr, xr, (mu, rs)) = (&gd[r * d..(r + 1) * d], &xd[r * d..(r + 1) * d], (md[r], rd[r]));
                // Eight partial sums of each mean, so the loop vectorises (see fastmath::dot).
                let (mut s_dxh, mut s_dxh_xh) = ([0.0f32; 8], [0.0f32; 8]);
                let (gc, xc, wc) = (gr.chunks_exact(8), xr.chunks_exact(8), gam.chunks_exact(8));
                let tail = (gc.remainder(), xc.remainder(), wc.remainder());
                for ((g8, x8), w8) in gc.zip(xc).zip(wc) {
                    for k in 0..8 {
                        let dxh = g8[k] * w8[k];
                        s_dxh[k] += dxh;
                        s_dxh_xh[k] += dxh * (x8[k] - mu) * rs;
                    }
                }
                for ((&g, &x), &w) in tail.0.iter().zip(tail.1).zip(tail.2) {
                    s_dxh[0] += g * w;
                    s_dxh_xh[0] += g * w * (x - mu) * rs;
                }
                let mean_dxh = s_dxh.iter().sum::<f32>() / d as f32;
                let mean_dxh_xh = s_dxh_xh.iter().sum::<f32>() / d as f32;
                for (((o, &g), &x), &w) in out.iter_mut().zip(gr).zip(xr).zip(gam) {
                    let xh = (x - mu) * rs;
                    *o = rs * (g * w - mean_dxh - xh * mean_dxh_xh);
                }
            });
            // dγ, dβ: sums over rows, in parallel chunks of rows.
            let chunk_rows = (crate::backend::cpu::PAR_GRAIN / d).clamp(1, 256);
            let partials: Vec<Vec<f32>> = (0..rows.div_ceil(chunk_rows))
                .into_par_iter()
                .map(|c| {
                    let mut acc = vec![0.0f32; 2 * d];
                    let (dg, db) = acc.split_at_mut(d);
                    for r in c * chunk_rows..((c + 1) * chunk_rows).min(rows) {
                        let (gr, xr, (mu, rs)) = (&gd[r * d..(r + 1) * d], &xd[r * d..(r + 1) * d], (md[r], rd[r]));
                        for (((a, b), &g), &x) in dg.iter_mut().zip(db.iter_mut()).zip(gr).zip(xr) {
                            *a += g * (x - mu) * rs;
                            *b += g;
                        }
                    }
                    acc
                })
                .collect();
            let mut sums = vec![0.0f32; 2 * d];
            for p in &partials {
                sums.iter_mut().zip(p).for_each(|(s, v)| *s += v);
            }
            let dbeta = sums.split_off(d);
            Ok((dx, Tensor::from_vec(sums, &[d])?, Tensor::from_vec(dbeta, &[d])?))
        }
    }
}

struct LayerNorm {
    eps: f32,
    saved: Option<(Tensor, Tensor)>,
}

impl Op for LayerNorm {
    fn name(&self) -> &'static str {
        "layernorm"
    }
    fn forward(&mut self, x: &[&Tensor]) -> Result<Tensor> {
        let (y, mean, rstd) = forward(x[0], x[1], x[2], self.eps)?;
        self.saved = Some((mean, rstd));
        Ok(y)
    }
    fn backward(&self, g: &Tensor, x: &[&Tensor], _y: &Tensor, _n: &[bool]) -> Result<Vec<Option<Tensor>>> {
        let (mean, rstd) = self.saved.as_ref().expect("forward ran before backward");
        let (dx, dgamma, dbeta) = backward(g, x[0], x[1], mean, rstd)?;
        Ok(vec![Some(dx), Some(dgamma), Some(dbeta)])
    }
}

impl Graph {
    /// Layer normalisation over the last axis with affine `gamma`, `beta` (shape `[D]`).
    pub fn layernorm(&mut self, x: Var, gamma: Var, beta: Var, eps: f32) -> Result<Var> {
        self.apply(LayerNorm { eps, saved: None }, &[x, gamma, beta])
    }
}
