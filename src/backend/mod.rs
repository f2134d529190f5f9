//! Backends: where a tensor's numbers live and which kernels compute on them.
//!
//! The design that lets a GPU backend sit beside the CPU one: a [`Tensor`](crate::Tensor) carries a
//! [`Storage`] that is one variant per device. Each op (in `src/ops/`) has one device-dispatching
//! entry point per kernel (`layernorm::forward`, `layernorm::backward`, ...) that matches on the
//! storage and calls that device's kernel. The autograd gradient rules call only those entry
//! points, never a device's kernel directly, so they are the same whichever backend computed the
//! forward. Adding a device means adding a `Storage` variant and one match arm per kernel, which
//! is how the GPU came in: a `Storage::Cuda` tensor holds a device buffer, and each entry point's
//! `Device::Cuda` arm allocates its outputs from the device's cache and queues the kernels. An
//! op's inputs must all be on one device ([`same_device`]); `Tensor::to_device` moves them.

pub mod cpu;
pub mod cuda;

use std::sync::Arc;

/// Where a tensor lives.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Device {
    #[default]
    Cpu,
    /// The process's GPU ([`cuda::CudaDevice::global`]).
    Cuda,
}

impl std::fmt::Display for Device {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Device::Cpu => write!(f, "cpu"),
            Device::Cuda => write!(f, "cuda"),
        }
    }
}

/// A tensor's numbers, on one device. Cloning shares them (reference counted).
#[derive(Clone, Debug)]
pub enum Storage {
    Cpu(Arc<cpu::CpuBuffer>),
    Cuda(Arc<cuda::CudaBuffer>),
}

impl Storage {
    pub fn device(&self) -> Device {
        match self {
            Storage::Cpu(_) => Device::Cpu,
            Storage::Cuda(_) => Device::Cuda,
        }
    }
}

/// The device every one of an op's tensors is on; an error naming the op when they differ (a
/// kernel reads all its inputs from one memory, so mixing devices is a caller's mistake).
pub fn same_device(op: &'static str, tensors: &[&crate::Tensor]) -> crate::Result<Device> {
    let first = tensors.first().map_or(Device::Cpu, |t| t.device());
    if let Some(other) = tensors.iter().find(|t| t.device() != first) {
        return Err(crate::Error::Device(format!(
            "{op}: inputs on different devices ({first} and {}); move them with Tensor::to_device",
            other.device()
        )));
    }
    Ok(first)
}
