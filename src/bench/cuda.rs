//! The GPU cases of `vitcore bench kernels --device cuda`: the launch wrappers of
//! [`CudaDevice`] at the same shapes as the CPU cases, timed with CUDA events, compared with a
//! device-to-device copy (memory-bound kernels) or with cuBLAS's SGEMM on the same shape and
//! layout (matrix products), and validated after timing against the CPU op on the same inputs:
//! `|gpu − cpu| ≤ rtol · max|cpu|` over the whole output, `rtol = max(1e-5, 2·√k·ε)` for an
//! output that sums `k` terms (two correct f32 sums in different orders differ by about
//! `√k·ε` relative: rounding errors add up as a random walk).
//!
//! cuBLAS is loaded at run time (cudarc's `dynamic-loading`), used here only, as a yardstick:
//! the engine never calls it. Its products are validated too (a wrongly specified call would be
//! a yardstick for another problem). Where the library is missing, products get no ratio.
//!
//! # Not verified on a GPU
//! This file was written and compiled on a machine without a GPU; it has never run. The parts
//! most likely to need a fix on first contact: the cuBLAS row-major mapping in [`cublas_gemm`]
//! (validated at run time, so a mistake shows as an INVALID row, not as a wrong ratio), and the
//! tolerances above.

use super::check::{self, Checker, GemmDims, EPS};
use super::cpu::{bench_adam_config, layernorm_bwd_set, shape_only, softmax_bwd_set, uniform};
use super::shapes::{self, GemmProduct, CLASSES, DROPOUT, DROPOUT_SEED, IMAGE, LN_EPS, SMOOTHING};
use super::{
    git_commit, input_sets, say, select, table_header, table_row, BenchOptions, Bound, CaseInfo, DeviceInfo, Phase,
    Plan, Record, Report, Timing, Validation, Yardstick,
};
use crate::autograd::{Graph, ParamStore};
use crate::backend::cuda::{AdamCoeffs, CudaBuffer, CudaDevice, CudaSlice, MatmulKernel, RowKernel};
use crate::error::{Error, Result};
use crate::ops::{add, cross_entropy, dropout, gelu, layernorm, linear, matmul, patchify, softmax, GeluKind};
use crate::optim::{Adam, DecayMode};
use crate::rng::derive_seed;
use crate::tensor::{numel, Tensor};
use cudarc::cublas::{sys::cublasOperation_t, CudaBlas, Gemm, GemmConfig, StridedBatchedConfig};
use cudarc::driver::{sys, CudaEvent};

const F32: usize = 4;

/// The kernels of the CPU engine that have no CUDA kernel yet (a fused CPU op).
const NOT_ON_GPU: [&str; 1] = ["attention"];

// ---------------------------------------------------------------------------------------------
// Timing with CUDA events
// ---------------------------------------------------------------------------------------------

fn driver_err(what: &'static str) -> impl Fn(cudarc::driver::DriverError) -> Error {
    move |e| Error::Device(format!("benchmark: {what}: {e}"))
}

/// An event that records a timestamp (cudarc's default event does not time).
fn timing_event(dev: &CudaDevice) -> Result<CudaEvent> {
    dev.context()
        .new_event(Some(sys::CUevent_flags::CU_EVENT_DEFAULT))
        .map_err(driver_err("creating a timing event"))
}

/// Warm up, then time runs rotating over `sets` input sets; `launch(set)` queues one run.
///
/// Every timed run sits between its own pair of events, and all runs are queued before the
/// host waits once, so the GPU goes from one run to the next without waiting for the host; the
/// median is over the per-run times. (A kernel shorter than the host's launch time, a few µs,
/// is measured with the gap in front of it.)
fn measure_gpu(
    dev: &CudaDevice,
    plan: &Plan,
    sets: usize,
    mut launch: impl FnMut(usize) -> Result<()>,
) -> Result<Timing> {
    let sets = sets.max(1);
    let stream = dev.stream();
    let (w0, w1) = (timing_event(dev)?, timing_event(dev)?);
    let (mut spent, mut per_run, mut rounds) = (0.0, 0.0, 0);
    // Warm-up: rounds of one run per set, each round timed as a whole.
    while rounds == 0 || (spent < plan.warmup_s && rounds < 100) {
        w0.record(stream).map_err(driver_err("recording an event"))?;
        for s in 0..sets {
            launch(s)?;
        }
        w1.record(stream).map_err(driver_err("recording an event"))?;
        let s = w0.elapsed_ms(&w1).map_err(driver_err("reading an event"))? as f64 / 1e3;
        spent += s;
        per_run = s / sets as f64;
        rounds += 1;
    }
    dev.synchronize()?; // a kernel's error surfaces here, not in the timings
    let runs = plan.runs_for(per_run);
    let starts = (0..runs).map(|_| timing_event(dev)).collect::<Result<Vec<_>>>()?;
    let ends = (0..runs).map(|_| timing_event(dev)).collect::<Result<Vec<_>>>()?;
    for (r, (a, b)) in starts.iter().zip(&ends).enumerate() {
        a.record(stream).map_err(driver_err("recording an event"))?;
        launch(r % sets)?;
        b.record(stream).map_err(driver_err("recording an event"))?;
    }
    dev.synchronize()?;
    let samples = starts
        .iter()
        .zip(&ends)
        .map(|(a, b)| Ok(a.elapsed_ms(b).map_err(driver_err("reading an event"))? as f64 / 1e3))
        .collect::<Result<Vec<f64>>>()?;
    Timing::from_samples(samples, sets)
}

// ---------------------------------------------------------------------------------------------
// cuBLAS
// ---------------------------------------------------------------------------------------------

