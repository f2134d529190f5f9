//! The Vision Transformer, built from the ops in `crate::ops` on a `Graph`.
//!
//! ```text
//! image [B, C, H, W]
//!   → patchify (P×P patches) [B, N, C·P·P] → linear (patch_embed.proj) [B, N, D]
//!   → prepend cls_token [B, 1+N, D] → + pos_embed → dropout
//!   → depth × pre-norm block:  x = x + drop(attn(norm1(x)));  x = x + drop(mlp(norm2(x)))
//!   → take token 0 (the class token) → norm → head (linear) → logits [B, classes]
//! ```
//! Parameter names are timm's (`patch_embed.proj.weight`, `blocks.0.attn.qkv.weight`, ...), so a
//! safetensors checkpoint moves between vitcore and PyTorch unchanged.

pub mod init;
pub mod vit;

pub use init::Init;
pub use vit::{Mode, Vit, VitConfig};
