//! The ViT model: configuration, parameters (timm names) and the forward pass.
//!
//! Shapes through the forward, with B images, N = (H/P)(W/P) patches, T = N + 1 tokens,
//! D = embed_dim, h heads of Dh = D/h features, M = mlp_dim, K classes:
//!
//! ```text
//! x [B,C,H,W] ─patchify→ [B,N,C·P·P] ─linear→ [B,N,D] ─cat cls→ [B,T,D] ─+pos→ [B,T,D]
//! block:  n = norm1(x)                                   [B,T,D]
//!         qkv = linear(n)                                [B,T,3D] → [B,T,3,h,Dh] → [3,B,h,T,Dh]
//!         q, k, v = qkv[0], qkv[1], qkv[2]               [B·h,T,Dh] each
//!         a = softmax(q·kᵀ / √Dh)                        [B·h,T,T]   (each query's weights)
//!         o = a·v                                        [B·h,T,Dh] → [B,T,h,Dh] → [B,T,D]
//!         x = x + drop(proj(o))
//!         x = x + drop(fc2(drop(gelu(fc1(norm2(x))))))   fc1: D→M, fc2: M→D
//! head:   logits = head(norm(x[:, 0]))                   [B,K]
//! ```
//! Applying the final norm to the class token alone equals timm's norm-all-then-select (layernorm
//! works per token) and skips N tokens of work.

use crate::autograd::{Graph, ParamId, ParamStore, Var};
use crate::error::{Error, Result};
use crate::nn::init::{self, Init};
use crate::ops::GeluKind;
use crate::rng::{derive_seed, Rng};
use crate::tensor::Tensor;
use serde::{Deserialize, Serialize};

/// Everything that defines the architecture.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct VitConfig {
    pub image_height: usize,
    pub image_width: usize,
    pub channels: usize,
    pub patch: usize,
    pub embed_dim: usize,
    pub depth: usize,
    pub heads: usize,
    pub mlp_dim: usize,
    pub num_classes: usize,
    /// Dropout after the embedding, after attention's projection, inside and after the MLP.
    pub dropout: f32,
    /// Dropout on the attention weights.
    pub attn_dropout: f32,
    pub ln_eps: f32,
    pub gelu: GeluKind,
    pub init: Init,
    /// Start every block from the same weights (what PyTorch's `nn.TransformerEncoder` does).
    pub identical_blocks: bool,
}

impl VitConfig {
    pub fn num_patches(&self) -> usize {
        (self.image_height / self.patch) * (self.image_width / self.patch)
    }
    pub fn tokens(&self) -> usize {
        self.num_patches() + 1
    }
    pub fn head_dim(&self) -> usize {
        self.embed_dim / self.heads
    }

    /// Reject configurations that cannot be built, saying which value is wrong.
    pub fn validate(&self) -> Result<()> {
        let positive = [
            ("image height", self.image_height),
            ("image width", self.image_width),
            ("channels", self.channels),
            ("patch", self.patch),
            ("embed_dim", self.embed_dim),
            ("depth", self.depth),
            ("heads", self.heads),
            ("mlp_dim", self.mlp_dim),
            ("num_classes", self.num_classes),
        ];
        if let Some((name, _)) = positive.iter().find(|(_, v)| *v == 0) {
            return Err(Error::config(format!("model: {name} must be positive")));
        }
        if self.image_height % self.patch != 0 || self.image_width % self.patch != 0 {
            return Err(Error::config(format!(
                "model: patch size {} must divide the image size {}x{}",
                self.patch, self.image_height, self.image_width
            )));
        }
        if self.embed_dim % self.heads != 0 {
            return Err(Error::config(format!(
                "model: embed_dim {} must be a multiple of heads {}",
                self.embed_dim, self.heads
            )));
        }
        for (name, p) in [("dropout", self.dropout), ("attn_dropout", self.attn_dropout)] {
            if !(0.0..1.0).contains(&p) {
                return Err(Error::config(format!("model: {name} must be in [0, 1), got {p}")));
            }
        }
        Ok(())
    }
}

/// Training (dropout active, masks seeded) or evaluation (dropout off).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Eval,
    Train { seed: u64 },
}

/// Numbers the dropout sites of one forward pass: each site gets its own mask seed, derived
/// from the step's seed, so masks differ between sites and steps but repeat for a given seed.
struct DropoutSites {
    mode: Mode,
    site: u64,
}

