//! What every module of the ViT is made of: a linear layer and a layernorm (each a pair of
//! parameters under a timm name), and [`Ctx`], the state of one forward pass that every module's
//! `forward` takes: the tape, the parameters, the dropout sites and what the pass records.

use crate::autograd::{Graph, ParamId, ParamStore, Var};
use crate::error::Result;
use crate::rng::derive_seed;
use crate::tensor::Tensor;

/// Training (dropout active, masks seeded) or evaluation (dropout off).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Eval,
    Train { seed: u64 },
}

/// Numbers the dropout sites of one forward pass: each site gets its own mask seed, derived
/// from the step's seed, so masks differ between sites and steps but repeat for a given seed.
pub(crate) struct DropoutSites {
    mode: Mode,
    site: u64,
}

impl DropoutSites {
    /// The next site's `(p, seed)`; `p` is 0 outside training.
    pub(crate) fn next(&mut self, p: f32) -> (f32, u64) {
        self.site += 1;
        match self.mode {
            Mode::Train { seed } => (p, derive_seed(seed, self.site)),
            Mode::Eval => (0.0, 0),
        }
    }
}

/// One forward pass: the tape it records on, the parameters it reads, its dropout sites, and
/// (inference only) where the attention layers leave their weights.
pub struct Ctx<'a> {
    pub g: &'a mut Graph,
    pub store: &'a ParamStore,
    pub(crate) drop: DropoutSites,
    /// Use the fused attention op (`ops::attention`) rather than the composed ops.
    pub fused_attention: bool,
    /// When set, every attention layer appends its weights `[B, h, T, T]` here, in block order.
    pub weights: Option<&'a mut Vec<Tensor>>,
}

impl<'a> Ctx<'a> {
    pub fn new(g: &'a mut Graph, store: &'a ParamStore, mode: Mode, fused_attention: bool) -> Ctx<'a> {
        Ctx {
            g,
            store,
            drop: DropoutSites { mode, site: 0 },
            fused_attention,
            weights: None,
        }
    }

    /// A parameter brought onto the tape.
    pub fn param(&mut self, id: ParamId) -> Var {
        self.g.param(self.store, id)
    }

    /// Dropout with probability `p` at the next site (the identity outside training).
    pub fn dropout(&mut self, x: Var, p: f32) -> Result<Var> {
        let (p, seed) = self.drop.next(p);
        self.g.dropout(x, p, seed)
    }
}

/// `y = x·Wᵀ + b`, PyTorch's `nn.Linear`: `weight [out, in]`, `bias [out]`.
#[derive(Clone, Debug)]
pub struct Linear {
    pub weight: ParamId,
    pub bias: ParamId,
}

impl Linear {
    /// Register `{prefix}.weight` and `{prefix}.bias` in `store`.
    pub fn new(store: &mut ParamStore, prefix: &str, weight: Tensor, bias: Tensor) -> Result<Linear> {
        Ok(Linear {
            weight: store.add(format!("{prefix}.weight"), weight)?,
            bias: store.add(format!("{prefix}.bias"), bias)?,
        })
    }

    /// `[..., in] → [..., out]`.
    pub fn forward(&self, cx: &mut Ctx, x: Var) -> Result<Var> {
        let (w, b) = (cx.param(self.weight), cx.param(self.bias));
        cx.g.linear(x, w, Some(b))
    }
}

/// Layer normalisation over the last axis, `nn.LayerNorm`: `weight` (γ, ones) and `bias` (β,
/// zeros), both `[D]`.
#[derive(Clone, Debug)]
pub struct LayerNorm {
    pub weight: ParamId,
    pub bias: ParamId,
    pub eps: f32,
}

impl LayerNorm {
    /// Register `{prefix}.weight` (ones) and `{prefix}.bias` (zeros), `[d]` each.
    pub fn new(store: &mut ParamStore, prefix: &str, d: usize, eps: f32) -> Result<LayerNorm> {
        Ok(LayerNorm {
            weight: store.add(format!("{prefix}.weight"), Tensor::ones(&[d]))?,
            bias: store.add(format!("{prefix}.bias"), Tensor::zeros(&[d]))?,
            eps,
        })
    }

    /// `[..., D] → [..., D]`, each row to mean 0 and variance 1, then scaled and shifted.
    pub fn forward(&self, cx: &mut Ctx, x: Var) -> Result<Var> {
        let (w, b) = (cx.param(self.weight), cx.param(self.bias));
        cx.g.layernorm(x, w, b, self.eps)
    }
}
