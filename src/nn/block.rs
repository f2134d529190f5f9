//! One pre-norm encoder block (timm's `Block`):
//!
//! ```text
//! x = x + drop(attn(norm1(x)))
//! x = x + drop(mlp(norm2(x)))
//! ```
//! The residual adds let the gradient reach the first block unchanged through the sums, whatever
//! the blocks in between do; norming the branch input (pre-norm) rather than the sum keeps that
//! path clean (Xiong et al., 2020).

use super::attention::Attention;
use super::layers::{Ctx, LayerNorm};
use super::mlp::{Mlp, MlpInit};
use super::{VitConfig, VitOptions};
use crate::autograd::{ParamStore, Var};
use crate::error::Result;
use crate::tensor::Tensor;

#[derive(Clone, Debug)]
pub struct Block {
    pub norm1: LayerNorm,
    pub attn: Attention,
    pub norm2: LayerNorm,
    pub mlp: Mlp,
    /// Dropout on the attention branch before its residual add.
    pub attn_proj_dropout: f32,
    /// Dropout on the MLP branch before its residual add.
    pub dropout: f32,
}

/// The initial values of a block's weight matrices (and the MLP's biases); norms start at
/// γ = 1, β = 0 and the attention biases at 0.
#[derive(Clone)]
pub struct BlockInit {
    /// `[3·h·Dk, D]` (`[3D, D]` when `h·Dk = D`).
    pub qkv: Tensor,
    /// `[D, h·Dk]`.
    pub proj: Tensor,
    pub mlp: MlpInit,
}

impl Block {
    /// Register the block's 12 tensors as `{prefix}.norm1.*`, `{prefix}.attn.*`,
    /// `{prefix}.norm2.*`, `{prefix}.mlp.*` (in that order).
    pub fn new(
        store: &mut ParamStore,
        prefix: &str,
        cfg: &VitConfig,
        opts: &VitOptions,
        init: BlockInit,
    ) -> Result<Block> {
        let d = cfg.embed_dim;
        Ok(Block {
            norm1: LayerNorm::new(store, &format!("{prefix}.norm1"), d, cfg.ln_eps)?,
            attn: Attention::new(
                store,
                &format!("{prefix}.attn"),
                cfg.heads,
                init.qkv,
                init.proj,
                cfg.attn_dropout,
            )?,
            norm2: LayerNorm::new(store, &format!("{prefix}.norm2"), d, cfg.ln_eps)?,
            mlp: Mlp::new(store, &format!("{prefix}.mlp"), init.mlp, cfg.gelu, cfg.dropout)?,
            attn_proj_dropout: opts.attn_proj_dropout.unwrap_or(cfg.dropout),
            dropout: cfg.dropout,
        })
    }

    /// `[B, T, D] → [B, T, D]`.
    pub fn forward(&self, cx: &mut Ctx, x: Var) -> Result<Var> {
        let n = self.norm1.forward(cx, x)?;
        let a = self.attn.forward(cx, n)?;
        // x + drop(a), fused: one pass over the residual stream instead of two.
        let (p, seed) = cx.drop.next(self.attn_proj_dropout);
        let x = cx.g.dropout_add(x, a, p, seed)?;
        let n = self.norm2.forward(cx, x)?;
        let m = self.mlp.forward(cx, n)?;
        let (p, seed) = cx.drop.next(self.dropout);
        cx.g.dropout_add(x, m, p, seed)
    }
}
