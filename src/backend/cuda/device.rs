//! The CUDA device: context, one stream, the kernels (compiled once per process for this GPU and
//! loaded as CUBIN), a caching allocator, and the one generic launch every wrapper goes through.
//! The typed launch wrappers live beside their kernels' math, one file per `kernels/X.cu`
//! (`matmul.rs`, `softmax.rs`, ...), each an `impl CudaDevice` block.
//!
//! # Streams and safety
//! Everything runs on one stream, so work is ordered by submission: a buffer freed by the host
//! and handed out again can only be written by work queued after every earlier use of it. That
//! is why cudarc's per-buffer event tracking (for multi-stream use) is switched off, and why the
//! allocator may recycle a buffer the moment its [`CudaBuffer`] is dropped, without waiting for
//! the GPU. Downloads synchronise the stream.
//!
//! # Launching
//! A wrapper takes device slices (a [`CudaBuffer`], a cudarc `CudaSlice`, or a view of either)
//! and sizes, and lists the kernel's arguments in its parameter order with [`Args`]:
//!
//! ```text
//! self.args("gelu_fwd")
//!     .input("x", x, n)        // a slice the kernel reads: at least n elements, or an error
//!     .output("y", y, n)       // one it writes
//!     .size(n)                 // a size, as the kernel's `long long`
//!     .arg(kind.code())        // any other scalar, as is
//!     .launch_elementwise("gelu_fwd", n)
//! ```
//!
//! A slice too short for the sizes would be an out-of-bounds GPU access, so it is an `Error`
//! that names the op and the argument, and nothing is launched. The geometry helpers
//! ([`CudaDevice::elem_cfg`] and its siblings) give the launch shapes the kernel files document.
//! Nothing waits for the GPU except downloads.

use super::nvrtc;
use crate::error::{Error, Result};
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

/// One kernel argument, by value; pointers are raw device addresses (what a `float*` parameter
/// receives).
#[derive(Clone, Debug, PartialEq)]
pub(super) enum Arg {
    Ptr(u64),
    I32(i32),
    I64(i64),
    F32(f32),
    F64(f64),
    U64(u64),
    /// A `#[repr(C)]` struct passed by value, as its bytes in 8-byte words. The launch hands the
    /// driver the address of the first word, and the driver copies the parameter's size from it.
    Struct(Vec<u64>),
}

impl From<i32> for Arg {
    fn from(v: i32) -> Arg {
        Arg::I32(v)
    }
}
impl From<i64> for Arg {
    fn from(v: i64) -> Arg {
        Arg::I64(v)
    }
}
impl From<f32> for Arg {
    fn from(v: f32) -> Arg {
        Arg::F32(v)
    }
}
impl From<f64> for Arg {
    fn from(v: f64) -> Arg {
        Arg::F64(v)
    }
}
impl From<u64> for Arg {
    fn from(v: u64) -> Arg {
        Arg::U64(v)
    }
}

impl Arg {
    /// A struct argument: the bytes of `v`, zero-padded to whole words.
    fn of_struct<T: DeviceRepr + Copy>(v: &T) -> Arg {
        let size = std::mem::size_of::<T>();
        let mut words = vec![0u64; size.div_ceil(8).max(1)];
        // SAFETY: `T: DeviceRepr` is a plain-data type the GPU reads as bytes; `words` holds at
        // least `size` bytes, and the two do not overlap.
        unsafe { std::ptr::copy_nonoverlapping(v as *const T as *const u8, words.as_mut_ptr() as *mut u8, size) };
        Arg::Struct(words)
    }
}

/// The arguments of one launch, in the kernel's parameter order (see the module doc). Each slice
/// is checked against the length its sizes need as it is added, and each size against the
/// kernel's integer type; the first failure is kept, and [`Args::launch`] (or [`Args::check`])
/// returns it instead of queueing anything.
#[must_use = "an argument list does nothing until it is launched or checked"]
pub(super) struct Args<'d> {
    dev: &'d CudaDevice,
    op: &'d str,
    list: Vec<Arg>,
    error: Option<Error>,
}

impl<'d> Args<'d> {
    fn push(mut self, arg: Result<Arg>) -> Self {
        match arg {
            Ok(a) => self.list.push(a),
            Err(e) => {
                self.error.get_or_insert(e);
            }
        }
        self
    }

