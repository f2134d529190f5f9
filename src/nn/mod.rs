//! The Vision Transformer, built from the ops in `crate::ops` on a `Graph`, as the usual modules
//! (the files follow timm's `vision_transformer.py` and vit-pytorch), each with a short `forward`:
//!
//! ```text
//! image [B, C, H, W]
//!   → PatchEmbed (patch_embed.rs): patchify (P×P patches) [B, N, C·P·P] → linear [B, N, D]
//!   → prepend cls_token [B, 1+N, D] (unless --class-token false) → + pos_embed → dropout (vit.rs)
//!   → depth × Block (block.rs):  x = x + drop(attn(norm1(x)));  x = x + drop(mlp(norm2(x)))
//!        Attention (attention.rs): qkv → softmax(q·kᵀ/√Dh)·v per head → proj
//!        Mlp (mlp.rs): fc1 → GELU → dropout → fc2
//!   → take token 0 (the class token) → norm → head (linear) → logits [B, classes]  (vit.rs)
//!     or, --global-pool avg (the default recipe): the patch tokens' mean → fc_norm → head
//! ```
//! `layers.rs` holds what they are made of (`Linear`, `LayerNorm`) and `Ctx`, the state of one
//! forward pass. Parameter names are timm's (`patch_embed.proj.weight`,
//! `blocks.0.attn.qkv.weight`, ...), so a safetensors checkpoint moves between vitcore and
//! PyTorch unchanged. `summary.rs` lists the layers with their shapes, parameters and FLOPs.

pub mod attention;
pub mod block;
pub mod init;
pub mod layers;
pub mod mlp;
pub mod patch_embed;
pub mod summary;
pub mod vit;

pub use attention::Attention;
pub use block::Block;
pub use init::Init;
pub use layers::{Ctx, LayerNorm, Linear, Mode};
pub use mlp::Mlp;
pub use patch_embed::PatchEmbed;
pub use vit::{GlobalPool, Vit, VitConfig, VitOptions};
