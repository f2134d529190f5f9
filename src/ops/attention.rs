//! # Fused multi-head self-attention core
//!
//! The composed attention in `nn::vit` (reshape, permute, select, matmul, scale, softmax,
//! dropout, matmul, permute, reshape) is the readable reference. This op computes the same thing
//! in one pass per (image, head), keeping each head's `T×T` scores in cache instead of sweeping
//! the whole `[B·h, T, T]` tensor through memory five times. Tests check it against the composed
//! version, forward and backward.
//!
//! ## Forward
//! Input: the packed projection `qkv: [B, T, 3D]` (q, k, v blocks of D features, each split into
//! h heads of Dh = D/h). For image b and head n, with `q_i, k_j, v_j ∈ R^Dh` read from it:
//! ```text
//! S_ij = ⟨q_i, k_j⟩ / √Dh                     scores            [T, T]
//! P_ij = exp(S_ij − max_j S) / Σ_j exp(...)   softmax per row   [T, T]   (saved)
//! P̃_ij = P_ij · keep_ij / (1 − p)             attention dropout (mask counter = ((b·h+n)·T+i)·T+j,
//!                                              the same as dropout on the composed [B·h,T,T])
//! O_i  = Σ_j P̃_ij v_j                         output, written to out[b, i, n·Dh .. (n+1)·Dh]
//! ```
//! Output `[B, T, D]`: the heads already merged, as the projection expects.
//!
//! ## Backward
//! With G = dL/dO (read from `[B, T, D]` at the head's columns), reversing each line:
//! ```text
//! dV_j  = Σ_i P̃_ij G_i                        (O is linear in v)
//! dP̃_ij = ⟨G_i, v_j⟩                          (O is linear in P̃)
//! dP_ij = dP̃_ij · keep_ij / (1 − p)
//! dS_ij = P_ij (dP_ij − Σ_j' P_ij' dP_ij')    (softmax backward, see softmax.rs)
//! dQ_i  = Σ_j dS_ij k_j / √Dh                 dK_j = Σ_i dS_ij q_i / √Dh
//! ```
//! and dQ, dK, dV are written back into `dqkv: [B, T, 3D]` at the places q, k, v were read from.

use crate::autograd::{Graph, Op, Var};
use crate::backend::cpu::fastmath;
use crate::backend::cpu::gemm::{gemm, MatRef};
use crate::backend::Device;
use crate::error::{Error, Result};
use crate::ops::dropout::Mask;
use crate::tensor::Tensor;
use rayon::prelude::*;

#[derive(Clone, Copy)]
struct SendPtr(*mut f32);
unsafe impl Send for SendPtr {}
unsafe impl Sync for SendPtr {}

impl SendPtr {
    /// A method (not a field access), so closures capture the whole `Send` wrapper.
    fn at(self, offset: usize) -> *mut f32 {
        self.0.wrapping_add(offset)
    }
}

/// (B, T, D, Dh) of a `[B, T, 3D]` input split into `heads`.
fn dims(qkv: &[usize], heads: usize) -> Result<(usize, usize, usize, usize)> {
    match *qkv {
        [b, t, d3] if heads > 0 && d3 % 3 == 0 && (d3 / 3) % heads == 0 && t > 0 => Ok((b, t, d3 / 3, d3 / 3 / heads)),
        _ => Err(Error::shape(
            "attention",
            qkv,
            &[heads],
            "need qkv [B, T, 3D] with D a multiple of heads",
        )),
    }
}

/// Copy one head's q, k, v (each `[T, Dh]`) out of `qkv` for image `b`, head `n`.
fn gather(src: &[f32], b: usize, n: usize, t: usize, d: usize, dh: usize, which: usize, out: &mut [f32]) {
    for i in 0..t {
        let row = (b * t + i) * 3 * d + which * d + n * dh;
        out[i * dh..(i + 1) * dh].copy_from_slice(&src[row..row + dh]);
    }
}

/// The dropout factors `keep / (1 − p)` of one head's `T×T` weights (all 1 without dropout).
fn drop_factors(mask: Option<Mask>, bh: usize, t: usize, out: &mut [f32]) {
    match mask {
        Some(mask) => mask.factors((bh * t * t) as u32, out),
        None => out.fill(1.0),
    }
}

