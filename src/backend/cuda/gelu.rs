//! The launch wrappers of `kernels/gelu.cu`: GELU and its gradient, one thread per element, in
//! the erf and the tanh form, alone or fused with the dropout after it. [`GeluKind`], which both
//! the CPU op (`ops::gelu`) and these kernels take, lives here with the kernels.

use super::device::{Args, CudaDevice};
use crate::error::Result;
use cudarc::driver::{DevicePtr, DevicePtrMut};

/// Which GELU formula.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum GeluKind {
    /// `x·Φ(x)` with the error function (PyTorch `approximate='none'`).
    Erf,
    /// The tanh approximation (PyTorch `approximate='tanh'`).
    Tanh,
}

impl GeluKind {
    /// The `int kind` gelu.cu takes: 0 = erf, 1 = tanh.
    pub fn code(self) -> i32 {
        match self {
            GeluKind::Erf => 0,
            GeluKind::Tanh => 1,
        }
    }
}

impl CudaDevice {
    /// `y = gelu(x)` over `n` elements.
    pub fn gelu_fwd(
        &self,
        x: &(impl DevicePtr<f32> + ?Sized),
        y: &mut (impl DevicePtrMut<f32> + ?Sized),
        n: usize,
        kind: GeluKind,
    ) -> Result<()> {
        let args = self.args("gelu_fwd").input("x", x, n).output("y", y, n);
        launch_gelu(args, "gelu_fwd", n, kind, None)
    }

    /// `dx = G ⊙ gelu'(x)`.
    pub fn gelu_bwd(
        &self,
        g: &(impl DevicePtr<f32> + ?Sized),
        x: &(impl DevicePtr<f32> + ?Sized),
        dx: &mut (impl DevicePtrMut<f32> + ?Sized),
        n: usize,
        kind: GeluKind,
    ) -> Result<()> {
        let args = self
            .args("gelu_bwd")
            .input("g", g, n)
            .input("x", x, n)
            .output("dx", dx, n);
        launch_gelu(args, "gelu_bwd", n, kind, None)
    }

    /// `y = gelu(x) ⊙ mask(seed) / (1 − p)`: GELU fused with the dropout after it
    /// (`ops::gelu::forward_dropout`).
    pub fn gelu_dropout_fwd(
        &self,
        x: &(impl DevicePtr<f32> + ?Sized),
        y: &mut (impl DevicePtrMut<f32> + ?Sized),
        n: usize,
        kind: GeluKind,
        p: f32,
        seed: u64,
    ) -> Result<()> {
        let args = self.args("gelu_dropout_fwd").input("x", x, n).output("y", y, n);
        launch_gelu(args, "gelu_dropout_fwd", n, kind, Some((p, seed)))
    }

    /// `dx = (G ⊙ mask(seed) / (1 − p)) ⊙ gelu'(x)` (`ops::gelu::backward_dropout`).
    #[allow(clippy::too_many_arguments)]
    pub fn gelu_dropout_bwd(
        &self,
        g: &(impl DevicePtr<f32> + ?Sized),
        x: &(impl DevicePtr<f32> + ?Sized),
        dx: &mut (impl DevicePtrMut<f32> + ?Sized),
        n: usize,
        kind: GeluKind,
        p: f32,
        seed: u64,
    ) -> Result<()> {
        let args = self
            .args("gelu_dropout_bwd")
            .input("g", g, n)
            .input("x", x, n)
            .output("dx", dx, n);
        launch_gelu(args, "gelu_dropout_bwd", n, kind, Some((p, seed)))
    }
}

/// Every gelu.cu kernel takes its slices, then `long long n, int kind`, then (fused with dropout)
/// the mask's `p, scale, seed`.
fn launch_gelu(args: Args, kernel: &str, n: usize, kind: GeluKind, dropout: Option<(f32, u64)>) -> Result<()> {
    let args = args.size(n).arg(kind.code());
    let args = match dropout {
        Some((p, seed)) => args.mask(n, p, seed),
        None => args,
    };
    args.launch_elementwise(kernel, n)
}
