//! Learning-rate schedules and early stopping.
//!
//! # Constant
//! `lr(s) = base_lr`.
//!
//! # Warmup + cosine (per optimiser step `s = 0, 1, ...`)
//! ```text
//! s < W:          lr(s) = base_lr · s / W                                  linear warmup from 0
//! W ≤ s ≤ T:      lr(s) = min_lr + (base_lr − min_lr) · ½ (1 + cos(π · (s − W) / (T − W)))
//! s > T:          lr(s) = min_lr
//! ```
//! with `W = warmup_steps`, `T = total_steps`; so `lr(0) = 0`, `lr(W) = base_lr`,
//! `lr((W+T)/2) = (base_lr + min_lr)/2` and `lr(T) = min_lr` (the warmup is that of Hugging Face's
//! `get_cosine_schedule_with_warmup`, the cosine that of `CosineAnnealingLR` with `eta_min`).
//! Why warm up: at step 0 Adam's moment estimates come from a handful of minibatches and a
//! transformer's attention logits are untrained, so full-size steps can push the model into a bad
//! region it never leaves; ViTs in particular train unstably without warmup. Why cosine: it keeps
//! the rate high for most of training and anneals smoothly to `min_lr` at the end, where small
//! steps let the weights settle into a minimum.
//!
//! # Reduce on plateau (once per epoch, on a validation metric; PyTorch `ReduceLROnPlateau`,
//! `mode='min'`, `threshold_mode='rel'`, `cooldown=0`)
//! ```text
//! best = +∞, bad = 0, lr = base_lr
//! each epoch, metric x:
//!     if x < best · (1 − threshold):  best = x; bad = 0     // relative improvement
//!     else:                           bad += 1
//!     if bad > patience:                                     // patience bad epochs are tolerated
//!         lr_new = max(lr · factor, min_lr)
//!         if lr − lr_new > 1e-8: lr = lr_new                 // no-op once at min_lr
//!         bad = 0
//! ```
//! So with `patience = 2` the lr drops at the end of the third epoch in a row without an
//! improvement larger than `threshold` (1e-4 = 0.01 % in PyTorch's default).
//!
//! [`PlateauRule::Keras`] is Keras's `ReduceLROnPlateau` (`mode='min'`, `min_delta=1e-4`,
//! `cooldown=0`) instead, which differs in three places:
//! ```text
//!     if x < best − min_delta:        best = x; bad = 0     // absolute improvement
//!     else:                           bad += 1
//!         if bad ≥ patience and lr > min_lr:                 // the patience-th bad epoch
//!             lr = max(lr · factor, min_lr); bad = 0         // no 1e-8 floor on the change
//! ```
//! so with the same `patience` Keras lowers the rate one epoch sooner than PyTorch.
//!
//! # Early stopping
//! ```text
//! each epoch, validation loss x:
//!     if best is unset or x < best − min_delta:  best = x; bad = 0   (an improvement)
//!     else:                                      bad += 1
//!         stop when bad ≥ patience
//! ```
//! Stopping when the validation loss has not improved for `patience` epochs avoids spending compute
//! on a model that is only overfitting; [`EarlyStopping::improved`] tells the caller when to save
//! the "best" checkpoint. A NaN loss is never an improvement.

use crate::error::{Error, Result};
use crate::optim::STATE_PREFIX;
use std::collections::HashMap;

/// Which learning-rate schedule (hyper-parameters only; [`LrScheduler`] holds the state).
#[derive(Clone, Debug, PartialEq)]
pub enum Schedule {
    Constant,
    WarmupCosine {
        warmup_steps: usize,
        total_steps: usize,
        min_lr: f64,
    },
    ReduceOnPlateau {
        factor: f64,
        patience: usize,
        min_lr: f64,
        /// The improvement that counts: relative (PyTorch's `threshold`) or absolute (Keras's
        /// `min_delta`), by `rule`.
        threshold: f64,
        rule: PlateauRule,
    },
}

