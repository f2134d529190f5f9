//! The CUDA device: context, one stream, the kernels (compiled once per process for this GPU and
//! loaded as CUBIN), a caching allocator, and one typed launch wrapper per kernel.
//!
//! # Streams and safety
//! Everything runs on one stream, so work is ordered by submission: a buffer freed by the host
//! and handed out again can only be written by work queued after every earlier use of it. That
//! is why cudarc's per-buffer event tracking (for multi-stream use) is switched off, and why the
//! allocator may recycle a buffer the moment its [`CudaBuffer`] is dropped, without waiting for
//! the GPU. Downloads synchronise the stream.
//!
//! # Launch wrappers
//! Each wrapper takes device slices (a [`CudaBuffer`], a cudarc `CudaSlice`, or a view of either)
//! and sizes, checks that every slice is long enough for those sizes (a short slice would be an
//! out-of-bounds GPU write, so it is an `Error`, never a launch), picks the launch geometry the
//! kernel file documents, and queues the kernel. Nothing waits for the GPU except downloads.
//!
//! # Not verified on a GPU
//! This file was written and compiled on a machine without a GPU; `tests/cuda_vs_cpu.rs` checks
//! every wrapper against the CPU ops and skips there. See `docs/cuda.md`.

use super::nvrtc;
use crate::error::{Error, Result};
use crate::ops::GeluKind;
use cudarc::driver::{
    sys, CudaContext, CudaFunction, CudaModule, CudaSlice, CudaStream, CudaView, CudaViewMut, DevicePtr, DevicePtrMut,
    DeviceRepr, DeviceSlice, DriverError, LaunchConfig, PushKernelArg,
};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

// ---------------------------------------------------------------------------------------------
// Availability
// ---------------------------------------------------------------------------------------------

/// Whether a CUDA GPU can be used: the driver library loads, NVRTC loads and compiles, and the
/// driver reports at least one device. Never panics (cudarc panics when it cannot dlopen a
/// library, so the libraries are probed first); the error is one line saying what is missing.
pub fn cuda_available() -> std::result::Result<(), String> {
    let probe = std::panic::catch_unwind(|| {
        if !unsafe { sys::is_culib_present() } {
            return Err(
                "the CUDA driver library (libcuda.so) could not be loaded: no NVIDIA driver is installed".to_string(),
            );
        }
        nvrtc::nvrtc_available()?;
        match CudaContext::device_count() {
            Ok(n) if n > 0 => Ok(()),
            Ok(_) => Err("the NVIDIA driver reports no CUDA device".to_string()),
            Err(e) => Err(format!("the NVIDIA driver reports no usable CUDA device ({e})")),
        }
    });
    probe.unwrap_or_else(|_| Err("probing CUDA panicked (an incompatible driver or NVRTC library?)".to_string()))
}

fn driver_err(what: &str) -> impl Fn(DriverError) -> Error + '_ {
    move |e| Error::Device(format!("{what}: {e}"))
}

// ---------------------------------------------------------------------------------------------
// Caching allocator
// ---------------------------------------------------------------------------------------------

/// Allocator counters (see [`CudaDevice::pool_stats`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PoolStats {
    /// Device allocations made (cache misses). Constant in a training loop's steady state.
    pub device_allocs: u64,
    /// Requests served from the cache.
    pub reuses: u64,
    /// Bytes held in the cache, free for reuse.
    pub cached_bytes: u64,
}

/// Free device buffers by size class. Buffers come back here when their [`CudaBuffer`] drops.
struct Pool {
    free: Mutex<HashMap<usize, Vec<CudaSlice<f32>>>>,
    device_allocs: AtomicU64,
    reuses: AtomicU64,
    /// Allocate exactly the requested size (no size classes): under the cudasim simulator, so
    /// that its memcheck sees a buffer's true end (a rounded-up buffer would hide an overrun).
    exact: bool,
}

/// The capacity (elements) actually allocated for a request of `len`: rounded up so that
/// slightly different sizes share buffers, wasting at most 1/8 for large ones.
fn size_class(len: usize) -> usize {
    if len <= 4096 {
        len.max(1).next_multiple_of(256)
    } else {
        let step = len.next_power_of_two() / 16; // len > p/2, so the waste < p/16 < len/8
        len.next_multiple_of(step)
    }
}

impl Pool {
    /// The capacity to allocate for a request of `len` elements.
    fn class_of(&self, len: usize) -> usize {
        if self.exact {
            len.max(1)
        } else {
            size_class(len)
        }
    }
    fn take(&self, class: usize) -> Option<CudaSlice<f32>> {
        let s = self.free.lock().unwrap().get_mut(&class)?.pop()?;
        self.reuses.fetch_add(1, Ordering::Relaxed);
        Some(s)
    }
    fn give(&self, s: CudaSlice<f32>) {
        self.free.lock().unwrap().entry(s.len()).or_default().push(s);
    }
    fn clear(&self) {
        self.free.lock().unwrap().clear(); // dropping the slices frees them (stream-ordered)
    }
    fn cached_bytes(&self) -> u64 {
        let free = self.free.lock().unwrap();
        free.iter().map(|(class, v)| (class * v.len() * 4) as u64).sum()
    }
}

/// An f32 device buffer from the caching allocator: `len` elements (its capacity may be larger).
/// Dropping it returns the memory to the cache, not to the driver.
pub struct CudaBuffer {
    slice: Option<CudaSlice<f32>>,
    len: usize,
    pool: Arc<Pool>,
}

impl CudaBuffer {
    pub fn len(&self) -> usize {
        self.len
    }
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
    /// Elements actually allocated (the size class).
    pub fn capacity(&self) -> usize {
        self.inner().len()
    }
    fn inner(&self) -> &CudaSlice<f32> {
        self.slice.as_ref().expect("present until drop")
    }
    /// The first `len` elements as a cudarc view.
    pub fn view(&self) -> CudaView<'_, f32> {
        self.inner().slice(..self.len)
    }
    /// The first `len` elements as a mutable cudarc view.
    pub fn view_mut(&mut self) -> CudaViewMut<'_, f32> {
        let len = self.len;
        self.slice.as_mut().expect("present until drop").slice_mut(..len)
    }
}

impl Drop for CudaBuffer {
    fn drop(&mut self) {
        if let Some(s) = self.slice.take() {
            self.pool.give(s);
        }
    }
}

impl std::fmt::Debug for CudaBuffer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "CudaBuffer {{ len: {}, capacity: {} }}", self.len, self.capacity())
    }
}

impl DeviceSlice<f32> for CudaBuffer {
    fn len(&self) -> usize {
        self.len
    }
    fn stream(&self) -> &Arc<CudaStream> {
        self.inner().stream()
    }
}

impl DevicePtr<f32> for CudaBuffer {
    fn device_ptr<'a>(&'a self, stream: &'a CudaStream) -> (sys::CUdeviceptr, cudarc::driver::SyncOnDrop<'a>) {
        self.inner().device_ptr(stream)
    }
}

impl DevicePtrMut<f32> for CudaBuffer {
    fn device_ptr_mut<'a>(&'a mut self, stream: &'a CudaStream) -> (sys::CUdeviceptr, cudarc::driver::SyncOnDrop<'a>) {
        self.slice.as_mut().expect("present until drop").device_ptr_mut(stream)
    }
}

// ---------------------------------------------------------------------------------------------
// Kernel arguments
// ---------------------------------------------------------------------------------------------

/// Highest tensor rank the general broadcast and permute kernels take (`VC_MAX_RANK`).
pub const MAX_RANK: usize = 8;

/// `struct VcBcast` of elementwise.cu (same layout: i32, i32 padding, then 4 × 8 i64).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
struct BcastArg {
    rank: i32,
    pad: i32,
    a_shape: [i64; MAX_RANK],
    a_stride: [i64; MAX_RANK],
    b_shape: [i64; MAX_RANK],
    b_stride: [i64; MAX_RANK],
}
unsafe impl DeviceRepr for BcastArg {}

/// `struct VcPerm` of elementwise.cu.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
struct PermArg {
    rank: i32,
    pad: i32,
    out_shape: [i64; MAX_RANK],
    src_stride: [i64; MAX_RANK],
}
unsafe impl DeviceRepr for PermArg {}

/// One kernel argument, by value; pointers are raw device addresses (what a `float*` parameter
/// receives).
enum Arg {
    Ptr(u64),
    I32(i32),
    I64(i64),
    F32(f32),
    F64(f64),
    U64(u64),
    Bcast(BcastArg),
    Perm(PermArg),
}

fn i32_of(what: &str, v: usize) -> Result<i32> {
    i32::try_from(v).map_err(|_| Error::Device(format!("{what} = {v} does not fit the kernel's 32-bit size")))
}

fn i64_of(v: usize) -> i64 {
    v as i64 // usize → i64 cannot overflow for any buffer that fits in memory
}

