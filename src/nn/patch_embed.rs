//! Patch embedding (timm's `PatchEmbed`): cut the image into P×P patches and project each to D
//! features. `linear(patchify(x))` with the weight `[D, C, P, P]` read as `[D, C·P·P]` is the
//! stride-P convolution timm uses (`tests/gradcheck_ops.rs` checks that against a convolution).

use super::layers::{Ctx, Linear};
use crate::autograd::{ParamStore, Var};
use crate::error::Result;
use crate::tensor::Tensor;

#[derive(Clone, Debug)]
pub struct PatchEmbed {
    /// Patch side P in pixels.
    pub patch: usize,
    /// `patch_embed.proj`: weight `[D, C, P, P]`, bias `[D]`.
    pub proj: Linear,
}

impl PatchEmbed {
    /// Register `patch_embed.proj.weight` (`[D, C, P, P]`) and `.bias` (`[D]`).
    pub fn new(store: &mut ParamStore, patch: usize, weight: Tensor, bias: Tensor) -> Result<PatchEmbed> {
        Ok(PatchEmbed {
            patch,
            proj: Linear::new(store, "patch_embed.proj", weight, bias)?,
        })
    }

    /// `[B, C, H, W] → [B, N, D]`, N = (H/P)·(W/P) patches in row-major order.
    pub fn forward(&self, cx: &mut Ctx, images: Var) -> Result<Var> {
        let patches = cx.g.patchify(images, self.patch)?; // [B, N, C·P·P]
        let w = cx.param(self.proj.weight);
        let [d, c, p, _] = *cx.g.shape(w) else {
            unreachable!("registered as [D, C, P, P]")
        };
        let w = cx.g.reshape(w, &[d, c * p * p])?;
        let b = cx.param(self.proj.bias);
        cx.g.linear(patches, w, Some(b))
    }
}
