//! The launch wrappers of `kernels/cross_entropy.cu`: cross-entropy of logits against labels
//! with label smoothing, one warp per sample, the mean taken by `sum_all`; and its backward.

use super::device::CudaDevice;
use crate::error::{Error, Result};
use cudarc::driver::{DevicePtr, DevicePtrMut};

impl CudaDevice {
    /// Cross-entropy of logits `z: [rows, c]` against `labels` (u32, each `< c`, checked by the
    /// caller as `ops::cross_entropy` does): writes the softmax `p` and the mean loss into `loss[0]`.
    #[allow(clippy::too_many_arguments)]
    pub fn cross_entropy_fwd(
        &self,
        z: &(impl DevicePtr<f32> + ?Sized),
        labels: &(impl DevicePtr<u32> + ?Sized),
        p: &mut (impl DevicePtrMut<f32> + ?Sized),
        loss: &mut (impl DevicePtrMut<f32> + ?Sized),
        rows: usize,
        c: usize,
        smoothing: f32,
    ) -> Result<()> {
        let op = "cross_entropy_fwd";
        check_smoothing(smoothing)?;
        if c == 0 {
            return Err(Error::shape(
                "cross_entropy",
                &[rows, c],
                &[],
                "need at least one class",
            ));
        }
        let args = self
            .args(op)
            .input("z", z, rows * c)
            .input("labels", labels, rows)
            .output("p", p, rows * c)
            .checked()?;
        // The per-sample losses, then their mean.
        let mut row_loss = self.alloc(rows)?;
        let args = args
            .output("row_loss", &mut row_loss, rows)
            .size(rows)
            .int("c", c)
            .arg(smoothing);
        if rows > 0 {
            args.launch("cross_entropy_fwd", self.warp_rows_cfg(rows))?;
        } else {
            args.check()?;
        }
        let scale = if rows > 0 { 1.0 / rows as f64 } else { 0.0 };
        self.sum_all(&row_loss, loss, rows, scale)
    }

    /// `dz = (g / rows)·(p − q)`, `g` (one element on the device) the upstream gradient of the
    /// mean loss.
    #[allow(clippy::too_many_arguments)]
    pub fn cross_entropy_bwd(
        &self,
        g: &(impl DevicePtr<f32> + ?Sized),
        p: &(impl DevicePtr<f32> + ?Sized),
        labels: &(impl DevicePtr<u32> + ?Sized),
        dz: &mut (impl DevicePtrMut<f32> + ?Sized),
        rows: usize,
        c: usize,
        smoothing: f32,
    ) -> Result<()> {
        check_smoothing(smoothing)?;
        // One thread per logit.
        self.args("cross_entropy_bwd")
            .input("p", p, rows * c)
            .input("labels", labels, rows)
            .output("dz", dz, rows * c)
            .size(rows)
            .int("c", c)
            .input("g", g, 1)
            .arg(smoothing)
            .launch_elementwise("cross_entropy_bwd", rows * c)
    }
}

fn check_smoothing(s: f32) -> Result<()> {
    if (0.0..1.0).contains(&s) {
        Ok(())
    } else {
        Err(Error::config(format!("label smoothing must be in [0, 1), got {s}")))
    }
}