/// Whose reduce-on-plateau to follow (see the module documentation).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PlateauRule {
    /// `torch.optim.lr_scheduler.ReduceLROnPlateau`.
    Torch,
    /// `keras.callbacks.ReduceLROnPlateau`.
    Keras,
}

impl Schedule {
    /// Reduce on plateau with PyTorch's relative threshold of 1e-4.
    pub fn reduce_on_plateau(factor: f64, patience: usize, min_lr: f64) -> Schedule {
        Schedule::ReduceOnPlateau {
            factor,
            patience,
            min_lr,
            threshold: 1e-4,
            rule: PlateauRule::Torch,
        }
    }

    /// Reduce on plateau as Keras does, with its default `min_delta` of 1e-4 (absolute).
    pub fn reduce_on_plateau_keras(factor: f64, patience: usize, min_lr: f64) -> Schedule {
        Schedule::ReduceOnPlateau {
            factor,
            patience,
            min_lr,
            threshold: 1e-4,
            rule: PlateauRule::Keras,
        }
    }
}

/// The warmup + cosine learning rate at optimiser step `step` (see the module documentation).
pub fn warmup_cosine(base_lr: f64, step: usize, warmup_steps: usize, total_steps: usize, min_lr: f64) -> f64 {
    if step < warmup_steps {
        return base_lr * step as f64 / warmup_steps as f64;
    }
    if step >= total_steps {
        // Also covers warmup == total, where the cosine part has no length.
        return min_lr;
    }
    let progress = (step - warmup_steps) as f64 / (total_steps - warmup_steps) as f64;
    min_lr + (base_lr - min_lr) * 0.5 * (1.0 + (std::f64::consts::PI * progress).cos())
}

/// PyTorch's `eps` of `ReduceLROnPlateau`: smaller lr changes are ignored.
const PLATEAU_EPS: f64 = 1e-8;

/// A schedule with its state: call [`LrScheduler::lr`] before every optimiser step and
/// [`LrScheduler::step_epoch`] after every validation.
#[derive(Clone, Debug)]
pub struct LrScheduler {
    schedule: Schedule,
    base_lr: f64,
    /// Reduce-on-plateau state: current lr, best metric, epochs since it improved.
    plateau_lr: f64,
    best: f64,
    bad_epochs: usize,
}

fn check(ok: bool, what: &str, value: f64, need: &str) -> Result<()> {
    if ok {
        Ok(())
    } else {
        Err(Error::config(format!(
            "lr schedule: invalid {what} {value} (expected {need})"
        )))
    }
}

impl LrScheduler {
    /// A scheduler starting from `base_lr`; fails on invalid hyper-parameters.
    pub fn new(base_lr: f64, schedule: Schedule) -> Result<LrScheduler> {
        check(
            base_lr.is_finite() && base_lr >= 0.0,
            "base lr",
            base_lr,
            "a finite value >= 0",
        )?;
        match schedule {
            Schedule::Constant => {}
            Schedule::WarmupCosine {
                warmup_steps,
                total_steps,
                min_lr,
            } => {
                check(
                    warmup_steps <= total_steps,
                    "warmup_steps",
                    warmup_steps as f64,
                    &format!("<= total_steps = {total_steps}"),
                )?;
                check(
                    min_lr.is_finite() && (0.0..=base_lr).contains(&min_lr),
                    "min_lr",
                    min_lr,
                    &format!("0 <= min_lr <= base lr = {base_lr}"),
                )?;
            }
            Schedule::ReduceOnPlateau {
                factor,
                min_lr,
                threshold,
                ..
            } => {
                check(factor > 0.0 && factor < 1.0, "factor", factor, "0 < factor < 1")?;
                check(
                    min_lr.is_finite() && min_lr >= 0.0,
                    "min_lr",
                    min_lr,
                    "a finite value >= 0",
                )?;
                check(
                    threshold.is_finite() && (0.0..1.0).contains(&threshold),
                    "threshold",
                    threshold,
                    "0 <= threshold < 1",
                )?;
            }
        }
        Ok(LrScheduler {
            schedule,
            base_lr,
            plateau_lr: base_lr,
            best: f64::INFINITY,
            bad_epochs: 0,
        })
    }