/// The attention-dropout mask, `None` when `p = 0`.
fn attention_mask(p: f32, seed: u64) -> Result<Option<Mask>> {
    if p == 0.0 {
        Ok(None)
    } else {
        Mask::new(p, seed).map(Some)
    }
}

/// `C = op(A)·op(B)` for one head's small matrices (single-threaded: heads run in parallel).
#[allow(clippy::too_many_arguments)]
fn small_gemm(m: usize, n: usize, k: usize, a: &[f32], ta: bool, b: &[f32], tb: bool, c: &mut [f32]) {
    let am = MatRef::new(a, if ta { m } else { k }, ta);
    let bm = MatRef::new(b, if tb { k } else { n }, tb);
    gemm(m, n, k, am, bm, c, n, false, false);
}

/// `(out [B, T, D], probs [B, h, T, T])`.
pub fn forward(qkv: &Tensor, heads: usize, p: f32, seed: u64) -> Result<(Tensor, Tensor)> {
    let (b, t, d, dh) = dims(qkv.shape(), heads)?;
    let mask = attention_mask(p, seed)?;
    match qkv.device() {
        Device::Cpu => {
            let mut out = Tensor::scratch(&[b, t, d]);
            let mut probs = Tensor::scratch(&[b, heads, t, t]);
            let src = qkv.data();
            let optr = SendPtr(out.data_mut().as_mut_ptr());
            let scale = 1.0 / (dh as f32).sqrt();
            probs.data_mut().par_chunks_mut(t * t).enumerate().for_each(|(bh, pm)| {
                let (bi, n) = (bh / heads, bh % heads);
                let (mut q, mut k, mut v) = (vec![0.0f32; t * dh], vec![0.0f32; t * dh], vec![0.0f32; t * dh]);
                gather(src, bi, n, t, d, dh, 0, &mut q);
                gather(src, bi, n, t, d, dh, 1, &mut k);
                gather(src, bi, n, t, d, dh, 2, &mut v);
                small_gemm(t, t, dh, &q, false, &k, true, pm); // S = Q·Kᵀ
                for row in pm.chunks_mut(t) {
                    let m = row.iter().fold(f32::NEG_INFINITY, |a, &x| a.max(x));
                    for s in row.iter_mut() {
                        *s = fastmath::exp(scale * (*s - m));
                    }
                    let inv = 1.0 / fastmath::sum(row);
                    row.iter_mut().for_each(|s| *s *= inv);
                }
                let mut o = vec![0.0f32; t * dh];
                if p > 0.0 {
                    let mut pd = vec![0.0f32; t * t];
                    drop_factors(mask, bh, t, &mut pd);
                    pd.iter_mut().zip(pm.iter()).for_each(|(f, &x)| *f *= x);
                    small_gemm(t, dh, t, &pd, false, &v, false, &mut o); // O = P̃·V
                } else {
                    small_gemm(t, dh, t, pm, false, &v, false, &mut o);
                }
                for i in 0..t {
                    // SAFETY: (image, head) pairs write disjoint column ranges of `out`.
                    unsafe {
                        std::ptr::copy_nonoverlapping(o[i * dh..].as_ptr(), optr.at((bi * t + i) * d + n * dh), dh);
                    }
                }
            });
            Ok((out, probs))
        }
    }
}

