//! The GPU side of `vitcore bench kernels --device cuda`: every case of `cases` that has a CUDA
//! kernel runs its launch wrapper of [`CudaDevice`] (the same rows as the CPU table), and the
//! optimiser's cases the fused Adam kernel; each is timed with CUDA events, compared with a
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

use super::cases::{self, buffers, uniform, Bufs, CudaRun, MakeSet, Slot, F32};
use super::check::{self, Checker, GemmDims, EPS};
use super::shapes::{self, bench_adam_config};
use super::{
    git_commit, input_sets, say, select, sim_table_header, sim_table_row, table_header, table_row, BenchOptions, Bound,
    CaseInfo, DeviceInfo, Phase, Plan, Record, Report, SimProfile, Timing, Validation, Yardstick,
};
use crate::autograd::{Graph, ParamStore};
use crate::backend::cuda::nvrtc::{self, KernelStats};
use crate::backend::cuda::sim::{self, occupancy, SimHooks, SmLimits};
use crate::backend::cuda::CudaSlice;
use crate::backend::cuda::{AdamCoeffs, CudaBuffer, CudaDevice};
use crate::error::{Error, Result};
use crate::optim::{Adam, DecayMode};
use crate::rng::derive_seed;
use crate::tensor::{numel, Tensor};
use cudarc::cublas::{sys::cublasOperation_t, CudaBlas, Gemm, GemmConfig, StridedBatchedConfig};
use cudarc::driver::{sys, CudaEvent};
use std::collections::HashMap;

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

/// The results a GPU run is compared with, one per result of its [`CudaRun`].
type Reference = Box<dyn Fn(&[Tensor]) -> Result<Vec<Vec<f32>>>>;

/// One GPU benchmark: host inputs per set (uploaded), the launch and its buffers, and what its
/// results must equal.
struct GpuCase {
    info: CaseInfo,
    set_bytes: usize,
    make_set: MakeSet,
    run: CudaRun,
    reference: Reference,
}

/// A case of `cases` with a CUDA kernel as a GPU benchmark: its reference is the CPU op on the
/// same inputs.
fn from_case(case: cases::Case) -> Option<GpuCase> {
    let cases::Case {
        info,
        set_bytes,
        make_set,
        cpu,
        cuda,
        ..
    } = case;
    Some(GpuCase {
        info,
        set_bytes,
        make_set,
        run: cuda?,
        reference: Box::new(move |h| Ok(cpu(h)?.iter().map(Tensor::to_vec).collect())),
    })
}

fn missing(what: &str) -> Error {
    Error::config(format!("benchmark: the CPU reference returned no {what}"))
}

/// One fused AdamW step over `n` elements. Every run takes step 1 from the set's state (the
/// time does not depend on the values), so the CPU reference is a fresh `optim::Adam`'s first
/// step on the same parameter and gradient: zero moments.
fn adam_case(label: &str, n: usize) -> GpuCase {
    let cfg = bench_adam_config();
    GpuCase {
        info: CaseInfo {
            kernel: "adam",
            phase: Phase::Step,
            shape: format!("{label} {n} params"),
            // Read p, g, m, v; write p, m, v.
            bytes: (F32 * 7 * n) as f64,
            flops: 0.0,
            bound: Bound::Memory,
        },
        set_bytes: F32 * 4 * n,
        make_set: Box::new(move |seed| {
            Ok(vec![
                uniform(&[n], -0.1, 0.1, derive_seed(seed, 0))?,
                uniform(&[n], -1e-2, 1e-2, derive_seed(seed, 1))?,
                Tensor::zeros(&[n]),
                Tensor::zeros(&[n]),
            ])
        }),
        run: CudaRun {
            out_lens: vec![],
            launch: Box::new(move |dev, b| {
                let k = AdamCoeffs::new(&cfg, DecayMode::Decoupled, true, 1);
                let [p, g, m, v] = buffers(b.inputs, 4, "input")? else {
                    return Err(Error::config("benchmark: adam needs 4 inputs"));
                };
                dev.adam_step(p, &*g, m, v, n, &k)
            }),
            results: vec![("p", Slot::In(0), 1), ("m", Slot::In(2), 1), ("v", Slot::In(3), 1)],
            labels: None,
            cublas: None,
        },
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
    }
}