    pub fn schedule(&self) -> &Schedule {
        &self.schedule
    }
    pub fn base_lr(&self) -> f64 {
        self.base_lr
    }

    /// The learning rate for optimiser step `step` (0-based, counted over the whole run).
    pub fn lr(&self, step: usize) -> f64 {
        match self.schedule {
            Schedule::Constant => self.base_lr,
            Schedule::WarmupCosine {
                warmup_steps,
                total_steps,
                min_lr,
            } => warmup_cosine(self.base_lr, step, warmup_steps, total_steps, min_lr),
            Schedule::ReduceOnPlateau { .. } => self.plateau_lr,
        }
    }

    /// Feed one epoch's validation metric (lower is better). Returns `true` when this call lowered
    /// the learning rate. Only reduce-on-plateau uses it; for the other schedules it does nothing.
    pub fn step_epoch(&mut self, metric: f64) -> bool {
        let Schedule::ReduceOnPlateau {
            factor,
            patience,
            min_lr,
            threshold,
            rule,
        } = self.schedule
        else {
            return false;
        };
        let improved = match rule {
            PlateauRule::Torch => metric < self.best * (1.0 - threshold),
            PlateauRule::Keras => metric < self.best - threshold,
        };
        // NaN compares false: a NaN epoch counts as a bad one, as in PyTorch and Keras.
        if improved {
            self.best = metric;
            self.bad_epochs = 0;
            return false;
        }
        self.bad_epochs += 1;
        let new_lr = (self.plateau_lr * factor).max(min_lr);
        match rule {
            PlateauRule::Torch if self.bad_epochs > patience => {
                self.bad_epochs = 0;
                if self.plateau_lr - new_lr > PLATEAU_EPS {
                    self.plateau_lr = new_lr;
                    return true;
                }
            }
            PlateauRule::Keras if self.bad_epochs >= patience && self.plateau_lr > min_lr => {
                self.bad_epochs = 0;
                self.plateau_lr = new_lr;
                return true;
            }
            _ => {}
        }
        false
    }

    /// The state a resumed run needs (`optim.sched.*`; exact, f64 written in shortest round-trip
    /// form). Warmup-cosine and constant are functions of the step: nothing to save but the step,
    /// which the training loop keeps.
    pub fn state_metadata(&self) -> HashMap<String, String> {
        HashMap::from([
            (format!("{STATE_PREFIX}sched.lr"), self.plateau_lr.to_string()),
            (format!("{STATE_PREFIX}sched.best"), self.best.to_string()),
            (format!("{STATE_PREFIX}sched.bad_epochs"), self.bad_epochs.to_string()),
        ])
    }

    /// Restore what [`LrScheduler::state_metadata`] wrote; fails (changing nothing) if a key is
    /// missing or malformed.
    pub fn load_state_metadata(&mut self, metadata: &HashMap<String, String>) -> Result<()> {
        let lr: f64 = parse_meta(metadata, "sched.lr")?;
        let best: f64 = parse_meta(metadata, "sched.best")?;
        let bad: usize = parse_meta(metadata, "sched.bad_epochs")?;
        self.plateau_lr = lr;
        self.best = best;
        self.bad_epochs = bad;
        Ok(())
    }
}

fn parse_meta<T: std::str::FromStr>(metadata: &HashMap<String, String>, key: &str) -> Result<T> {
    let key = format!("{STATE_PREFIX}{key}");
    let value = metadata
        .get(&key)
        .ok_or_else(|| Error::config(format!("checkpoint metadata has no `{key}`")))?;
    value.parse().map_err(|_| {
        Error::config(format!(
            "checkpoint metadata `{key}` = `{value}` is not a valid {}",
            std::any::type_name::<T>()
        ))
    })
}