/// A read-only slice's address, after checking it holds at least `need` elements.
fn ptr_in<T>(stream: &CudaStream, op: &str, what: &str, s: &(impl DevicePtr<T> + ?Sized), need: usize) -> Result<u64> {
    if s.len() < need {
        return Err(Error::Device(format!(
            "{op}: `{what}` has {} elements, the sizes need {need}",
            s.len()
        )));
    }
    // No events are tracked (one stream), so the guard records nothing when dropped.
    let (p, _guard) = s.device_ptr(stream);
    Ok(p)
}

fn ptr_out<T>(
    stream: &CudaStream,
    op: &str,
    what: &str,
    s: &mut (impl DevicePtrMut<T> + ?Sized),
    need: usize,
) -> Result<u64> {
    if s.len() < need {
        return Err(Error::Device(format!(
            "{op}: `{what}` has {} elements, the sizes need {need}",
            s.len()
        )));
    }
    let (p, _guard) = s.device_ptr_mut(stream);
    Ok(p)
}

/// Threads per block of the element-wise kernels.
const ELEM_BLOCK: u32 = 256;
/// Threads per block of the warp-per-row kernels (4 rows per block).
const ROW_BLOCK: u32 = 128;
/// Threads per block of the block-per-row softmax kernels.
const BLOCK_ROW_THREADS: u32 = 256;
/// Rows of at most this many elements use the warp-per-row softmax (see softmax.cu).
pub const SOFTMAX_WARP_MAX: usize = 1024;

/// Which matmul kernel (both compute the same product; see matmul.cu).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MatmulKernel {
    /// 16×16 shared-memory tiles, one output per thread (the teaching version).
    Tiled,
    /// 64×64 tiles, a 4×4 register tile per thread (the fast version; the default).
    RegisterTiled,
}

/// The sizes of a batched `C[z] = op(A[z])·op(B[z]) (+ beta·C[z])`, as in `ops::matmul`:
/// `op(A)` is `[m, k]` (A stored `[k, m]` when `ta`), `op(B)` is `[k, n]` (B stored `[n, k]` when
/// `tb`), C is `[m, n]`, all contiguous, `batch` of each laid end to end.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MatmulDims {
    pub batch: usize,
    pub m: usize,
    pub n: usize,
    pub k: usize,
    pub ta: bool,
    pub tb: bool,
}

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

/// The per-step scalars of the fused Adam kernel: the very ones the CPU `optim::Adam` uses.
pub use crate::optim::adam::AdamCoeffs;

// ---------------------------------------------------------------------------------------------
// The device
// ---------------------------------------------------------------------------------------------

/// Whether a device name is the cudasim simulator's (`cudasim simulator (Tesla T4 model, ...)`).
pub fn is_simulator(device_name: &str) -> bool {
    device_name.starts_with("cudasim")
}

/// How the kernels are handed to the driver.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KernelImage {
    /// Machine code for the device's exact `sm_XY`, compiled by NVRTC (the default on a GPU:
    /// nothing is left for the driver to compile, and a driver older than NVRTC still loads it).
    Cubin,
    /// PTX for `compute_XY`, compiled by the driver when it loads the module. Used under the
    /// cudasim simulator (which runs PTX), and on a real GPU when `VITCORE_CUDA_PTX=1`: the
    /// driver's own JIT then compiles the kernels (it must be at least as new as NVRTC's PTX ISA).
    Ptx,
}

impl KernelImage {
    /// PTX for the simulator or when `VITCORE_CUDA_PTX=1`, else CUBIN.
    pub fn choose(device_name: &str) -> KernelImage {
        if is_simulator(device_name) || std::env::var("VITCORE_CUDA_PTX").is_ok_and(|v| v == "1") {
            KernelImage::Ptx
        } else {
            KernelImage::Cubin
        }
    }
}

impl std::fmt::Display for KernelImage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            KernelImage::Cubin => "CUBIN",
            KernelImage::Ptx => "PTX",
        })
    }
}

/// One GPU: context, stream, kernels, allocator.
pub struct CudaDevice {
    ctx: Arc<CudaContext>,
    stream: Arc<CudaStream>,
    name: String,
    compute_capability: (i32, i32),
    arch: String,
    sm_count: u32,
    /// The most blocks a grid may have along y or z (65535 on every GPU so far): products and
    /// reductions whose grids would exceed it are split on the host.
    max_grid_yz: u32,
    driver_version: (i32, i32),
    nvrtc_version: (i32, i32),
    image: KernelImage,
    _modules: Vec<Arc<CudaModule>>,
    functions: HashMap<String, CudaFunction>,
    pool: Arc<Pool>,
    /// The labels of the current batch (see [`CudaDevice::with_labels`]).
    labels: Mutex<Option<CudaSlice<u32>>>,
}

impl std::fmt::Debug for CudaDevice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "CudaDevice({})", self.describe())
    }
}

impl CudaDevice {
    /// Open GPU `ordinal`, compile every kernel for its architecture and load them. Fails (never
    /// panics) when there is no usable GPU or NVRTC, or a kernel does not compile.
    pub fn new(ordinal: usize) -> Result<Arc<CudaDevice>> {
        cuda_available().map_err(Error::Device)?;
        let ctx = CudaContext::new(ordinal).map_err(driver_err("creating the CUDA context"))?;
        // One stream only (see the module doc): no per-buffer events needed.
        unsafe { ctx.disable_event_tracking() };
        let stream = ctx.new_stream().map_err(driver_err("creating a stream"))?;
        let name = ctx.name().map_err(driver_err("reading the device name"))?;
        let cc = ctx
            .compute_capability()
            .map_err(driver_err("reading the compute capability"))?;
        let sm_count = ctx
            .attribute(sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT)
            .map_err(driver_err("reading the SM count"))?
            .max(1) as u32;
        let grid_attr = |a| {
            ctx.attribute(a)
                .map_err(driver_err("reading the grid limits"))
                .map(|v| v.max(1) as u32)
        };
        let max_grid_yz = grid_attr(sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MAX_GRID_DIM_Y)?
            .min(grid_attr(sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MAX_GRID_DIM_Z)?);
        let mut dv = 0;
        unsafe { sys::cuDriverGetVersion(&mut dv) }
            .result()
            .map_err(driver_err("reading the driver version"))?;
        let nv = nvrtc::nvrtc_version().unwrap_or((0, 0));
        let image = KernelImage::choose(&name);
        let arch = match image {
            KernelImage::Cubin => nvrtc::arch_for(cc.0, cc.1).map_err(Error::Device)?,
            // PTX for the virtual architecture of the device's own compute capability.
            KernelImage::Ptx => format!("compute_{}{}", cc.0, cc.1),
        };

        let mut modules = Vec::new();
        let mut functions = HashMap::new();
        for (file, src) in nvrtc::KERNEL_SOURCES {
            let loaded = match image {
                KernelImage::Cubin => {
                    let compiled = nvrtc::compile_cubin(file, src, &arch)?;
                    ctx.load_module(cudarc::nvrtc::Ptx::from_binary(compiled.cubin))
                }
                KernelImage::Ptx => {
                    ctx.load_module(cudarc::nvrtc::Ptx::from_src(nvrtc::compile_ptx(file, src, &arch)?))
                }
            };
            let module = loaded
                .map_err(|e| Error::Device(format!("loading the {image} of {file} for {arch} on {name}: {e}")))?;
            for k in nvrtc::kernel_names(src) {
                let f = module
                    .load_function(&k)
                    .map_err(|e| Error::Device(format!("kernel {k} of {file}: {e}")))?;
                functions.insert(k, f);
            }
            modules.push(module);
        }
        let exact_sizes = is_simulator(&name);
        Ok(Arc::new(CudaDevice {
            ctx,
            stream,
            name,
            compute_capability: cc,
            arch,
            sm_count,
            max_grid_yz,
            driver_version: (dv / 1000, (dv % 1000) / 10),
            nvrtc_version: nv,
            image,
            _modules: modules,
            functions,
            pool: Arc::new(Pool {
                free: Mutex::new(HashMap::new()),
                device_allocs: AtomicU64::new(0),
                reuses: AtomicU64::new(0),
                exact: exact_sizes,
            }),
            labels: Mutex::new(None),
        }))
    }

    /// The process-wide device (GPU 0), opened and compiled on first use; later calls return the
    /// same device, or the same error.
    pub fn global() -> Result<Arc<CudaDevice>> {
        static DEV: OnceLock<std::result::Result<Arc<CudaDevice>, String>> = OnceLock::new();
        DEV.get_or_init(|| {
            CudaDevice::new(0).map_err(|e| match e {
                Error::Device(m) => m,
                other => other.to_string(),
            })
        })
        .clone()
        .map_err(Error::Device)
    }

