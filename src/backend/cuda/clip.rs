//! The launch wrappers of `kernels/clip.cu`: gradient clipping's per-block sums of squares (f64
//! partials, read back once) and its in-place scale and clamp.

use super::device::{CudaDevice, ELEM_BLOCK};
use crate::error::Result;
use cudarc::driver::{DevicePtr, DevicePtrMut, LaunchConfig};

impl CudaDevice {
    /// Blocks [`CudaDevice::sum_squares_partials`] uses for `n` elements.
    pub fn sum_squares_blocks(&self, n: usize) -> usize {
        (self.grid_for(n, ELEM_BLOCK as usize * 8) as usize)
            .min(self.sm_count() as usize * 4)
            .max(1)
    }

    /// `partial[b] = √(Σ x_i²)` (summed in f64, the root rounded to f32) over block `b`'s share
    /// of `x[..n]`, for the [`CudaDevice::sum_squares_blocks`]`(n)` blocks; the sum of their
    /// squares is `Σ x²`.
    pub fn sum_squares_partials(
        &self,
        x: &(impl DevicePtr<f32> + ?Sized),
        partial: &mut (impl DevicePtrMut<f32> + ?Sized),
        n: usize,
    ) -> Result<()> {
        let blocks = self.sum_squares_blocks(n);
        let cfg = LaunchConfig {
            grid_dim: (blocks as u32, 1, 1),
            block_dim: (ELEM_BLOCK, 1, 1),
            shared_mem_bytes: 0,
        };
        self.args("sum_squares")
            .input("x", x, n)
            .output("partial", partial, blocks)
            .size(n)
            .launch("sum_squares_blocks", cfg)
    }

    /// `y[..n] *= s` in place (clipping by norm).
    pub fn scale_inplace(&self, y: &mut (impl DevicePtrMut<f32> + ?Sized), n: usize, s: f32) -> Result<()> {
        self.args("scale_inplace")
            .output("y", y, n)
            .size(n)
            .arg(s)
            .launch_elementwise("scale_inplace", n)
    }

    /// `y[..n] = clamp(y, −c, c)` in place (clipping by value; NaN stays NaN).
    pub fn clamp_inplace(&self, y: &mut (impl DevicePtrMut<f32> + ?Sized), n: usize, c: f32) -> Result<()> {
        self.args("clamp_inplace")
            .output("y", y, n)
            .size(n)
            .arg(c)
            .launch_elementwise("clamp_inplace", n)
    }
}