/// A cuBLAS handle on the device's stream, or why there is none (library missing, or it failed
/// to start). cudarc panics when it cannot load a library, so it is probed first.
fn open_cublas(dev: &CudaDevice) -> std::result::Result<CudaBlas, String> {
    let stream = dev.stream().clone();
    std::panic::catch_unwind(move || {
        if !unsafe { cudarc::cublas::sys::is_culib_present() } {
            return Err("the cuBLAS library (libcublas.so) could not be loaded".to_string());
        }
        CudaBlas::new(stream).map_err(|e| format!("cuBLAS did not start: {e}"))
    })
    .unwrap_or_else(|_| Err("loading cuBLAS panicked (an incompatible library?)".to_string()))
}

/// `C = op(A)·op(B)` for row-major A, B, C (as `ops::matmul`) through column-major cuBLAS:
/// row-major C `[m, n]` is column-major Cᵀ, and `Cᵀ = op(B)ᵀ·op(A)ᵀ`, so cuBLAS multiplies B by
/// A with the sizes swapped. A row-major matrix stored `[r, c]` reads as its transpose
/// column-major with leading dimension `c`: B (stored `[k, n]`, or `[n, k]` when `tb`) is
/// `op(B)ᵀ` as it stands unless `tb`, likewise A.
fn cublas_gemm(blas: &CudaBlas, d: GemmDims, a: &CudaBuffer, b: &CudaBuffer, c: &mut CudaBuffer) -> Result<()> {
    let op = |t: bool| {
        if t {
            cublasOperation_t::CUBLAS_OP_T
        } else {
            cublasOperation_t::CUBLAS_OP_N
        }
    };
    let int = |what: &str, v: usize| {
        i32::try_from(v).map_err(|_| Error::Device(format!("cuBLAS: {what} = {v} does not fit an int")))
    };
    for (what, have, need) in [
        ("A", a.len(), d.batch * d.m * d.k),
        ("B", b.len(), d.batch * d.k * d.n),
        ("C", c.len(), d.batch * d.m * d.n),
    ] {
        if have < need {
            return Err(Error::Device(format!(
                "cuBLAS: {what} has {have} elements, the sizes need {need}"
            )));
        }
    }
    let gemm = GemmConfig::<f32> {
        transa: op(d.tb),
        transb: op(d.ta),
        m: int("n", d.n)?,
        n: int("m", d.m)?,
        k: int("k", d.k)?,
        alpha: 1.0,
        lda: int("ldb", if d.tb { d.k } else { d.n })?,
        ldb: int("lda", if d.ta { d.m } else { d.k })?,
        beta: 0.0,
        ldc: int("n", d.n)?,
    };
    // SAFETY: the lengths were checked against the sizes just above.
    let r = unsafe {
        if d.batch == 1 {
            blas.gemm(gemm, b, a, c)
        } else {
            let cfg = StridedBatchedConfig {
                gemm,
                batch_size: int("batch", d.batch)?,
                stride_a: (d.k * d.n) as i64,
                stride_b: (d.m * d.k) as i64,
                stride_c: (d.m * d.n) as i64,
            };
            blas.gemm_strided_batched(cfg, b, a, c)
        }
    };
    r.map_err(|e| Error::Device(format!("cuBLAS sgemm: {e}")))
}

// ---------------------------------------------------------------------------------------------
// Cases
// ---------------------------------------------------------------------------------------------

/// The device buffers one launch works on.
struct Bufs<'a> {
    inputs: &'a mut [CudaBuffer],
    outputs: &'a mut [CudaBuffer],
    labels: Option<&'a CudaSlice<u32>>,
}

/// Where a result lives after a launch: an output buffer, or an input updated in place (Adam).
#[derive(Clone, Copy)]
enum Slot {
    Out(usize),
    In(usize),
}

type MakeSet = Box<dyn Fn(u64) -> Result<Vec<Tensor>>>;
type Launch = Box<dyn Fn(&CudaDevice, &mut Bufs) -> Result<()>>;
type Reference = Box<dyn Fn(&[Tensor]) -> Result<Vec<Vec<f32>>>>;

/// One GPU benchmark: host inputs per set (uploaded), output buffers, the launch, the CPU op that
/// gives the expected results, and (products) the cuBLAS problem on inputs 0 and 1.
struct GpuCase {
    info: CaseInfo,
    set_bytes: usize,
    make_set: MakeSet,
    labels: Option<Vec<u32>>,
    out_lens: Vec<usize>,
    launch: Launch,
    reference: Reference,
    /// Name, buffer and the longest sum behind each result, in the reference's order.
    results: Vec<(&'static str, Slot, usize)>,
    cublas: Option<GemmDims>,
}

fn info(kernel: &'static str, phase: Phase, shape: String, bytes: usize, flops: f64, bound: Bound) -> CaseInfo {
    CaseInfo {
        kernel,
        phase,
        shape,
        bytes: bytes as f64,
        flops,
        bound,
    }
}

fn dims_str(shape: &[usize]) -> String {
    format!("{shape:?}").replace(' ', "")
}

fn uniform_set(shapes: Vec<(Vec<usize>, f32, f32)>) -> MakeSet {
    Box::new(move |seed| {
        shapes
            .iter()
            .enumerate()
            .map(|(j, (s, lo, hi))| uniform(s, *lo, *hi, derive_seed(seed, j as u64)))
            .collect()
    })
}

fn missing(what: &str) -> Error {
    Error::config(format!("benchmark: the CPU reference returned no {what}"))
}

/// A launch's buffers by position, or an error (never an index panic).
fn buffers<'b>(v: &'b mut [CudaBuffer], n: usize, what: &str) -> Result<&'b mut [CudaBuffer]> {
    if v.len() < n {
        return Err(Error::config(format!(
            "benchmark: {n} {what} buffers needed, {} given",
            v.len()
        )));
    }
    Ok(&mut v[..n])
}

// ---- products --------------------------------------------------------------------------------

