//! The launch wrappers of `kernels/softmax.cu`: softmax of each row and its backward, one warp
//! per row for short rows and one block per row for long ones.

use super::device::{Args, CudaDevice};
use crate::error::Result;
use cudarc::driver::{DevicePtr, DevicePtrMut};

/// Rows of at most this many elements use the warp-per-row softmax (see softmax.cu).
pub const SOFTMAX_WARP_MAX: usize = 1024;

/// Which row-reduction kernel a softmax uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RowKernel {
    /// Warp per row up to [`SOFTMAX_WARP_MAX`] elements, block per row above.
    Auto,
    /// One warp per row.
    Warp,
    /// One block per row.
    Block,
}

impl RowKernel {
    /// The kernel for rows of `n` elements: `Auto` decided, the others as they are.
    fn for_rows_of(self, n: usize) -> RowKernel {
        match self {
            RowKernel::Auto if n <= SOFTMAX_WARP_MAX => RowKernel::Warp,
            RowKernel::Auto => RowKernel::Block,
            k => k,
        }
    }
}

impl CudaDevice {
    /// Softmax of each of `rows` rows of length `n`.
    pub fn softmax_fwd(
        &self,
        kind: RowKernel,
        x: &(impl DevicePtr<f32> + ?Sized),
        y: &mut (impl DevicePtrMut<f32> + ?Sized),
        rows: usize,
        n: usize,
    ) -> Result<()> {
        let args = self
            .args("softmax_fwd")
            .input("x", x, rows * n)
            .output("y", y, rows * n)
            .size(rows)
            .int("n", n);
        self.launch_rows(args, ["softmax_fwd_warp", "softmax_fwd_block"], kind, rows, n)
    }

    /// `dx = y ⊙ (G − ⟨G, y⟩)` row by row.
    pub fn softmax_bwd(
        &self,
        kind: RowKernel,
        g: &(impl DevicePtr<f32> + ?Sized),
        y: &(impl DevicePtr<f32> + ?Sized),
        dx: &mut (impl DevicePtrMut<f32> + ?Sized),
        rows: usize,
        n: usize,
    ) -> Result<()> {
        let args = self
            .args("softmax_bwd")
            .input("g", g, rows * n)
            .input("y", y, rows * n)
            .output("dx", dx, rows * n)
            .size(rows)
            .int("n", n);
        self.launch_rows(args, ["softmax_bwd_warp", "softmax_bwd_block"], kind, rows, n)
    }

    /// Launch the warp-per-row or the block-per-row kernel of `[warp, block]` over `rows` rows
    /// of `n` (nothing to launch when empty).
    fn launch_rows(&self, args: Args, [warp, block]: [&str; 2], kind: RowKernel, rows: usize, n: usize) -> Result<()> {
        if rows == 0 || n == 0 {
            return args.check();
        }
        match kind.for_rows_of(n) {
            RowKernel::Block => args.launch(block, self.block_rows_cfg(rows)),
            _ => args.launch(warp, self.warp_rows_cfg(rows)),
        }
    }
}