/// Stop training once the validation loss has not improved by more than `min_delta` for
/// `patience` epochs in a row.
#[derive(Clone, Debug)]
pub struct EarlyStopping {
    patience: usize,
    min_delta: f64,
    best: Option<f64>,
    bad_epochs: usize,
    improved: bool,
}

impl EarlyStopping {
    pub fn new(patience: usize, min_delta: f64) -> Result<EarlyStopping> {
        check(
            min_delta.is_finite() && min_delta >= 0.0,
            "early-stopping min_delta",
            min_delta,
            "a finite value >= 0",
        )?;
        Ok(EarlyStopping {
            patience,
            min_delta,
            best: None,
            bad_epochs: 0,
            improved: false,
        })
    }

    /// Record one epoch's validation loss; `true` means stop now.
    pub fn should_stop(&mut self, val_loss: f64) -> bool {
        self.improved = match self.best {
            None => !val_loss.is_nan(),
            Some(best) => val_loss < best - self.min_delta,
        };
        if self.improved {
            self.best = Some(val_loss);
            self.bad_epochs = 0;
        } else {
            self.bad_epochs += 1;
        }
        // Only a non-improving epoch can stop (with patience 0: the first one).
        !self.improved && self.bad_epochs >= self.patience
    }

    /// The best validation loss seen so far.
    pub fn best(&self) -> Option<f64> {
        self.best
    }
    /// Whether the last [`EarlyStopping::should_stop`] call set a new best (save a checkpoint).
    pub fn improved(&self) -> bool {
        self.improved
    }
    /// Epochs since the last improvement.
    pub fn bad_epochs(&self) -> usize {
        self.bad_epochs
    }
    pub fn patience(&self) -> usize {
        self.patience
    }
    pub fn min_delta(&self) -> f64 {
        self.min_delta
    }

    /// The state a resumed run needs (`optim.early.*`).
    pub fn state_metadata(&self) -> HashMap<String, String> {
        let best = self.best.map_or("none".to_string(), |b| b.to_string());
        HashMap::from([
            (format!("{STATE_PREFIX}early.best"), best),
            (format!("{STATE_PREFIX}early.bad_epochs"), self.bad_epochs.to_string()),
        ])
    }

    /// Restore what [`EarlyStopping::state_metadata`] wrote; fails (changing nothing) if a key is
    /// missing or malformed.
    pub fn load_state_metadata(&mut self, metadata: &HashMap<String, String>) -> Result<()> {
        let best_key = format!("{STATE_PREFIX}early.best");
        let best = match metadata.get(&best_key).map(String::as_str) {
            Some("none") => None,
            _ => Some(parse_meta::<f64>(metadata, "early.best")?),
        };
        let bad: usize = parse_meta(metadata, "early.bad_epochs")?;
        self.best = best;
        self.bad_epochs = bad;
        self.improved = false;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() <= 1e-12 * (1.0 + b.abs())
    }

    #[test]
    fn constant() {
        let s = LrScheduler::new(3e-4, Schedule::Constant).unwrap();
        assert_eq!(s.lr(0), 3e-4);
        assert_eq!(s.lr(1_000_000), 3e-4);
    }

