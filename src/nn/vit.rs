//! The ViT model: configuration, parameters (timm names) and the forward pass, which strings the
//! modules together ([`PatchEmbed`], [`Block`] = attention + MLP, a final [`LayerNorm`] and the
//! head).
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
//!
//! **Global average pooling** ([`GlobalPool::Avg`], timm's `global_pool='avg'`, and with
//! [`VitOptions::no_class_token`] timm's `class_token=False`, as in Beyer et al., "Better plain
//! ViT baselines for ImageNet-1k", 2022): the head reads the mean of the patch tokens instead,
//! normalised by `fc_norm` (timm's name for the final norm when it follows the pooling):
//!
//! ```text
//! x [B,C,H,W] ─patchify→ [B,N,C·P·P] ─linear→ [B,N,D] ─+pos→ [B,N,D]    (no class token: T = N)
//! head:   logits = head(fc_norm(mean_i x[:, i]))        [B,K]     (the patch tokens' mean)
//! ```
//! The mean is a product with a row of `1/N` (`[B,1,T]·[B,T,D]`, zero for a class token), so
//! its backward is the matmul's: each token receives `G/N`. No token is special: every patch's
//! output feeds the loss directly.
//!
//! [`VitOptions`] names where other ViTs differ: heads of their own width Dk (then q, k, v are
//! `[.., h·Dk]` and `proj` maps h·Dk → D), the position embedding on the patches only, which
//! dropout sites exist, and a softmax after the head.