    pub fn name(&self) -> &str {
        &self.name
    }
    pub fn compute_capability(&self) -> (i32, i32) {
        self.compute_capability
    }
    /// The architecture the kernels were compiled for (`sm_XY` for CUBIN, `compute_XY` for PTX).
    pub fn arch(&self) -> &str {
        &self.arch
    }
    /// Whether the kernels were loaded as CUBIN or as PTX.
    pub fn kernel_image(&self) -> KernelImage {
        self.image
    }
    /// Whether this "GPU" is the cudasim simulator (its device name says so).
    pub fn is_simulator(&self) -> bool {
        is_simulator(&self.name)
    }
    pub fn sm_count(&self) -> u32 {
        self.sm_count
    }
    /// The most blocks a grid may have along y or z.
    pub fn max_grid_yz(&self) -> u32 {
        self.max_grid_yz
    }
    /// `(major, minor)` of the CUDA version the driver supports.
    pub fn driver_version(&self) -> (i32, i32) {
        self.driver_version
    }
    pub fn nvrtc_version(&self) -> (i32, i32) {
        self.nvrtc_version
    }
    /// One line: name, architecture, driver and NVRTC versions.
    pub fn describe(&self) -> String {
        let (cm, cn) = self.compute_capability;
        format!(
            "{} (compute {cm}.{cn}, kernels as {} for {}, {} SMs), driver CUDA {}.{}, NVRTC {}.{}",
            self.name,
            self.image,
            self.arch,
            self.sm_count,
            self.driver_version.0,
            self.driver_version.1,
            self.nvrtc_version.0,
            self.nvrtc_version.1
        )
    }
    pub fn context(&self) -> &Arc<CudaContext> {
        &self.ctx
    }
    /// The one stream every wrapper launches on.
    pub fn stream(&self) -> &Arc<CudaStream> {
        &self.stream
    }
    /// Names of the loaded kernels.
    pub fn kernel_names(&self) -> Vec<&str> {
        let mut v: Vec<&str> = self.functions.keys().map(String::as_str).collect();
        v.sort_unstable();
        v
    }
    /// Wait for all queued work; returns the first error a kernel raised.
    pub fn synchronize(&self) -> Result<()> {
        self.stream
            .synchronize()
            .map_err(driver_err("synchronising the stream"))?;
        self.ctx.check_err().map_err(driver_err("a deferred CUDA error"))
    }

    // ---- memory -------------------------------------------------------------------------------

    /// A buffer of `len` elements with unspecified contents, from the cache when possible.
    pub fn alloc(&self, len: usize) -> Result<CudaBuffer> {
        let class = self.pool.class_of(len);
        let slice = match self.pool.take(class) {
            Some(s) => s,
            None => {
                let fresh = unsafe { self.stream.alloc::<f32>(class) };
                let s = match fresh {
                    Ok(s) => s,
                    Err(e) if e.0 == sys::cudaError_enum::CUDA_ERROR_OUT_OF_MEMORY => {
                        // Give the cached buffers back to the driver and try once more.
                        self.pool.clear();
                        self.stream
                            .synchronize()
                            .map_err(driver_err("synchronising after out-of-memory"))?;
                        unsafe { self.stream.alloc::<f32>(class) }.map_err(|e| {
                            Error::Device(format!("allocating {} MiB on the GPU: {e}", (class * 4) >> 20))
                        })?
                    }
                    Err(e) => return Err(Error::Device(format!("allocating {} bytes on the GPU: {e}", class * 4))),
                };
                self.pool.device_allocs.fetch_add(1, Ordering::Relaxed);
                s
            }
        };
        Ok(CudaBuffer {
            slice: Some(slice),
            len,
            pool: self.pool.clone(),
        })
    }

    /// A buffer of `len` zeros.
    pub fn alloc_zeros(&self, len: usize) -> Result<CudaBuffer> {
        let mut b = self.alloc(len)?;
        self.fill(&mut b, len, 0.0)?;
        Ok(b)
    }

    /// Copy host data into a new buffer.
    pub fn upload(&self, data: &[f32]) -> Result<CudaBuffer> {
        let mut b = self.alloc(data.len())?;
        if !data.is_empty() {
            let mut v = b.view_mut();
            self.stream
                .memcpy_htod(data, &mut v)
                .map_err(driver_err("copying to the GPU"))?;
        }
        Ok(b)
    }

    /// Copy host data into an existing buffer (which must be at least as long).
    pub fn upload_into(&self, data: &[f32], dst: &mut CudaBuffer) -> Result<()> {
        if dst.len() < data.len() {
            return Err(Error::Device(format!(
                "upload_into: {} elements into a buffer of {}",
                data.len(),
                dst.len()
            )));
        }
        if !data.is_empty() {
            let mut v = dst.view_mut();
            self.stream
                .memcpy_htod(data, &mut v)
                .map_err(driver_err("copying to the GPU"))?;
        }
        Ok(())
    }

    /// Copy labels (or any u32 data) to the device (not pooled: small and rare).
    pub fn upload_u32(&self, data: &[u32]) -> Result<CudaSlice<u32>> {
        if data.is_empty() {
            return self
                .stream
                .alloc_zeros::<u32>(1)
                .map_err(driver_err("allocating on the GPU"));
        }
        self.stream.clone_htod(data).map_err(driver_err("copying to the GPU"))
    }

