//! The feed-forward half of a block (timm's `Mlp`): `fc2(drop(gelu(fc1(x))))`, D → M → D.

use super::layers::{Ctx, Linear};
use crate::autograd::{ParamStore, Var};
use crate::error::Result;
use crate::ops::GeluKind;
use crate::tensor::Tensor;

#[derive(Clone, Debug)]
pub struct Mlp {
    /// `mlp.fc1`: D → M.
    pub fc1: Linear,
    /// `mlp.fc2`: M → D.
    pub fc2: Linear,
    pub gelu: GeluKind,
    /// Dropout after the GELU.
    pub dropout: f32,
}

/// The initial values of an [`Mlp`]: `fc1` weight `[M, D]` and bias `[M]`, `fc2` weight `[D, M]`
/// and bias `[D]`.
#[derive(Clone)]
pub struct MlpInit {
    pub fc1: (Tensor, Tensor),
    pub fc2: (Tensor, Tensor),
}

impl Mlp {
    /// Register `{prefix}.fc1.*` and `{prefix}.fc2.*`.
    pub fn new(store: &mut ParamStore, prefix: &str, init: MlpInit, gelu: GeluKind, dropout: f32) -> Result<Mlp> {
        let MlpInit { fc1, fc2 } = init;
        Ok(Mlp {
            fc1: Linear::new(store, &format!("{prefix}.fc1"), fc1.0, fc1.1)?,
            fc2: Linear::new(store, &format!("{prefix}.fc2"), fc2.0, fc2.1)?,
            gelu,
            dropout,
        })
    }

    /// `[B, T, D] → [B, T, D]`.
    pub fn forward(&self, cx: &mut Ctx, x: Var) -> Result<Var> {
        let h = self.fc1.forward(cx, x)?;
        // drop(gelu(h)), fused: gelu(h) itself is never stored.
        let (p, seed) = cx.drop.next(self.dropout);
        let h = cx.g.gelu_dropout(h, self.gelu, p, seed)?;
        self.fc2.forward(cx, h)
    }
}
