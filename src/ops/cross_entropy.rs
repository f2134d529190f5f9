//! # Cross-entropy on logits (mean over the batch, optional label smoothing)
//!
//! ## Forward
//! Logits `z: [B, C]`, integer labels `t_b`. With label smoothing `ε` the target distribution is
//! `q_c = (1−ε)·[c = t] + ε/C` (ε = 0 gives the one-hot target). Using the stable log-softmax
//! `log p_c = z_c − m − log Σ_j e^{z_j − m}` (m = max_j z_j):
//! ```text
//! L = (1/B) Σ_b Σ_c −q_{b,c} · log p_{b,c}
//! ```
//!
//! ## Backward
//! `∂/∂z_k (−Σ_c q_c log p_c) = p_k Σ_c q_c − q_k = p_k − q_k` (Σ q = 1), so with the upstream
//! scalar gradient `G`:
//! ```text
//! dz_{b,k} = G · (p_{b,k} − q_{b,k}) / B
//! ```
//! The softmax `p` is saved by the forward. The loss is a one-element tensor on the logits'
//! device and `G` is read on that device too, so a GPU step never waits for the host here.

use crate::autograd::{Graph, Op, Var};
use crate::backend::cpu::{fastmath, for_each_row};
use crate::backend::cuda::CudaDevice;
use crate::backend::{same_device, Device};
use crate::error::{Error, Result};
use crate::tensor::Tensor;

fn check(z: &[usize], labels: &[u32], smoothing: f32) -> Result<(usize, usize)> {
    if z.len() != 2 || z[0] != labels.len() || z[1] == 0 {
        return Err(Error::shape(
            "cross_entropy",
            z,
            &[labels.len()],
            "need logits [B, C] and B labels",
        ));
    }
    if let Some(&bad) = labels.iter().find(|&&t| t as usize >= z[1]) {
        return Err(Error::config(format!(
            "cross_entropy: label {bad} is outside 0..{}",
            z[1]
        )));
    }
    if !(0.0..1.0).contains(&smoothing) {
        return Err(Error::config(format!(
            "label smoothing must be in [0, 1), got {smoothing}"
        )));
    }
    Ok((z[0], z[1]))
}

/// `(mean loss (shape []), softmax probabilities)`, both on the logits' device.
pub fn forward(z: &Tensor, labels: &[u32], smoothing: f32) -> Result<(Tensor, Tensor)> {
    let (b, c) = check(z.shape(), labels, smoothing)?;
    match z.device() {
        Device::Cuda => {
            let dev = CudaDevice::global()?;
            let (mut p, mut loss) = (dev.alloc(b * c)?, dev.alloc(1)?);
            dev.with_labels(labels, |l| {
                dev.cross_entropy_fwd(z.cuda()?, l, &mut p, &mut loss, b, c, smoothing)
            })?;
            Ok((Tensor::from_cuda(loss, &[])?, Tensor::from_cuda(p, z.shape())?))
        }
        Device::Cpu => {
            let mut p = Tensor::scratch(z.shape());
            let zd = z.data();
            let mut losses = vec![0.0f64; b];
            for (r, (pr, loss)) in p.data_mut().chunks_mut(c).zip(losses.iter_mut()).enumerate() {
                let zr = &zd[r * c..(r + 1) * c];
                let m = zr.iter().fold(f32::NEG_INFINITY, |a, &v| a.max(v));
                let sum: f32 = zr.iter().map(|&v| fastmath::exp(v - m)).sum();
                let log_sum = sum.ln();
                let mut l = 0.0f64;
                for (k, (pk, &zk)) in pr.iter_mut().zip(zr).enumerate() {
                    let logp = zk - m - log_sum;
                    *pk = logp.exp();
                    let q = smoothing / c as f32 + if k == labels[r] as usize { 1.0 - smoothing } else { 0.0 };
                    l -= (q * logp) as f64;
                }
                *loss = l;
            }
            Ok((Tensor::scalar((losses.iter().sum::<f64>() / b as f64) as f32), p))
        }
    }
}

/// `dz = G · (p − q) / B`, with `G` the one-element upstream gradient.
pub fn backward(g: &Tensor, p: &Tensor, labels: &[u32], smoothing: f32) -> Result<Tensor> {
    let (b, c) = check(p.shape(), labels, smoothing)?;
    if g.numel() != 1 {
        return Err(Error::shape(
            "cross_entropy backward",
            g.shape(),
            &[],
            "the loss gradient has one element",
        ));
    }
    match same_device("cross_entropy backward", &[g, p])? {
        Device::Cuda => Tensor::gpu_output(p.shape(), |dev, dz| {
            dev.with_labels(labels, |l| {
                dev.cross_entropy_bwd(g.cuda()?, p.cuda()?, l, dz, b, c, smoothing)
            })
        }),
        Device::Cpu => {
            let mut dz = Tensor::scratch(p.shape());
            let pd = p.data();
            let s = g.data()[0] / b as f32;
            for_each_row(dz.data_mut(), c, |r, out| {
                for (k, o) in out.iter_mut().enumerate() {
                    let q = smoothing / c as f32 + if k == labels[r] as usize { 1.0 - smoothing } else { 0.0 };
                    *o = s * (pd[r * c + k] - q);
                }
            });
            Ok(dz)
        }
    }
}

struct CrossEntropy {
    labels: Vec<u32>,
    smoothing: f32,
    probs: Option<Tensor>,
}

impl Op for CrossEntropy {
    fn name(&self) -> &'static str {
        "cross_entropy"
    }
    fn forward(&mut self, x: &[&Tensor]) -> Result<Tensor> {
        let (loss, p) = forward(x[0], &self.labels, self.smoothing)?;
        self.probs = Some(p);
        Ok(loss)
    }
    fn backward(&self, g: &Tensor, _x: &[&Tensor], _y: &Tensor, _n: &[bool]) -> Result<Vec<Option<Tensor>>> {
        let p = self.probs.as_ref().expect("forward ran before backward");
        Ok(vec![Some(backward(g, p, &self.labels, self.smoothing)?)])
    }
}

impl Graph {
    /// Mean cross-entropy of `logits [B, C]` against `labels` (B of them), with label smoothing.
    pub fn cross_entropy(&mut self, logits: Var, labels: &[u32], smoothing: f32) -> Result<Var> {
        check(self.shape(logits), labels, smoothing)?;
        self.apply(
            CrossEntropy {
                labels: labels.to_vec(),
                smoothing,
                probs: None,
            },
            &[logits],
        )
    }
}