    /// Copy `labels` into the device's one label buffer and run `f` on them there. The buffer is
    /// reused from call to call (it only grows), so a training step allocates nothing for its
    /// labels. Reuse is safe on one stream: the copy is queued after every kernel that read the
    /// previous labels, and a copy from pageable host memory has taken its data when it returns.
    pub fn with_labels<R>(&self, labels: &[u32], f: impl FnOnce(&CudaView<'_, u32>) -> Result<R>) -> Result<R> {
        let mut slot = self.labels.lock().unwrap_or_else(|e| e.into_inner());
        if slot.as_ref().is_none_or(|s| s.len() < labels.len()) {
            *slot = None; // free the old one first
            let s = self
                .stream
                .alloc_zeros::<u32>(labels.len().max(256))
                .map_err(driver_err("allocating the label buffer"))?;
            self.pool.device_allocs.fetch_add(1, Ordering::Relaxed);
            *slot = Some(s);
        }
        let buf = slot.as_mut().expect("allocated above");
        if !labels.is_empty() {
            let mut dst = buf.slice_mut(..labels.len());
            self.stream
                .memcpy_htod(labels, &mut dst)
                .map_err(driver_err("copying labels to the GPU"))?;
        }
        f(&buf.slice(..labels.len()))
    }

    /// Copy a device slice to the host (waits for the queued work that writes it).
    pub fn download(&self, src: &impl DevicePtr<f32>) -> Result<Vec<f32>> {
        let mut out = vec![0.0f32; src.len()];
        if !out.is_empty() {
            self.stream
                .memcpy_dtoh(src, &mut out)
                .map_err(driver_err("copying from the GPU"))?;
        }
        self.synchronize()?;
        Ok(out)
    }

    /// Copy `src` into a new buffer on the device.
    pub fn copy(&self, src: &(impl DevicePtr<f32> + ?Sized)) -> Result<CudaBuffer> {
        let n = src.len();
        let mut dst = self.alloc(n)?;
        if n > 0 {
            self.copy_rows(src, &mut dst, 1, n, 0, 0, 0, 0)?;
        }
        Ok(dst)
    }

    pub fn pool_stats(&self) -> PoolStats {
        PoolStats {
            device_allocs: self.pool.device_allocs.load(Ordering::Relaxed),
            reuses: self.pool.reuses.load(Ordering::Relaxed),
            cached_bytes: self.pool.cached_bytes(),
        }
    }

    /// Return every cached (free) buffer to the driver.
    pub fn empty_cache(&self) {
        self.pool.clear();
    }

    // ---- launching ----------------------------------------------------------------------------

    /// Launch an element-wise kernel over `n` elements (the `elem_cfg` geometry); nothing to do
    /// for `n = 0` (the arguments were still checked by the caller).
    fn launch_elementwise(&self, name: &str, n: usize, args: &[Arg]) -> Result<()> {
        if n == 0 {
            return Ok(());
        }
        self.launch(name, self.elem_cfg(n), args)
    }

    fn launch(&self, name: &str, cfg: LaunchConfig, args: &[Arg]) -> Result<()> {
        let f = self
            .functions
            .get(name)
            .ok_or_else(|| Error::Device(format!("kernel {name} is not loaded")))?;
        let mut b = self.stream.launch_builder(f);
        for a in args {
            match a {
                Arg::Ptr(v) | Arg::U64(v) => b.arg(v),
                Arg::I32(v) => b.arg(v),
                Arg::I64(v) => b.arg(v),
                Arg::F32(v) => b.arg(v),
                Arg::F64(v) => b.arg(v),
                Arg::Bcast(v) => b.arg(v),
                Arg::Perm(v) => b.arg(v),
            };
        }
        unsafe { b.launch(cfg) }.map_err(|e| Error::Device(format!("launching {name}: {e}")))?;
        Ok(())
    }

    /// Grid for a grid-stride loop over `units` work items of `per_block` each: enough blocks to
    /// fill the GPU several times over, no more (the loop covers the rest).
    fn grid_for(&self, units: usize, per_block: usize) -> u32 {
        let want = units.div_ceil(per_block.max(1)).max(1);
        want.min(self.sm_count as usize * 32).min(i32::MAX as usize) as u32
    }

    fn elem_cfg(&self, n: usize) -> LaunchConfig {
        LaunchConfig {
            grid_dim: (self.grid_for(n, ELEM_BLOCK as usize), 1, 1),
            block_dim: (ELEM_BLOCK, 1, 1),
            shared_mem_bytes: 0,
        }
    }

    fn warp_rows_cfg(&self, rows: usize) -> LaunchConfig {
        let rows_per_block = (ROW_BLOCK / 32) as usize;
        LaunchConfig {
            grid_dim: (self.grid_for(rows, rows_per_block), 1, 1),
            block_dim: (ROW_BLOCK, 1, 1),
            shared_mem_bytes: 0,
        }
    }

    fn block_rows_cfg(&self, rows: usize) -> LaunchConfig {
        LaunchConfig {
            grid_dim: (self.grid_for(rows, 1), 1, 1),
            block_dim: (BLOCK_ROW_THREADS, 1, 1),
            shared_mem_bytes: 0,
        }
    }

    // ---- matmul.cu ----------------------------------------------------------------------------

    /// `C[z] = op(A[z])·op(B[z]) + beta·C[z]` for every batch index (beta = 0: C is only written).
    pub fn matmul(
        &self,
        kernel: MatmulKernel,
        a: &(impl DevicePtr<f32> + ?Sized),
        b: &(impl DevicePtr<f32> + ?Sized),
        c: &mut (impl DevicePtrMut<f32> + ?Sized),
        d: MatmulDims,
        beta: f32,
    ) -> Result<()> {
        let MatmulDims { batch, m, n, k, ta, tb } = d;
        let op = "matmul";
        let (sza, szb, szc) = (m * k, k * n, m * n);
        for (what, sz) in [("A", sza), ("B", szb), ("C", szc)] {
            if sz > i32::MAX as usize {
                return Err(Error::Device(format!(
                    "{op}: one {what} matrix has {sz} elements; the kernels index a matrix with 32 bits"
                )));
            }
        }
        let pa = ptr_in(&self.stream, op, "a", a, batch * sza)?;
        let pb = ptr_in(&self.stream, op, "b", b, batch * szb)?;
        let pc = ptr_out(&self.stream, op, "c", c, batch * szc)?;
        if batch == 0 || m == 0 || n == 0 {
            return Ok(());
        }
        // op(A)[i, p] = A[i·sa_i + p·sa_p], op(B)[p, j] = B[p·sb_p + j·sb_j] (see matmul.cu).
        let (sa_i, sa_p) = if ta { (1, m) } else { (k, 1) };
        let (sb_p, sb_j) = if tb { (1, k) } else { (n, 1) };
        let (name, tile, block) = match kernel {
            MatmulKernel::Tiled => ("matmul_tiled", 16usize, (16u32, 16u32, 1u32)),
            MatmulKernel::RegisterTiled => ("matmul_reg", 64usize, (256u32, 1u32, 1u32)),
        };
        let max_yz = self.max_grid_yz as usize;
        let tiles_n = n.div_ceil(tile);
        let rows_per_launch = max_yz * tile;
        // Split batches beyond gridDim.z and rows beyond gridDim.y into launches on offset pointers.
        let mut z0 = 0;
        while z0 < batch {
            let zb = (batch - z0).min(max_yz);
            let mut i0 = 0;
            while i0 < m {
                let mi = (m - i0).min(rows_per_launch);
                let off_a = (z0 * sza + i0 * sa_i) as u64 * 4;
                let off_c = (z0 * szc + i0 * n) as u64 * 4;
                let off_b = (z0 * szb) as u64 * 4;
                let cfg = LaunchConfig {
                    grid_dim: (tiles_n as u32, mi.div_ceil(tile) as u32, zb as u32),
                    block_dim: block,
                    shared_mem_bytes: 0,
                };
                self.launch(
                    name,
                    cfg,
                    &[
                        Arg::Ptr(pa + off_a),
                        Arg::Ptr(pb + off_b),
                        Arg::Ptr(pc + off_c),
                        Arg::I32(mi as i32),
                        Arg::I32(n as i32),
                        Arg::I32(i32_of("k", k)?),
                        Arg::I32(sa_i as i32),
                        Arg::I32(sa_p as i32),
                        Arg::I32(sb_p as i32),
                        Arg::I32(sb_j as i32),
                        Arg::I64(i64_of(sza)),
                        Arg::I64(i64_of(szb)),
                        Arg::I64(i64_of(szc)),
                        Arg::F32(beta),
                    ],
                )?;
                i0 += mi;
            }
            z0 += zb;
        }
        Ok(())
    }

    /// The linear layer `y = x·Wᵀ + b` (`x: [rows, din]`, `W: [dout, din]`, `b: [dout]`), as
    /// `ops::linear::forward`: the bias is written into every row, then the product accumulated.
    #[allow(clippy::too_many_arguments)]
    pub fn linear_fwd(
        &self,
        x: &(impl DevicePtr<f32> + ?Sized),
        w: &(impl DevicePtr<f32> + ?Sized),
        b: Option<&(impl DevicePtr<f32> + ?Sized)>,
        y: &mut (impl DevicePtrMut<f32> + ?Sized),
        rows: usize,
        din: usize,
        dout: usize,
    ) -> Result<()> {
        let beta = match b {
            Some(b) => {
                // src stride 0: every row of y reads the same bias row.
                self.copy_rows(b, y, rows, dout, 0, 0, dout, 0)?;
                1.0
            }
            None => 0.0,
        };
        let d = MatmulDims {
            batch: 1,
            m: rows,
            n: dout,
            k: din,
            ta: false,
            tb: true,
        };
        self.matmul(MatmulKernel::RegisterTiled, x, w, y, d, beta)
    }

    /// The linear layer's backward, as `ops::linear::backward`: `dX = G·W`, `dW = Gᵀ·X`,
    /// `db = Σ_rows G`, each only when its output is given.
    #[allow(clippy::too_many_arguments)]
    pub fn linear_bwd(
        &self,
        g: &(impl DevicePtr<f32> + ?Sized),
        x: &(impl DevicePtr<f32> + ?Sized),
        w: &(impl DevicePtr<f32> + ?Sized),
        dx: Option<&mut CudaBuffer>,
        dw: Option<&mut CudaBuffer>,
        db: Option<&mut CudaBuffer>,
        rows: usize,
        din: usize,
        dout: usize,
    ) -> Result<()> {
        if let Some(dx) = dx {
            let d = MatmulDims {
                batch: 1,
                m: rows,
                n: din,
                k: dout,
                ta: false,
                tb: false,
            };
            self.matmul(MatmulKernel::RegisterTiled, g, w, dx, d, 0.0)?;
        }
        if let Some(dw) = dw {
            let d = MatmulDims {
                batch: 1,
                m: dout,
                n: din,
                k: rows,
                ta: true,
                tb: false,
            };
            self.matmul(MatmulKernel::RegisterTiled, g, x, dw, d, 0.0)?;
        }
        if let Some(db) = db {
            self.sum_rows(g, db, rows, dout)?;
        }
        Ok(())
    }

    // ---- softmax.cu ---------------------------------------------------------------------------

    fn row_kernel(kind: RowKernel, n: usize) -> RowKernel {
        match kind {
            RowKernel::Auto if n <= SOFTMAX_WARP_MAX => RowKernel::Warp,
            RowKernel::Auto => RowKernel::Block,
            k => k,
        }
    }

    /// Softmax of each of `rows` rows of length `n`.
    pub fn softmax_fwd(
        &self,
        kind: RowKernel,
        x: &(impl DevicePtr<f32> + ?Sized),
        y: &mut (impl DevicePtrMut<f32> + ?Sized),
        rows: usize,
        n: usize,
    ) -> Result<()> {
        let op = "softmax_fwd";
        let px = ptr_in(&self.stream, op, "x", x, rows * n)?;
        let py = ptr_out(&self.stream, op, "y", y, rows * n)?;
        if rows == 0 || n == 0 {
            return Ok(());
        }
        let args = [
            Arg::Ptr(px),
            Arg::Ptr(py),
            Arg::I64(i64_of(rows)),
            Arg::I32(i32_of("n", n)?),
        ];
        match Self::row_kernel(kind, n) {
            RowKernel::Block => self.launch("softmax_fwd_block", self.block_rows_cfg(rows), &args),
            _ => self.launch("softmax_fwd_warp", self.warp_rows_cfg(rows), &args),
        }
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
        let op = "softmax_bwd";
        let pg = ptr_in(&self.stream, op, "g", g, rows * n)?;
        let py = ptr_in(&self.stream, op, "y", y, rows * n)?;
        let pd = ptr_out(&self.stream, op, "dx", dx, rows * n)?;
        if rows == 0 || n == 0 {
            return Ok(());
        }
        let args = [
            Arg::Ptr(pg),
            Arg::Ptr(py),
            Arg::Ptr(pd),
            Arg::I64(i64_of(rows)),
            Arg::I32(i32_of("n", n)?),
        ];
        match Self::row_kernel(kind, n) {
            RowKernel::Block => self.launch("softmax_bwd_block", self.block_rows_cfg(rows), &args),
            _ => self.launch("softmax_bwd_warp", self.warp_rows_cfg(rows), &args),
        }
    }

    // ---- layernorm.cu -------------------------------------------------------------------------

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
        let op = "layernorm_fwd";
        let args = [
            Arg::Ptr(ptr_in(&self.stream, op, "x", x, rows * d)?),
            Arg::Ptr(ptr_in(&self.stream, op, "gamma", gamma, d)?),
            Arg::Ptr(ptr_in(&self.stream, op, "beta", beta, d)?),
            Arg::Ptr(ptr_out(&self.stream, op, "y", y, rows * d)?),
            Arg::Ptr(ptr_out(&self.stream, op, "mean", mean, rows)?),
            Arg::Ptr(ptr_out(&self.stream, op, "rstd", rstd, rows)?),
            Arg::I64(i64_of(rows)),
            Arg::I32(i32_of("d", d)?),
            Arg::F32(eps),
        ];
        if rows == 0 || d == 0 {
            return Ok(());
        }
        self.launch("layernorm_fwd", self.warp_rows_cfg(rows), &args)
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
        let (pg, px) = (
            ptr_in(&self.stream, op, "g", g, rows * d)?,
            ptr_in(&self.stream, op, "x", x, rows * d)?,
        );
        let pgam = ptr_in(&self.stream, op, "gamma", gamma, d)?;
        let (pm, pr) = (
            ptr_in(&self.stream, op, "mean", mean, rows)?,
            ptr_in(&self.stream, op, "rstd", rstd, rows)?,
        );
        let pdx = ptr_out(&self.stream, op, "dx", dx, rows * d)?;
        let _ = ptr_out(&self.stream, op, "dgamma", dgamma, d)?;
        let _ = ptr_out(&self.stream, op, "dbeta", dbeta, d)?;
        if d == 0 {
            return Ok(());
        }
        if rows == 0 {
            self.fill(dgamma, d, 0.0)?;
            return self.fill(dbeta, d, 0.0);
        }
        let dd = i32_of("d", d)?;
        self.launch(
            "layernorm_bwd_dx",
            self.warp_rows_cfg(rows),
            &[
                Arg::Ptr(pg),
                Arg::Ptr(px),
                Arg::Ptr(pgam),
                Arg::Ptr(pm),
                Arg::Ptr(pr),
                Arg::Ptr(pdx),
                Arg::I64(i64_of(rows)),
                Arg::I32(dd),
            ],
        )?;
        // Pass 1: [chunks, 2d] partial sums (dγ | dβ); enough chunks to give every SM a few blocks.
        let col_blocks = d.div_ceil(32);
        let chunks = (self.sm_count as usize * 4)
            .div_ceil(col_blocks)
            .clamp(1, rows.div_ceil(8))
            .min(self.max_grid_yz as usize);
        let rows_per_chunk = rows.div_ceil(chunks);
        let chunks = rows.div_ceil(rows_per_chunk);
        let mut partial = self.alloc(chunks * 2 * d)?;
        let pp = ptr_out(&self.stream, op, "partial", &mut partial, chunks * 2 * d)?;
        let cfg = LaunchConfig {
            grid_dim: (col_blocks as u32, chunks as u32, 1),
            block_dim: (32, 8, 1),
            shared_mem_bytes: 0,
        };
        self.launch(
            "layernorm_bwd_params_partial",
            cfg,
            &[
                Arg::Ptr(pg),
                Arg::Ptr(px),
                Arg::Ptr(pm),
                Arg::Ptr(pr),
                Arg::Ptr(pp),
                Arg::I64(i64_of(rows)),
                Arg::I32(dd),
                Arg::I64(i64_of(rows_per_chunk)),
            ],
        )?;
        // Pass 2: sum the chunk rows, then split [dγ | dβ].
        let mut sums = self.alloc(2 * d)?;
        self.sum_rows(&partial, &mut sums, chunks, 2 * d)?;
        self.copy_rows(&sums, dgamma, 1, d, 0, 0, 0, 0)?;
        self.copy_rows(&sums, dbeta, 1, d, 0, d, 0, 0)
    }

