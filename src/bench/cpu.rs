//! The CPU side of `vitcore bench kernels`: every case of `cases` runs its CPU op (`ops::*`),
//! and the optimiser's cases step `optim::Adam`; each is timed with `Instant`, compared with the
//! copy bandwidth measured in the same run (memory-bound kernels) or the CPU's f32 peak measured
//! in the same run (matrix products), and validated after timing against the f64 references of
//! `check`.
//!
//! Each case builds its input sets only when it runs (a `--filter` that skips it allocates
//! nothing), and returns its buffers to the system when done: the largest cases hold a few
//! hundred MB each, and the buffer pool would otherwise keep them all.

use super::cases::{self, uniform, F32};
use super::check::{self, Checker, EPS, SAMPLES};
use super::shapes::{self, bench_adam_config, ParamShapes};
use super::{
    cpu_info, cpu_last_level_cache, git_commit, input_sets, measure, nominal_peak_gflops, peak, say, select,
    table_header, table_row, BenchOptions, Bound, CaseInfo, DeviceInfo, Phase, Plan, Record, Report, Timing,
    Validation, Yardstick,
};
use crate::autograd::{Graph, ParamStore};
use crate::backend::cpu::pool;
use crate::error::{Error, Result};
use crate::optim::{Adam, AdamConfig};
use crate::rng::derive_seed;
use crate::tensor::{numel, Tensor};
use rayon::prelude::*;
use std::collections::HashMap;
use std::hint::black_box;
use std::rc::Rc;
use std::time::Instant;

// ---------------------------------------------------------------------------------------------
// Cases
// ---------------------------------------------------------------------------------------------

/// A benchmark ready to run: its input sets, one run of the kernel on a set, and the
/// validation (the kernel run once more on set 0, compared with the reference).
pub(crate) trait Runnable {
    fn sets(&self) -> usize;
    fn run(&mut self, set: usize) -> Result<()>;
    fn validate(&mut self) -> Result<Checker>;
}

struct Bench<S, R, V> {
    sets: Vec<S>,
    run: R,
    validate: V,
}

impl<S, R, V> Runnable for Bench<S, R, V>
where
    R: FnMut(&mut S) -> Result<()>,
    V: FnMut(&mut S) -> Result<Checker>,
{
    fn sets(&self) -> usize {
        self.sets.len()
    }
    fn run(&mut self, set: usize) -> Result<()> {
        (self.run)(&mut self.sets[set])
    }
    fn validate(&mut self) -> Result<Checker> {
        (self.validate)(&mut self.sets[0])
    }
}

/// Where a case sizes its input rotation.
pub(crate) struct Env {
    quick: bool,
    cache_bytes: u64,
}

impl Env {
    fn sets(&self, set_bytes: usize) -> usize {
        input_sets(set_bytes as f64, self.cache_bytes, self.quick)
    }
}

/// Builds a case's input sets and returns it ready to run.
type Prepare = Box<dyn FnOnce(&Env) -> Result<Box<dyn Runnable>>>;

/// One benchmark: what it measures, and how to build it (called only when it is selected).
pub(crate) struct CpuCase {
    pub info: CaseInfo,
    prepare: Prepare,
}

/// A case of `cases` (inputs, CPU op, validation) as a CPU benchmark.
fn from_case(case: cases::Case) -> CpuCase {
    let cases::Case {
        info,
        set_bytes,
        make_set,
        cpu,
        check,
        ..
    } = case;
    CpuCase {
        info,
        prepare: Box::new(move |env: &Env| {
            let sets = (0..env.sets(set_bytes))
                .map(|s| make_set(derive_seed(0xbe9c, s as u64)))
                .collect::<Result<Vec<_>>>()?;
            let cpu = Rc::new(cpu);
            let cpu2 = cpu.clone();
            Ok(Box::new(Bench {
                sets,
                run: move |xs: &mut Vec<Tensor>| {
                    black_box(cpu(xs)?);
                    Ok(())
                },
                validate: move |xs: &mut Vec<Tensor>| {
                    let out = cpu2(xs)?;
                    let mut ck = Checker::new();
                    check(xs, &out, &mut ck)?;
                    Ok(ck)
                },
            }) as Box<dyn Runnable>)
        }),
    }
}

