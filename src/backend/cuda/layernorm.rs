//! The launch wrappers of `kernels/layernorm.cu`: layer norm over the last axis, one warp per
//! row, and its backward, whose `dγ`, `dβ` are column sums in two deterministic passes.

use super::device::CudaDevice;
use crate::error::Result;
use cudarc::driver::{DevicePtr, DevicePtrMut, LaunchConfig};

impl CudaDevice {
    /// Layer norm of `rows` rows of length `d`; writes `y` and the per-row `mean`, `rstd`.
    #[allow(clippy::too_many_arguments)]
    pub fn layernorm_fwd(
        &self,
        x: &(impl DevicePtr<f32> + ?Sized),
        gamma: &(impl DevicePtr<f32> + ?Sized),
        beta: &(impl DevicePtr<f32> + ?Sized),
        y: &mut (impl DevicePtrMut<f32> + ?Sized),
        mean: &mut (impl DevicePtrMut<f32> + ?Sized),
        rstd: &mut (impl DevicePtrMut<f32> + ?Sized),
        rows: usize,
        d: usize,
        eps: f32,
    ) -> Result<()> {
        let args = self
            .args("layernorm_fwd")
            .input("x", x, rows * d)
            .input("gamma", gamma, d)
            .input("beta", beta, d)
            .output("y", y, rows * d)
            .output("mean", mean, rows)
            .output("rstd", rstd, rows)
            .size(rows)
            .int("d", d)
            .arg(eps);
        if rows == 0 || d == 0 {
            return args.check();
        }
        args.launch("layernorm_fwd", self.warp_rows_cfg(rows))
    }

    /// Layer norm backward: `dx`, and `dgamma`, `dbeta` (column sums in two deterministic passes).
    #[allow(clippy::too_many_arguments)]
    pub fn layernorm_bwd(
        &self,
        g: &(impl DevicePtr<f32> + ?Sized),
        x: &(impl DevicePtr<f32> + ?Sized),
        gamma: &(impl DevicePtr<f32> + ?Sized),
        mean: &(impl DevicePtr<f32> + ?Sized),
        rstd: &(impl DevicePtr<f32> + ?Sized),
        dx: &mut (impl DevicePtrMut<f32> + ?Sized),
        dgamma: &mut (impl DevicePtrMut<f32> + ?Sized),
        dbeta: &mut (impl DevicePtrMut<f32> + ?Sized),
        rows: usize,
        d: usize,
    ) -> Result<()> {
        let op = "layernorm_bwd";
        let dx_args = self
            .args(op)
            .input("g", g, rows * d)
            .input("x", x, rows * d)
            .input("gamma", gamma, d)
            .input("mean", mean, rows)
            .input("rstd", rstd, rows)
            .output("dx", dx, rows * d)
            .size(rows)
            .int("d", d)
            .checked()?;
        // Every slice is checked before anything is launched.
        self.args(op)
            .output("dgamma", dgamma, d)
            .output("dbeta", dbeta, d)
            .check()?;
        if d == 0 {
            return Ok(());
        }
        if rows == 0 {
            self.fill(dgamma, d, 0.0)?;
            return self.fill(dbeta, d, 0.0);
        }
        dx_args.launch("layernorm_bwd_dx", self.warp_rows_cfg(rows))?;
        // Pass 1: [chunks, 2d] partial sums (dγ | dβ); enough chunks to give every SM a few blocks.
        let col_blocks = d.div_ceil(32);
        let chunks = (self.sm_count() as usize * 4)
            .div_ceil(col_blocks)
            .clamp(1, rows.div_ceil(8))
            .min(self.max_grid_yz() as usize);
        let rows_per_chunk = rows.div_ceil(chunks);
        let chunks = rows.div_ceil(rows_per_chunk);
        let mut partial = self.alloc(chunks * 2 * d)?;
        let cfg = LaunchConfig {
            grid_dim: (col_blocks as u32, chunks as u32, 1),
            block_dim: (32, 8, 1),
            shared_mem_bytes: 0,
        };
        self.args(op)
            .input("g", g, rows * d)
            .input("x", x, rows * d)
            .input("mean", mean, rows)
            .input("rstd", rstd, rows)
            .output("partial", &mut partial, chunks * 2 * d)
            .size(rows)
            .int("d", d)
            .size(rows_per_chunk)
            .launch("layernorm_bwd_params_partial", cfg)?;
        // Pass 2: sum the chunk rows, then split [dγ | dβ].
        let mut sums = self.alloc(2 * d)?;
        self.sum_rows(&partial, &mut sums, chunks, 2 * d)?;
        self.copy_rows(&sums, dgamma, 1, d, 0, 0, 0, 0)?;
        self.copy_rows(&sums, dbeta, 1, d, 0, d, 0, 0)
    }
}
