//! Parameter initialisation.
//!
//! Two schemes, both documented here because initialisation decides whether a ViT trains at all:
//!
//! - [`Init::Torch`] reproduces what the original PyTorch MNIST script got from PyTorch's defaults:
//!   `nn.Linear` and `nn.Conv2d` weights and biases drawn from `U(−1/√fan_in, 1/√fan_in)`
//!   (kaiming-uniform with a = √5), `nn.MultiheadAttention`'s packed `in_proj_weight`
//!   (`attn.qkv.weight`) Xavier-uniform `U(±√(6/(fan_in+fan_out)))` with zero bias and a zero
//!   `out_proj` (`attn.proj`) bias, layernorms γ = 1, β = 0, and the class token and position
//!   embedding from `N(0, 1)` (`torch.randn`). `nn.TransformerEncoder` deep-copies one layer, so all
//!   blocks *start identical*; [`crate::nn::VitConfig::identical_blocks`] reproduces that.
//! - [`Init::Timm`] follows timm's ViT: weights of linear layers (and the patch projection) from a
//!   normal with std 0.02 truncated at ±2σ, zero biases, position embedding std 0.02, class token
//!   std 1e-6, layernorms 1 and 0. Small weights keep the residual stream dominated by the
//!   embeddings early in training, which trains faster and more stably from scratch.
//! - [`Init::Keras`] is what the Keras flowers write-up's layers start from: every `Dense` and
//!   attention kernel Glorot-uniform `U(±√(6/(fan_in+fan_out)))` with zero biases (Keras's
//!   defaults), the position `Embedding` `U(±0.05)`, the class token `N(0, 0.05²)`
//!   (`tf.random_normal_initializer()`), layernorms 1 and 0. Keras's `MultiHeadAttention` keeps
//!   its kernels 3-D — q, k, v `[D, heads, key_dim]`, output `[heads, key_dim, D]` — and Keras
//!   computes the fans of a kernel of more than two axes as `shape[-2]·r` and `shape[-1]·r`
//!   with `r` the product of the leading axes (`keras.initializers.GlorotUniform`,
//!   `_compute_fans`): `(heads·D, key_dim·D)` for q, k, v and `(key_dim·heads, D·heads)` for the
//!   output, not the fans of the 2-D matrices vitcore stores them as.

use crate::rng::Rng;

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Init {
    Torch,
    Timm,
    Keras,
}

/// `n` draws from `N(0, std²)` truncated to ±2 std (resampled, as `trunc_normal_`).
pub fn trunc_normal(rng: &mut Rng, n: usize, std: f32) -> Vec<f32> {
    (0..n)
        .map(|_| loop {
            let z = rng.normal();
            if z.abs() <= 2.0 {
                break z * std;
            }
        })
        .collect()
}

/// `U(−1/√fan_in, 1/√fan_in)`: PyTorch's default for Linear/Conv weights and biases.
pub fn torch_default(rng: &mut Rng, n: usize, fan_in: usize) -> Vec<f32> {
    rng.uniform_vec(n, 1.0 / (fan_in as f32).sqrt())
}

/// Xavier/Glorot uniform `U(±√(6/(fan_in+fan_out)))`.
pub fn xavier_uniform(rng: &mut Rng, fan_in: usize, fan_out: usize) -> Vec<f32> {
    rng.uniform_vec(fan_in * fan_out, glorot_bound(fan_in, fan_out))
}

fn glorot_bound(fan_in: usize, fan_out: usize) -> f32 {
    (6.0 / (fan_in + fan_out) as f32).sqrt()
}

/// Where the values of a new model's parameters come from: the scheme and its generator. The
/// draws happen in a fixed order (patch projection, class token, position embedding, each block,
/// head), so a seed gives the same model every time.
pub(crate) struct Initialiser {
    pub init: Init,
    pub rng: Rng,
}

impl Initialiser {
    /// A linear layer's weight `[out, fan_in]`.
    pub fn weight(&mut self, out: usize, fan_in: usize) -> Vec<f32> {
        match self.init {
            Init::Torch => torch_default(&mut self.rng, out * fan_in, fan_in),
            Init::Timm => trunc_normal(&mut self.rng, out * fan_in, 0.02),
            Init::Keras => xavier_uniform(&mut self.rng, fan_in, out),
        }
    }

    /// A linear layer's bias `[out]`.
    pub fn bias(&mut self, out: usize, fan_in: usize) -> Vec<f32> {
        match self.init {
            Init::Torch => torch_default(&mut self.rng, out, fan_in),
            Init::Timm | Init::Keras => vec![0.0; out],
        }
    }

    /// The class token `[D]` and position embedding `[T·D]`.
    pub fn embeddings(&mut self, d: usize, tokens: usize) -> (Vec<f32>, Vec<f32>) {
        match self.init {
            Init::Torch => (self.rng.normal_vec(d, 1.0), self.rng.normal_vec(tokens * d, 1.0)),
            Init::Timm => (
                trunc_normal(&mut self.rng, d, 1e-6),
                trunc_normal(&mut self.rng, tokens * d, 0.02),
            ),
            Init::Keras => (self.rng.normal_vec(d, 0.05), self.rng.uniform_vec(tokens * d, 0.05)),
        }
    }

    /// The packed q, k, v projection's weight `[3·h·Dk, D]` for `h` heads of key width `Dk`
    /// (`h·Dk = D` in timm's ViT; PyTorch's `in_proj_weight` is Xavier).
    pub fn qkv(&mut self, d: usize, heads: usize, key_dim: usize) -> Vec<f32> {
        let inner = heads * key_dim;
        match self.init {
            Init::Torch => xavier_uniform(&mut self.rng, d, 3 * inner),
            Init::Timm => trunc_normal(&mut self.rng, 3 * inner * d, 0.02),
            // Keras's three kernels [D, h, Dk] share one bound; see the module documentation.
            Init::Keras => self
                .rng
                .uniform_vec(3 * inner * d, glorot_bound(heads * d, key_dim * d)),
        }
    }

    /// The attention output projection's weight `[D, h·Dk]`.
    pub fn proj(&mut self, d: usize, heads: usize, key_dim: usize) -> Vec<f32> {
        let inner = heads * key_dim;
        match self.init {
            Init::Keras => self
                .rng
                .uniform_vec(d * inner, glorot_bound(key_dim * heads, d * heads)),
            _ => self.weight(d, inner),
        }
    }
}