// ---------------------------------------------------------------------------------------------
// The optimiser (its state lives in `optim::Adam`, so its case is the CPU's own)
// ---------------------------------------------------------------------------------------------

/// A parameter store with random values and gradients of the given shapes.
fn adam_store(params: &[(String, Vec<usize>)], seed: u64) -> Result<ParamStore> {
    let mut store = ParamStore::new();
    for (j, (name, shape)) in params.iter().enumerate() {
        let id = store.add(
            name.clone(),
            uniform(shape, -0.1, 0.1, derive_seed(seed, 2 * j as u64))?,
        )?;
        // The store takes gradients from a backward pass: seed one at the parameter itself.
        let mut graph = Graph::new();
        let v = graph.param(&store, id);
        let grads = graph.backward_with(v, uniform(shape, -1e-2, 1e-2, derive_seed(seed, 2 * j as u64 + 1))?)?;
        store.accumulate_grads(&grads)?;
    }
    Ok(store)
}

/// One AdamW step in f64 of element `(p, g, m, v)` at step `t`: `(p', m', v')` and the size of
/// the update's terms (the scale of its rounding error).
pub(crate) fn adam_ref(cfg: &AdamConfig, t: u64, p: f64, g: f64, m: f64, v: f64) -> (f64, f64, f64, f64) {
    let (b1, b2) = cfg.betas;
    let m1 = b1 * m + (1.0 - b1) * g;
    let v1 = b2 * v + (1.0 - b2) * g * g;
    let step = cfg.lr / (1.0 - b1.powi(t as i32));
    let denom = v1.sqrt() / (1.0 - b2.powi(t as i32)).sqrt() + cfg.eps;
    let decayed = p * (1.0 - cfg.lr * cfg.weight_decay);
    let scale = p.abs() + step * (m.abs() + g.abs()) / denom;
    (decayed - step * m1 / denom, m1, v1, scale)
}

fn adam_case(label: &str, params: ParamShapes) -> CpuCase {
    let n: usize = params.iter().map(|(_, s)| numel(s)).sum();
    let info = CaseInfo {
        kernel: "adam",
        phase: Phase::Step,
        shape: format!("{label} {n} params in {}", params.len()),
        // Read p, g, m, v; write p, m, v.
        bytes: (F32 * 7 * n) as f64,
        flops: 0.0,
        bound: Bound::Memory,
    };
    CpuCase {
        info,
        prepare: Box::new(move |env: &Env| {
            let sets = (0..env.sets(F32 * 4 * n))
                .map(|s| {
                    let store = adam_store(&params, derive_seed(0xada, s as u64))?;
                    Ok((store, Adam::adamw(bench_adam_config())?))
                })
                .collect::<Result<Vec<_>>>()?;
            Ok(Box::new(Bench {
                sets,
                run: |(store, adam): &mut (ParamStore, Adam)| adam.step(store),
                validate: |(store, adam): &mut (ParamStore, Adam)| {
                    // The state before one more step, then the step, then the f64 reference.
                    let before: Vec<Tensor> = store.ids().map(|id| store.value(id).clone()).collect();
                    let state: HashMap<String, Tensor> = adam.state_tensors(store).into_iter().collect();
                    let steps: Vec<u64> = store.ids().map(|id| adam.steps(id)).collect();
                    let state_of = |kind: &str, name: &str| {
                        state
                            .get(&format!("{}{kind}.{name}", crate::optim::STATE_PREFIX))
                            .cloned()
                    };
                    let prior: Vec<(Option<Tensor>, Option<Tensor>)> = store
                        .ids()
                        .map(|id| (state_of("m", store.name(id)), state_of("v", store.name(id))))
                        .collect();
                    adam.step(store)?;
                    let after: HashMap<String, Tensor> = adam.state_tensors(store).into_iter().collect();
                    let cfg = bench_adam_config();
                    let mut ck = Checker::new();
                    for (j, id) in store.ids().enumerate() {
                        let name = store.name(id).to_string();
                        let key = |k: &str| format!("{}{k}.{name}", crate::optim::STATE_PREFIX);
                        let (Some(m_new), Some(v_new)) = (after.get(&key("m")), after.get(&key("v"))) else {
                            return Err(Error::config(format!("benchmark: Adam kept no state for `{name}`")));
                        };
                        let g = store
                            .grad(id)
                            .ok_or_else(|| Error::config(format!("benchmark: `{name}` lost its gradient")))?
                            .data();
                        let (p0, p1) = (before[j].data(), store.value(id).data());
                        let (m0, v0) = (&prior[j].0, &prior[j].1);
                        for i in check::sample_indices(p0.len(), SAMPLES / 8) {
                            let m = m0.as_ref().map_or(0.0, |t| t.data()[i] as f64);
                            let v = v0.as_ref().map_or(0.0, |t| t.data()[i] as f64);
                            let gv = g[i] as f64;
                            let (pw, mw, vw, scale) = adam_ref(&cfg, steps[j] + 1, p0[i] as f64, gv, m, v);
                            ck.close(&name, i, p1[i], pw, 16.0 * EPS * scale);
                            ck.close(&key("m"), i, m_new.data()[i], mw, 4.0 * EPS * (m.abs() + gv.abs()));
                            ck.close(&key("v"), i, v_new.data()[i], vw, 4.0 * EPS * (v.abs() + gv * gv));
                        }
                    }
                    Ok(ck)
                },
            }) as Box<dyn Runnable>)
        }),
    }
}

