//! Optimisers and what drives them: the update rule, gradient clipping and learning-rate schedules.
//!
//! One training step, in the order these pieces act:
//!
//! ```text
//! params.zero_grad()
//! loss = model(batch); grads = graph.backward(loss); params.accumulate_grads(&grads)
//! clip::clip_grad_norm(&mut params, 1.0)          // optional: bound the step when grads spike
//! opt.set_lr(sched.lr(step))                        // per-step schedule (warmup + cosine)
//! opt.step(&mut params)                             // Adam / AdamW update
//! ...once per epoch: sched.step_epoch(val_loss); if early_stop.should_stop(val_loss) { break }
//! ```
//!
//! * [`adam`]: Adam (L2 decay folded into the gradient) and AdamW (decoupled decay), bias-corrected,
//!   following `torch.optim.Adam` / `torch.optim.AdamW`, with state that saves into a checkpoint.
//! * [`clip`]: clipping gradients by value and by global L2 norm.
//! * [`ema`]: an exponential moving average of the weights, validated and saved instead of them.
//! * [`schedule`]: constant, warmup + cosine and reduce-on-plateau learning rates, early stopping.

pub mod adam;
pub mod clip;
pub mod ema;
pub mod schedule;

pub use adam::{default_no_decay, Adam, AdamConfig, DecayMode};
pub use clip::{clip_grad_norm, clip_grad_value, grad_norm};
pub use ema::Ema;
pub use schedule::{warmup_cosine, EarlyStopping, LrScheduler, PlateauRule, Schedule};

/// Names of checkpoint tensors and metadata keys that hold optimiser (and scheduler) state start
/// with this prefix. [`crate::checkpoint::load_into`] skips them, so one file can hold both the
/// model and the state needed to resume training.
pub const STATE_PREFIX: &str = "optim.";