impl DropoutSites {
    /// The next site's `(p, seed)`; `p` is 0 outside training.
    fn next(&mut self, p: f32) -> (f32, u64) {
        self.site += 1;
        match self.mode {
            Mode::Train { seed } => (p, derive_seed(seed, self.site)),
            Mode::Eval => (0.0, 0),
        }
    }

    fn apply(&mut self, g: &mut Graph, x: Var, p: f32) -> Result<Var> {
        let (p, seed) = self.next(p);
        g.dropout(x, p, seed)
    }
}

/// The parameter handles of one encoder block.
#[derive(Clone, Debug)]
struct BlockParams {
    norm1: (ParamId, ParamId),
    qkv: (ParamId, ParamId),
    proj: (ParamId, ParamId),
    norm2: (ParamId, ParamId),
    fc1: (ParamId, ParamId),
    fc2: (ParamId, ParamId),
}

/// A ViT: its configuration and the handles of its parameters in a [`ParamStore`].
#[derive(Clone, Debug)]
pub struct Vit {
    pub cfg: VitConfig,
    patch_w: ParamId,
    patch_b: ParamId,
    cls_token: ParamId,
    pos_embed: ParamId,
    blocks: Vec<BlockParams>,
    norm: (ParamId, ParamId),
    head: (ParamId, ParamId),
    /// Use the fused attention op (default) rather than the composed ops; both compute the same.
    pub fused_attention: bool,
}

/// Where the values of the initial parameters come from.
struct Initialiser {
    init: Init,
    rng: Rng,
}

impl Initialiser {
    fn weight(&mut self, out: usize, fan_in: usize) -> Vec<f32> {
        match self.init {
            Init::Torch => init::torch_default(&mut self.rng, out * fan_in, fan_in),
            Init::Timm => init::trunc_normal(&mut self.rng, out * fan_in, 0.02),
        }
    }
    fn bias(&mut self, out: usize, fan_in: usize) -> Vec<f32> {
        match self.init {
            Init::Torch => init::torch_default(&mut self.rng, out, fan_in),
            Init::Timm => vec![0.0; out],
        }
    }
}

fn t(data: Vec<f32>, shape: &[usize]) -> Tensor {
    Tensor::from_vec(data, shape).expect("initialiser produced the declared size")
}

impl Vit {
    /// Create the parameters in `store` (timm names) and return the model.
    pub fn new(cfg: VitConfig, store: &mut ParamStore, seed: u64) -> Result<Vit> {
        cfg.validate()?;
        let (d, m, c, p) = (cfg.embed_dim, cfg.mlp_dim, cfg.channels, cfg.patch);
        let mut ini = Initialiser {
            init: cfg.init,
            rng: Rng::new(seed),
        };
        let patch_w = store.add("patch_embed.proj.weight", t(ini.weight(d, c * p * p), &[d, c, p, p]))?;
        let patch_b = store.add("patch_embed.proj.bias", t(ini.bias(d, c * p * p), &[d]))?;
        let (cls, pos) = match cfg.init {
            Init::Torch => (ini.rng.normal_vec(d, 1.0), ini.rng.normal_vec(cfg.tokens() * d, 1.0)),
            Init::Timm => (
                init::trunc_normal(&mut ini.rng, d, 1e-6),
                init::trunc_normal(&mut ini.rng, cfg.tokens() * d, 0.02),
            ),
        };
        let cls_token = store.add("cls_token", t(cls, &[1, 1, d]))?;
        let pos_embed = store.add("pos_embed", t(pos, &[1, cfg.tokens(), d]))?;
        let mut blocks = Vec::with_capacity(cfg.depth);
        let mut first: Option<Vec<Tensor>> = None;
        for i in 0..cfg.depth {
            // The 12 tensors of a block, in the order of BlockParams.
            let mut fresh = || -> Vec<Tensor> {
                let qkv_w = match cfg.init {
                    Init::Torch => init::xavier_uniform(&mut ini.rng, d, 3 * d),
                    Init::Timm => init::trunc_normal(&mut ini.rng, 3 * d * d, 0.02),
                };
                let proj_w = ini.weight(d, d);
                let fc1_w = ini.weight(m, d);
                let fc1_b = ini.bias(m, d);
                let fc2_w = ini.weight(d, m);
                let fc2_b = ini.bias(d, m);
                vec![
                    Tensor::ones(&[d]),
                    Tensor::zeros(&[d]),
                    t(qkv_w, &[3 * d, d]),
                    Tensor::zeros(&[3 * d]),
                    t(proj_w, &[d, d]),
                    Tensor::zeros(&[d]),
                    Tensor::ones(&[d]),
                    Tensor::zeros(&[d]),
                    t(fc1_w, &[m, d]),
                    t(fc1_b, &[m]),
                    t(fc2_w, &[d, m]),
                    t(fc2_b, &[d]),
                ]
            };
            let values = match (&first, cfg.identical_blocks) {
                (Some(v), true) => v.clone(),
                _ => fresh(),
            };
            if first.is_none() {
                first = Some(values.clone());
            }
            let names = [
                "norm1.weight",
                "norm1.bias",
                "attn.qkv.weight",
                "attn.qkv.bias",
                "attn.proj.weight",
                "attn.proj.bias",
                "norm2.weight",
                "norm2.bias",
                "mlp.fc1.weight",
                "mlp.fc1.bias",
                "mlp.fc2.weight",
                "mlp.fc2.bias",
            ];
            let mut ids = Vec::with_capacity(12);
            for (name, v) in names.iter().zip(values) {
                ids.push(store.add(format!("blocks.{i}.{name}"), v)?);
            }
            blocks.push(BlockParams {
                norm1: (ids[0], ids[1]),
                qkv: (ids[2], ids[3]),
                proj: (ids[4], ids[5]),
                norm2: (ids[6], ids[7]),
                fc1: (ids[8], ids[9]),
                fc2: (ids[10], ids[11]),
            });
        }
        let norm = (
            store.add("norm.weight", Tensor::ones(&[d]))?,
            store.add("norm.bias", Tensor::zeros(&[d]))?,
        );
        let k = cfg.num_classes;
        let head_w = ini.weight(k, d);
        let head_b = ini.bias(k, d);
        let head = (
            store.add("head.weight", t(head_w, &[k, d]))?,
            store.add("head.bias", t(head_b, &[k]))?,
        );
        Ok(Vit {
            cfg,
            patch_w,
            patch_b,
            cls_token,
            pos_embed,
            blocks,
            norm,
            head,
            fused_attention: true,
        })
    }

