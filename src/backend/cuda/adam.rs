//! The launch wrapper of `kernels/adam.cu`: one fused Adam/AdamW step, and [`AdamCoeffs`], the
//! per-step scalars it takes. The CPU optimiser (`optim::Adam`) computes them
//! (`AdamCoeffs::new`) and takes the very same step with them, so both backends agree bit for bit.

use super::device::CudaDevice;
use crate::error::Result;
use cudarc::driver::{DevicePtr, DevicePtrMut};

/// The per-step scalars of the fused update, computed once per parameter and step in f64 and
/// rounded to f32 once, so that every backend (the CPU loop in `optim::adam`, the CUDA
/// `adam_step` kernel) takes exactly the same step.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AdamCoeffs {
    /// `λ` for L2 decay (0 when off).
    pub l2: f32,
    /// `1 − lr·λ` for decoupled decay (1 when off).
    pub decay_mul: f32,
    pub one_minus_b1: f32,
    pub b2: f32,
    pub one_minus_b2: f32,
    pub bc2_sqrt: f32,
    pub eps: f32,
    pub step_size: f32,
}

impl CudaDevice {
    /// One fused Adam/AdamW step over `n` elements of `(p, g, m, v)`.
    pub fn adam_step(
        &self,
        p: &mut (impl DevicePtrMut<f32> + ?Sized),
        g: &(impl DevicePtr<f32> + ?Sized),
        m: &mut (impl DevicePtrMut<f32> + ?Sized),
        v: &mut (impl DevicePtrMut<f32> + ?Sized),
        n: usize,
        k: &AdamCoeffs,
    ) -> Result<()> {
        self.args("adam_step")
            .output("p", p, n)
            .input("g", g, n)
            .output("m", m, n)
            .output("v", v, n)
            .size(n)
            .arg(k.l2)
            .arg(k.decay_mul)
            .arg(k.one_minus_b1)
            .arg(k.b2)
            .arg(k.one_minus_b2)
            .arg(k.bc2_sqrt)
            .arg(k.eps)
            .arg(k.step_size)
            .launch_elementwise("adam_step", n)
    }
}