/// `p`'s row: bytes of A, B and C (plus `extra_elems`, e.g. a bias) and the product's flops.
fn product_info(p: &GemmProduct, extra_elems: usize) -> CaseInfo {
    let d = p.dims;
    let elems = d.batch * (d.m * d.k + d.k * d.n + d.m * d.n) + extra_elems;
    let flops = 2.0 * (d.batch * d.m * d.n) as f64 * d.k as f64;
    info(p.kernel, p.phase, p.shape.clone(), F32 * elems, flops, Bound::Compute)
}

/// The linear layer (see `shapes::linear_products`): forward, dX, dW.
fn linear_cases(label: &str, rows: usize, din: usize, dout: usize) -> Vec<GpuCase> {
    let [fwd, dx, dw] = shapes::linear_products(label, rows, din, dout);
    vec![
        GpuCase {
            info: product_info(&fwd, dout),
            set_bytes: F32 * (numel(&fwd.a) + numel(&fwd.b) + dout),
            make_set: uniform_set(vec![(fwd.a, -1.0, 1.0), (fwd.b, -1.0, 1.0), (vec![dout], -1.0, 1.0)]),
            labels: None,
            out_lens: vec![rows * dout],
            launch: Box::new(move |dev, b| {
                let i = buffers(b.inputs, 3, "input")?;
                dev.linear_fwd(&i[0], &i[1], Some(&i[2]), &mut b.outputs[0], rows, din, dout)
            }),
            reference: Box::new(|h| Ok(vec![linear::forward(&h[0], &h[1], Some(&h[2]))?.to_vec()])),
            results: vec![("y", Slot::Out(0), din)],
            cublas: Some(fwd.dims),
        },
        GpuCase {
            info: product_info(&dx, 0),
            set_bytes: F32 * (numel(&dx.a) + numel(&dx.b)),
            make_set: uniform_set(vec![(dx.a, -1.0, 1.0), (dx.b, -1.0, 1.0)]),
            labels: None,
            out_lens: vec![rows * din],
            // dX reads G and W only; x is passed for the signature (linear_bwd reads it for dW).
            launch: Box::new(move |dev, b| {
                let i = buffers(b.inputs, 2, "input")?;
                dev.linear_bwd(
                    &i[0],
                    &i[0],
                    &i[1],
                    Some(&mut b.outputs[0]),
                    None,
                    None,
                    rows,
                    din,
                    dout,
                )
            }),
            reference: Box::new(move |h| {
                let [dx, _, _] = linear::backward(&h[0], &shape_only(&[rows, din])?, &h[1], [true, false, false])?;
                Ok(vec![dx.ok_or_else(|| missing("dX"))?.to_vec()])
            }),
            results: vec![("dx", Slot::Out(0), dout)],
            cublas: Some(dx.dims),
        },
        GpuCase {
            info: product_info(&dw, 0),
            set_bytes: F32 * (numel(&dw.a) + numel(&dw.b)),
            make_set: uniform_set(vec![(dw.a, -1.0, 1.0), (dw.b, -1.0, 1.0)]),
            labels: None,
            out_lens: vec![dout * din],
            // dW reads G and x only; W is passed for the signature.
            launch: Box::new(move |dev, b| {
                let i = buffers(b.inputs, 2, "input")?;
                dev.linear_bwd(
                    &i[0],
                    &i[1],
                    &i[1],
                    None,
                    Some(&mut b.outputs[0]),
                    None,
                    rows,
                    din,
                    dout,
                )
            }),
            reference: Box::new(move |h| {
                let [_, dw, _] = linear::backward(&h[0], &h[1], &shape_only(&[dout, din])?, [false, true, false])?;
                Ok(vec![dw.ok_or_else(|| missing("dW"))?.to_vec()])
            }),
            results: vec![("dw", Slot::Out(0), rows)],
            cublas: Some(dw.dims),
        },
    ]
}

/// `ops::matmul`'s product `p` (on inputs of its operands' stored shapes).
fn matmul_case(p: GemmProduct) -> GpuCase {
    let d = p.dims;
    GpuCase {
        info: product_info(&p, 0),
        set_bytes: F32 * (numel(&p.a) + numel(&p.b)),
        make_set: uniform_set(vec![(p.a, -1.0, 1.0), (p.b, -1.0, 1.0)]),
        labels: None,
        out_lens: vec![d.batch * d.m * d.n],
        launch: Box::new(move |dev, bufs| {
            let i = buffers(bufs.inputs, 2, "input")?;
            dev.matmul(MatmulKernel::RegisterTiled, &i[0], &i[1], &mut bufs.outputs[0], d, 0.0)
        }),
        reference: Box::new(move |h| Ok(vec![matmul::matmul(&h[0], &h[1], d.ta, d.tb)?.to_vec()])),
        results: vec![("c", Slot::Out(0), d.k)],
        cublas: Some(d),
    }
}

fn matmul_cases(label: &str, batch: usize, m: usize, n: usize, k: usize, tb: bool, bwd: bool) -> Vec<GpuCase> {
    shapes::matmul_products(label, batch, m, n, k, tb, bwd)
        .into_iter()
        .map(matmul_case)
        .collect()
}

// ---- memory-bound ----------------------------------------------------------------------------

/// A memory-bound case with one output of `out_len` elements whose reference is `cpu`.
#[allow(clippy::too_many_arguments)]
fn streaming(
    kernel: &'static str,
    phase: Phase,
    shape: String,
    inputs: Vec<(Vec<usize>, f32, f32)>,
    out_len: usize,
    reduction: usize,
    launch: impl Fn(&CudaDevice, &mut Bufs) -> Result<()> + 'static,
    cpu: impl Fn(&[Tensor]) -> Result<Tensor> + 'static,
) -> GpuCase {
    let in_elems: usize = inputs.iter().map(|(s, _, _)| numel(s)).sum();
    GpuCase {
        info: info(kernel, phase, shape, F32 * (in_elems + out_len), 0.0, Bound::Memory),
        set_bytes: F32 * in_elems,
        make_set: uniform_set(inputs),
        labels: None,
        out_lens: vec![out_len],
        launch: Box::new(launch),
        reference: Box::new(move |h| Ok(vec![cpu(h)?.to_vec()])),
        results: vec![("y", Slot::Out(0), reduction)],
        cublas: None,
    }
}

