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
use crate::backend::cpu::gemm::{gemm_padded, MatRef, MR, NR};
use crate::backend::cuda::{CudaDevice, MatmulDims, MatmulKernel, RowKernel};
use crate::backend::{same_device, Device};
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

/// The dropout factors `keep / (1 − p)` of head `bh`'s `T×T` weights. Without dropout there are
/// none: the callers skip the products with them.
fn drop_factors(mask: Mask, bh: usize, t: usize, out: &mut [f32]) {
    mask.factors((bh * t * t) as u32, out)
}

/// `dst[..src.len()] = src` for one head's row (Dh floats, 16 in the default model): eight at a
/// time as fixed-size copies, which compile to vector moves, where `copy_from_slice` of a
/// run-time length is a call to `memmove` (5% of a training step at 16 floats a row).
#[inline(always)]
fn copy_row(dst: &mut [f32], src: &[f32]) {
    let dst = &mut dst[..src.len()];
    let (mut dc, sc) = (dst.chunks_exact_mut(8), src.chunks_exact(8));
    let tail = sc.remainder();
    for (d, s) in (&mut dc).zip(sc) {
        let s: &[f32; 8] = s.try_into().expect("chunk of 8");
        d.copy_from_slice(s);
    }
    for (d, &s) in dc.into_remainder().iter_mut().zip(tail) {
        *d = s;
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

/// One head's matrices, padded so every product runs on whole micro-kernel tiles
/// ([`gemm_padded`]); the padding is zero and contributes nothing. Rows go to a multiple of
/// `MR`, the `T×T` matrices' columns to a multiple of `NR` that also covers the padded rows
/// (their transposes are read in place), and the head width `Dh` to a multiple of `NR`.
/// Kept per worker and reused across heads: only the valid regions are ever rewritten.
struct HeadBuffers {
    /// T, padded rows, padded `T×T` columns, Dh, padded Dh.
    t: usize,
    tr: usize,
    tc: usize,
    dh: usize,
    dc: usize,
    /// q, k, v (and G in the backward), each `[tr × dc]`.
    q: Vec<f32>,
    k: Vec<f32>,
    v: Vec<f32>,
    g: Vec<f32>,
    /// Kᵀ (forward) or Vᵀ (backward), `[dh × tc]`.
    transposed: Vec<f32>,
    /// Scores / probabilities (forward) or P̃ (backward), `[tr × tc]`.
    scores: Vec<f32>,
    /// dP̃ → dS (backward), `[tr × tc]`.
    dscores: Vec<f32>,
    /// The attention dropout factors, `[T × T]`.
    factors: Vec<f32>,
    /// Products of width Dh: O (forward), dQ, dK, dV (backward), each `[tr × dc]`.
    out: [Vec<f32>; 3],
}

impl HeadBuffers {
    fn new(t: usize, dh: usize) -> HeadBuffers {
        let tr = t.div_ceil(MR) * MR;
        let tc = tr.div_ceil(NR) * NR;
        let dc = dh.div_ceil(NR) * NR;
        let z = |n: usize| vec![0.0f32; n];
        HeadBuffers {
            t,
            tr,
            tc,
            dh,
            dc,
            q: z(tr * dc),
            k: z(tr * dc),
            v: z(tr * dc),
            g: z(tr * dc),
            transposed: z(dh * tc),
            scores: z(tr * tc),
            dscores: z(tr * tc),
            factors: z(t * t),
            out: [z(tr * dc), z(tr * dc), z(tr * dc)],
        }
    }

    /// Copy the head's `[T, Dh]` block (row stride `stride` in `src`, starting at `first`) into
    /// the valid region of `dst` (`[tr × dc]`).
    fn load(&self, src: &[f32], first: usize, stride: usize, dst: &mut [f32]) {
        for i in 0..self.t {
            let row = first + i * stride;
            copy_row(&mut dst[i * self.dc..], &src[row..row + self.dh]);
        }
    }

    /// Fill `transposed` with the `[T, Dh]` block of `src` transposed (`[Dh × tc]`).
    fn load_transposed(&mut self, src: &[f32], first: usize, stride: usize) {
        for i in 0..self.t {
            let row = first + i * stride;
            for (d, &x) in src[row..row + self.dh].iter().enumerate() {
                self.transposed[d * self.tc + i] = x;
            }
        }
    }

    /// `out[slot] = A · B` over whole tiles: A `[tr × k]` read through `a`, B `[k × dc]`.
    fn times(&mut self, slot: usize, a: MatRef, k: usize, b: &[f32]) {
        let (tr, dc) = (self.tr, self.dc);
        gemm_padded(tr, dc, k, a, b, dc, &mut self.out[slot], dc);
    }

    /// Write the valid `[T, Dh]` region of `out[slot]` to `dst` (row stride `stride`, from `first`).
    ///
    /// SAFETY: the caller owns those elements of `dst` (each (image, head) writes its own columns).
    unsafe fn store(&self, slot: usize, dst: SendPtr, first: usize, stride: usize) {
        for i in 0..self.t {
            let src = &self.out[slot][i * self.dc..i * self.dc + self.dh];
            copy_row(std::slice::from_raw_parts_mut(dst.at(first + i * stride), self.dh), src);
        }
    }
}

/// `(out [B, T, D], probs [B, h, T, T])`.
pub fn forward(qkv: &Tensor, heads: usize, p: f32, seed: u64) -> Result<(Tensor, Tensor)> {
    let (b, t, d, dh) = dims(qkv.shape(), heads)?;
    let mask = attention_mask(p, seed)?;
    match qkv.device() {
        Device::Cuda => cuda_forward(qkv, [b, t, d, dh], heads, p, seed),
        Device::Cpu => {
            let mut out = Tensor::scratch(&[b, t, d]);
            let mut probs = Tensor::scratch(&[b, heads, t, t]);
            let src = qkv.data();
            let optr = SendPtr(out.data_mut().as_mut_ptr());
            let scale = 1.0 / (dh as f32).sqrt();
            let init = || HeadBuffers::new(t, dh);
            probs
                .data_mut()
                .par_chunks_mut(t * t)
                .enumerate()
                .for_each_init(init, |hb, (bh, pm)| {
                    let (bi, n) = (bh / heads, bh % heads);
                    let first = bi * t * 3 * d + n * dh;
                    let (mut q, mut v) = (std::mem::take(&mut hb.q), std::mem::take(&mut hb.v));
                    hb.load(src, first, 3 * d, &mut q);
                    hb.load_transposed(src, first + d, 3 * d);
                    hb.load(src, first + 2 * d, 3 * d, &mut v);
                    let (tr, tc, dc) = (hb.tr, hb.tc, hb.dc);
                    // S = Q·Kᵀ (unscaled; the 1/√Dh goes into the exponent below).
                    gemm_padded(
                        tr,
                        tc,
                        dh,
                        MatRef::new(&q, dc, false),
                        &hb.transposed,
                        tc,
                        &mut hb.scores,
                        tc,
                    );
                    if let Some(mask) = mask {
                        drop_factors(mask, bh, t, &mut hb.factors);
                    }
                    for (i, prow) in pm.chunks_mut(t).enumerate() {
                        let row = &mut hb.scores[i * tc..i * tc + t];
                        let m = row.iter().fold(f32::NEG_INFINITY, |a, &x| a.max(x));
                        for s in row.iter_mut() {
                            *s = fastmath::exp(scale * (*s - m));
                        }
                        let inv = 1.0 / fastmath::sum(row);
                        for (s, pv) in row.iter_mut().zip(prow.iter_mut()) {
                            *pv = *s * inv; // P, saved for the backward
                            *s = *pv;
                        }
                        if mask.is_some() {
                            // P̃ = P ⊙ dropout factors
                            row.iter_mut()
                                .zip(&hb.factors[i * t..(i + 1) * t])
                                .for_each(|(s, &f)| *s *= f);
                        }
                    }
                    // O = P̃·V
                    let scores = std::mem::take(&mut hb.scores);
                    hb.times(0, MatRef::new(&scores, tc, false), t, &v);
                    // SAFETY: (image, head) pairs write disjoint column ranges of `out`.
                    unsafe { hb.store(0, optr, bi * t * d + n * dh, d) };
                    (hb.q, hb.v, hb.scores) = (q, v, scores);
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
    match same_device("attention backward", &[g, qkv, probs])? {
        Device::Cuda => cuda_backward(g, qkv, probs, [b, t, d, dh], heads, p, seed),
        Device::Cpu => {
            let mut dqkv = Tensor::scratch(qkv.shape());
            let (src, gd, pd) = (qkv.data(), g.data(), probs.data());
            let dptr = SendPtr(dqkv.data_mut().as_mut_ptr());
            let scale = 1.0 / (dh as f32).sqrt();
            let init = || HeadBuffers::new(t, dh);
            (0..b * heads).into_par_iter().for_each_init(init, |hb, bh| {
                let (bi, n) = (bh / heads, bh % heads);
                let first = bi * t * 3 * d + n * dh;
                let mut bufs = [&mut hb.q, &mut hb.k, &mut hb.v, &mut hb.g].map(std::mem::take);
                let [q, k, v, go] = &mut bufs;
                hb.load(src, first, 3 * d, q);
                hb.load(src, first + d, 3 * d, k);
                hb.load(src, first + 2 * d, 3 * d, v);
                hb.load(gd, bi * t * d + n * dh, d, go);
                hb.load_transposed(src, first + 2 * d, 3 * d); // Vᵀ
                let (tr, tc, dc) = (hb.tr, hb.tc, hb.dc);
                let pm = &pd[bh * t * t..(bh + 1) * t * t];
                if let Some(mask) = mask {
                    drop_factors(mask, bh, t, &mut hb.factors);
                }
                // P̃ = P ⊙ factors, in the valid region of a zero-padded [tr × tc].
                for (i, (srow, prow)) in hb.scores.chunks_mut(tc).zip(pm.chunks(t)).enumerate() {
                    copy_row(srow, prow);
                    if mask.is_some() {
                        let frow = &hb.factors[i * t..(i + 1) * t];
                        srow[..t].iter_mut().zip(frow).for_each(|(s, &f)| *s *= f);
                    }
                }
                let scores = std::mem::take(&mut hb.scores);
                hb.times(2, MatRef::new(&scores, tc, true), t, go); // dV = P̃ᵀ·G
                                                                    // dP̃ = G·Vᵀ
                gemm_padded(
                    tr,
                    tc,
                    dh,
                    MatRef::new(go, dc, false),
                    &hb.transposed,
                    tc,
                    &mut hb.dscores,
                    tc,
                );
                for (i, (dsr, pr)) in hb.dscores.chunks_mut(tc).zip(pm.chunks(t)).enumerate() {
                    let dsr = &mut dsr[..t];
                    if mask.is_some() {
                        let fr = &hb.factors[i * t..(i + 1) * t];
                        dsr.iter_mut().zip(fr).for_each(|(x, f)| *x *= f); // dP = dP̃ ⊙ mask/(1−p)
                    }
                    let rowdot = fastmath::dot(dsr, pr);
                    for (x, &pv) in dsr.iter_mut().zip(pr) {
                        *x = pv * (*x - rowdot) * scale; // dS (with the 1/√Dh of S folded in)
                    }
                }
                let dscores = std::mem::take(&mut hb.dscores);
                hb.times(0, MatRef::new(&dscores, tc, false), t, k); // dQ = dS·K
                hb.times(1, MatRef::new(&dscores, tc, true), t, q); // dK = dSᵀ·Q
                for w in 0..3 {
                    // SAFETY: each (image, head) owns its columns of dqkv's rows.
                    unsafe { hb.store(w, dptr, first + w * d, 3 * d) };
                }
                let [q, k, v, go] = bufs;
                (hb.q, hb.k, hb.v, hb.g, hb.scores, hb.dscores) = (q, k, v, go, scores, dscores);
            });
            Ok(dqkv)
        }
    }
}

// ---------------------------------------------------------------------------------------------
// GPU: the same attention composed from the batched matmul, softmax, dropout and permute kernels
// (each head's T×T matrices go through GPU memory; the CPU's per-head fusion is a cache trick).
// ---------------------------------------------------------------------------------------------

/// `[B, T, 3, h, Dh] → [3, B, h, T, Dh]`: q, k, v each become `B·h` contiguous `[T, Dh]` blocks.
const SPLIT_HEADS: [usize; 5] = [2, 0, 3, 1, 4];
/// The inverse of [`SPLIT_HEADS`].
const MERGE_SPLIT: [usize; 5] = [1, 3, 0, 2, 4];
/// `[B, h, T, Dh] ↔ [B, T, h, Dh]` (its own inverse).
const SWAP_HEADS_TOKENS: [usize; 4] = [0, 2, 1, 3];

/// One batched product over the `B·h` heads.
fn head_dims(bh: usize, m: usize, n: usize, k: usize, ta: bool, tb: bool) -> MatmulDims {
    MatmulDims {
        batch: bh,
        m,
        n,
        k,
        ta,
        tb,
    }
}

fn cuda_forward(qkv: &Tensor, [b, t, d, dh]: [usize; 4], heads: usize, p: f32, seed: u64) -> Result<(Tensor, Tensor)> {
    let dev = CudaDevice::global()?;
    let (bh, nh, scale) = (b * heads, b * t * d, 1.0 / (dh as f32).sqrt());
    let mut split = dev.alloc(3 * nh)?;
    dev.permute(qkv.cuda()?, &mut split, &[b, t, 3, heads, dh], &SPLIT_HEADS)?;
    let sv = split.view();
    let (q, k, v) = (sv.slice(..nh), sv.slice(nh..2 * nh), sv.slice(2 * nh..));
    // S = (Q/√Dh)·Kᵀ, P = softmax(S), P̃ = dropout(P) (counter = flat index in [B·h, T, T]).
    let mut q_scaled = dev.alloc(nh)?;
    dev.scale(&q, &mut q_scaled, nh, scale)?;
    let mut scores = dev.alloc(bh * t * t)?;
    dev.matmul(
        MatmulKernel::RegisterTiled,
        &q_scaled,
        &k,
        &mut scores,
        head_dims(bh, t, t, dh, false, true),
        0.0,
    )?;
    let mut probs = dev.alloc(bh * t * t)?;
    dev.softmax_fwd(RowKernel::Auto, &scores, &mut probs, bh * t, t)?;
    let weights = if p > 0.0 {
        dev.dropout_fwd(&probs, &mut scores, bh * t * t, p, seed)?;
        &scores
    } else {
        &probs
    };
    // O = P̃·V per head, then the heads merged back into [B, T, D].
    let mut heads_out = dev.alloc(nh)?;
    dev.matmul(
        MatmulKernel::RegisterTiled,
        weights,
        &v,
        &mut heads_out,
        head_dims(bh, t, dh, t, false, false),
        0.0,
    )?;
    let mut out = dev.alloc(nh)?;
    dev.permute(&heads_out, &mut out, &[b, heads, t, dh], &SWAP_HEADS_TOKENS)?;
    Ok((
        Tensor::from_cuda(out, &[b, t, d])?,
        Tensor::from_cuda(probs, &[b, heads, t, t])?,
    ))
}

fn cuda_backward(
    g: &Tensor,
    qkv: &Tensor,
    probs: &Tensor,
    [b, t, d, dh]: [usize; 4],
    heads: usize,
    p: f32,
    seed: u64,
) -> Result<Tensor> {
    let dev = CudaDevice::global()?;
    let (bh, nh, scale, nt) = (b * heads, b * t * d, 1.0 / (dh as f32).sqrt(), b * heads * t * t);
    let mut split = dev.alloc(3 * nh)?;
    dev.permute(qkv.cuda()?, &mut split, &[b, t, 3, heads, dh], &SPLIT_HEADS)?;
    let sv = split.view();
    let (q, k, v) = (sv.slice(..nh), sv.slice(nh..2 * nh), sv.slice(2 * nh..));
    let mut g_heads = dev.alloc(nh)?;
    dev.permute(g.cuda()?, &mut g_heads, &[b, t, heads, dh], &SWAP_HEADS_TOKENS)?;
    let probs = probs.cuda()?;
    // P̃ again from P and the seed (cheaper than keeping it).
    let mut dropped = dev.alloc(if p > 0.0 { nt } else { 0 })?;
    let weights = if p > 0.0 {
        dev.dropout_fwd(probs, &mut dropped, nt, p, seed)?;
        &dropped
    } else {
        probs
    };
    let mut dsplit = dev.alloc(3 * nh)?;
    let mut dsv = dsplit.view_mut();
    let (mut dq, mut rest) = dsv.split_at_mut(nh);
    let (mut dk, mut dv) = rest.split_at_mut(nh);
    let mm = MatmulKernel::RegisterTiled;
    dev.matmul(
        mm,
        weights,
        &g_heads,
        &mut dv,
        head_dims(bh, t, dh, t, true, false),
        0.0,
    )?; // dV = P̃ᵀ·G
    let mut d_weights = dev.alloc(nt)?;
    dev.matmul(
        mm,
        &g_heads,
        &v,
        &mut d_weights,
        head_dims(bh, t, t, dh, false, true),
        0.0,
    )?; // dP̃ = G·Vᵀ
    let mut d_probs = dev.alloc(nt)?;
    let d_probs_src = if p > 0.0 {
        dev.dropout_bwd(&d_weights, &mut d_probs, nt, p, seed)?; // dP = dP̃ ⊙ mask/(1−p)
        &d_probs
    } else {
        &d_weights
    };
    let mut d_scores = dev.alloc(nt)?;
    dev.softmax_bwd(RowKernel::Auto, d_probs_src, probs, &mut d_scores, bh * t, t)?; // dS
    let mut d_scaled = dev.alloc(nt)?;
    dev.scale(&d_scores, &mut d_scaled, nt, scale)?; // S = Q·Kᵀ/√Dh
    dev.matmul(mm, &d_scaled, &k, &mut dq, head_dims(bh, t, dh, t, false, false), 0.0)?; // dQ = dS·K
    dev.matmul(mm, &d_scaled, &q, &mut dk, head_dims(bh, t, dh, t, true, false), 0.0)?; // dK = dSᵀ·Q
    let mut dqkv = dev.alloc(3 * nh)?;
    dev.permute(&dsplit, &mut dqkv, &[3, b, heads, t, dh], &MERGE_SPLIT)?;
    Tensor::from_cuda(dqkv, qkv.shape())
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