    /// A slice the kernel reads, which must hold at least `need` elements.
    pub(super) fn input<T>(self, what: &str, s: &(impl DevicePtr<T> + ?Sized), need: usize) -> Self {
        let p = self.dev.ptr_in(self.op, what, s, need).map(Arg::Ptr);
        self.push(p)
    }

    /// A slice the kernel writes (or reads and writes), which must hold at least `need` elements.
    pub(super) fn output<T>(self, what: &str, s: &mut (impl DevicePtrMut<T> + ?Sized), need: usize) -> Self {
        let p = self.dev.ptr_out(self.op, what, s, need).map(Arg::Ptr);
        self.push(p)
    }

    /// A device address already checked (an offset into a slice from [`CudaDevice::ptr_in`]).
    pub(super) fn ptr(self, p: u64) -> Self {
        self.push(Ok(Arg::Ptr(p)))
    }

    /// A size or count, as the kernel's 64-bit `long long`.
    pub(super) fn size(self, v: usize) -> Self {
        // usize → i64 cannot overflow for any buffer that fits in memory.
        self.push(Ok(Arg::I64(v as i64)))
    }

    /// A size the kernel takes as a 32-bit `int`: an error when it does not fit.
    pub(super) fn int(self, what: &str, v: usize) -> Self {
        let a = i32_of(what, v).map(Arg::I32);
        self.push(a)
    }

    /// Any other scalar (a flag, a scale, a seed), as it is.
    pub(super) fn arg(self, v: impl Into<Arg>) -> Self {
        self.push(Ok(v.into()))
    }

    /// A `#[repr(C)]` struct the kernel takes by value.
    pub(super) fn by_value<T: DeviceRepr + Copy>(self, v: &T) -> Self {
        self.push(Ok(Arg::of_struct(v)))
    }

    /// A check made outside the builder failed (a family's own rule, e.g. the dropout
    /// probability): kept like the others, the first failure being the one returned.
    pub(super) fn fail(self, e: Error) -> Self {
        self.push(Err(e))
    }

    /// The first failed check, if any; for a wrapper with nothing to launch.
    pub(super) fn check(self) -> Result<()> {
        self.checked().map(drop)
    }

    /// These arguments once every check so far has passed, else the first failure: for a wrapper
    /// that checks all its slices before it launches anything.
    pub(super) fn checked(self) -> Result<Self> {
        match self.error {
            Some(e) => Err(e),
            None => Ok(self),
        }
    }

    /// Queue `kernel` with these arguments and geometry, once every check has passed.
    pub(super) fn launch(self, kernel: &str, cfg: LaunchConfig) -> Result<()> {
        let args = self.checked()?;
        args.dev.launch(kernel, cfg, &args.list)
    }

    /// Queue an element-wise kernel over `n` elements ([`CudaDevice::elem_cfg`]); nothing to
    /// launch for `n = 0`, but the checks still apply.
    pub(super) fn launch_elementwise(self, kernel: &str, n: usize) -> Result<()> {
        if n == 0 {
            return self.check();
        }
        let cfg = self.dev.elem_cfg(n);
        self.launch(kernel, cfg)
    }
}

fn i32_of(what: &str, v: usize) -> Result<i32> {
    i32::try_from(v).map_err(|_| Error::Device(format!("{what} = {v} does not fit the kernel's 32-bit size")))
}