use super::block::{Block, BlockInit};
use super::init::{Init, Initialiser};
use super::layers::{Ctx, LayerNorm, Linear, Mode};
use super::mlp::MlpInit;
use super::patch_embed::PatchEmbed;
use crate::autograd::{Graph, ParamId, ParamStore, Var};
use crate::error::{Error, Result};
use crate::ops::GeluKind;
use crate::rng::Rng;
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
    /// Tokens with a class token, `N + 1` (a model without one has `N`: [`Vit::tokens`]).
    pub fn tokens(&self) -> usize {
        self.num_patches() + 1
    }
    pub fn head_dim(&self) -> usize {
        self.embed_dim / self.heads
    }

    /// Reject configurations that cannot be built (with timm's options), saying which value
    /// is wrong.
    pub fn validate(&self) -> Result<()> {
        self.validate_with(&VitOptions::default())
    }

    /// [`VitConfig::validate`] for a model built with `opts`.
    pub fn validate_with(&self, opts: &VitOptions) -> Result<()> {
        opts.validate()?;
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
        if opts.key_dim.is_none() && self.embed_dim % self.heads != 0 {
            return Err(Error::config(format!(
                "model: embed_dim {} must be a multiple of heads {} (or give the heads a width of \
                 their own with --key-dim)",
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

/// What the head reads from the last block's tokens (timm's `global_pool`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum GlobalPool {
    /// The class token (timm's `'token'`, the original ViT's).
    #[default]
    Token,
    /// The mean of the patch tokens (timm's `'avg'`), normalised by `fc_norm`.
    Avg,
}

impl GlobalPool {
    fn is_token(&self) -> bool {
        *self == GlobalPool::Token
    }
}

/// Architecture options that differ between ViT implementations; the default is timm's
/// `VisionTransformer`. Kept apart from [`VitConfig`] so every existing configuration (and
/// checkpoint) means what it meant. `--preset flowers` sets all of them to what the Keras
/// flowers write-up's model does (Keras's `MultiHeadAttention` and layers).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct VitOptions {
    /// timm's `no_embed_class`: the position embedding covers the patches only (`[1, N, D]`)
    /// and the class token is prepended after it is added (timm's default: `[1, 1 + N, D]`,
    /// added after the class token is prepended).
    #[serde(default, skip_serializing_if = "is_false")]
    pub no_embed_class: bool,
    /// Each head's q/k/v width `Dk` (Keras's `MultiHeadAttention(key_dim=...)`), so q, k and v
    /// are `h·Dk` wide and `attn.proj` maps `h·Dk → D`; `None`: `D / h` (timm), the heads
    /// splitting the embedding between them. The scores are scaled by `1/√Dk` either way.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_dim: Option<usize>,
    /// Dropout after the embedding (position embedding added, class token prepended); `None`:
    /// the model's `dropout` (timm's `pos_drop` = `drop_rate`). Keras's model has none there.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub embed_dropout: Option<f32>,
    /// Dropout on the attention branch before its residual add; `None`: the model's `dropout`
    /// (timm's `proj_drop`). Keras's `MultiHeadAttention` has none there.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attn_proj_dropout: Option<f32>,
    /// The head ends in a softmax (Keras's `Dense(num_classes, activation="softmax")`):
    /// [`Vit::output`] gives probabilities instead of logits. Training is unchanged: the loss
    /// is the cross-entropy of the logits beneath it, as Keras computes it for a softmax output.
    #[serde(default, skip_serializing_if = "is_false")]
    pub softmax_head: bool,
    /// timm's `global_pool`: the head reads the class token (`Token`, the default) or the mean
    /// of the patch tokens (`Avg`; the final norm is then named `fc_norm`, as in timm).
    #[serde(default, skip_serializing_if = "GlobalPool::is_token")]
    pub global_pool: GlobalPool,
    /// timm's `class_token=False`: no class token, so `T = N` and the position embedding covers
    /// the patches only. Needs `global_pool: Avg` (the head must read something).
    #[serde(default, skip_serializing_if = "is_false")]
    pub no_class_token: bool,
}

fn is_false(v: &bool) -> bool {
    !*v
}

impl VitOptions {
    /// Each head's q/k/v width in a model of `cfg`: `key_dim`, else `D / h`.
    pub fn key_dim_of(&self, cfg: &VitConfig) -> usize {
        self.key_dim.unwrap_or(cfg.embed_dim / cfg.heads)
    }

    /// Reject options that cannot be built, saying which value is wrong.
    pub fn validate(&self) -> Result<()> {
        if self.key_dim == Some(0) {
            return Err(Error::config("model: key_dim must be positive"));
        }
        if self.no_class_token && self.global_pool == GlobalPool::Token {
            return Err(Error::config(
                "model: without a class token the head must read the mean of the patches: \
                 give --global-pool avg, or --class-token true",
            ));
        }
        for (name, p) in [
            ("embed_dropout", self.embed_dropout),
            ("attn_proj_dropout", self.attn_proj_dropout),
        ] {
            if let Some(p) = p.filter(|p| !(0.0..1.0).contains(p)) {
                return Err(Error::config(format!("model: {name} must be in [0, 1), got {p}")));
            }
        }
        Ok(())
    }
}

/// A ViT: its configuration and its modules, whose parameters live in a [`ParamStore`].
#[derive(Clone, Debug)]
pub struct Vit {
    pub cfg: VitConfig,
    pub opts: VitOptions,
    pub patch_embed: PatchEmbed,
    /// `cls_token [1, 1, D]`: a learned token that attends to every patch; with
    /// [`GlobalPool::Token`] the head reads only it. `None` with [`VitOptions::no_class_token`].
    pub cls_token: Option<ParamId>,
    /// `pos_embed [1, T, D]` (`[1, N, D]` without a class position): added to every token, so
    /// the model knows where each patch was.
    pub pos_embed: ParamId,
    pub blocks: Vec<Block>,
    /// The final norm, applied to what the head reads: `norm` (the class token) or `fc_norm`
    /// (the patch tokens' mean).
    pub norm: LayerNorm,
    /// `head`: D → classes.
    pub head: Linear,
    /// Use the fused attention op (default) rather than the composed ops; both compute the same.
    pub fused_attention: bool,
}

fn t(data: Vec<f32>, shape: &[usize]) -> Tensor {
    Tensor::from_vec(data, shape).expect("initialiser produced the declared size")
}

impl Vit {
    /// Create the parameters in `store` (timm names) and return the model.
    pub fn new(cfg: VitConfig, store: &mut ParamStore, seed: u64) -> Result<Vit> {
        Vit::with_options(cfg, VitOptions::default(), store, seed)
    }

    /// [`Vit::new`] with architecture options other than timm's defaults.
    pub fn with_options(cfg: VitConfig, opts: VitOptions, store: &mut ParamStore, seed: u64) -> Result<Vit> {
        cfg.validate_with(&opts)?;
        let (d, m, c, p) = (cfg.embed_dim, cfg.mlp_dim, cfg.channels, cfg.patch);
        let (h, dk) = (cfg.heads, opts.key_dim_of(&cfg));
        let mut ini = Initialiser {
            init: cfg.init,
            rng: Rng::new(seed),
        };
        let (w, b) = (ini.weight(d, c * p * p), ini.bias(d, c * p * p));
        let patch_embed = PatchEmbed::new(store, p, t(w, &[d, c, p, p]), t(b, &[d]))?;
        let positions = match opts.no_embed_class || opts.no_class_token {
            true => cfg.num_patches(),
            false => cfg.tokens(),
        };
        // The class token is drawn either way (and dropped without one), so the random stream
        // stays the same through the position embedding.
        let (cls, pos) = ini.embeddings(d, positions);
        let cls_token = match opts.no_class_token {
            false => Some(store.add("cls_token", t(cls, &[1, 1, d]))?),
            true => None,
        };
        let pos_embed = store.add("pos_embed", t(pos, &[1, positions, d]))?;
        let mut blocks = Vec::with_capacity(cfg.depth);
        let mut first: Option<BlockInit> = None;
        for i in 0..cfg.depth {
            let init = match (&first, cfg.identical_blocks) {
                (Some(v), true) => v.clone(),
                _ => {
                    let qkv = ini.qkv(d, h, dk);
                    let proj = ini.proj(d, h, dk);
                    let (fc1_w, fc1_b) = (ini.weight(m, d), ini.bias(m, d));
                    let (fc2_w, fc2_b) = (ini.weight(d, m), ini.bias(d, m));
                    BlockInit {
                        qkv: t(qkv, &[3 * h * dk, d]),
                        proj: t(proj, &[d, h * dk]),
                        mlp: MlpInit {
                            fc1: (t(fc1_w, &[m, d]), t(fc1_b, &[m])),
                            fc2: (t(fc2_w, &[d, m]), t(fc2_b, &[d])),
                        },
                    }
                }
            };
            first.get_or_insert_with(|| init.clone());
            blocks.push(Block::new(store, &format!("blocks.{i}"), &cfg, &opts, init)?);
        }
        let norm_name = match opts.global_pool {
            GlobalPool::Token => "norm",
            GlobalPool::Avg => "fc_norm",
        };
        let norm = LayerNorm::new(store, norm_name, d, cfg.ln_eps)?;
        let k = cfg.num_classes;
        let (w, b) = (ini.weight(k, d), ini.bias(k, d));
        let head = Linear::new(store, "head", t(w, &[k, d]), t(b, &[k]))?;
        Ok(Vit {
            cfg,
            opts,
            patch_embed,
            cls_token,
            pos_embed,
            blocks,
            norm,
            head,
            fused_attention: true,
        })
    }

    /// Tokens through the blocks: `N + 1` with a class token, `N` without.
    pub fn tokens(&self) -> usize {
        self.cfg.num_patches() + usize::from(self.cls_token.is_some())
    }

    /// Each head's q/k/v width `Dk` (`D / h` unless [`VitOptions::key_dim`] sets it).
    pub fn key_dim(&self) -> usize {
        self.opts.key_dim_of(&self.cfg)
    }

    /// The model's output from its logits `[B, K]`: the logits themselves, or their softmax
    /// with [`VitOptions::softmax_head`] (what the Keras model returns).
    pub fn output(&self, g: &mut Graph, logits: Var) -> Result<Var> {
        match self.opts.softmax_head {
            true => g.softmax(logits),
            false => Ok(logits),
        }
    }

    /// The class probabilities of one row of the model's [`Vit::output`]: its softmax, or the
    /// row as it is when the head already ends in one (never a softmax applied twice).
    pub fn probabilities(&self, output: &[f32]) -> Vec<f32> {
        match self.opts.softmax_head {
            true => output.to_vec(),
            false => crate::ops::softmax::probabilities(output),
        }
    }

    /// The logits `[B, num_classes]` of a batch of images `[B, C, H, W]`.
    pub fn forward(&self, g: &mut Graph, store: &ParamStore, images: Tensor, mode: Mode) -> Result<Var> {
        let mut cx = Ctx::new(g, store, mode, self.fused_attention);
        self.forward_in(&mut cx, images)
    }

    /// Inference (no gradients, no dropout) that also returns every block's attention weights:
    /// `(logits [B, num_classes], [B, heads, T, T] per block)`. Row `i` of a head's `T×T` matrix
    /// is what token `i` (the class token first if the model has one, then the patches in
    /// row-major order) takes from each token; each row sums to 1.
    pub fn forward_with_attention(&self, store: &ParamStore, images: Tensor) -> Result<(Tensor, Vec<Tensor>)> {
        let mut g = Graph::no_grad();
        let mut weights = Vec::with_capacity(self.blocks.len());
        let mut cx = Ctx::new(&mut g, store, Mode::Eval, self.fused_attention);
        cx.weights = Some(&mut weights);
        let logits = self.forward_in(&mut cx, images)?;
        Ok((g.value(logits).clone(), weights))
    }

    fn forward_in(&self, cx: &mut Ctx, images: Tensor) -> Result<Var> {
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
        let (b, d) = (images.shape()[0], cfg.embed_dim);
        let x = cx.g.constant(images);
        let tokens = self.patch_embed.forward(cx, x)?; // [B, N, D]
        let pos = cx.param(self.pos_embed);
        let cls = match self.cls_token {
            Some(cls) => {
                let cls = cx.param(cls);
                Some(cx.g.broadcast_to(cls, &[b, 1, d])?) // [B, 1, D]
            }
            None => None,
        };
        let x = match (cls, self.opts.no_embed_class) {
            (None, _) => cx.g.add_broadcast(tokens, pos)?, // [B, N, D]
            (Some(cls), false) => {
                let x = cx.g.concat(&[cls, tokens], 1)?; // [B, T, D]
                cx.g.add_broadcast(x, pos)?
            }
            (Some(cls), true) => {
                let tokens = cx.g.add_broadcast(tokens, pos)?; // [B, N, D]
                cx.g.concat(&[cls, tokens], 1)?
            }
        };
        let mut x = cx.dropout(x, self.opts.embed_dropout.unwrap_or(cfg.dropout))?;
        for block in &self.blocks {
            x = block.forward(cx, x)?;
        }
        let pooled = match self.opts.global_pool {
            GlobalPool::Token => cx.g.select(x, 1, 0)?, // [B, D]
            GlobalPool::Avg => self.patch_mean(cx, x)?,
        };
        let pooled = self.norm.forward(cx, pooled)?;
        self.head.forward(cx, pooled)
    }

    /// The mean of the patch tokens of `x [B, T, D]`: `[B, 1, T]·[B, T, D] → [B, D]`, with weights
    /// `1/N` on the patches and 0 on a class token (timm: `x[:, num_prefix_tokens:].mean(dim=1)`).
    /// A product with constant weights rather than an op of its own: its forward and backward
    /// are the matmul's, on either device.
    fn patch_mean(&self, cx: &mut Ctx, x: Var) -> Result<Var> {
        let (b, t, d) = (cx.g.value(x).shape()[0], self.tokens(), self.cfg.embed_dim);
        let prefix = usize::from(self.cls_token.is_some());
        let n = (t - prefix) as f32;
        let row: Vec<f32> = (0..t).map(|i| if i < prefix { 0.0 } else { 1.0 / n }).collect();
        let weights = Tensor::from_vec(row.repeat(b), &[b, 1, t])?.to_device(cx.g.value(x).device())?;
        let weights = cx.g.constant(weights);
        let mean = cx.g.matmul(weights, x)?; // [B, 1, D]
        cx.g.reshape(mean, &[b, d])
    }
}
