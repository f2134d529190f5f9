//! What the GPU test suites share: finding the GPU (or saying why the test is skipped), seeded
//! random inputs, and the relative-error check.
//!
//! Without a usable GPU each test prints `skipped: <reason>` and passes; with
//! `VITCORE_REQUIRE_CUDA=1` (set by `scripts/gpu-check.sh`) a missing GPU fails instead. A GPU
//! that is present but whose kernels do not compile or load always fails.
#![allow(dead_code)] // each suite uses its own subset

use std::sync::{Arc, Mutex, MutexGuard};
use vitcore::backend::cuda::{cuda_available, CudaDevice};
use vitcore::rng::Rng;
use vitcore::Tensor;

/// The GPU, held by one test at a time: the allocator's counters are process-wide, so a test
/// that checks them must not see another test's allocations (cargo runs tests on threads).
pub struct Gpu {
    dev: Arc<CudaDevice>,
    _turn: MutexGuard<'static, ()>,
}

impl std::ops::Deref for Gpu {
    type Target = CudaDevice;
    fn deref(&self) -> &CudaDevice {
        &self.dev
    }
}

/// The GPU, or `None` after printing why the test is skipped.
pub fn gpu() -> Option<Gpu> {
    static TURN: Mutex<()> = Mutex::new(());
    if let Err(why) = cuda_available() {
        if std::env::var("VITCORE_REQUIRE_CUDA").is_ok_and(|v| v == "1") {
            panic!("VITCORE_REQUIRE_CUDA=1 but no usable GPU: {why}");
        }
        println!("skipped: {why}");
        return None;
    }
    // A GPU is there: failing to set it up (a kernel that does not compile or load) is a failure.
    let turn = TURN.lock().unwrap_or_else(|e| e.into_inner()); // a failed test must not block the rest
    match CudaDevice::global() {
        Ok(dev) => Some(Gpu { dev, _turn: turn }),
        Err(e) => panic!("a GPU is present but the CUDA backend failed: {e}"),
    }
}

/// The GPU, or return from the test (skipped).
#[macro_export]
macro_rules! gpu_or_skip {
    () => {
        match cuda_common::gpu() {
            Some(d) => d,
            None => return,
        }
    };
}

/// A generator seeded afresh each run (printed; `VITCORE_TEST_SEED` replays one).
pub fn rng(test: &str) -> Rng {
    let seed = std::env::var("VITCORE_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64)
        });
    println!("{test}: seed {seed}");
    Rng::new(seed)
}

pub fn rand_vec(r: &mut Rng, n: usize, lo: f32, hi: f32) -> Vec<f32> {
    (0..n).map(|_| r.uniform_in(lo, hi)).collect()
}

/// A CPU tensor of uniform values in [-1, 1).
pub fn rand_tensor(r: &mut Rng, shape: &[usize]) -> Tensor {
    Tensor::from_vec(rand_vec(r, shape.iter().product(), -1.0, 1.0), shape).unwrap()
}

/// ‖gpu − cpu‖ / ‖cpu‖ ≤ `tol` (absolute when the reference is all zeros); NaN anywhere fails.
pub fn check_tol(what: &str, gpu: &[f32], cpu: &[f32], tol: f64) {
    assert_eq!(gpu.len(), cpu.len(), "{what}: lengths differ");
    if let Some(i) = gpu.iter().position(|v| v.is_nan()) {
        panic!("{what}: GPU result has NaN at {i}");
    }
    assert!(cpu.iter().all(|v| !v.is_nan()), "{what}: CPU reference has NaN");
    let (mut num, mut den) = (0.0f64, 0.0f64);
    for (&g, &c) in gpu.iter().zip(cpu) {
        num += (g as f64 - c as f64).powi(2);
        den += (c as f64).powi(2);
    }
    let err = if den > 0.0 { (num / den).sqrt() } else { num.sqrt() };
    println!("  {what}: relative error {err:.2e} over {} elements", cpu.len());
    assert!(err <= tol, "{what}: relative error {err:.3e} > {tol:e}");
}

/// As [`check_tol`], but for inputs holding NaN or ±Inf: every element the CPU makes NaN must be
/// NaN on the GPU, every ±Inf the same infinity, and the finite elements must agree within `tol`
/// relative to the finite reference's norm. A NaN where the CPU has a number fails.
pub fn check_non_finite(what: &str, gpu: &[f32], cpu: &[f32], tol: f64) {
    assert_eq!(gpu.len(), cpu.len(), "{what}: lengths differ");
    let (mut num, mut den) = (0.0f64, 0.0f64);
    for (i, (&g, &c)) in gpu.iter().zip(cpu).enumerate() {
        if c.is_nan() {
            assert!(g.is_nan(), "{what}: element {i} is {g} on the GPU, NaN on the CPU");
        } else if c.is_infinite() {
            assert_eq!(g, c, "{what}: element {i} is {g} on the GPU, {c} on the CPU");
        } else {
            assert!(g.is_finite(), "{what}: element {i} is {g} on the GPU, {c} on the CPU");
            num += (g as f64 - c as f64).powi(2);
            den += (c as f64).powi(2);
        }
    }
    let err = if den > 0.0 { (num / den).sqrt() } else { num.sqrt() };
    let non_finite = cpu.iter().filter(|v| !v.is_finite()).count();
    println!("  {what}: {non_finite} non-finite elements match, finite relative error {err:.2e}");
    assert!(err <= tol, "{what}: relative error {err:.3e} > {tol:e}");
}