/// `dqkv [B, T, 3D]` from G = dL/d(out) and the saved probabilities.
pub fn backward(g: &Tensor, qkv: &Tensor, probs: &Tensor, heads: usize, p: f32, seed: u64) -> Result<Tensor> {
    let (b, t, d, dh) = dims(qkv.shape(), heads)?;
    if g.shape() != [b, t, d] {
        return Err(Error::shape(
            "attention backward",
            g.shape(),
            &[b, t, d],
            "gradient shape",
        ));
    }
    let mask = attention_mask(p, seed)?;
    match qkv.device() {
        Device::Cpu => {
            let mut dqkv = Tensor::scratch(qkv.shape());
            let (src, gd, pd) = (qkv.data(), g.data(), probs.data());
            let dptr = SendPtr(dqkv.data_mut().as_mut_ptr());
            let scale = 1.0 / (dh as f32).sqrt();
            (0..b * heads).into_par_iter().for_each(|bh| {
                let (bi, n) = (bh / heads, bh % heads);
                let buf = || vec![0.0f32; t * dh];
                let (mut q, mut k, mut v, mut go) = (buf(), buf(), buf(), buf());
                gather(src, bi, n, t, d, dh, 0, &mut q);
                gather(src, bi, n, t, d, dh, 1, &mut k);
                gather(src, bi, n, t, d, dh, 2, &mut v);
                for i in 0..t {
                    let row = (bi * t + i) * d + n * dh;
                    go[i * dh..(i + 1) * dh].copy_from_slice(&gd[row..row + dh]);
                }
                let pm = &pd[bh * t * t..(bh + 1) * t * t];
                let mut factors = vec![0.0f32; t * t];
                drop_factors(mask, bh, t, &mut factors);
                let p_dropped: Vec<f32> = pm.iter().zip(&factors).map(|(x, f)| x * f).collect();
                let (mut dq, mut dk, mut dv) = (buf(), buf(), buf());
                small_gemm(t, dh, t, &p_dropped, true, &go, false, &mut dv); // dV = P̃ᵀ·G
                let mut ds = vec![0.0f32; t * t];
                small_gemm(t, t, dh, &go, false, &v, true, &mut ds); // dP̃ = G·Vᵀ
                for ((dsr, pr), fr) in ds.chunks_mut(t).zip(pm.chunks(t)).zip(factors.chunks(t)) {
                    dsr.iter_mut().zip(fr).for_each(|(x, f)| *x *= f); // dP = dP̃ ⊙ mask/(1−p)
                    let rowdot = fastmath::dot(dsr, pr);
                    for (x, &pv) in dsr.iter_mut().zip(pr) {
                        *x = pv * (*x - rowdot) * scale; // dS (with the 1/√Dh of S folded in)
                    }
                }
                small_gemm(t, dh, t, &ds, false, &k, false, &mut dq); // dQ = dS·K
                small_gemm(t, dh, t, &ds, true, &q, false, &mut dk); // dK = dSᵀ·Q
                for i in 0..t {
                    let row = (bi * t + i) * 3 * d + n * dh;
                    for (w, part) in [&dq, &dk, &dv].iter().enumerate() {
                        // SAFETY: each (image, head) owns its columns of dqkv's rows.
                        unsafe { std::ptr::copy_nonoverlapping(part[i * dh..].as_ptr(), dptr.at(row + w * d), dh) };
                    }
                }
            });
            Ok(dqkv)
        }
    }
}

struct Attention {
    heads: usize,
    p: f32,
    seed: u64,
    probs: Option<Tensor>,
}

impl Op for Attention {
    fn name(&self) -> &'static str {
        "attention"
    }
    fn forward(&mut self, x: &[&Tensor]) -> Result<Tensor> {
        let (out, probs) = forward(x[0], self.heads, self.p, self.seed)?;
        self.probs = Some(probs);
        Ok(out)
    }
    fn backward(&self, g: &Tensor, x: &[&Tensor], _y: &Tensor, _n: &[bool]) -> Result<Vec<Option<Tensor>>> {
        let probs = self.probs.as_ref().expect("forward ran before backward");
        Ok(vec![Some(backward(g, x[0], probs, self.heads, self.p, self.seed)?)])
    }
}

impl Graph {
    /// Fused multi-head attention on a packed `qkv [B, T, 3D]` → `[B, T, D]`, with attention
    /// dropout `p` (mask seed `seed`; `p = 0` for none).
    pub fn attention(&mut self, qkv: Var, heads: usize, p: f32, seed: u64) -> Result<Var> {
        dims(self.shape(qkv), heads)?;
        if !(0.0..1.0).contains(&p) {
            return Err(Error::config(format!("attention dropout must be in [0, 1), got {p}")));
        }
        self.apply(
            Attention {
                heads,
                p,
                seed,
                probs: None,
            },
            &[qkv],
        )
    }
}