    /// The logits `[B, num_classes]` of a batch of images `[B, C, H, W]`.
    pub fn forward(&self, g: &mut Graph, store: &ParamStore, images: Tensor, mode: Mode) -> Result<Var> {
        self.forward_inner(g, store, images, mode, None)
    }

    /// Like [`Vit::forward`], also returning each block's attention weights `[B, heads, T, T]`
    /// (what each token, the class token first, looks at).
    pub fn forward_with_attention(
        &self,
        g: &mut Graph,
        store: &ParamStore,
        images: Tensor,
    ) -> Result<(Var, Vec<Tensor>)> {
        let mut maps = Vec::new();
        let logits = self.forward_inner(g, store, images, Mode::Eval, Some(&mut maps))?;
        Ok((logits, maps))
    }

    fn forward_inner(
        &self,
        g: &mut Graph,
        store: &ParamStore,
        images: Tensor,
        mode: Mode,
        mut maps: Option<&mut Vec<Tensor>>,
    ) -> Result<Var> {
        let cfg = &self.cfg;
        let expect = [cfg.channels, cfg.image_height, cfg.image_width];
        if images.rank() != 4 || images.shape()[1..] != expect {
            return Err(Error::shape(
                "vit",
                images.shape(),
                &expect,
                "images must be [B, C, H, W] of the model's size",
            ));
        }
        let b = images.shape()[0];
        let (d, tk) = (cfg.embed_dim, cfg.tokens());
        let mut sites = DropoutSites { mode, site: 0 };
        let drop = &mut sites;
        let x = g.constant(images);
        let patches = g.patchify(x, cfg.patch)?;
        let w = g.param(store, self.patch_w);
        let w = g.reshape(w, &[d, cfg.channels * cfg.patch * cfg.patch])?;
        let bias = g.param(store, self.patch_b);
        let tokens = g.linear(patches, w, Some(bias))?;
        let cls = g.param(store, self.cls_token);
        let cls = g.broadcast_to(cls, &[b, 1, d])?;
        let x = g.concat(&[cls, tokens], 1)?;
        let pos = g.param(store, self.pos_embed);
        let x = g.add_broadcast(x, pos)?;
        let mut x = drop.apply(g, x, cfg.dropout)?;

        for blk in &self.blocks {
            let n = self.norm(g, store, x, blk.norm1)?;
            let a = match maps.as_deref_mut() {
                Some(maps) => {
                    let (a, probs) = self.attention_composed(g, store, n, blk, drop, b)?;
                    maps.push(g.value(probs).reshape(&[b, cfg.heads, tk, tk])?);
                    a
                }
                None if self.fused_attention => self.attention_fused(g, store, n, blk, drop)?,
                None => self.attention_composed(g, store, n, blk, drop, b)?.0,
            };
            // x + drop(a), fused: one pass over the residual stream instead of two.
            let (p, seed) = drop.next(cfg.dropout);
            x = g.dropout_add(x, a, p, seed)?;
            let n = self.norm(g, store, x, blk.norm2)?;
            let h = self.linear(g, store, n, blk.fc1)?;
            // drop(gelu(h)), fused: gelu(h) itself is never stored.
            let (p, seed) = drop.next(cfg.dropout);
            let h = g.gelu_dropout(h, cfg.gelu, p, seed)?;
            let h = self.linear(g, store, h, blk.fc2)?;
            let (p, seed) = drop.next(cfg.dropout);
            x = g.dropout_add(x, h, p, seed)?;
        }
        let cls_out = g.select(x, 1, 0)?;
        let cls_out = self.norm(g, store, cls_out, self.norm)?;
        self.linear(g, store, cls_out, self.head)
    }