    // ---- gelu.cu ------------------------------------------------------------------------------

    fn gelu_kind(kind: GeluKind) -> i32 {
        match kind {
            GeluKind::Erf => 0,
            GeluKind::Tanh => 1,
        }
    }

    /// `y = gelu(x)` over `n` elements.
    pub fn gelu_fwd(
        &self,
        x: &(impl DevicePtr<f32> + ?Sized),
        y: &mut (impl DevicePtrMut<f32> + ?Sized),
        n: usize,
        kind: GeluKind,
    ) -> Result<()> {
        let args = [
            Arg::Ptr(ptr_in(&self.stream, "gelu_fwd", "x", x, n)?),
            Arg::Ptr(ptr_out(&self.stream, "gelu_fwd", "y", y, n)?),
            Arg::I64(i64_of(n)),
            Arg::I32(Self::gelu_kind(kind)),
        ];
        self.launch_elementwise("gelu_fwd", n, &args)
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
        let args = [
            Arg::Ptr(ptr_in(&self.stream, "gelu_bwd", "g", g, n)?),
            Arg::Ptr(ptr_in(&self.stream, "gelu_bwd", "x", x, n)?),
            Arg::Ptr(ptr_out(&self.stream, "gelu_bwd", "dx", dx, n)?),
            Arg::I64(i64_of(n)),
            Arg::I32(Self::gelu_kind(kind)),
        ];
        self.launch_elementwise("gelu_bwd", n, &args)
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
        let name = "gelu_dropout_fwd";
        let scale = Self::dropout_scale(n, p)?;
        let args = [
            Arg::Ptr(ptr_in(&self.stream, name, "x", x, n)?),
            Arg::Ptr(ptr_out(&self.stream, name, "y", y, n)?),
            Arg::I64(i64_of(n)),
            Arg::I32(Self::gelu_kind(kind)),
            Arg::F32(p),
            Arg::F32(scale),
            Arg::U64(seed),
        ];
        self.launch_elementwise(name, n, &args)
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
        let name = "gelu_dropout_bwd";
        let scale = Self::dropout_scale(n, p)?;
        let args = [
            Arg::Ptr(ptr_in(&self.stream, name, "g", g, n)?),
            Arg::Ptr(ptr_in(&self.stream, name, "x", x, n)?),
            Arg::Ptr(ptr_out(&self.stream, name, "dx", dx, n)?),
            Arg::I64(i64_of(n)),
            Arg::I32(Self::gelu_kind(kind)),
            Arg::F32(p),
            Arg::F32(scale),
            Arg::U64(seed),
        ];
        self.launch_elementwise(name, n, &args)
    }

    // ---- patchify.cu --------------------------------------------------------------------------

    fn patch_args(x_shape: [usize; 4], p: usize) -> Result<(usize, [Arg; 5])> {
        let [b, c, h, w] = x_shape;
        if p == 0 || !h.is_multiple_of(p) || !w.is_multiple_of(p) {
            return Err(Error::shape(
                "patchify",
                &x_shape,
                &[p],
                "need [B, C, H, W] with H and W multiples of the patch size",
            ));
        }
        let n = b * c * h * w;
        Ok((
            n,
            [
                Arg::I32(i32_of("B", b)?),
                Arg::I32(i32_of("C", c)?),
                Arg::I32(i32_of("H", h)?),
                Arg::I32(i32_of("W", w)?),
                Arg::I32(i32_of("P", p)?),
            ],
        ))
    }

    /// `[B, C, H, W] → [B, N, C·P·P]` patches.
    pub fn patchify_fwd(
        &self,
        x: &(impl DevicePtr<f32> + ?Sized),
        y: &mut (impl DevicePtrMut<f32> + ?Sized),
        x_shape: [usize; 4],
        p: usize,
    ) -> Result<()> {
        let (n, dims) = Self::patch_args(x_shape, p)?;
        let mut args = vec![
            Arg::Ptr(ptr_in(&self.stream, "patchify_fwd", "x", x, n)?),
            Arg::Ptr(ptr_out(&self.stream, "patchify_fwd", "y", y, n)?),
        ];
        args.extend(dims);
        self.launch_elementwise("patchify_fwd", n, &args)
    }

    /// The scatter back to `[B, C, H, W]`.
    pub fn patchify_bwd(
        &self,
        g: &(impl DevicePtr<f32> + ?Sized),
        dx: &mut (impl DevicePtrMut<f32> + ?Sized),
        x_shape: [usize; 4],
        p: usize,
    ) -> Result<()> {
        let (n, dims) = Self::patch_args(x_shape, p)?;
        let mut args = vec![
            Arg::Ptr(ptr_in(&self.stream, "patchify_bwd", "g", g, n)?),
            Arg::Ptr(ptr_out(&self.stream, "patchify_bwd", "dx", dx, n)?),
        ];
        args.extend(dims);
        self.launch_elementwise("patchify_bwd", n, &args)
    }

    // ---- elementwise.cu -----------------------------------------------------------------------