    #[test]
    fn warmup_cosine_key_points() {
        let (base, min) = (1e-3, 1e-5);
        let s = LrScheduler::new(
            base,
            Schedule::WarmupCosine {
                warmup_steps: 100,
                total_steps: 1100,
                min_lr: min,
            },
        )
        .unwrap();
        assert_eq!(s.lr(0), 0.0, "warmup starts at 0");
        assert!(close(s.lr(50), base * 0.5), "halfway through warmup");
        assert!(close(s.lr(99), base * 0.99));
        assert!(close(s.lr(100), base), "end of warmup: the base lr");
        assert!(close(s.lr(600), (base + min) / 2.0), "middle of the cosine");
        // A quarter into the cosine: ½(1 + cos(π/4)).
        let q = min + (base - min) * 0.5 * (1.0 + (std::f64::consts::FRAC_PI_4).cos());
        assert!(close(s.lr(350), q));
        assert!(close(s.lr(1100), min), "end: min_lr");
        assert_eq!(s.lr(5000), min, "after the end: min_lr");
        // Monotone decreasing after warmup.
        for k in 100..1100 {
            assert!(s.lr(k + 1) <= s.lr(k), "step {k}");
        }
    }

    #[test]
    fn warmup_cosine_edge_cases() {
        // No warmup: starts at the base lr.
        assert_eq!(warmup_cosine(1.0, 0, 0, 10, 0.0), 1.0);
        // Warmup spans the whole run: never reaches the cosine.
        assert!(close(warmup_cosine(1.0, 5, 10, 10, 0.0), 0.5));
        assert_eq!(warmup_cosine(1.0, 10, 10, 10, 0.1), 0.1);
        // Invalid settings are errors, not NaNs.
        assert!(LrScheduler::new(
            1.0,
            Schedule::WarmupCosine {
                warmup_steps: 11,
                total_steps: 10,
                min_lr: 0.0
            }
        )
        .is_err());
        assert!(LrScheduler::new(
            1.0,
            Schedule::WarmupCosine {
                warmup_steps: 1,
                total_steps: 10,
                min_lr: 2.0
            }
        )
        .is_err());
        assert!(LrScheduler::new(f64::NAN, Schedule::Constant).is_err());
    }

    #[test]
    fn reduce_on_plateau_after_patience_bad_epochs() {
        let mut s = LrScheduler::new(1.0, Schedule::reduce_on_plateau(0.5, 2, 0.2)).unwrap();
        assert!(!s.step_epoch(1.0)); // best = 1.0
        assert!(!s.step_epoch(0.99995)); // within the 1e-4 relative threshold: bad 1
        assert!(!s.step_epoch(1.5)); // bad 2 = patience: tolerated
        assert_eq!(s.lr(0), 1.0);
        assert!(s.step_epoch(1.2)); // bad 3 > patience: reduce
        assert_eq!(s.lr(0), 0.5);
        // The counter restarts after a reduction.
        assert!(!s.step_epoch(2.0));
        assert!(!s.step_epoch(2.0));
        assert!(s.step_epoch(2.0));
        assert_eq!(s.lr(0), 0.25);
        // An improvement resets the counter.
        assert!(!s.step_epoch(2.0));
        assert!(!s.step_epoch(0.5)); // new best
        assert!(!s.step_epoch(0.6));
        assert!(!s.step_epoch(0.6));
        assert_eq!(s.lr(0), 0.25);
        // min_lr: 0.25·0.5 = 0.125 is clamped to 0.2, then no further change.
        assert!(s.step_epoch(0.6));
        assert_eq!(s.lr(0), 0.2);
        for _ in 0..10 {
            assert!(!s.step_epoch(0.6));
        }
        assert_eq!(s.lr(0), 0.2);
    }