// ---------------------------------------------------------------------------------------------
// The list, and the run
// ---------------------------------------------------------------------------------------------

/// Every CPU case: the cases of `cases`, then the optimiser's.
pub(crate) fn cases(quick: bool) -> Result<Vec<CpuCase>> {
    let mut v: Vec<CpuCase> = cases::tensor_cases(quick, false)?.into_iter().map(from_case).collect();
    for (label, params) in shapes::adam_shapes(quick)? {
        v.push(adam_case(&label, params));
    }
    Ok(v)
}

/// The rayon-parallel copy the memory-bound kernels are compared with: `dst = src` in 1 MiB
/// chunks (each read once and written once, like an element-wise kernel's streams). Counted as
/// 2 bytes moved per byte copied, as STREAM does, although writing `dst` also makes the memory
/// read it (for ownership of the lines): a kernel that updates in place (Adam) or reads more than
/// it writes pays less of that, and can beat this yardstick by up to 1.5×.
fn parallel_copy(src: &[f32], dst: &mut [f32]) {
    const CHUNK: usize = 1 << 18;
    dst.par_chunks_mut(CHUNK)
        .zip(src.par_chunks(CHUNK))
        .for_each(|(d, s)| d.copy_from_slice(s));
}

/// Measure the copy bandwidth: (bytes read + written) / median time of copying a buffer far
/// larger than the caches.
fn copy_bandwidth(plan: &Plan) -> Result<(Yardstick, Timing, usize)> {
    let len: usize = if plan.quick { 16 << 20 } else { 64 << 20 };
    let src = uniform(&[len], -1.0, 1.0, 0xc0b1)?;
    let mut dst = vec![0.0f32; len];
    let timing = measure(plan, 1, |_| {
        let t = Instant::now();
        parallel_copy(src.data(), &mut dst);
        Ok(t.elapsed().as_secs_f64())
    })?;
    // A yardstick that did not copy would make every kernel look good.
    let mut ck = Checker::new();
    for i in check::sample_indices(len, SAMPLES) {
        ck.close("copy", i, dst[i], src.data()[i] as f64, 0.0);
    }
    ck.finish()
        .map_err(|m| Error::config(format!("the copy-bandwidth measurement did not copy: {m}")))?;
    let gbps = (2 * F32 * len) as f64 / timing.median_s / 1e9;
    Ok((Yardstick::bandwidth(gbps), timing, len * F32))
}