fn elementwise_cases(label: &str, shape: &[usize]) -> Vec<GpuCase> {
    let n = numel(shape);
    let s = format!("{label} {}", dims_str(shape));
    let one = |lo, hi| vec![(shape.to_vec(), lo, hi)];
    let two = |lo, hi| vec![(shape.to_vec(), -1.0, 1.0), (shape.to_vec(), lo, hi)];
    vec![
        streaming(
            "gelu",
            Phase::Fwd,
            s.clone(),
            one(-5.0, 5.0),
            n,
            1,
            move |dev, b| dev.gelu_fwd(&b.inputs[0], &mut b.outputs[0], n, GeluKind::Erf),
            |h| gelu::forward(&h[0], GeluKind::Erf),
        ),
        streaming(
            "gelu",
            Phase::Bwd,
            s.clone(),
            two(-5.0, 5.0),
            n,
            1,
            move |dev, b| {
                let i = buffers(b.inputs, 2, "input")?;
                dev.gelu_bwd(&i[0], &i[1], &mut b.outputs[0], n, GeluKind::Erf)
            },
            |h| gelu::backward(&h[0], &h[1], GeluKind::Erf),
        ),
        streaming(
            "gelu_dropout",
            Phase::Fwd,
            s.clone(),
            one(-5.0, 5.0),
            n,
            1,
            move |dev, b| {
                dev.gelu_dropout_fwd(&b.inputs[0], &mut b.outputs[0], n, GeluKind::Erf, DROPOUT, DROPOUT_SEED)
            },
            |h| gelu::forward_dropout(&h[0], GeluKind::Erf, &dropout::Mask::new(DROPOUT, DROPOUT_SEED)?),
        ),
        streaming(
            "gelu_dropout",
            Phase::Bwd,
            s.clone(),
            two(-5.0, 5.0),
            n,
            1,
            move |dev, b| {
                let i = buffers(b.inputs, 2, "input")?;
                dev.gelu_dropout_bwd(&i[0], &i[1], &mut b.outputs[0], n, GeluKind::Erf, DROPOUT, DROPOUT_SEED)
            },
            |h| gelu::backward_dropout(&h[0], &h[1], GeluKind::Erf, &dropout::Mask::new(DROPOUT, DROPOUT_SEED)?),
        ),
        streaming(
            "dropout_add",
            Phase::Fwd,
            s.clone(),
            two(-1.0, 1.0),
            n,
            1,
            move |dev, b| {
                let i = buffers(b.inputs, 2, "input")?;
                dev.dropout_add_fwd(&i[0], &i[1], &mut b.outputs[0], n, DROPOUT, DROPOUT_SEED)
            },
            |h| dropout::add_masked(&h[0], &h[1], DROPOUT, DROPOUT_SEED),
        ),
        streaming(
            "dropout",
            Phase::Fwd,
            s.clone(),
            one(-1.0, 1.0),
            n,
            1,
            move |dev, b| dev.dropout_fwd(&b.inputs[0], &mut b.outputs[0], n, DROPOUT, DROPOUT_SEED),
            |h| dropout::apply_mask(&h[0], DROPOUT, DROPOUT_SEED),
        ),
        streaming(
            "dropout",
            Phase::Bwd,
            s,
            one(-1.0, 1.0),
            n,
            1,
            move |dev, b| dev.dropout_bwd(&b.inputs[0], &mut b.outputs[0], n, DROPOUT, DROPOUT_SEED),
            |h| dropout::apply_mask(&h[0], DROPOUT, DROPOUT_SEED),
        ),
    ]
}

fn add_cases(label: &str, a_shape: &[usize], b_shape: &[usize], sum_shape: (usize, usize)) -> Vec<GpuCase> {
    let n = numel(a_shape);
    let (a_v, b_v) = (a_shape.to_vec(), b_shape.to_vec());
    let (rows, cols) = sum_shape;
    vec![
        streaming(
            "add",
            Phase::Fwd,
            format!("{label} {}", dims_str(a_shape)),
            vec![(a_v.clone(), -1.0, 1.0), (a_v.clone(), -1.0, 1.0)],
            n,
            1,
            move |dev, b| {
                let i = buffers(b.inputs, 2, "input")?;
                dev.add_bcast_block(&i[0], &i[1], &mut b.outputs[0], n, n)
            },
            |h| add::add_broadcast(&h[0], &h[1]),
        ),
        streaming(
            "add_broadcast",
            Phase::Fwd,
            format!("{label} {}+{}", dims_str(a_shape), dims_str(b_shape)),
            vec![(a_v.clone(), -1.0, 1.0), (b_v.clone(), -1.0, 1.0)],
            n,
            1,
            move |dev, b| {
                let i = buffers(b.inputs, 2, "input")?;
                dev.add_broadcast(&i[0], &a_v, &i[1], &b_v, &mut b.outputs[0])
            },
            |h| add::add_broadcast(&h[0], &h[1]),
        ),
        streaming(
            "sum_rows",
            Phase::Bwd,
            format!("{label} {}", dims_str(&[rows, cols])),
            vec![(vec![rows, cols], -1.0, 1.0)],
            cols,
            rows,
            move |dev, b| dev.sum_rows(&b.inputs[0], &mut b.outputs[0], rows, cols),
            move |h| add::sum_rows(&h[0], cols),
        ),
    ]
}

