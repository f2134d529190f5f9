//! Multi-head self-attention (timm's `Attention`): one packed projection to q, k, v, the
//! attention of every token to every token in each head, and the output projection.
//!
//! ```text
//! qkv = x·Wqkvᵀ + b                [B,T,3D] → [B,T,3,h,Dh] → [3,B·h,T,Dh]: q, k, v
//! a   = softmax(q·kᵀ / √Dh)         [B·h,T,T]   row i: how much token i takes from each token
//! o   = drop(a)·v                   [B·h,T,Dh] → [B,T,h,Dh] → [B,T,D]   (heads side by side)
//! y   = o·Wprojᵀ + b                [B,T,D]
//! ```
//! The 1/√Dh keeps the scores' spread independent of the head width, so the softmax does not
//! saturate as Dh grows (Vaswani et al., 2017, §3.2.1).
//!
//! Two implementations of the middle lines compute the same thing: [`Attention::composed`], op
//! by op (the readable one, and the one that hands out the weights `a`), and the fused op
//! `ops::attention` (one pass per head; what training uses). `tests/attention_fused.rs` checks
//! that they agree, forward and backward.

use super::layers::{Ctx, Linear};
use crate::autograd::{ParamStore, Var};
use crate::error::Result;
use crate::tensor::Tensor;

#[derive(Clone, Debug)]
pub struct Attention {
    pub heads: usize,
    /// `attn.qkv`: D → 3D (q, k, v side by side).
    pub qkv: Linear,
    /// `attn.proj`: D → D.
    pub proj: Linear,
    /// Dropout on the attention weights.
    pub attn_dropout: f32,
}

impl Attention {
    /// Register `{prefix}.qkv.*` (weight `[3·h·Dk, D]`, bias zeros) and `{prefix}.proj.*`
    /// (weight `[D, h·Dk]`, bias zeros); `h·Dk = D` unless the heads have a key width of their
    /// own ([`crate::nn::VitOptions::key_dim`]).
    pub fn new(
        store: &mut ParamStore,
        prefix: &str,
        heads: usize,
        qkv_weight: Tensor,
        proj_weight: Tensor,
        attn_dropout: f32,
    ) -> Result<Attention> {
        let (d, inner) = (proj_weight.shape()[0], qkv_weight.shape()[0]);
        Ok(Attention {
            heads,
            qkv: Linear::new(store, &format!("{prefix}.qkv"), qkv_weight, Tensor::zeros(&[inner]))?,
            proj: Linear::new(store, &format!("{prefix}.proj"), proj_weight, Tensor::zeros(&[d]))?,
            attn_dropout,
        })
    }

    /// `[B, T, D] → [B, T, D]`. When the pass records weights (`cx.weights`), the composed
    /// version runs and leaves its `[B, h, T, T]` there.
    pub fn forward(&self, cx: &mut Ctx, x: Var) -> Result<Var> {
        let o = if cx.weights.is_some() || !cx.fused_attention {
            let (o, weights) = self.composed(cx, x)?;
            if let Some(all) = cx.weights.as_deref_mut() {
                let [bh, t, _] = *cx.g.shape(weights) else {
                    unreachable!("softmax keeps the [B·h, T, T] of the scores")
                };
                all.push(cx.g.value(weights).reshape(&[bh / self.heads, self.heads, t, t])?);
            }
            o
        } else {
            let qkv = self.qkv.forward(cx, x)?;
            let (p, seed) = cx.drop.next(self.attn_dropout);
            cx.g.attention(qkv, self.heads, p, seed)?
        };
        self.proj.forward(cx, o)
    }

    /// The attention op by op, before the output projection: returns `o [B, T, h·Dh]` and the
    /// weights `a [B·h, T, T]` (before dropout).
    pub fn composed(&self, cx: &mut Ctx, x: Var) -> Result<(Var, Var)> {
        let qkv = self.qkv.forward(cx, x)?;
        let [b, t, d3] = *cx.g.shape(qkv) else {
            unreachable!("the linear layer keeps [B, T, ·]")
        };
        // d: the width of q (and of k, v): h·Dh.
        let (h, d) = (self.heads, d3 / 3);
        let dh = d / h;
        let g = &mut *cx.g;
        // [B,T,3D] → [B,T,3,h,Dh] → [3,B,h,T,Dh]: q, k, v each split into heads.
        let qkv = g.reshape(qkv, &[b, t, 3, h, dh])?;
        let qkv = g.permute(qkv, &[2, 0, 3, 1, 4])?;
        let mut parts = [qkv; 3];
        for (i, part) in parts.iter_mut().enumerate() {
            let s = g.select(qkv, 0, i)?;
            *part = g.reshape(s, &[b * h, t, dh])?;
        }
        let [q, k, v] = parts;
        let scores = g.matmul_t(q, k, false, true)?; // [B·h, T, T]
        let scores = g.scale(scores, 1.0 / (dh as f32).sqrt())?;
        let weights = g.softmax(scores)?;
        let dropped = cx.dropout(weights, self.attn_dropout)?;
        let g = &mut *cx.g;
        let o = g.matmul(dropped, v)?; // [B·h, T, Dh]
        let o = g.reshape(o, &[b, h, t, dh])?;
        let o = g.permute(o, &[0, 2, 1, 3])?;
        Ok((g.reshape(o, &[b, t, d])?, weights))
    }
}