    #[test]
    fn keras_plateau_lowers_on_the_patience_th_bad_epoch_by_absolute_improvement() {
        let mut s = LrScheduler::new(1.0, Schedule::reduce_on_plateau_keras(0.1, 2, 2e-3)).unwrap();
        assert!(!s.step_epoch(1.0)); // best = 1.0
        assert!(!s.step_epoch(0.99995)); // not below best − 1e-4: bad 1
        assert!(s.step_epoch(0.99992)); // bad 2 = patience: Keras lowers now (PyTorch: one later)
        assert!(close(s.lr(0), 0.1));
        assert!(!s.step_epoch(0.9)); // an improvement of 0.1 resets
        assert!(!s.step_epoch(0.9));
        assert!(s.step_epoch(0.9));
        assert!(close(s.lr(0), 0.01));
        assert!(!s.step_epoch(0.9));
        assert!(s.step_epoch(0.9)); // 0.001 clamped to min_lr, then no further change
        assert_eq!(s.lr(0), 2e-3);
        for _ in 0..5 {
            assert!(!s.step_epoch(0.9));
        }
        // Down to min_lr even when the change is under PyTorch's 1e-8 floor.
        let mut tiny = LrScheduler::new(1e-8, Schedule::reduce_on_plateau_keras(0.1, 0, 1e-10)).unwrap();
        assert!(!tiny.step_epoch(1.0));
        assert!(tiny.step_epoch(1.0) && tiny.step_epoch(1.0));
        assert!((tiny.lr(0) - 1e-10).abs() < 1e-20);
        let mut torch = LrScheduler::new(1e-8, Schedule::reduce_on_plateau(0.1, 0, 1e-10)).unwrap();
        assert!(!torch.step_epoch(1.0) && !torch.step_epoch(1.0));
        assert_eq!(torch.lr(0), 1e-8);
    }

    #[test]
    fn reduce_on_plateau_nan_is_a_bad_epoch_and_state_round_trips() {
        let mut s = LrScheduler::new(1.0, Schedule::reduce_on_plateau(0.1, 0, 0.0)).unwrap();
        assert!(!s.step_epoch(1.0));
        assert!(s.step_epoch(f64::NAN));
        assert!(close(s.lr(0), 0.1));
        s.step_epoch(0.9);
        let meta = s.state_metadata();
        let mut t = LrScheduler::new(1.0, Schedule::reduce_on_plateau(0.1, 0, 0.0)).unwrap();
        t.load_state_metadata(&meta).unwrap();
        assert_eq!(t.lr(0), s.lr(0));
        assert_eq!(t.step_epoch(0.95), s.step_epoch(0.95));
        assert_eq!(t.lr(0), s.lr(0));
        assert!(t.load_state_metadata(&HashMap::new()).is_err());
        assert!(LrScheduler::new(1.0, Schedule::reduce_on_plateau(1.0, 0, 0.0)).is_err());
    }

    #[test]
    fn early_stopping() {
        let mut e = EarlyStopping::new(2, 0.01).unwrap();
        assert!(!e.should_stop(1.0));
        assert!(e.improved() && e.best() == Some(1.0));
        assert!(!e.should_stop(0.995)); // not better by more than min_delta
        assert!(!e.improved() && e.bad_epochs() == 1);
        assert!(!e.should_stop(0.9)); // improvement: counter reset
        assert!(e.improved() && e.best() == Some(0.9) && e.bad_epochs() == 0);
        assert!(!e.should_stop(f64::NAN)); // NaN: a bad epoch
        let saved = e.state_metadata();
        assert!(e.should_stop(0.95)); // second bad epoch = patience: stop
        assert_eq!(e.best(), Some(0.9));

        let mut r = EarlyStopping::new(2, 0.01).unwrap();
        r.load_state_metadata(&saved).unwrap();
        assert_eq!((r.best(), r.bad_epochs()), (Some(0.9), 1));
        assert!(r.should_stop(0.95));

        let mut z = EarlyStopping::new(0, 0.0).unwrap();
        assert!(!z.should_stop(1.0), "an improvement never stops");
        assert!(z.should_stop(1.0), "patience 0: the first bad epoch stops");
        assert!(EarlyStopping::new(1, -1.0).is_err());
        let mut fresh = EarlyStopping::new(3, 0.0).unwrap();
        fresh
            .load_state_metadata(&EarlyStopping::new(3, 0.0).unwrap().state_metadata())
            .unwrap();
        assert_eq!(fresh.best(), None);
    }
}