fn softmax_cases(label: &str, shape: &[usize]) -> Vec<GpuCase> {
    let n = *shape.last().unwrap_or(&1);
    let total = numel(shape);
    let rows = total / n.max(1);
    let s = format!("{label} {}", dims_str(shape));
    let bwd_shape = shape.to_vec();
    vec![
        streaming(
            "softmax",
            Phase::Fwd,
            s.clone(),
            vec![(shape.to_vec(), -4.0, 4.0)],
            total,
            n,
            move |dev, b| dev.softmax_fwd(RowKernel::Auto, &b.inputs[0], &mut b.outputs[0], rows, n),
            |h| softmax::forward(&h[0]),
        ),
        GpuCase {
            info: info("softmax", Phase::Bwd, s, F32 * 3 * total, 0.0, Bound::Memory),
            set_bytes: F32 * 2 * total,
            make_set: Box::new(move |seed| softmax_bwd_set(&bwd_shape, seed)),
            labels: None,
            out_lens: vec![total],
            launch: Box::new(move |dev, b| {
                let i = buffers(b.inputs, 2, "input")?;
                dev.softmax_bwd(RowKernel::Auto, &i[0], &i[1], &mut b.outputs[0], rows, n)
            }),
            reference: Box::new(|h| Ok(vec![softmax::backward(&h[0], &h[1])?.to_vec()])),
            results: vec![("dx", Slot::Out(0), n)],
            cublas: None,
        },
    ]
}

fn layernorm_cases(label: &str, rows: usize, d: usize) -> Vec<GpuCase> {
    let s = format!("{label} {}", dims_str(&[rows, d]));
    vec![
        GpuCase {
            info: info(
                "layernorm",
                Phase::Fwd,
                s.clone(),
                F32 * (2 * rows * d + 2 * d + 2 * rows),
                0.0,
                Bound::Memory,
            ),
            set_bytes: F32 * (rows * d + 2 * d),
            make_set: uniform_set(vec![
                (vec![rows, d], -3.0, 3.0),
                (vec![d], 0.5, 1.5),
                (vec![d], -0.5, 0.5),
            ]),
            labels: None,
            out_lens: vec![rows * d, rows, rows],
            launch: Box::new(move |dev, b| {
                let i = buffers(b.inputs, 3, "input")?;
                let [y, mean, rstd] = buffers(b.outputs, 3, "output")? else {
                    return Err(Error::config("benchmark: layernorm needs 3 outputs"));
                };
                dev.layernorm_fwd(&i[0], &i[1], &i[2], y, mean, rstd, rows, d, LN_EPS)
            }),
            reference: Box::new(|h| {
                let (y, mean, rstd) = layernorm::forward(&h[0], &h[1], &h[2], LN_EPS)?;
                Ok(vec![y.to_vec(), mean.to_vec(), rstd.to_vec()])
            }),
            results: vec![
                ("y", Slot::Out(0), d),
                ("mean", Slot::Out(1), d),
                ("rstd", Slot::Out(2), d),
            ],
            cublas: None,
        },
        GpuCase {
            info: info(
                "layernorm",
                Phase::Bwd,
                s,
                F32 * (3 * rows * d + 2 * rows + 3 * d),
                0.0,
                Bound::Memory,
            ),
            set_bytes: F32 * (2 * rows * d + 2 * rows + d),
            make_set: Box::new(move |seed| layernorm_bwd_set(rows, d, seed)),
            labels: None,
            out_lens: vec![rows * d, d, d],
            launch: Box::new(move |dev, b| {
                let i = buffers(b.inputs, 5, "input")?;
                let [dx, dgamma, dbeta] = buffers(b.outputs, 3, "output")? else {
                    return Err(Error::config("benchmark: layernorm backward needs 3 outputs"));
                };
                dev.layernorm_bwd(&i[0], &i[1], &i[2], &i[3], &i[4], dx, dgamma, dbeta, rows, d)
            }),
            reference: Box::new(|h| {
                let (dx, dgamma, dbeta) = layernorm::backward(&h[0], &h[1], &h[2], &h[3], &h[4])?;
                Ok(vec![dx.to_vec(), dgamma.to_vec(), dbeta.to_vec()])
            }),
            results: vec![
                ("dx", Slot::Out(0), d),
                ("dgamma", Slot::Out(1), rows),
                ("dbeta", Slot::Out(2), rows),
            ],
            cublas: None,
        },
    ]
}

fn patchify_cases(label: &str, images: [usize; 4], p: usize) -> Vec<GpuCase> {
    let [b, c, h, w] = images;
    let (n, f) = ((h / p) * (w / p), c * p * p);
    let total = b * c * h * w;
    let s = format!("{label} {} p{p}", dims_str(&images));
    vec![
        streaming(
            "patchify",
            Phase::Fwd,
            s.clone(),
            vec![(images.to_vec(), -1.0, 1.0)],
            total,
            1,
            move |dev, bufs| dev.patchify_fwd(&bufs.inputs[0], &mut bufs.outputs[0], images, p),
            move |hst| patchify::forward(&hst[0], p),
        ),
        streaming(
            "patchify",
            Phase::Bwd,
            s,
            vec![(vec![b, n, f], -1.0, 1.0)],
            total,
            1,
            move |dev, bufs| dev.patchify_bwd(&bufs.inputs[0], &mut bufs.outputs[0], images, p),
            move |hst| patchify::backward(&hst[0], &images, p),
        ),
    ]
}

