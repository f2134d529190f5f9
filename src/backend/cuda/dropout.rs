//! The launch wrappers of `kernels/dropout.cu`: dropout forward and backward (the forward's mask,
//! recomputed from its seed with the CPU's counter-based hash, bit for bit) and the residual add
//! fused with dropout.

use super::device::{Args, CudaDevice};
use crate::error::{Error, Result};
use cudarc::driver::{DevicePtr, DevicePtrMut};

/// Checks `p` and `n` for a dropout mask and returns `1/(1 − p)`, exactly the CPU's f32 value.
fn dropout_scale(n: usize, p: f32) -> Result<f32> {
    if !(0.0..1.0).contains(&p) {
        return Err(Error::config(format!("dropout probability must be in [0, 1), got {p}")));
    }
    if n > u32::MAX as usize {
        return Err(Error::shape("dropout", &[n], &[], "more than 2^32 elements"));
    }
    Ok(1.0f32 / (1.0 - p))
}

impl Args<'_> {
    /// The mask arguments every dropout kernel ends with (`float p, float scale,
    /// unsigned long long seed`, the mask of `n` elements), after checking `p` and `n`. GELU
    /// fused with dropout (`gelu.rs`) takes the same.
    pub(super) fn mask(self, n: usize, p: f32, seed: u64) -> Self {
        match dropout_scale(n, p) {
            Ok(scale) => self.arg(p).arg(scale).arg(seed),
            Err(e) => self.fail(e),
        }
    }
}

impl CudaDevice {
    /// `y = r + x ⊙ mask(seed) / (1 − p)`: the residual add fused with dropout
    /// (`ops::dropout::add_masked`, bit for bit). Its backward is `dr = G`, `dx = dropout_bwd(G)`.
    #[allow(clippy::too_many_arguments)]
    pub fn dropout_add_fwd(
        &self,
        r: &(impl DevicePtr<f32> + ?Sized),
        x: &(impl DevicePtr<f32> + ?Sized),
        y: &mut (impl DevicePtrMut<f32> + ?Sized),
        n: usize,
        p: f32,
        seed: u64,
    ) -> Result<()> {
        self.args("dropout_add_fwd")
            .input("r", r, n)
            .input("x", x, n)
            .output("y", y, n)
            .size(n)
            .mask(n, p, seed)
            .launch_elementwise("dropout_add_fwd", n)
    }

    /// `y = x ⊙ mask(seed) / (1 − p)`, the same mask as `ops::dropout::apply_mask` bit for bit.
    pub fn dropout_fwd(
        &self,
        x: &(impl DevicePtr<f32> + ?Sized),
        y: &mut (impl DevicePtrMut<f32> + ?Sized),
        n: usize,
        p: f32,
        seed: u64,
    ) -> Result<()> {
        self.dropout("dropout_fwd", x, y, n, p, seed)
    }

    /// `dx = G ⊙ mask(seed) / (1 − p)` (the forward's mask, recomputed).
    pub fn dropout_bwd(
        &self,
        g: &(impl DevicePtr<f32> + ?Sized),
        dx: &mut (impl DevicePtrMut<f32> + ?Sized),
        n: usize,
        p: f32,
        seed: u64,
    ) -> Result<()> {
        self.dropout("dropout_bwd", g, dx, n, p, seed)
    }

    /// `dropout_fwd` or `dropout_bwd` (the same computation on `x` or on `G`).
    fn dropout(
        &self,
        name: &str,
        x: &(impl DevicePtr<f32> + ?Sized),
        y: &mut (impl DevicePtrMut<f32> + ?Sized),
        n: usize,
        p: f32,
        seed: u64,
    ) -> Result<()> {
        self.args(name)
            .input("x", x, n)
            .output("y", y, n)
            .size(n)
            .mask(n, p, seed)
            .launch_elementwise(name, n)
    }
}