/// Run the selected CPU cases: header, copy bandwidth, then one table row per case.
pub fn run(opts: &BenchOptions) -> Result<Report> {
    let plan = Plan::new(opts.quick);
    let cases = select(cases(opts.quick)?, |c| &c.info, opts.filter.as_deref())?;
    let threads = rayon::current_num_threads();
    let cpu = cpu_info();
    let (cache_bytes, cache_source) = cpu_last_level_cache();
    let commit = git_commit();

    say(&format!(
        "vitcore bench kernels: cpu, {}, {threads} threads (rayon), commit {}{}",
        cpu.model,
        commit.as_deref().unwrap_or("unknown"),
        if opts.quick { ", --quick" } else { "" }
    ));
    // The yardstick of the matrix products, measured on every thread before any case runs.
    let measured = if opts.quick {
        peak::measure(0.02, 3)
    } else {
        peak::measure(0.1, 5)
    };
    let nominal = match cpu.clock_mhz {
        Some(mhz) if cfg!(target_arch = "x86_64") => {
            let lanes = peak::lanes(crate::backend::cpu::gemm::Isa::best());
            format!(
                "; the nominal figure from {:.3} GHz ({}) x 2 FMA pipes x {lanes} lanes x 2 flop would be {:.1}",
                mhz / 1e3,
                cpu.clock_source,
                nominal_peak_gflops(threads, mhz, lanes)
            )
        }
        _ => String::new(),
    };
    say(&format!(
        "f32 peak: {:.1} GFLOP/s, {}{nominal}",
        measured.gflops, measured.method
    ));
    let peak = Some(Yardstick::flops("CPU peak", measured.gflops));
    say(&format!(
        "inputs rotate over sets totalling at least 2x the {} MiB last-level cache ({cache_source}) where memory allows",
        cache_bytes >> 20
    ));
    let (copy, copy_timing, copy_bytes) = copy_bandwidth(&plan)?;
    say(&format!(
        "copy bandwidth: {:.1} GB/s (rayon parallel copy of {} MiB, read + write, median of {})",
        copy.value,
        copy_bytes >> 20,
        copy_timing.runs
    ));
    say("");
    say(&table_header());

    let env = Env {
        quick: opts.quick,
        cache_bytes,
    };
    let mut records = Vec::with_capacity(cases.len());
    for case in cases {
        let mut bench = (case.prepare)(&env)?;
        let timing = measure(&plan, bench.sets(), |set| {
            let t = Instant::now();
            bench.run(set)?;
            Ok(t.elapsed().as_secs_f64())
        })?;
        let validation = Validation::from_check(bench.validate()?.finish());
        drop(bench);
        pool::clear(); // give this case's buffers back before the next case allocates its own
        let info = case.info.resolve(copy.value, peak.as_ref().map(|p| p.value));
        let yardstick = match info.bound {
            Bound::Compute => peak.clone(),
            Bound::Memory | Bound::Roofline => Some(copy.clone()),
        };
        let record = Record::new(&info, timing, yardstick, validation);
        say(&table_row(&record));
        records.push(record);
    }
    let above = records
        .iter()
        .filter(|r| r.bound == Bound::Compute && r.ratio.is_some_and(|x| x > 1.0))
        .count();
    if above > 0 {
        // A warning, on stderr: stdout is the table.
        crate::errln!(
            "note: {above} matrix product(s) ran faster than the measured peak, which the peak's method should \
             not allow: measure on a quiet machine before trusting those ratios"
        );
    }
    Ok(Report {
        vitcore_version: env!("CARGO_PKG_VERSION"),
        commit,
        quick: opts.quick,
        filter: opts.filter.clone(),
        device: DeviceInfo {
            kind: "cpu".into(),
            name: cpu.model,
            parallelism: threads,
            clock_mhz: cpu.clock_mhz,
            clock_source: Some(cpu.clock_source),
            cache_bytes,
            cache_source,
            detail: None,
        },
        copy_bandwidth: copy,
        peak,
        peak_method: Some(measured.method),
        records,
        not_on_this_device: Vec::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn adam_validates_against_the_f64_update() {
        let case = cases(true)
            .unwrap()
            .into_iter()
            .find(|c| c.info.kernel == "adam")
            .expect("an adam case");
        let env = Env {
            quick: true,
            cache_bytes: 1,
        };
        let mut bench = (case.prepare)(&env).unwrap();
        for _ in 0..3 {
            bench.run(0).unwrap();
        }
        let ok = bench.validate().unwrap().finish().unwrap_or_else(|m| panic!("{m}"));
        assert!(ok.elements > 0);
        // The reference itself: one step from zero moments moves p by about lr against g.
        let cfg = bench_adam_config();
        let (p, m, v, _) = adam_ref(&cfg, 1, 0.5, 0.01, 0.0, 0.0);
        assert!((m - 0.001).abs() < 1e-12 && (v - 1e-7).abs() < 1e-15);
        assert!((p - (0.5 * (1.0 - 1e-3 * 0.05) - 1e-3 * 0.01 / (0.01 + 1e-8))).abs() < 1e-12);
    }
}