fn cross_entropy_cases(label: &str, rows: usize, classes: usize) -> Vec<GpuCase> {
    let s = format!("{label} {}", dims_str(&[rows, classes]));
    let labels: Vec<u32> = (0..rows)
        .map(|r| (crate::rng::mix64(r as u64 ^ 0x1ab3) % classes as u64) as u32)
        .collect();
    let total = rows * classes;
    let (l_fwd, l_make, l_bwd) = (labels.clone(), labels.clone(), labels.clone());
    vec![
        GpuCase {
            info: info(
                "cross_entropy",
                Phase::Fwd,
                s.clone(),
                F32 * (2 * total + rows),
                0.0,
                Bound::Memory,
            ),
            set_bytes: F32 * (total + rows),
            make_set: uniform_set(vec![(vec![rows, classes], -4.0, 4.0)]),
            labels: Some(labels.clone()),
            out_lens: vec![1, total],
            launch: Box::new(move |dev, b| {
                let lab = b
                    .labels
                    .ok_or_else(|| Error::config("benchmark: cross_entropy needs its labels"))?;
                let [loss, p] = buffers(b.outputs, 2, "output")? else {
                    return Err(Error::config("benchmark: cross_entropy needs 2 outputs"));
                };
                dev.cross_entropy_fwd(&b.inputs[0], lab, p, loss, rows, classes, SMOOTHING)
            }),
            reference: Box::new(move |h| {
                let (loss, p) = cross_entropy::forward(&h[0], &l_fwd, SMOOTHING)?;
                Ok(vec![loss.to_vec(), p.to_vec()])
            }),
            results: vec![("loss", Slot::Out(0), rows), ("p", Slot::Out(1), classes)],
            cublas: None,
        },
        GpuCase {
            info: info(
                "cross_entropy",
                Phase::Bwd,
                s,
                F32 * (2 * total + rows),
                0.0,
                Bound::Memory,
            ),
            set_bytes: F32 * (total + rows),
            // The forward's probabilities of random logits, and the upstream gradient 1.
            make_set: Box::new(move |seed| {
                let z = uniform(&[rows, classes], -4.0, 4.0, seed)?;
                Ok(vec![
                    cross_entropy::forward(&z, &l_make, SMOOTHING)?.1,
                    Tensor::scalar(1.0),
                ])
            }),
            labels: Some(labels),
            out_lens: vec![total],
            launch: Box::new(move |dev, b| {
                let lab = b
                    .labels
                    .ok_or_else(|| Error::config("benchmark: cross_entropy needs its labels"))?;
                dev.cross_entropy_bwd(
                    &b.inputs[1],
                    &b.inputs[0],
                    lab,
                    &mut b.outputs[0],
                    rows,
                    classes,
                    SMOOTHING,
                )
            }),
            reference: Box::new(move |h| Ok(vec![cross_entropy::backward(&h[1], &h[0], &l_bwd, SMOOTHING)?.to_vec()])),
            results: vec![("dz", Slot::Out(0), 1)],
            cublas: None,
        },
    ]
}

/// One fused AdamW step over `n` elements. Every run takes step 1 from the set's state (the
/// time does not depend on the values), so the CPU reference is a fresh `optim::Adam`'s first
/// step on the same parameter and gradient: zero moments.
fn adam_case(label: &str, n: usize) -> GpuCase {
    let cfg = bench_adam_config();
    GpuCase {
        info: info(
            "adam",
            Phase::Step,
            format!("{label} {n} params"),
            F32 * 7 * n,
            0.0,
            Bound::Memory,
        ),
        set_bytes: F32 * 4 * n,
        make_set: Box::new(move |seed| {
            Ok(vec![
                uniform(&[n], -0.1, 0.1, derive_seed(seed, 0))?,
                uniform(&[n], -1e-2, 1e-2, derive_seed(seed, 1))?,
                Tensor::zeros(&[n]),
                Tensor::zeros(&[n]),
            ])
        }),
        labels: None,
        out_lens: vec![],
        launch: Box::new(move |dev, b| {
            let k = AdamCoeffs::new(&cfg, DecayMode::Decoupled, true, 1);
            let [p, g, m, v] = buffers(b.inputs, 4, "input")? else {
                return Err(Error::config("benchmark: adam needs 4 inputs"));
            };
            dev.adam_step(p, &*g, m, v, n, &k)
        }),
        reference: Box::new(move |h| {
            let mut store = ParamStore::new();
            let id = store.add("weight", h[0].clone())?;
            let mut graph = Graph::new();
            let var = graph.param(&store, id);
            store.accumulate_grads(&graph.backward_with(var, h[1].clone())?)?;
            let mut adam = Adam::adamw(cfg)?;
            adam.step(&mut store)?;
            let state = adam.state_tensors(&store);
            let find = |kind: &str| {
                state
                    .iter()
                    .find(|(name, _)| name.ends_with(&format!("{kind}.weight")))
                    .map(|(_, t)| t.to_vec())
                    .ok_or_else(|| missing(kind))
            };
            Ok(vec![store.value(id).to_vec(), find("m")?, find("v")?])
        }),
        results: vec![("p", Slot::In(0), 1), ("m", Slot::In(2), 1), ("v", Slot::In(3), 1)],
        cublas: None,
    }
}

