//! The launch wrappers of `kernels/patchify.cu`: images `[B, C, H, W]` to patches
//! `[B, N, C·P·P]` (a gather) and the gradient back (the scatter, written as a gather): one block
//! per band of P image rows, copied through shared memory, where the band fits there; else one
//! thread per output element.

use super::device::{Args, CudaDevice, ELEM_BLOCK};
use crate::error::{Error, Result};
use cudarc::driver::{DevicePtr, DevicePtrMut, LaunchConfig};

/// The most shared memory a band may take (the default per-block limit of every GPU).
const BAND_BYTES_MAX: usize = 48 * 1024;

impl CudaDevice {
    /// `[B, C, H, W] → [B, N, C·P·P]` patches.
    pub fn patchify_fwd(
        &self,
        x: &(impl DevicePtr<f32> + ?Sized),
        y: &mut (impl DevicePtrMut<f32> + ?Sized),
        x_shape: [usize; 4],
        p: usize,
    ) -> Result<()> {
        let n = patch_elements(x_shape, p)?;
        let args = self.args("patchify_fwd").input("x", x, n).output("y", y, n);
        match band_cfg(x_shape, p, n) {
            Some(cfg) => patch_dims(args, x_shape, p).launch("patchify_fwd_band", cfg),
            None => patch_dims(args, x_shape, p).launch_elementwise("patchify_fwd", n),
        }
    }

    /// The scatter back to `[B, C, H, W]`.
    pub fn patchify_bwd(
        &self,
        g: &(impl DevicePtr<f32> + ?Sized),
        dx: &mut (impl DevicePtrMut<f32> + ?Sized),
        x_shape: [usize; 4],
        p: usize,
    ) -> Result<()> {
        let n = patch_elements(x_shape, p)?;
        let args = self.args("patchify_bwd").input("g", g, n).output("dx", dx, n);
        match band_cfg(x_shape, p, n) {
            Some(cfg) => patch_dims(args, x_shape, p).launch("patchify_bwd_band", cfg),
            None => patch_dims(args, x_shape, p).launch_elementwise("patchify_bwd", n),
        }
    }
}

/// The elements of the images (and of the patches), after checking that the patch size divides
/// the image.
fn patch_elements(x_shape: [usize; 4], p: usize) -> Result<usize> {
    let [b, c, h, w] = x_shape;
    if p == 0 || !h.is_multiple_of(p) || !w.is_multiple_of(p) {
        return Err(Error::shape(
            "patchify",
            &x_shape,
            &[p],
            "need [B, C, H, W] with H and W multiples of the patch size",
        ));
    }
    Ok(b * c * h * w)
}

/// One block per band of `P` rows of one channel (`B·C·H/P` blocks), the band in dynamic shared
/// memory; `None` when the band does not fit there (or there is nothing to do).
fn band_cfg([b, c, h, w]: [usize; 4], p: usize, n: usize) -> Option<LaunchConfig> {
    let bytes = p * w * 4;
    let blocks = b * c * (h / p);
    (n > 0 && bytes <= BAND_BYTES_MAX && blocks <= i32::MAX as usize).then(|| LaunchConfig {
        grid_dim: (blocks as u32, 1, 1),
        block_dim: (ELEM_BLOCK, 1, 1),
        shared_mem_bytes: bytes as u32,
    })
}

/// The kernels' trailing `int B, int C, int H, int W, int P`.
fn patch_dims(args: Args, [b, c, h, w]: [usize; 4], p: usize) -> Args {
    args.int("B", b).int("C", c).int("H", h).int("W", w).int("P", p)
}
