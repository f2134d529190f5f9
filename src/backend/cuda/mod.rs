//! The CUDA backend: hand-written kernels (`kernels/*.cu`, embedded by `build.rs`), compiled at
//! run time with NVRTC for the GPU that is present, a device with one stream and a caching
//! allocator, and one typed launch wrapper per kernel. A tensor on the GPU holds a
//! [`CudaBuffer`] (`Storage::Cuda`), and each op's entry point in `src/ops/` calls the wrappers
//! for it.
//!
//! * [`nvrtc`]: compile a kernel file to CUBIN for `sm_XY`, with the ptxas resource report.
//! * [`device`]: [`cuda_available`], [`CudaDevice`] (context, stream, kernels, allocator, the
//!   one checked launch and the launch geometry), [`CudaBuffer`].
//! * One file per kernel file, each an `impl CudaDevice` block of that file's launch wrappers
//!   and the types its kernels take: [`matmul`] (`kernels/matmul.cu`), [`softmax`],
//!   [`layernorm`], [`gelu`], [`patchify`], [`elementwise`], [`cross_entropy`], [`dropout`],
//!   [`adam`], [`clip`].
//! * [`select`]: `--device auto|cpu|cuda` → [`resolve`].
//! * [`sim`]: the cudasim simulator's own entry points (counters, recycled buffers), when it is
//!   the driver.
//!
//! Everything builds and runs without CUDA installed: cudarc loads `libcuda` and `libnvrtc` at
//! run time, and every entry point checks for them first and returns an error instead of
//! panicking. See `docs/cuda.md` for what to install and what has been verified.

pub mod adam;
pub mod clip;
pub mod cross_entropy;
pub mod device;
pub mod dropout;
pub mod elementwise;
pub mod gelu;
pub mod layernorm;
pub mod matmul;
pub mod nvrtc;
pub mod patchify;
pub mod select;
pub mod sim;
pub mod softmax;

pub use adam::AdamCoeffs;
/// The cudarc slice types and traits the launch wrappers take, so callers need not name cudarc.
pub use cudarc::driver::{CudaSlice, CudaView, CudaViewMut, DevicePtr, DevicePtrMut, DeviceSlice};
pub use device::{cuda_available, is_simulator, CudaBuffer, CudaDevice, KernelImage, PoolStats};
pub use elementwise::MAX_RANK;
pub use gelu::GeluKind;
pub use matmul::{MatmulDims, MatmulKernel};
pub use select::{resolve, resolve_and_report, DeviceChoice, Resolved};
pub use softmax::{RowKernel, SOFTMAX_WARP_MAX};