/// Threads per block of the element-wise kernels.
pub(super) const ELEM_BLOCK: u32 = 256;
/// Threads per block of the warp-per-row kernels (4 rows per block).
const ROW_BLOCK: u32 = 128;
/// Threads per block of the block-per-row kernels.
const BLOCK_ROW_THREADS: u32 = 256;

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
        if self.pool.exact {
            // Under the simulator: the buffer's old contents are not its new owner's data, so a
            // read before the first write is initcheck's to report, as for a fresh allocation.
            if let Some(h) = super::sim::hooks() {
                let (p, _guard) = slice.device_ptr(&self.stream);
                h.mark_uninitialized(p, class * 4);
            }
        }
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

    /// Start the argument list of a launch; `op` names the wrapper in error messages.
    pub(super) fn args<'d>(&'d self, op: &'d str) -> Args<'d> {
        Args {
            dev: self,
            op,
            list: Vec::with_capacity(16),
            error: None,
        }
    }

    /// A read-only slice's address, after checking it holds at least `need` elements.
    pub(super) fn ptr_in<T>(&self, op: &str, what: &str, s: &(impl DevicePtr<T> + ?Sized), need: usize) -> Result<u64> {
        check_len(op, what, s.len(), need)?;
        // No events are tracked (one stream), so the guard records nothing when dropped.
        let (p, _guard) = s.device_ptr(&self.stream);
        Ok(p)
    }

    /// A writable slice's address, after checking it holds at least `need` elements.
    pub(super) fn ptr_out<T>(
        &self,
        op: &str,
        what: &str,
        s: &mut (impl DevicePtrMut<T> + ?Sized),
        need: usize,
    ) -> Result<u64> {
        check_len(op, what, s.len(), need)?;
        let (p, _guard) = s.device_ptr_mut(&self.stream);
        Ok(p)
    }

    /// The one launch: look the kernel up and queue it on the stream with `args`.
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
                Arg::Struct(words) => b.arg(&words[0]),
            };
        }
        unsafe { b.launch(cfg) }.map_err(|e| Error::Device(format!("launching {name}: {e}")))?;
        Ok(())
    }

    // ---- geometry -----------------------------------------------------------------------------

    /// Grid for a grid-stride loop over `units` work items of `per_block` each: enough blocks to
    /// fill the GPU several times over, no more (the loop covers the rest).
    pub(super) fn grid_for(&self, units: usize, per_block: usize) -> u32 {
        let want = units.div_ceil(per_block.max(1)).max(1);
        want.min(self.sm_count as usize * 32).min(i32::MAX as usize) as u32
    }

    /// One thread per element, [`ELEM_BLOCK`] to a block, grid-stride.
    pub(super) fn elem_cfg(&self, n: usize) -> LaunchConfig {
        LaunchConfig {
            grid_dim: (self.grid_for(n, ELEM_BLOCK as usize), 1, 1),
            block_dim: (ELEM_BLOCK, 1, 1),
            shared_mem_bytes: 0,
        }
    }

    /// One warp per row, 4 rows to a block, grid-stride.
    pub(super) fn warp_rows_cfg(&self, rows: usize) -> LaunchConfig {
        let rows_per_block = (ROW_BLOCK / 32) as usize;
        LaunchConfig {
            grid_dim: (self.grid_for(rows, rows_per_block), 1, 1),
            block_dim: (ROW_BLOCK, 1, 1),
            shared_mem_bytes: 0,
        }
    }

    /// One block per row, grid-stride.
    pub(super) fn block_rows_cfg(&self, rows: usize) -> LaunchConfig {
        LaunchConfig {
            grid_dim: (self.grid_for(rows, 1), 1, 1),
            block_dim: (BLOCK_ROW_THREADS, 1, 1),
            shared_mem_bytes: 0,
        }
    }
}

fn check_len(op: &str, what: &str, have: usize, need: usize) -> Result<()> {
    if have < need {
        return Err(Error::Device(format!(
            "{op}: `{what}` has {have} elements, the sizes need {need}"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn struct_arguments_keep_their_bytes() {
        #[repr(C)]
        #[derive(Clone, Copy)]
        struct S {
            a: i32,
            b: i32,
            c: i64,
            d: f32,
        }
        unsafe impl DeviceRepr for S {}
        let s = S {
            a: -1,
            b: 2,
            c: 1 << 40,
            d: 1.5,
        };
        let Arg::Struct(words) = Arg::of_struct(&s) else {
            panic!("a struct argument")
        };
        // 24 bytes (the f32 padded to the struct's 8-byte alignment): three words.
        assert_eq!(words.len(), std::mem::size_of::<S>() / 8);
        let bytes: Vec<u8> = words.iter().flat_map(|w| w.to_ne_bytes()).collect();
        assert_eq!(&bytes[0..4], &(-1i32).to_ne_bytes());
        assert_eq!(&bytes[4..8], &2i32.to_ne_bytes());
        assert_eq!(&bytes[8..16], &(1i64 << 40).to_ne_bytes());
        assert_eq!(&bytes[16..20], &1.5f32.to_ne_bytes());
    }

    #[test]
    fn sizes_beyond_32_bits_are_errors() {
        assert_eq!(i32_of("n", 7).unwrap(), 7);
        let e = i32_of("n", 1 << 31).unwrap_err().to_string();
        assert!(e.contains("n = 2147483648 does not fit"), "{e}");
        let e = check_len("op", "x", 3, 4).unwrap_err().to_string();
        assert!(e.contains("op: `x` has 3 elements, the sizes need 4"), "{e}");
        assert!(check_len("op", "x", 4, 4).is_ok());
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
