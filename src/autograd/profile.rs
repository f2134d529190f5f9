//! An op-level profiler: wall time per (op, forward/backward), switched on with
//! `VITCORE_PROFILE=1` or [`enable`]. Off, it costs one relaxed atomic load per op.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::Instant;

static ENABLED: AtomicBool = AtomicBool::new(false);
static INIT: std::sync::Once = std::sync::Once::new();
static TABLE: Mutex<Option<HashMap<(&'static str, &'static str), (u64, f64)>>> = Mutex::new(None);

pub fn enable(on: bool) {
    INIT.call_once(|| {});
    ENABLED.store(on, Ordering::Relaxed);
}

fn enabled() -> bool {
    INIT.call_once(|| {
        if std::env::var("VITCORE_PROFILE").is_ok_and(|v| v != "0") {
            ENABLED.store(true, Ordering::Relaxed);
        }
    });
    ENABLED.load(Ordering::Relaxed)
}

pub(crate) fn start() -> Option<Instant> {
    enabled().then(Instant::now)
}

pub(crate) fn stop(t: Option<Instant>, op: &'static str, phase: &'static str) {
    if let Some(t) = t {
        let dt = t.elapsed().as_secs_f64();
        let mut g = TABLE.lock().unwrap_or_else(|e| e.into_inner());
        let e = g
            .get_or_insert_with(HashMap::new)
            .entry((op, phase))
            .or_insert((0, 0.0));
        e.0 += 1;
        e.1 += dt;
    }
}

/// `(op, phase, calls, seconds)`, slowest first; clears the table.
pub fn take() -> Vec<(&'static str, &'static str, u64, f64)> {
    let mut g = TABLE.lock().unwrap_or_else(|e| e.into_inner());
    let mut rows: Vec<_> = g
        .take()
        .unwrap_or_default()
        .into_iter()
        .map(|((o, p), (n, s))| (o, p, n, s))
        .collect();
    rows.sort_by(|a, b| b.3.total_cmp(&a.3));
    rows
}

/// The table as text.
pub fn report() -> String {
    let rows = take();
    let total: f64 = rows.iter().map(|r| r.3).sum();
    let mut s = format!(
        "{:<16} {:<9} {:>7} {:>10} {:>6}\n",
        "op", "phase", "calls", "seconds", "share"
    );
    for (op, phase, n, secs) in rows {
        s += &format!(
            "{op:<16} {phase:<9} {n:>7} {secs:>10.4} {:>5.1}%\n",
            100.0 * secs / total.max(1e-12)
        );
    }
    s
}