    /// `y[i] = a[i] + b[i mod block]` over `n` elements (residual add: block = n; bias: block = D).
    pub fn add_bcast_block(
        &self,
        a: &(impl DevicePtr<f32> + ?Sized),
        b: &(impl DevicePtr<f32> + ?Sized),
        y: &mut (impl DevicePtrMut<f32> + ?Sized),
        n: usize,
        block: usize,
    ) -> Result<()> {
        if block == 0 || !n.is_multiple_of(block) {
            return Err(Error::shape(
                "add_bcast_block",
                &[n],
                &[block],
                "the block must divide the size",
            ));
        }
        let args = [
            Arg::Ptr(ptr_in(&self.stream, "add", "a", a, n)?),
            Arg::Ptr(ptr_in(&self.stream, "add", "b", b, block)?),
            Arg::Ptr(ptr_out(&self.stream, "add", "y", y, n)?),
            Arg::I64(i64_of(n)),
            Arg::I64(i64_of(block)),
        ];
        self.launch_elementwise("add_bcast_block", n, &args)
    }

    /// `y = a + broadcast(b)` with numpy rules, the result shaped like `a` (as
    /// `ops::add::add_broadcast`): the block kernel when `b` broadcasts over leading dimensions
    /// only, the general strided kernel otherwise.
    pub fn add_broadcast(
        &self,
        a: &(impl DevicePtr<f32> + ?Sized),
        a_shape: &[usize],
        b: &(impl DevicePtr<f32> + ?Sized),
        b_shape: &[usize],
        y: &mut (impl DevicePtrMut<f32> + ?Sized),
    ) -> Result<()> {
        let s = bcast_arg("add_broadcast", a_shape, b_shape)?;
        let n: usize = a_shape.iter().product();
        if let Some(block) = leading_broadcast_block(a_shape, b_shape) {
            return self.add_bcast_block(a, b, y, n, block);
        }
        let args = [
            Arg::Ptr(ptr_in(&self.stream, "add_broadcast", "a", a, n)?),
            Arg::Ptr(ptr_in(&self.stream, "add_broadcast", "b", b, b_shape.iter().product())?),
            Arg::Ptr(ptr_out(&self.stream, "add_broadcast", "y", y, n)?),
            Arg::I64(i64_of(n)),
            Arg::Bcast(s),
        ];
        self.launch_elementwise("add_bcast_general", n, &args)
    }

    /// Sum `g` (shaped `g_shape`) down to `b_shape`: the gradient of a broadcast operand (as
    /// `ops::add::reduce_to_shape`).
    pub fn reduce_to_shape(
        &self,
        g: &(impl DevicePtr<f32> + ?Sized),
        g_shape: &[usize],
        out: &mut (impl DevicePtrMut<f32> + ?Sized),
        b_shape: &[usize],
    ) -> Result<()> {
        let s = bcast_arg("reduce_to_shape", g_shape, b_shape)?;
        let n: usize = g_shape.iter().product();
        let nb: usize = b_shape.iter().product();
        if let Some(block) = leading_broadcast_block(g_shape, b_shape) {
            return self.sum_rows(g, out, n.checked_div(block).unwrap_or(0), block);
        }
        let args = [
            Arg::Ptr(ptr_in(&self.stream, "reduce_to_shape", "g", g, n)?),
            Arg::Ptr(ptr_out(&self.stream, "reduce_to_shape", "out", out, nb)?),
            Arg::I64(i64_of(nb)),
            Arg::Bcast(s),
        ];
        if nb == 0 {
            return Ok(());
        }
        self.launch("reduce_bcast_general", self.elem_cfg(nb), &args)
    }

    /// Column sums: `out[c] = Σ_r x[r, c]` of a `[rows, cols]` matrix (bias gradients).
    pub fn sum_rows(
        &self,
        x: &(impl DevicePtr<f32> + ?Sized),
        out: &mut (impl DevicePtrMut<f32> + ?Sized),
        rows: usize,
        cols: usize,
    ) -> Result<()> {
        let px = ptr_in(&self.stream, "sum_rows", "x", x, rows * cols)?;
        let po = ptr_out(&self.stream, "sum_rows", "out", out, cols)?;
        if cols == 0 {
            return Ok(());
        }
        if rows == 0 {
            return self.fill(out, cols, 0.0);
        }
        let col_blocks = cols.div_ceil(32);
        if col_blocks > i32::MAX as usize {
            return Err(Error::Device(format!(
                "sum_rows: {cols} columns is too many for one grid"
            )));
        }
        let col_blocks = col_blocks as u32;
        let pass = |src: u64, dst: u64, rows: usize, chunks: usize, rows_per_chunk: usize| {
            let cfg = LaunchConfig {
                grid_dim: (col_blocks, chunks as u32, 1),
                block_dim: (32, 8, 1),
                shared_mem_bytes: 0,
            };
            self.launch(
                "sum_rows",
                cfg,
                &[
                    Arg::Ptr(src),
                    Arg::Ptr(dst),
                    Arg::I64(i64_of(rows)),
                    Arg::I64(i64_of(cols)),
                    Arg::I64(i64_of(rows_per_chunk)),
                ],
            )
        };
        // Few rows: one pass. Many: first [chunks, cols] partials, then their column sums.
        let chunks = (self.sm_count as usize * 4)
            .div_ceil(col_blocks as usize)
            .clamp(1, rows.div_ceil(64))
            .min(self.max_grid_yz as usize);
        if chunks <= 1 {
            return pass(px, po, rows, 1, rows);
        }
        let rows_per_chunk = rows.div_ceil(chunks);
        let chunks = rows.div_ceil(rows_per_chunk);
        let mut partial = self.alloc(chunks * cols)?;
        let pp = ptr_out(&self.stream, "sum_rows", "partial", &mut partial, chunks * cols)?;
        pass(px, pp, rows, chunks, rows_per_chunk)?;
        pass(pp, po, chunks, 1, chunks)
    }

    /// `y = s·x`.
    pub fn scale(
        &self,
        x: &(impl DevicePtr<f32> + ?Sized),
        y: &mut (impl DevicePtrMut<f32> + ?Sized),
        n: usize,
        s: f32,
    ) -> Result<()> {
        let args = [
            Arg::Ptr(ptr_in(&self.stream, "scale", "x", x, n)?),
            Arg::Ptr(ptr_out(&self.stream, "scale", "y", y, n)?),
            Arg::I64(i64_of(n)),
            Arg::F32(s),
        ];
        self.launch_elementwise("scale", n, &args)
    }

    /// `y += x` (gradient accumulation).
    pub fn add_assign(
        &self,
        y: &mut (impl DevicePtrMut<f32> + ?Sized),
        x: &(impl DevicePtr<f32> + ?Sized),
        n: usize,
    ) -> Result<()> {
        let args = [
            Arg::Ptr(ptr_out(&self.stream, "add_assign", "y", y, n)?),
            Arg::Ptr(ptr_in(&self.stream, "add_assign", "x", x, n)?),
            Arg::I64(i64_of(n)),
        ];
        self.launch_elementwise("add_assign", n, &args)
    }

    /// `y[..n] = v`.
    pub fn fill(&self, y: &mut (impl DevicePtrMut<f32> + ?Sized), n: usize, v: f32) -> Result<()> {
        let args = [
            Arg::Ptr(ptr_out(&self.stream, "fill", "y", y, n)?),
            Arg::I64(i64_of(n)),
            Arg::F32(v),
        ];
        self.launch_elementwise("fill", n, &args)
    }

    /// Output dimension `d` is input dimension `perm[d]` (as `ops::shape::permute`); the
    /// backward is this with the inverse permutation.
    pub fn permute(
        &self,
        x: &(impl DevicePtr<f32> + ?Sized),
        y: &mut (impl DevicePtrMut<f32> + ?Sized),
        shape: &[usize],
        perm: &[usize],
    ) -> Result<()> {
        let r = shape.len();
        let mut seen = vec![false; r];
        let ok = perm.len() == r && perm.iter().all(|&p| p < r && !std::mem::replace(&mut seen[p], true));
        if !ok {
            return Err(Error::shape(
                "permute",
                shape,
                perm,
                "perm must be a permutation of the dimensions",
            ));
        }
        if r > MAX_RANK {
            return Err(Error::shape(
                "permute",
                shape,
                perm,
                format!("the CUDA kernel takes at most {MAX_RANK} dimensions"),
            ));
        }
        let n: usize = shape.iter().product();
        let strides = contiguous_strides(shape);
        let mut arg = PermArg {
            rank: r as i32,
            ..Default::default()
        };
        for d in 0..r {
            arg.out_shape[d] = shape[perm[d]] as i64;
            arg.src_stride[d] = strides[perm[d]] as i64;
        }
        let args = [
            Arg::Ptr(ptr_in(&self.stream, "permute", "x", x, n)?),
            Arg::Ptr(ptr_out(&self.stream, "permute", "y", y, n)?),
            Arg::I64(i64_of(n)),
            Arg::Perm(arg),
        ];
        self.launch_elementwise("permute", n, &args)
    }