/// Every GPU case, in the CPU table's order (kernels with no CUDA version left out).
fn cases(quick: bool) -> Result<Vec<GpuCase>> {
    let mut v = Vec::new();
    for s in shapes::vit_shapes(quick) {
        let (rows, t, d) = (s.rows(), s.tokens(), s.embed);
        for (role, din, dout) in s.linears() {
            v.extend(linear_cases(&format!("{} {role}", s.name), rows, din, dout));
        }
        v.extend(matmul_cases(
            &format!("{} scores", s.name),
            s.batch * s.heads,
            t,
            t,
            d / s.heads,
            true,
            false,
        ));
        v.extend(softmax_cases(&format!("{} scores", s.name), &[s.batch, s.heads, t, t]));
        v.extend(layernorm_cases(s.name, rows, d));
        v.extend(elementwise_cases(&format!("{} mlp", s.name), &[s.batch, t, s.mlp]));
        v.extend(add_cases(
            &format!("{} resid", s.name),
            &[s.batch, t, d],
            &[1, t, d],
            (rows, s.mlp),
        ));
        v.extend(patchify_cases(s.name, [s.batch, 1, IMAGE, IMAGE], s.patch));
        v.extend(cross_entropy_cases(s.name, s.batch, CLASSES));
        let params: usize = s.parameters()?.iter().map(|(_, shape)| numel(shape)).sum();
        v.push(adam_case(s.name, params));
    }
    let l = shapes::large_shapes(quick, true);
    let (rows, cols) = (l.rows, l.cols);
    v.extend(matmul_cases("large", 1, l.gemm, l.gemm, l.gemm, false, true));
    let (lr, li, lo) = l.linear;
    v.extend(linear_cases("large", lr, li, lo));
    v.extend(softmax_cases("large", &[rows, cols]));
    v.extend(layernorm_cases("large", rows, cols));
    v.extend(elementwise_cases("large", &[rows, cols]));
    v.extend(add_cases(
        "large",
        &[rows / 256, 256, cols],
        &[1, 256, cols],
        (rows, cols),
    ));
    v.extend(patchify_cases("large", l.images, l.patch));
    v.extend(cross_entropy_cases("large", l.logits.0, l.logits.1));
    v.push(adam_case("large", l.params));
    Ok(v)
}

// ---------------------------------------------------------------------------------------------
// The run
// ---------------------------------------------------------------------------------------------

/// Tolerance of a GPU result against the CPU's, relative to the result's largest element, for
/// a result that sums `k` terms (see the module doc).
fn gpu_rtol(k: usize) -> f64 {
    (2.0 * (k as f64).sqrt() * EPS).max(1e-5)
}

/// Compare a whole result norm-wise.
fn compare(ck: &mut Checker, part: &str, got: &[f32], want: &[f32], k: usize) {
    if got.len() != want.len() {
        ck.close(part, got.len().min(want.len()), f32::NAN, 0.0, 0.0);
        return;
    }
    let scale = want.iter().fold(0.0f64, |a, &v| a.max((v as f64).abs()));
    let tol = gpu_rtol(k) * scale + f64::MIN_POSITIVE;
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        ck.close(part, i, g, w as f64, tol);
    }
}

/// Upload one host input set.
fn upload_set(dev: &CudaDevice, host: &[Tensor]) -> Result<Vec<CudaBuffer>> {
    host.iter().map(|t| dev.upload(t.data())).collect()
}

/// The device copy bandwidth: (bytes read + written) / median time of a device-to-device copy.
fn copy_bandwidth(dev: &CudaDevice, plan: &Plan) -> Result<(Yardstick, Timing, usize)> {
    let len: usize = if plan.quick { 16 << 20 } else { 256 << 20 };
    let mut src = dev.alloc(len)?;
    dev.fill(&mut src, len, 1.5)?;
    let mut dst = dev.alloc(len)?;
    dev.fill(&mut dst, len, 0.0)?;
    let stream = dev.stream().clone();
    let timing = measure_gpu(dev, plan, 1, |_| {
        stream
            .memcpy_dtod(&src, &mut dst)
            .map_err(driver_err("copying on the device"))
    })?;
    let copied = dev.download(&dst)?;
    let mut ck = Checker::new();
    for i in check::sample_indices(len, check::SAMPLES) {
        ck.close("copy", i, copied[i], 1.5, 0.0);
    }
    ck.finish()
        .map_err(|m| Error::Device(format!("the copy-bandwidth measurement did not copy: {m}")))?;
    let gbps = (2 * F32 * len) as f64 / timing.median_s / 1e9;
    Ok((Yardstick::bandwidth(gbps), timing, len * F32))
}

/// One case: upload, time, validate, and (products) time and validate cuBLAS.
fn run_case(
    dev: &CudaDevice,
    plan: &Plan,
    l2_bytes: u64,
    blas: Option<&CudaBlas>,
    case: &GpuCase,
) -> Result<(Timing, Validation, Option<Yardstick>)> {
    let n_sets = input_sets(case.set_bytes as f64, l2_bytes, plan.quick);
    let host0 = (case.make_set)(derive_seed(0xbe9c, 0))?;
    let mut sets = vec![upload_set(dev, &host0)?];
    for s in 1..n_sets {
        sets.push(upload_set(dev, &(case.make_set)(derive_seed(0xbe9c, s as u64))?)?);
    }
    let labels = case.labels.as_ref().map(|l| dev.upload_u32(l)).transpose()?;
    let mut outputs = case
        .out_lens
        .iter()
        .map(|&n| dev.alloc(n))
        .collect::<Result<Vec<_>>>()?;
    let timing = measure_gpu(dev, plan, n_sets, |set| {
        let mut bufs = Bufs {
            inputs: &mut sets[set],
            outputs: &mut outputs,
            labels: labels.as_ref(),
        };
        (case.launch)(dev, &mut bufs)
    })?;

    // Validation: set 0 restored (Adam updates its inputs), one more run, the CPU op on the
    // same host inputs.
    for (buf, t) in sets[0].iter_mut().zip(&host0) {
        dev.upload_into(t.data(), buf)?;
    }
    (case.launch)(
        dev,
        &mut Bufs {
            inputs: &mut sets[0],
            outputs: &mut outputs,
            labels: labels.as_ref(),
        },
    )?;
    let want = (case.reference)(&host0)?;
    let mut ck = Checker::new();
    for ((part, slot, k), w) in case.results.iter().zip(&want) {
        let buf = match *slot {
            Slot::Out(i) => outputs.get(i),
            Slot::In(i) => sets[0].get(i),
        }
        .ok_or_else(|| Error::config(format!("benchmark: no buffer for result {part}")))?;
        compare(&mut ck, part, &dev.download(buf)?, w, *k);
    }

    let yardstick = match (case.cublas, blas) {
        (Some(d), Some(blas)) => {
            let mut c = dev.alloc(d.batch * d.m * d.n)?;
            let t = measure_gpu(dev, plan, n_sets, |set| {
                cublas_gemm(blas, d, &sets[set][0], &sets[set][1], &mut c)
            })?;
            cublas_gemm(blas, d, &sets[0][0], &sets[0][1], &mut c)?;
            check::gemm(
                &mut ck,
                "cublas",
                host0[0].data(),
                host0[1].data(),
                &dev.download(&c)?,
                d,
                None,
            );
            Some(Yardstick::flops("cuBLAS", case.info.flops / t.median_s / 1e9))
        }
        _ => None,
    };
    Ok((timing, Validation::from_check(ck.finish()), yardstick))
}