/// Every GPU case, in the CPU table's order (the kernels with no CUDA version left out), and
/// those kernels.
fn cases(quick: bool) -> Result<(Vec<GpuCase>, Vec<String>)> {
    let mut v = Vec::new();
    let mut not_on_gpu: Vec<String> = Vec::new();
    for case in cases::tensor_cases(quick, true)? {
        let kernel = case.info.kernel;
        match from_case(case) {
            Some(c) => v.push(c),
            None if !not_on_gpu.iter().any(|k| k == kernel) => not_on_gpu.push(kernel.to_string()),
            None => {}
        }
    }
    for (label, params) in shapes::adam_shapes(quick)? {
        let n: usize = params.iter().map(|(_, shape)| numel(shape)).sum();
        v.push(adam_case(&label, n));
    }
    Ok((v, not_on_gpu))
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
    let labels = case.run.labels.as_ref().map(|l| dev.upload_u32(l)).transpose()?;
    let mut outputs = case
        .run
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
        (case.run.launch)(dev, &mut bufs)
    })?;

    let mut ck = validate(dev, case, &host0, &mut sets[0], &mut outputs, labels.as_ref())?;

    let yardstick = match (case.run.cublas, blas) {
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
/// Validation: input set `inputs` restored to `host0` (Adam updates its inputs), one more run,
/// and every result compared with the CPU op on the same host inputs.
fn validate(
    dev: &CudaDevice,
    case: &GpuCase,
    host0: &[Tensor],
    inputs: &mut [CudaBuffer],
    outputs: &mut [CudaBuffer],
    labels: Option<&CudaSlice<u32>>,
) -> Result<Checker> {
    for (buf, t) in inputs.iter_mut().zip(host0) {
        dev.upload_into(t.data(), buf)?;
    }
    (case.run.launch)(
        dev,
        &mut Bufs {
            inputs,
            outputs,
            labels,
        },
    )?;
    let want = (case.reference)(host0)?;
    let mut ck = Checker::new();
    for ((part, slot, k), w) in case.run.results.iter().zip(&want) {
        let buf = match *slot {
            Slot::Out(i) => outputs.get(i),
            Slot::In(i) => inputs.get(i),
        }
        .ok_or_else(|| Error::config(format!("benchmark: no buffer for result {part}")))?;
        compare(&mut ck, part, &dev.download(buf)?, w, *k);
    }
    Ok(ck)
}

// ---------------------------------------------------------------------------------------------
// On the cudasim simulator: counters, not times
// ---------------------------------------------------------------------------------------------

/// The SM limits the occupancy figure needs, from the device's attributes.
fn sm_limits(dev: &CudaDevice) -> Result<SmLimits> {
    use sys::CUdevice_attribute as A;
    let attr = |a| -> Result<u32> {
        Ok(dev
            .context()
            .attribute(a)
            .map_err(driver_err("reading the SM limits"))?
            .max(1) as u32)
    };
    Ok(SmLimits {
        max_threads: attr(A::CU_DEVICE_ATTRIBUTE_MAX_THREADS_PER_MULTIPROCESSOR)?,
        max_blocks: attr(A::CU_DEVICE_ATTRIBUTE_MAX_BLOCKS_PER_MULTIPROCESSOR)?,
        registers: attr(A::CU_DEVICE_ATTRIBUTE_MAX_REGISTERS_PER_MULTIPROCESSOR)?,
        shared_bytes: attr(A::CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_MULTIPROCESSOR)?,
    })
}

/// Registers and static shared memory of every kernel, from ptxas's report of a CUBIN for the
/// device's architecture (the simulator runs PTX; ptxas decides the registers).
fn ptxas_report(dev: &CudaDevice) -> Result<HashMap<String, KernelStats>> {
    let (cm, cn) = dev.compute_capability();
    let arch = nvrtc::arch_for(cm, cn).map_err(Error::Device)?;
    let mut all = HashMap::new();
    for (file, src) in nvrtc::KERNEL_SOURCES {
        for k in nvrtc::compile_cubin(file, src, &arch)?.kernels {
            all.insert(k.name.clone(), k);
        }
    }
    Ok(all)
}

/// One case on the simulator: a run with the counters reset before and read after, then the
/// validation as on a GPU.
fn run_case_simulated(
    dev: &CudaDevice,
    hooks: &SimHooks,
    kernels: &HashMap<String, KernelStats>,
    limits: SmLimits,
    case: &GpuCase,
) -> Result<(Timing, Validation, SimProfile)> {
    let host0 = (case.make_set)(derive_seed(0xbe9c, 0))?;
    let mut inputs = upload_set(dev, &host0)?;
    let labels = case.run.labels.as_ref().map(|l| dev.upload_u32(l)).transpose()?;
    let mut outputs = case
        .run
        .out_lens
        .iter()
        .map(|&n| dev.alloc(n))
        .collect::<Result<Vec<_>>>()?;
    let (t0, t1) = (timing_event(dev)?, timing_event(dev)?);
    hooks.reset();
    t0.record(dev.stream()).map_err(driver_err("recording an event"))?;
    let ck = validate(dev, case, &host0, &mut inputs, &mut outputs, labels.as_ref())?;
    t1.record(dev.stream()).map_err(driver_err("recording an event"))?;
    let c = hooks.read();
    let modelled = t0.elapsed_ms(&t1).map_err(driver_err("reading an event"))? as f64 / 1e3;
    let main = hooks.main_kernel();
    let (regs, occupancy) = match main
        .as_ref()
        .and_then(|(name, t, s)| kernels.get(name).map(|k| (k, *t, *s)))
    {
        Some((k, threads, dynamic)) => (
            Some(k.registers),
            Some(occupancy(limits, threads, k.registers, k.shared_bytes + dynamic)),
        ),
        None => (None, None),
    };
    let classes = ["int", "f32", "f64", "memory", "control", "sync", "move"];
    let sector_bytes = c.sector_bytes();
    let profile = SimProfile {
        warp_instructions: c.get("warp_instructions"),
        thread_instructions: c.get("thread_instructions"),
        instructions_by_class: classes
            .iter()
            .map(|n| (n.to_string(), c.get(&format!("warp_{n}"))))
            .collect(),
        load_efficiency: c.load_efficiency(),
        store_efficiency: c.store_efficiency(),
        bank_conflicts_per_request: c.bank_conflicts_per_request(),
        sector_bytes,
        traffic_ratio: (case.info.bytes > 0.0).then(|| sector_bytes as f64 / case.info.bytes),
        bytes_per_flop: (case.info.flops > 0.0).then(|| sector_bytes as f64 / case.info.flops),
        main_kernel: main.as_ref().map(|m| m.0.clone()),
        threads_per_block: main.as_ref().map(|m| m.1),
        registers: regs,
        occupancy,
    };
    Ok((
        Timing::from_samples(vec![modelled], 1)?,
        Validation::from_check(ck.finish()),
        profile,
    ))
}

/// `bench kernels` on the simulator: the same cases, each run once, validated, and described by
/// its counters instead of a time.
fn run_simulated(
    opts: &BenchOptions,
    dev: &CudaDevice,
    hooks: &SimHooks,
    cases: Vec<GpuCase>,
    not_on_gpu: Vec<String>,
    commit: Option<String>,
    l2_bytes: u64,
) -> Result<Report> {
    say(&format!(
        "vitcore bench kernels: cuda, {}, commit {}{}",
        dev.describe(),
        commit.as_deref().unwrap_or("unknown"),
        if opts.quick { ", --quick" } else { "" }
    ));
    say("on the cudasim simulator: counters, not times (a time from a simulator is not a figure); each case runs once and is validated against the CPU");
    say("  ld/st eff: global loads/stores, the fewest 32-byte sectors that could carry their bytes / the sectors touched");
    say("  bank cfl: shared-memory wavefronts beyond the ideal, per request;  traffic/min: sector bytes / the bytes the case must move once");
    say("  B/flop: sector bytes per useful flop;  occupancy: theoretical, for the case's main kernel (threads per block, registers from ptxas)");
    let kernels = ptxas_report(dev)?;
    let limits = sm_limits(dev)?;
    if !not_on_gpu.is_empty() {
        say(&format!(
            "no CUDA kernel yet for: {} (a fused CPU op; not run here)",
            not_on_gpu.join(", ")
        ));
    }
    say("");
    say(&sim_table_header());
    let mut records = Vec::with_capacity(cases.len());
    for case in &cases {
        let (timing, validation, profile) = run_case_simulated(dev, hooks, &kernels, limits, case)?;
        dev.empty_cache();
        let info = case.info.resolve(1.0, None);
        let mut record = Record::new(&info, timing, None, validation);
        record.profile = Some(profile);
        say(&sim_table_row(&record));
        records.push(record);
    }
    Ok(Report {
        vitcore_version: env!("CARGO_PKG_VERSION"),
        commit,
        quick: opts.quick,
        filter: opts.filter.clone(),
        device: device_info(
            dev,
            l2_bytes,
            "counters from the cudasim simulator; timing fields are its cost model",
        ),
        copy_bandwidth: Yardstick::bandwidth(0.0),
        peak: None,
        peak_method: None,
        records,
        not_on_this_device: not_on_gpu,
    })
}

fn device_info(dev: &CudaDevice, l2_bytes: u64, note: &str) -> DeviceInfo {
    let (cm, cn) = dev.compute_capability();
    DeviceInfo {
        kind: "cuda".into(),
        name: dev.name().to_string(),
        parallelism: dev.sm_count() as usize,
        clock_mhz: None,
        clock_source: None,
        cache_bytes: l2_bytes,
        cache_source: "L2 (CU_DEVICE_ATTRIBUTE_L2_CACHE_SIZE)".into(),
        detail: Some(format!("compute {cm}.{cn}; {}{note}", dev.describe())),
    }
}

pub fn run(opts: &BenchOptions, dev: &CudaDevice) -> Result<Report> {
    let plan = if dev.is_simulator() {
        Plan::simulated(opts.quick)
    } else {
        Plan::new(opts.quick)
    };
    let (cases, not_on_gpu) = cases(opts.quick)?;
    let cases = select(cases, |c| &c.info, opts.filter.as_deref())?;
    let commit = git_commit();
    let l2_bytes = dev
        .context()
        .attribute(sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_L2_CACHE_SIZE)
        .map_err(driver_err("reading the L2 cache size"))?
        .max(1) as u64;
    if let Some(hooks) = dev.is_simulator().then(sim::hooks).flatten() {
        return run_simulated(opts, dev, hooks, cases, not_on_gpu, commit, l2_bytes);
    }
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
    if !not_on_gpu.is_empty() {
        say(&format!(
            "no CUDA kernel yet for: {} (a fused CPU op; not benchmarked here)",
            not_on_gpu.join(", ")
        ));
    }
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
    Ok(Report {
        vitcore_version: env!("CARGO_PKG_VERSION"),
        commit,
        quick: opts.quick,
        filter: opts.filter.clone(),
        device: device_info(dev, l2_bytes, ""),
        copy_bandwidth: copy,
        peak: None,
        peak_method: None,
        records,
        not_on_this_device: not_on_gpu,
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
        let (cases, not_on_gpu) = cases(true).unwrap();
        assert_eq!(not_on_gpu, ["attention"]);
        for case in cases {
            let host = (case.make_set)(1).unwrap();
            let want = (case.reference)(&host).unwrap();
            assert_eq!(want.len(), case.run.results.len(), "{}", case.info.label());
            for ((part, slot, _), w) in case.run.results.iter().zip(&want) {
                let len = match *slot {
                    Slot::Out(i) => case.run.out_lens[i],
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