    /// `dst[o·dst_stride + dst_off + k] = src[o·src_stride + src_off + k]` for `o < outer`,
    /// `k < row_len`: the building block of slice, concat and unslice.
    #[allow(clippy::too_many_arguments)]
    pub fn copy_rows(
        &self,
        src: &(impl DevicePtr<f32> + ?Sized),
        dst: &mut (impl DevicePtrMut<f32> + ?Sized),
        outer: usize,
        row_len: usize,
        src_stride: usize,
        src_off: usize,
        dst_stride: usize,
        dst_off: usize,
    ) -> Result<()> {
        let n = outer * row_len;
        if n == 0 {
            return Ok(());
        }
        let src_need = (outer - 1) * src_stride + src_off + row_len;
        let dst_need = (outer - 1) * dst_stride + dst_off + row_len;
        let args = [
            Arg::Ptr(ptr_in(&self.stream, "copy_rows", "src", src, src_need)?),
            Arg::Ptr(ptr_out(&self.stream, "copy_rows", "dst", dst, dst_need)?),
            Arg::I64(i64_of(outer)),
            Arg::I64(i64_of(row_len)),
            Arg::I64(i64_of(src_stride)),
            Arg::I64(i64_of(src_off)),
            Arg::I64(i64_of(dst_stride)),
            Arg::I64(i64_of(dst_off)),
        ];
        self.launch("copy_rows", self.elem_cfg(n), &args)
    }

    /// `y = x[..., start..start+len, ...]` along `axis` (as `ops::concat::slice`).
    pub fn slice(
        &self,
        x: &(impl DevicePtr<f32> + ?Sized),
        y: &mut (impl DevicePtrMut<f32> + ?Sized),
        shape: &[usize],
        axis: usize,
        start: usize,
        len: usize,
    ) -> Result<()> {
        if axis >= shape.len() || start + len > shape[axis] {
            return Err(Error::shape("slice", shape, &[axis, start, len], "slice out of range"));
        }
        let (outer, n, inner) = split(shape, axis);
        self.copy_rows(x, y, outer, len * inner, n * inner, start * inner, len * inner, 0)
    }

    /// Zeros of `full` shape with `g` written at `start..` along `axis` (as `ops::concat::unslice`).
    pub fn unslice(
        &self,
        g: &(impl DevicePtr<f32> + ?Sized),
        y: &mut (impl DevicePtrMut<f32> + ?Sized),
        full: &[usize],
        axis: usize,
        start: usize,
        len: usize,
    ) -> Result<()> {
        if axis >= full.len() || start + len > full[axis] {
            return Err(Error::shape("unslice", full, &[axis, start, len], "slice out of range"));
        }
        let (outer, n, inner) = split(full, axis);
        self.fill(y, outer * n * inner, 0.0)?;
        self.copy_rows(g, y, outer, len * inner, len * inner, 0, n * inner, start * inner)
    }

    /// Lay the `parts` (each `(data, shape)`) end to end along `axis` into `y` (as
    /// `ops::concat::concat`); shapes must agree except along `axis`.
    pub fn concat(
        &self,
        parts: &[(&dyn DevicePtr<f32>, &[usize])],
        y: &mut (impl DevicePtrMut<f32> + ?Sized),
        axis: usize,
    ) -> Result<()> {
        let Some(&(_, first)) = parts.first() else {
            return Err(Error::config("concat of no tensors"));
        };
        if axis >= first.len() {
            return Err(Error::shape("concat", first, &[axis], "axis out of range"));
        }
        let total: usize = parts.iter().map(|(_, s)| s.get(axis).copied().unwrap_or(0)).sum();
        for &(_, s) in parts {
            let ok = s.len() == first.len() && s.iter().zip(first).enumerate().all(|(d, (a, b))| d == axis || a == b);
            if !ok {
                return Err(Error::shape(
                    "concat",
                    first,
                    s,
                    format!("shapes must match except along axis {axis}"),
                ));
            }
        }
        let (outer, _, inner) = split(first, axis);
        let mut off = 0;
        for &(x, s) in parts {
            let len = s[axis];
            self.copy_rows(x, y, outer, len * inner, len * inner, 0, total * inner, off * inner)?;
            off += len;
        }
        Ok(())
    }

    /// `out[0] = scale · Σ x[..n]` (one block, f64 accumulation).
    pub fn sum_all(
        &self,
        x: &(impl DevicePtr<f32> + ?Sized),
        out: &mut (impl DevicePtrMut<f32> + ?Sized),
        n: usize,
        scale: f64,
    ) -> Result<()> {
        let args = [
            Arg::Ptr(ptr_in(&self.stream, "sum_all", "x", x, n)?),
            Arg::Ptr(ptr_out(&self.stream, "sum_all", "out", out, 1)?),
            Arg::I64(i64_of(n)),
            Arg::F64(scale),
        ];
        let cfg = LaunchConfig {
            grid_dim: (1, 1, 1),
            block_dim: (1024, 1, 1),
            shared_mem_bytes: 0,
        };
        self.launch("sum_all", cfg, &args)
    }

    // ---- cross_entropy.cu ---------------------------------------------------------------------

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
        let pz = ptr_in(&self.stream, op, "z", z, rows * c)?;
        let pl = ptr_in(&self.stream, op, "labels", labels, rows)?;
        let pp = ptr_out(&self.stream, op, "p", p, rows * c)?;
        let mut row_loss = self.alloc(rows)?;
        let prl = ptr_out(&self.stream, op, "row_loss", &mut row_loss, rows)?;
        if rows > 0 {
            self.launch(
                "cross_entropy_fwd",
                self.warp_rows_cfg(rows),
                &[
                    Arg::Ptr(pz),
                    Arg::Ptr(pl),
                    Arg::Ptr(pp),
                    Arg::Ptr(prl),
                    Arg::I64(i64_of(rows)),
                    Arg::I32(i32_of("c", c)?),
                    Arg::F32(smoothing),
                ],
            )?;
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
        let op = "cross_entropy_bwd";
        check_smoothing(smoothing)?;
        let args = [
            Arg::Ptr(ptr_in(&self.stream, op, "p", p, rows * c)?),
            Arg::Ptr(ptr_in(&self.stream, op, "labels", labels, rows)?),
            Arg::Ptr(ptr_out(&self.stream, op, "dz", dz, rows * c)?),
            Arg::I64(i64_of(rows)),
            Arg::I32(i32_of("c", c)?),
            Arg::Ptr(ptr_in(&self.stream, op, "g", g, 1)?),
            Arg::F32(smoothing),
        ];
        if rows * c == 0 {
            return Ok(());
        }
        self.launch("cross_entropy_bwd", self.elem_cfg(rows * c), &args)
    }

    // ---- dropout.cu ---------------------------------------------------------------------------

    fn dropout(
        &self,
        name: &str,
        x: &(impl DevicePtr<f32> + ?Sized),
        y: &mut (impl DevicePtrMut<f32> + ?Sized),
        n: usize,
        p: f32,
        seed: u64,
    ) -> Result<()> {
        let scale = Self::dropout_scale(n, p)?;
        let args = [
            Arg::Ptr(ptr_in(&self.stream, name, "x", x, n)?),
            Arg::Ptr(ptr_out(&self.stream, name, "y", y, n)?),
            Arg::I64(i64_of(n)),
            Arg::F32(p),
            Arg::F32(scale),
            Arg::U64(seed),
        ];
        self.launch_elementwise(name, n, &args)
    }

    /// Checks `p` and `n` for a dropout mask and returns `1/(1 − p)`, exactly the CPU's f32 value.
    fn dropout_scale(n: usize, p: f32) -> Result<f32> {
        if !(0.0..1.0).contains(&p) {
            return Err(Error::config(format!("dropout probability must be in [0, 1), got {p}")));
        }
        if n > u32::MAX as usize {
            return Err(Error::shape("dropout", &[n], &[], "more than 2^32 elements"));
        }
        Ok(1.0f32 / (1.0 - p))
    }

    /// `y = r + x ⊙ mask(seed) / (1 − p)`: the residual add fused with dropout
    /// (`ops::dropout::add_masked`, bit for bit). Its backward is `dr = G`, `dx = dropout_bwd(G)`.
    #[allow(clippy::too_many_arguments)]
    pub fn dropout_add_fwd(
        &self,
        r: &(impl DevicePtr<f32> + ?Sized),
        x: &(impl DevicePtr<f32> + ?Sized),
        y: &mut (impl DevicePtrMut<f32> + ?Sized),
        n: usize,
        p: f32,
        seed: u64,
    ) -> Result<()> {
        let name = "dropout_add_fwd";
        let scale = Self::dropout_scale(n, p)?;
        let args = [
            Arg::Ptr(ptr_in(&self.stream, name, "r", r, n)?),
            Arg::Ptr(ptr_in(&self.stream, name, "x", x, n)?),
            Arg::Ptr(ptr_out(&self.stream, name, "y", y, n)?),
            Arg::I64(i64_of(n)),
            Arg::F32(p),
            Arg::F32(scale),
            Arg::U64(seed),
        ];
        self.launch_elementwise(name, n, &args)
    }

    /// `y = x ⊙ mask(seed) / (1 − p)`, the same mask as `ops::dropout::apply_mask` bit for bit.
    pub fn dropout_fwd(
        &self,
        x: &(impl DevicePtr<f32> + ?Sized),
        y: &mut (impl DevicePtrMut<f32> + ?Sized),
        n: usize,
        p: f32,
        seed: u64,
    ) -> Result<()> {
        self.dropout("dropout_fwd", x, y, n, p, seed)
    }