/// Run the selected GPU cases: header, copy bandwidth, then one table row per case.
pub fn run(opts: &BenchOptions, dev: &CudaDevice) -> Result<Report> {
    let plan = if dev.is_simulator() {
        Plan::simulated(opts.quick)
    } else {
        Plan::new(opts.quick)
    };
    let cases = select(cases(opts.quick)?, |c| &c.info, opts.filter.as_deref())?;
    let commit = git_commit();
    let l2_bytes = dev
        .context()
        .attribute(sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_L2_CACHE_SIZE)
        .map_err(driver_err("reading the L2 cache size"))?
        .max(1) as u64;
    say(&format!(
        "vitcore bench kernels: cuda, {}, commit {}{}",
        dev.describe(),
        commit.as_deref().unwrap_or("unknown"),
        if opts.quick { ", --quick" } else { "" }
    ));
    if dev.is_simulator() {
        say(
            "on the cudasim simulator: every kernel runs once more after timing and is validated against the CPU; \
             times are the simulator's cost model (docs/cuda.md), not measurements",
        );
    } else {
        say(&format!(
            "inputs rotate over sets totalling at least 2x the {} MiB L2 cache where memory allows; times from CUDA events",
            l2_bytes >> 20
        ));
    }
    let blas = match open_cublas(dev) {
        Ok(b) => {
            say("matrix products are compared with cuBLAS SGEMM (FP32, default math mode) on the same shape");
            Some(b)
        }
        Err(why) => {
            say(&format!("no cuBLAS yardstick ({why}): matrix products get no ratio"));
            None
        }
    };
    say(&format!(
        "no CUDA kernel yet for: {} (a fused CPU op; not benchmarked here)",
        NOT_ON_GPU.join(", ")
    ));
    let (copy, copy_timing, copy_bytes) = copy_bandwidth(dev, &plan)?;
    say(&format!(
        "copy bandwidth: {:.1} GB/s (device-to-device copy of {} MiB, read + write, median of {})",
        copy.value,
        copy_bytes >> 20,
        copy_timing.runs
    ));
    say("");
    say(&table_header());

    let mut records = Vec::with_capacity(cases.len());
    for case in &cases {
        let (timing, validation, cublas) = run_case(dev, &plan, l2_bytes, blas.as_ref(), case)?;
        dev.empty_cache(); // the next case's sizes differ: give this one's buffers back
        let info = case.info.resolve(copy.value, None);
        let yardstick = match info.bound {
            Bound::Compute => cublas,
            Bound::Memory | Bound::Roofline => Some(copy.clone()),
        };
        let record = Record::new(&info, timing, yardstick, validation);
        say(&table_row(&record));
        records.push(record);
    }
    let (cm, cn) = dev.compute_capability();
    Ok(Report {
        vitcore_version: env!("CARGO_PKG_VERSION"),
        commit,
        quick: opts.quick,
        filter: opts.filter.clone(),
        device: DeviceInfo {
            kind: "cuda".into(),
            name: dev.name().to_string(),
            parallelism: dev.sm_count() as usize,
            clock_mhz: None,
            clock_source: None,
            cache_bytes: l2_bytes,
            cache_source: "L2 (CU_DEVICE_ATTRIBUTE_L2_CACHE_SIZE)".into(),
            detail: Some(format!("compute {cm}.{cn}; {}", dev.describe())),
        },
        copy_bandwidth: copy,
        peak: None,
        records,
        not_on_this_device: NOT_ON_GPU.iter().map(|s| s.to_string()).collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gpu_tolerance_grows_with_the_sum_length() {
        assert_eq!(gpu_rtol(1), 1e-5);
        assert!(gpu_rtol(25_600) > 1e-5 && gpu_rtol(25_600) < 1e-4);
    }

    #[test]
    fn gpu_cases_build_and_their_references_run() {
        // Without a GPU the launches cannot run, but the case list, the host input sets and the
        // CPU references can: every reference yields one result per declared result buffer.
        for case in cases(true).unwrap() {
            let host = (case.make_set)(1).unwrap();
            let want = (case.reference)(&host).unwrap();
            assert_eq!(want.len(), case.results.len(), "{}", case.info.label());
            for ((part, slot, _), w) in case.results.iter().zip(&want) {
                let len = match *slot {
                    Slot::Out(i) => case.out_lens[i],
                    Slot::In(i) => host[i].numel(),
                };
                assert_eq!(w.len(), len, "{} {part}", case.info.label());
            }
        }
    }

    #[test]
    fn norm_wise_comparison_catches_a_wrong_element() {
        let want: Vec<f32> = (0..100).map(|i| i as f32).collect();
        let mut ck = Checker::new();
        compare(&mut ck, "y", &want, &want, 1);
        assert!(ck.finish().is_ok());
        let mut got = want.clone();
        got[42] += 0.01; // 1e-4 of the largest element: above 1e-5
        let mut ck = Checker::new();
        compare(&mut ck, "y", &got, &want, 1);
        assert_eq!(ck.finish().unwrap_err().index, 42);
    }
}
