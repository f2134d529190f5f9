//! Ctrl-C (SIGINT) and SIGTERM during training.
//!
//! The first signal only raises a flag (signal-hook sets an atomic in the handler, the one thing
//! a handler may safely do). The training loop reads it after every step: it finishes that step,
//! saves `last.safetensors` with its position inside the epoch, says how to resume and ends with
//! [`Error::Interrupted`](crate::Error::Interrupted), which the binary turns into exit status
//! 128 + signal (130, 143). A second signal exits at once with that status, whatever is running:
//! a checkpoint write in progress then leaves only its temporary file (removed on the next start),
//! never a damaged `last.safetensors`, because checkpoints are replaced by rename.

use crate::error::{Error, Result};
use signal_hook::consts::{SIGINT, SIGTERM};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

/// Whether a stop was asked for, and by which signal. The default one never fires.
#[derive(Clone, Debug, Default)]
pub struct Interrupt {
    requested: Arc<AtomicBool>,
    signal: Arc<AtomicUsize>,
}

impl Interrupt {
    /// Catch SIGINT and SIGTERM for the rest of the process (call once, from the command line).
    pub fn install() -> Result<Interrupt> {
        let me = Interrupt::default();
        for sig in [SIGINT, SIGTERM] {
            let failed = |e: std::io::Error| Error::config(format!("cannot install the handler of signal {sig}: {e}"));
            // The order matters: the exit is armed by the flag the first signal sets, so it must
            // check the flag before that signal's own action sets it.
            signal_hook::flag::register_conditional_shutdown(sig, 128 + sig, me.requested.clone()).map_err(failed)?;
            signal_hook::flag::register_usize(sig, me.signal.clone(), sig as usize).map_err(failed)?;
            signal_hook::flag::register(sig, me.requested.clone()).map_err(failed)?;
        }
        Ok(me)
    }

    /// The signal that asked to stop (`SIGINT` or `SIGTERM`), if one has arrived.
    pub fn requested(&self) -> Option<i32> {
        self.requested
            .load(Ordering::SeqCst)
            .then(|| self.signal.load(Ordering::SeqCst) as i32)
    }
}

/// The signal's usual name.
pub fn signal_name(signal: i32) -> &'static str {
    match signal {
        SIGINT => "SIGINT (Ctrl-C)",
        SIGTERM => "SIGTERM",
        _ => "a signal",
    }
}