    fn norm(&self, g: &mut Graph, store: &ParamStore, x: Var, (w, b): (ParamId, ParamId)) -> Result<Var> {
        let (w, b) = (g.param(store, w), g.param(store, b));
        g.layernorm(x, w, b, self.cfg.ln_eps)
    }

    fn linear(&self, g: &mut Graph, store: &ParamStore, x: Var, (w, b): (ParamId, ParamId)) -> Result<Var> {
        let (w, b) = (g.param(store, w), g.param(store, b));
        g.linear(x, w, Some(b))
    }

    /// Multi-head self-attention through the fused op (`ops::attention`): same result as
    /// [`Vit::attention_composed`], one pass per head.
    fn attention_fused(
        &self,
        g: &mut Graph,
        store: &ParamStore,
        x: Var,
        blk: &BlockParams,
        drop: &mut DropoutSites,
    ) -> Result<Var> {
        let qkv = self.linear(g, store, x, blk.qkv)?;
        let (p, seed) = drop.next(self.cfg.attn_dropout);
        let o = g.attention(qkv, self.cfg.heads, p, seed)?;
        self.linear(g, store, o, blk.proj)
    }

    /// Multi-head self-attention written op by op (the teaching version, and the one that
    /// exposes the attention weights); returns the projected output and the weights.
    fn attention_composed(
        &self,
        g: &mut Graph,
        store: &ParamStore,
        x: Var,
        blk: &BlockParams,
        drop: &mut DropoutSites,
        b: usize,
    ) -> Result<(Var, Var)> {
        let cfg = &self.cfg;
        let (tk, d, h, dh) = (cfg.tokens(), cfg.embed_dim, cfg.heads, cfg.head_dim());
        let qkv = self.linear(g, store, x, blk.qkv)?;
        // [B,T,3D] → [B,T,3,h,Dh] → [3,B,h,T,Dh]: q, k, v each split into heads.
        let qkv = g.reshape(qkv, &[b, tk, 3, h, dh])?;
        let qkv = g.permute(qkv, &[2, 0, 3, 1, 4])?;
        let mut qkv_parts = [qkv; 3];
        for (i, part) in qkv_parts.iter_mut().enumerate() {
            let s = g.select(qkv, 0, i)?;
            *part = g.reshape(s, &[b * h, tk, dh])?;
        }
        let [q, k, v] = qkv_parts;
        let scores = g.matmul_t(q, k, false, true)?; // [B·h, T, T]
        let scores = g.scale(scores, 1.0 / (dh as f32).sqrt())?;
        let probs = g.softmax(scores)?;
        let probs_dropped = drop.apply(g, probs, cfg.attn_dropout)?;
        let o = g.matmul(probs_dropped, v)?; // [B·h, T, Dh]
        let o = g.reshape(o, &[b, h, tk, dh])?;
        let o = g.permute(o, &[0, 2, 1, 3])?;
        let o = g.reshape(o, &[b, tk, d])?;
        Ok((self.linear(g, store, o, blk.proj)?, probs))
    }
}