    /// `dx = G ⊙ mask(seed) / (1 − p)` (the forward's mask, recomputed).
    pub fn dropout_bwd(
        &self,
        g: &(impl DevicePtr<f32> + ?Sized),
        dx: &mut (impl DevicePtrMut<f32> + ?Sized),
        n: usize,
        p: f32,
        seed: u64,
    ) -> Result<()> {
        self.dropout("dropout_bwd", g, dx, n, p, seed)
    }

    // ---- clip.cu ------------------------------------------------------------------------------

    /// Blocks [`CudaDevice::sum_squares_partials`] uses for `n` elements.
    pub fn sum_squares_blocks(&self, n: usize) -> usize {
        (self.grid_for(n, ELEM_BLOCK as usize * 8) as usize)
            .min(self.sm_count as usize * 4)
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
        let args = [
            Arg::Ptr(ptr_in(&self.stream, "sum_squares", "x", x, n)?),
            Arg::Ptr(ptr_out(&self.stream, "sum_squares", "partial", partial, blocks)?),
            Arg::I64(i64_of(n)),
        ];
        let cfg = LaunchConfig {
            grid_dim: (blocks as u32, 1, 1),
            block_dim: (ELEM_BLOCK, 1, 1),
            shared_mem_bytes: 0,
        };
        self.launch("sum_squares_blocks", cfg, &args)
    }

    /// `y[..n] *= s` in place (clipping by norm).
    pub fn scale_inplace(&self, y: &mut (impl DevicePtrMut<f32> + ?Sized), n: usize, s: f32) -> Result<()> {
        let args = [
            Arg::Ptr(ptr_out(&self.stream, "scale_inplace", "y", y, n)?),
            Arg::I64(i64_of(n)),
            Arg::F32(s),
        ];
        self.launch_elementwise("scale_inplace", n, &args)
    }

    /// `y[..n] = clamp(y, −c, c)` in place (clipping by value; NaN stays NaN).
    pub fn clamp_inplace(&self, y: &mut (impl DevicePtrMut<f32> + ?Sized), n: usize, c: f32) -> Result<()> {
        let args = [
            Arg::Ptr(ptr_out(&self.stream, "clamp_inplace", "y", y, n)?),
            Arg::I64(i64_of(n)),
            Arg::F32(c),
        ];
        self.launch_elementwise("clamp_inplace", n, &args)
    }

    // ---- adam.cu ------------------------------------------------------------------------------

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
        let args = [
            Arg::Ptr(ptr_out(&self.stream, "adam_step", "p", p, n)?),
            Arg::Ptr(ptr_in(&self.stream, "adam_step", "g", g, n)?),
            Arg::Ptr(ptr_out(&self.stream, "adam_step", "m", m, n)?),
            Arg::Ptr(ptr_out(&self.stream, "adam_step", "v", v, n)?),
            Arg::I64(i64_of(n)),
            Arg::F32(k.l2),
            Arg::F32(k.decay_mul),
            Arg::F32(k.one_minus_b1),
            Arg::F32(k.b2),
            Arg::F32(k.one_minus_b2),
            Arg::F32(k.bc2_sqrt),
            Arg::F32(k.eps),
            Arg::F32(k.step_size),
        ];
        self.launch_elementwise("adam_step", n, &args)
    }
}

// ---------------------------------------------------------------------------------------------
// Shape helpers (the same rules as the CPU ops)
// ---------------------------------------------------------------------------------------------

fn check_smoothing(s: f32) -> Result<()> {
    if (0.0..1.0).contains(&s) {
        Ok(())
    } else {
        Err(Error::config(format!("label smoothing must be in [0, 1), got {s}")))
    }
}

fn contiguous_strides(shape: &[usize]) -> Vec<usize> {
    let mut s = vec![1; shape.len()];
    for d in (0..shape.len().saturating_sub(1)).rev() {
        s[d] = s[d + 1] * shape[d + 1];
    }
    s
}

/// (outer, axis length, inner) of a shape around `axis`.
fn split(shape: &[usize], axis: usize) -> (usize, usize, usize) {
    (
        shape[..axis].iter().product(),
        shape[axis],
        shape[axis + 1..].iter().product(),
    )
}

/// If `b` broadcasts only over leading dimensions of `a`, the length of the repeated block
/// (`ops::add`'s rule).
fn leading_broadcast_block(a: &[usize], b: &[usize]) -> Option<usize> {
    let b_trim: Vec<usize> = b.iter().copied().skip_while(|&d| d == 1).collect();
    a.ends_with(&b_trim).then(|| b_trim.iter().product())
}

/// The kernel's broadcast description, with `ops::add`'s checks.
fn bcast_arg(op: &'static str, a: &[usize], b: &[usize]) -> Result<BcastArg> {
    if b.len() > a.len() {
        return Err(Error::shape(op, a, b, "b has more dimensions than a"));
    }
    if a.len() > MAX_RANK {
        return Err(Error::shape(
            op,
            a,
            b,
            format!("the CUDA kernels take at most {MAX_RANK} dimensions"),
        ));
    }
    let off = a.len() - b.len();
    let mut s = BcastArg {
        rank: a.len() as i32,
        ..Default::default()
    };
    let a_strides = contiguous_strides(a);
    let mut bs = 1usize;
    for d in (0..a.len()).rev() {
        let bd = if d >= off { b[d - off] } else { 1 };
        if bd != a[d] && bd != 1 {
            return Err(Error::shape(op, a, b, "each dimension of b must be 1 or equal to a's"));
        }
        s.a_shape[d] = a[d] as i64;
        s.a_stride[d] = a_strides[d] as i64;
        s.b_shape[d] = bd as i64;
        s.b_stride[d] = if bd == 1 { 0 } else { bs as i64 };
        bs *= bd;
    }
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::optim::{AdamConfig, DecayMode};

    #[test]
    fn size_classes_round_up_with_bounded_waste() {
        assert_eq!(size_class(0), 256);
        assert_eq!(size_class(1), 256);
        assert_eq!(size_class(257), 512);
        for len in [4097usize, 10_000, 65_537, 1 << 20, (1 << 20) + 1, 50_000_000] {
            let c = size_class(len);
            assert!(c >= len && (c - len) * 8 <= len, "{len} → {c}");
        }
    }

    #[test]
    fn broadcast_descriptions() {
        // Position embedding [1, T, D] onto [B, T, D]: a leading broadcast (block T·D).
        assert_eq!(leading_broadcast_block(&[2, 3, 4], &[1, 3, 4]), Some(12));
        assert_eq!(leading_broadcast_block(&[2, 3, 4], &[4]), Some(4));
        // [B, 1, D] onto [B, T, D] is not: it needs the general kernel.
        assert_eq!(leading_broadcast_block(&[2, 3, 4], &[2, 1, 4]), None);
        let s = bcast_arg("t", &[2, 3, 4], &[2, 1, 4]).unwrap();
        assert_eq!(&s.b_shape[..3], &[2, 1, 4]);
        assert_eq!(&s.b_stride[..3], &[4, 0, 1]);
        assert_eq!(&s.a_stride[..3], &[12, 4, 1]);
        assert!(bcast_arg("t", &[2, 3], &[3, 3]).is_err());
        assert!(bcast_arg("t", &[3], &[2, 3]).is_err());
    }

    #[test]
    fn kernel_arg_structs_match_the_cuda_layout() {
        // struct VcBcast { int; int; long long[8] × 4 } and VcPerm { int; int; long long[8] × 2 }.
        assert_eq!(std::mem::size_of::<BcastArg>(), 8 + 4 * 64);
        assert_eq!(std::mem::size_of::<PermArg>(), 8 + 2 * 64);
        assert_eq!(std::mem::align_of::<BcastArg>(), 8);
    }

    #[test]
    fn adam_coeffs_follow_the_cpu() {
        let cfg = AdamConfig {
            lr: 0.01,
            betas: (0.9, 0.999),
            eps: 1e-8,
            weight_decay: 0.05,
        };
        let k = AdamCoeffs::new(&cfg, DecayMode::Decoupled, true, 1);
        assert_eq!(k.l2, 0.0);
        assert_eq!(k.decay_mul, (1.0 - 0.01 * 0.05) as f32);
        assert_eq!(k.step_size, (0.01 / (1.0 - 0.9f64)) as f32);
        let k = AdamCoeffs::new(&cfg, DecayMode::L2, false, 3);
        assert_eq!((k.l2, k.decay_mul), (0.0, 1.0));
        assert_eq!(k.bc2_sqrt, (1.0 - 0.999f64.powf(3.0)).sqrt() as f32);
    }

    #[test]
    fn no_gpu_is_an_error_not_a_panic() {
        // On a machine without a GPU this must return Err; with one, Ok. Either way no panic.
        match cuda_available() {
            Ok(()) => assert!(CudaDevice::global().is_ok()),
            Err(why) => {
                assert!(!why.is_empty());
                let e = CudaDevice::global().unwrap_err().to_string();
                assert!(e.starts_with("device: "), "{e}");
            }
        }
    }
}
