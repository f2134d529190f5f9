//! The launch wrappers of `kernels/patchify.cu`: images `[B, C, H, W]` to patches
//! `[B, N, C·P·P]` (a gather) and the gradient back (the scatter, written as a gather), one
//! thread per output element.

use super::device::{Args, CudaDevice};
use crate::error::{Error, Result};
use cudarc::driver::{DevicePtr, DevicePtrMut};

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
        patch_dims(args, x_shape, p).launch_elementwise("patchify_fwd", n)
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
        patch_dims(args, x_shape, p).launch_elementwise("patchify_bwd", n)
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

/// The kernels' trailing `int B, int C, int H, int W, int P`.
fn patch_dims(args: Args, [b, c, h, w]: [usize; 4], p: usize) -> Args {
    args.int("B", b).int("C", c).int("H", h).int("W", w).int("P", p)
}
