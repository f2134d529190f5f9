//! Adam and AdamW: adaptive moment estimation, with L2 or decoupled weight decay.
//!
//! # The update
//! For one parameter `p` with gradient `g` at step `t = 1, 2, ...` (counted per parameter, as in
//! PyTorch: a step in which the parameter has no gradient does not count), with learning rate
//! `lr`, betas `(β1, β2)`, `eps` and weight decay `λ`:
//!
//! ```text
//! Adam  (L2):        g ← g + λ·p                      // decay folded into the gradient
//! AdamW (decoupled): p ← p·(1 − lr·λ)                  // decay applied to the weight directly
//!
//! m ← m + (1 − β1)·(g − m)          = β1·m + (1 − β1)·g      first moment (mean of g)
//! v ← β2·v + (1 − β2)·g²                                     second moment (uncentred variance)
//!
//! m̂ = m / (1 − β1ᵗ)      v̂ = v / (1 − β2ᵗ)                  bias correction
//! p ← p − lr · m̂ / (√v̂ + eps)
//! ```
//!
//! The last line is computed as PyTorch does, folding the corrections into two scalars:
//! `step_size = lr / (1 − β1ᵗ)`, `denom = √v / √(1 − β2ᵗ) + eps`, `p ← p − step_size · m / denom`.
//!
//! TensorFlow/Keras's Adam adds its epsilon to `√v` *before* the bias correction (the "ε̂" of
//! Kingma & Ba, in the formula just before their §2.1, as Keras's documentation says):
//! `p ← p − lr·√(1 − β2ᵗ)/(1 − β1ᵗ) · m / (√v + ε̂)`, which is the line above with
//! `eps = ε̂ / √(1 − β2ᵗ)`. [`Adam::with_eps_hat`] takes `eps` as ε̂ and computes that per-step
//! `eps`, so both devices' kernels run unchanged. The two differ in the first steps (at t = 1 the
//! effective eps is 32·ε̂ with β2 = 0.999) and for parameters whose gradients are about eps.
//! The scalars are computed in f64 (PyTorch computes them as Python floats) and rounded to f32
//! once; the element-wise work is f32 in the same order of operations as PyTorch's CPU kernels.
//!
//! # Why each piece
//! * **Moments.** `m` is an exponential moving average of the gradient (momentum: noise from
//!   minibatches averages out); `v` of its square. Dividing by `√v` gives every coordinate a step
//!   of about `lr` whatever the scale of its gradient, which is why Adam needs little tuning across
//!   layers as different as a patch embedding and a layernorm gain.
//! * **Bias correction.** `m` and `v` start at 0, so early on they are shrunk towards 0: after `t`
//!   steps of a constant gradient `g`, `m = (1 − β1ᵗ)·g`. Dividing by `1 − β1ᵗ` undoes exactly that
//!   shrinkage (likewise for `v`), so the very first step already has size ≈ `lr`, not `lr·(1−β1)`.
//! * **`eps`** keeps the division finite where `v ≈ 0` (parameters whose gradient is always ~0).
//! * **L2 vs decoupled decay.** Adding `λ·p` to the gradient (Adam) sends the decay through the
//!   `1/√v̂` normalisation, so weights with large gradients are barely decayed. AdamW (Loshchilov &
//!   Hutter, "Decoupled Weight Decay Regularization") shrinks the weight by `lr·λ` directly,
//!   independent of the gradient statistics; it is what ViT training recipes use.
//! * **No-decay parameters.** Recipes exclude biases, layernorm gains/offsets, the class token and
//!   the position embedding from decay (shrinking a norm gain towards 0 is not a regulariser, it
//!   changes what the layer computes). [`default_no_decay`] names them; set it with
//!   [`Adam::with_no_decay`]. Without a predicate every parameter is decayed (PyTorch's default).
//!
//! # One fused pass
//! Each parameter is updated in a single pass over `(p, g, m, v)` — every element is read and
//! written once, which is what bounds an optimiser step (it is memory-bound) — split into rayon
//! tasks for tensors larger than [`PAR_GRAIN`].
//!
//! # State
//! Per parameter (indexed like the [`ParamStore`]): the step count `t` and the moments `m`, `v`,
//! created as zeros at the parameter's first step. [`Adam::state_tensors`] and
//! [`Adam::state_metadata`] name them `optim.m.<param>`, `optim.v.<param>` and
//! `optim.step.<param>` for a checkpoint; [`Adam::load_state`] restores them, so a resumed run
//! takes exactly the steps the uninterrupted one would have.

use crate::autograd::{ParamId, ParamStore};
use crate::backend::cpu::PAR_GRAIN;
use crate::backend::cuda::CudaDevice;
use crate::backend::Device;
use crate::error::{Error, Result};
use crate::optim::STATE_PREFIX;
use crate::tensor::Tensor;
use rayon::prelude::*;
use std::collections::HashMap;
use std::fmt;
use std::path::Path;
use std::sync::Arc;

/// How weight decay enters the update.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DecayMode {
    /// `torch.optim.Adam`: `g ← g + λ·p`.
    L2,
    /// `torch.optim.AdamW`: `p ← p·(1 − lr·λ)` before the Adam step.
    Decoupled,
}

/// Hyper-parameters, as Python floats are in PyTorch (f64; rounded to f32 where they meet tensors).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AdamConfig {
    pub lr: f64,
    pub betas: (f64, f64),
    pub eps: f64,
    pub weight_decay: f64,
}

impl Default for AdamConfig {
    /// PyTorch's defaults for `Adam` (AdamW's default decay is 0.01: set it explicitly).
    fn default() -> Self {
        AdamConfig {
            lr: 1e-3,
            betas: (0.9, 0.999),
            eps: 1e-8,
            weight_decay: 0.0,
        }
    }
}

impl AdamConfig {
    /// The same checks as PyTorch's constructor: `lr, eps, λ ≥ 0` and `0 ≤ β < 1`, all finite.
    pub fn validate(&self) -> Result<()> {
        let (b1, b2) = self.betas;
        let bad =
            |what: &str, v: f64, need: &str| Err(Error::config(format!("Adam: invalid {what} {v} (expected {need})")));
        if !(self.lr.is_finite() && self.lr >= 0.0) {
            return bad("learning rate", self.lr, "a finite value >= 0");
        }
        if !(self.eps.is_finite() && self.eps >= 0.0) {
            return bad("eps", self.eps, "a finite value >= 0");
        }
        if !(self.weight_decay.is_finite() && self.weight_decay >= 0.0) {
            return bad("weight_decay", self.weight_decay, "a finite value >= 0");
        }
        if !(0.0..1.0).contains(&b1) {
            return bad("beta1", b1, "0 <= beta1 < 1");
        }
        if !(0.0..1.0).contains(&b2) {
            return bad("beta2", b2, "0 <= beta2 < 1");
        }
        Ok(())
    }
}

/// The usual ViT recipe's "no weight decay" set: biases, anything with `norm` in its name
/// (layernorm weights and biases), `cls_token` and `pos_embed`.
pub fn default_no_decay(name: &str) -> bool {
    name.ends_with(".bias") || name.contains("norm") || name == "cls_token" || name == "pos_embed"
}

/// A predicate on parameter names: `true` means "do not decay this one".
pub type NoDecayFn = Arc<dyn Fn(&str) -> bool + Send + Sync>;

/// A parameter's learning-rate factor by its name.
pub type LrScaleFn = Arc<dyn Fn(&str) -> f64 + Send + Sync>;

#[derive(Clone, Debug)]
struct ParamState {
    step: u64,
    m: Tensor,
    v: Tensor,
}

/// Adam or AdamW (see the module documentation for the update).
#[derive(Clone)]
pub struct Adam {
    cfg: AdamConfig,
    mode: DecayMode,
    no_decay: Option<NoDecayFn>,
    /// Each parameter's learning-rate factor by name (layer-wise decay); `None`: 1 for all.
    lr_scale: Option<LrScaleFn>,
    /// `cfg.eps` is Keras's ε̂ (see the module documentation).
    eps_hat: bool,
    /// Indexed by `ParamId.0`; `None` until the parameter's first step.
    state: Vec<Option<ParamState>>,
}

impl fmt::Debug for Adam {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Adam")
            .field("cfg", &self.cfg)
            .field("mode", &self.mode)
            .field("no_decay", &self.no_decay.as_ref().map(|_| "<predicate>"))
            .field("eps_hat", &self.eps_hat)
            .field("params_with_state", &self.state.iter().flatten().count())
            .finish()
    }
}

/// The per-step scalars of the fused update: defined with the kernel that takes them
/// (`backend::cuda::adam`); the rule that computes them is here, with the optimiser.
pub use crate::backend::cuda::AdamCoeffs;

impl AdamCoeffs {
    /// The scalars for step `step` (1-based, per parameter) of a parameter that is decayed when
    /// `decayed` (i.e. [`Adam::decays`] of its name).
    pub fn new(cfg: &AdamConfig, mode: DecayMode, decayed: bool, step: u64) -> AdamCoeffs {
        let AdamConfig {
            lr,
            betas: (b1, b2),
            eps,
            weight_decay,
        } = *cfg;
        let wd = if decayed { weight_decay } else { 0.0 };
        let t = step as f64;
        let (l2, decay_mul) = match mode {
            DecayMode::L2 => (wd, 1.0),
            DecayMode::Decoupled => (0.0, 1.0 - lr * wd),
        };
        AdamCoeffs {
            l2: l2 as f32,
            decay_mul: decay_mul as f32,
            one_minus_b1: (1.0 - b1) as f32,
            b2: b2 as f32,
            one_minus_b2: (1.0 - b2) as f32,
            bc2_sqrt: (1.0 - b2.powf(t)).sqrt() as f32,
            eps: eps as f32,
            step_size: (lr / (1.0 - b1.powf(t))) as f32,
        }
    }
}

/// The fused update of one block: each element of `(p, g, m, v)` is read and written once.
fn update_block(p: &mut [f32], g: &[f32], m: &mut [f32], v: &mut [f32], k: AdamCoeffs) {
    for (((p, &g), m), v) in p.iter_mut().zip(g).zip(m.iter_mut()).zip(v.iter_mut()) {
        // Adam: grad.add(param, alpha=λ). A plain `if` keeps the common λ = 0 case exact.
        let g = if k.l2 != 0.0 { g + k.l2 * *p } else { g };
        // AdamW: param.mul_(1 − lr·λ).
        let pv = if k.decay_mul != 1.0 { *p * k.decay_mul } else { *p };
        // exp_avg.lerp_(g, 1 − β1)  (weight < 0.5: self + w·(end − self)).
        *m += k.one_minus_b1 * (g - *m);
        // exp_avg_sq.mul_(β2).addcmul_(g, g, value = 1 − β2).
        *v = *v * k.b2 + k.one_minus_b2 * g * g;
        // denom = √v / √(1 − β2ᵗ) + eps;  param.addcdiv_(m, denom, value = −step_size).
        let denom = v.sqrt() / k.bc2_sqrt + k.eps;
        *p = pv + (-k.step_size) * *m / denom;
    }
}

fn update(p: &mut [f32], g: &[f32], m: &mut [f32], v: &mut [f32], k: AdamCoeffs) {
    if p.len() >= PAR_GRAIN {
        p.par_chunks_mut(PAR_GRAIN)
            .zip(g.par_chunks(PAR_GRAIN))
            .zip(m.par_chunks_mut(PAR_GRAIN))
            .zip(v.par_chunks_mut(PAR_GRAIN))
            .for_each(|(((p, g), m), v)| update_block(p, g, m, v, k));
    } else {
        update_block(p, g, m, v, k);
    }
}

impl Adam {
    /// An optimiser with the given decay mode; fails on invalid hyper-parameters.
    pub fn new(cfg: AdamConfig, mode: DecayMode) -> Result<Adam> {
        cfg.validate()?;
        Ok(Adam {
            cfg,
            mode,
            no_decay: None,
            lr_scale: None,
            eps_hat: false,
            state: Vec::new(),
        })
    }

    /// `torch.optim.Adam`: L2 weight decay added to the gradient.
    #[allow(clippy::self_named_constructors)] // `Adam::adam` / `Adam::adamw` read as a pair
    pub fn adam(cfg: AdamConfig) -> Result<Adam> {
        Adam::new(cfg, DecayMode::L2)
    }

    /// `torch.optim.AdamW`: decoupled weight decay.
    pub fn adamw(cfg: AdamConfig) -> Result<Adam> {
        Adam::new(cfg, DecayMode::Decoupled)
    }

    /// Multiply each parameter's learning rate by `scale(name)` (layer-wise learning-rate decay:
    /// `train::layer_decay_scale`). Weight decay in AdamW mode is scaled with it, as in a
    /// PyTorch parameter group with its own `lr`.
    pub fn with_lr_scale(mut self, scale: impl Fn(&str) -> f64 + Send + Sync + 'static) -> Adam {
        self.lr_scale = Some(Arc::new(scale));
        self
    }

    /// Take `eps` as TensorFlow/Keras's ε̂, added to `√v` before the bias correction instead of
    /// after it (see the module documentation).
    pub fn with_eps_hat(mut self, eps_hat: bool) -> Adam {
        self.eps_hat = eps_hat;
        self
    }

    /// Exclude the parameters for which `no_decay(name)` is true from weight decay (both modes),
    /// e.g. `.with_no_decay(default_no_decay)`.
    pub fn with_no_decay(mut self, no_decay: impl Fn(&str) -> bool + Send + Sync + 'static) -> Adam {
        self.no_decay = Some(Arc::new(no_decay));
        self
    }

    pub fn config(&self) -> &AdamConfig {
        &self.cfg
    }
    pub fn mode(&self) -> DecayMode {
        self.mode
    }
    pub fn lr(&self) -> f64 {
        self.cfg.lr
    }
    /// Set the learning rate for the next steps (what a schedule does every step).
    pub fn set_lr(&mut self, lr: f64) {
        self.cfg.lr = lr;
    }

    /// Whether weight decay applies to the parameter called `name`.
    pub fn decays(&self, name: &str) -> bool {
        self.cfg.weight_decay != 0.0 && !self.no_decay.as_ref().is_some_and(|f| f(name))
    }

    /// How many steps parameter `id` has taken (0 before its first).
    pub fn steps(&self, id: ParamId) -> u64 {
        self.state.get(id.0).and_then(|s| s.as_ref()).map_or(0, |s| s.step)
    }

    /// Forget all state (moments and step counts).
    pub fn reset(&mut self) {
        self.state.clear();
    }

    /// One update of every parameter that has a gradient; parameters without one are skipped
    /// (their moments and step count are left as they are, like PyTorch).
    pub fn step(&mut self, params: &mut ParamStore) -> Result<()> {
        if !(self.cfg.lr.is_finite() && self.cfg.lr >= 0.0) {
            return Err(Error::config(format!(
                "Adam: invalid learning rate {} (expected a finite value >= 0)",
                self.cfg.lr
            )));
        }
        if self.state.len() < params.len() {
            self.state.resize(params.len(), None);
        }
        let ids: Vec<ParamId> = params.ids().collect();
        for id in ids {
            if params.grad(id).is_none() {
                continue;
            }
            let decayed = self.decays(params.name(id));
            let name = params.name(id).to_string();
            let (value, grad) = params.value_and_grad_mut(id);
            let grad = grad.expect("checked above");
            if grad.shape() != value.shape() {
                return Err(Error::shape(
                    "Adam::step",
                    value.shape(),
                    grad.shape(),
                    format!("the gradient of `{name}` does not have the parameter's shape"),
                ));
            }
            if self.state[id.0].is_none() {
                self.state[id.0] = Some(ParamState {
                    step: 0,
                    m: Tensor::zeros_on(value.shape(), value.device())?,
                    v: Tensor::zeros_on(value.shape(), value.device())?,
                });
            }
            let st = self.state[id.0].as_mut().expect("set above");
            if st.m.shape() != value.shape() {
                return Err(Error::shape(
                    "Adam::step",
                    value.shape(),
                    st.m.shape(),
                    format!(
                        "the optimiser state of `{name}` has another shape than the parameter \
                         (was the parameter store replaced?)"
                    ),
                ));
            }
            st.step += 1;
            let mut k = match &self.lr_scale {
                None => AdamCoeffs::new(&self.cfg, self.mode, decayed, st.step),
                Some(scale) => {
                    let cfg = AdamConfig {
                        lr: self.cfg.lr * scale(&name),
                        ..self.cfg.clone()
                    };
                    AdamCoeffs::new(&cfg, self.mode, decayed, st.step)
                }
            };
            if self.eps_hat {
                k.eps = (self.cfg.eps / (1.0 - self.cfg.betas.1.powf(st.step as f64)).sqrt()) as f32;
            }
            match crate::backend::same_device("Adam::step", &[value, grad, &st.m, &st.v])? {
                Device::Cpu => update(value.data_mut(), grad.data(), st.m.data_mut(), st.v.data_mut(), k),
                Device::Cuda => {
                    let n = value.numel();
                    let dev = CudaDevice::global()?;
                    dev.adam_step(
                        value.cuda_mut()?,
                        grad.cuda()?,
                        st.m.cuda_mut()?,
                        st.v.cuda_mut()?,
                        n,
                        &k,
                    )?;
                }
            }
        }
        Ok(())
    }

    /// Move the moments to `device` (after loading a checkpoint into a model that trains there).
    pub fn to_device(&mut self, device: Device) -> Result<()> {
        for st in self.state.iter_mut().flatten() {
            st.m = st.m.to_device(device)?;
            st.v = st.v.to_device(device)?;
        }
        Ok(())
    }

    /// The moments, named `optim.m.<param>` and `optim.v.<param>`, for every parameter that has
    /// taken a step (the tensors share storage with the state: cheap, and copied on write).
    pub fn state_tensors(&self, params: &ParamStore) -> Vec<(String, Tensor)> {
        let mut out = Vec::new();
        for id in params.ids() {
            if let Some(Some(st)) = self.state.get(id.0) {
                let name = params.name(id);
                out.push((format!("{STATE_PREFIX}m.{name}"), st.m.clone()));
                out.push((format!("{STATE_PREFIX}v.{name}"), st.v.clone()));
            }
        }
        out
    }

    /// The step counts as checkpoint metadata: `optim.step.<param>` = `t`, plus `optim.kind`
    /// (`adam` or `adamw`, informative only).
    pub fn state_metadata(&self, params: &ParamStore) -> HashMap<String, String> {
        let mut meta = HashMap::new();
        let kind = match self.mode {
            DecayMode::L2 => "adam",
            DecayMode::Decoupled => "adamw",
        };
        meta.insert(format!("{STATE_PREFIX}kind"), kind.to_string());
        for id in params.ids() {
            if let Some(Some(st)) = self.state.get(id.0) {
                meta.insert(format!("{STATE_PREFIX}step.{}", params.name(id)), st.step.to_string());
            }
        }
        meta
    }

    /// Restore the state written by [`Adam::state_tensors`] / [`Adam::state_metadata`].
    ///
    /// `tensors` may hold other tensors too (the model's); only names under `optim.` are read.
    /// Every state entry must belong to a parameter of `params` with the same shape, and each
    /// parameter's `m`, `v` and step must all be present; otherwise nothing is changed and the
    /// error lists every problem. Returns how many parameters got their state back (0 for a
    /// checkpoint without optimiser state: the caller may want to warn).
    pub fn load_state(
        &mut self,
        params: &ParamStore,
        tensors: &[(String, Tensor)],
        metadata: &HashMap<String, String>,
    ) -> Result<usize> {
        let pm = format!("{STATE_PREFIX}m.");
        let pv = format!("{STATE_PREFIX}v.");
        let ps = format!("{STATE_PREFIX}step.");
        let mut ms: HashMap<&str, &Tensor> = HashMap::new();
        let mut vs: HashMap<&str, &Tensor> = HashMap::new();
        let mut problems = Vec::new();
        for (name, t) in tensors {
            if let Some(p) = name.strip_prefix(&pm) {
                ms.insert(p, t);
            } else if let Some(p) = name.strip_prefix(&pv) {
                vs.insert(p, t);
            } else if name.starts_with(STATE_PREFIX) {
                problems.push(format!(
                    "unknown optimiser state tensor `{name}` (Adam keeps `{pm}*` and `{pv}*`)"
                ));
            }
        }
        let steps: HashMap<&str, &str> = metadata
            .iter()
            .filter_map(|(k, v)| k.strip_prefix(&ps).map(|p| (p, v.as_str())))
            .collect();

        let mut state: Vec<Option<ParamState>> = vec![None; params.len()];
        let mut names: Vec<&str> = ms.keys().chain(vs.keys()).chain(steps.keys()).copied().collect();
        names.sort_unstable();
        names.dedup();
        for name in names {
            let Some(id) = params.id(name) else {
                problems.push(format!(
                    "optimiser state for `{name}`, which is not a parameter of the model"
                ));
                continue;
            };
            let expect = params.value(id).shape();
            let (m, v, step) = (ms.get(name), vs.get(name), steps.get(name));
            let (Some(m), Some(v), Some(step)) = (m, v, step) else {
                let missing: Vec<String> = [
                    (m.is_none(), format!("tensor `{pm}{name}`")),
                    (v.is_none(), format!("tensor `{pv}{name}`")),
                    (step.is_none(), format!("metadata `{ps}{name}`")),
                ]
                .into_iter()
                .filter_map(|(miss, what)| miss.then_some(what))
                .collect();
                problems.push(format!(
                    "incomplete optimiser state for `{name}`: missing {}",
                    missing.join(", ")
                ));
                continue;
            };
            let step = match step.parse::<u64>() {
                Ok(s) if s >= 1 => s,
                _ => {
                    problems.push(format!("metadata `{ps}{name}` is `{step}`, expected a step count >= 1"));
                    continue;
                }
            };
            let mut ok = true;
            for (what, t) in [("m", m), ("v", v)] {
                if t.shape() != expect {
                    problems.push(format!(
                        "`{STATE_PREFIX}{what}.{name}`: parameter has shape {expect:?}, state has \
                         shape {:?}",
                        t.shape()
                    ));
                    ok = false;
                }
            }
            if ok {
                state[id.0] = Some(ParamState {
                    step,
                    m: (*m).clone(),
                    v: (*v).clone(),
                });
            }
        }
        if !problems.is_empty() {
            return Err(Error::config(format!(
                "optimiser state does not match the model: {}",
                problems.join("; ")
            )));
        }
        let restored = state.iter().flatten().count();
        self.state = state;
        Ok(restored)
    }

    /// [`Adam::load_state`] from a checkpoint file; errors name the file.
    pub fn load_state_file(&mut self, path: impl AsRef<Path>, params: &ParamStore) -> Result<usize> {
        let path = path.as_ref();
        let (tensors, metadata) = crate::checkpoint::load(path)?;
        self.load_state(params, &tensors, &metadata).map_err(|e| match e {
            Error::Config(msg) => Error::checkpoint(path, msg),
            other => other,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An independent f64 transcription of the formulas in the module doc (not of the kernel).
    struct Reference {
        p: Vec<f64>,
        m: Vec<f64>,
        v: Vec<f64>,
        t: i32,
    }

    impl Reference {
        fn new(p: &[f32]) -> Self {
            let n = p.len();
            Reference {
                p: p.iter().map(|&x| x as f64).collect(),
                m: vec![0.0; n],
                v: vec![0.0; n],
                t: 0,
            }
        }
        fn step(&mut self, g: &[f32], cfg: &AdamConfig, mode: DecayMode, decay: bool) {
            let (b1, b2) = cfg.betas;
            let (lr, eps) = (cfg.lr, cfg.eps);
            let wd = if decay { cfg.weight_decay } else { 0.0 };
            self.t += 1;
            for i in 0..self.p.len() {
                let mut g = g[i] as f64;
                match mode {
                    DecayMode::L2 => g += wd * self.p[i],
                    DecayMode::Decoupled => self.p[i] -= lr * wd * self.p[i],
                }
                self.m[i] = b1 * self.m[i] + (1.0 - b1) * g;
                self.v[i] = b2 * self.v[i] + (1.0 - b2) * g * g;
                let mhat = self.m[i] / (1.0 - b1.powi(self.t));
                let vhat = self.v[i] / (1.0 - b2.powi(self.t));
                self.p[i] -= lr * mhat / (vhat.sqrt() + eps);
            }
        }
    }

    fn assert_close(got: &[f32], want: &[f64], tol: f64, what: &str) {
        assert_eq!(got.len(), want.len());
        for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
            assert!(
                (g as f64 - w).abs() <= tol * (1.0 + w.abs()),
                "{what}[{i}]: got {g}, want {w}"
            );
        }
    }

    fn grads_for_step(s: usize, n: usize) -> Vec<f32> {
        (0..n)
            .map(|i| ((i as f32 * 0.37 + s as f32 * 1.3).sin() * 2.0 - 0.3) * (1.0 + i as f32))
            .collect()
    }

    fn run_against_reference(mode: DecayMode, wd: f64, n: usize, steps: usize) {
        let cfg = AdamConfig {
            lr: 0.01,
            betas: (0.9, 0.999),
            eps: 1e-8,
            weight_decay: wd,
        };
        let init: Vec<f32> = (0..n).map(|i| (i as f32 * 0.7).cos() * 1.5).collect();
        let mut params = ParamStore::new();
        let id = params.add("w", Tensor::from_vec(init.clone(), &[n]).unwrap()).unwrap();
        let mut opt = Adam::new(cfg, mode).unwrap();
        let mut reference = Reference::new(&init);
        for s in 0..steps {
            let g = grads_for_step(s, n);
            params.zero_grad();
            set_grad(&mut params, id, g.clone());
            opt.step(&mut params).unwrap();
            reference.step(&g, &cfg, mode, true);
            assert_close(params.value(id).data(), &reference.p, 1e-5, &format!("step {s} p"));
        }
        assert_eq!(opt.steps(id), steps as u64);
    }

    /// Put a gradient into the store the way training does: a backward pass (here, of the
    /// parameter itself, seeded with `g`) accumulated into the store.
    fn set_grad(params: &mut ParamStore, id: ParamId, g: Vec<f32>) {
        let shape = params.value(id).shape().to_vec();
        let mut graph = crate::autograd::Graph::new();
        let x = graph.param(params, id);
        let seed = Tensor::from_vec(g, &shape).unwrap();
        let grads = graph.backward_with(x, seed).unwrap();
        params.accumulate_grads(&grads).unwrap();
    }

    #[test]
    fn first_step_is_lr_times_sign() {
        // Step 1: m̂ = g, v̂ = g², so Δp = −lr·g/(|g| + eps) ≈ −lr·sign(g).
        let mut params = ParamStore::new();
        let id = params
            .add("w", Tensor::from_vec(vec![1.0, -2.0, 3.0], &[3]).unwrap())
            .unwrap();
        set_grad(&mut params, id, vec![0.5, -4.0, 1e-3]);
        let mut opt = Adam::adam(AdamConfig {
            lr: 0.1,
            ..Default::default()
        })
        .unwrap();
        opt.step(&mut params).unwrap();
        let want = [
            1.0 - 0.1 * 0.5 / (0.5 + 1e-8),
            -2.0 + 0.1 * 4.0 / (4.0 + 1e-8),
            3.0 - 0.1 * 1e-3 / (1e-3 + 1e-8),
        ];
        assert_close(params.value(id).data(), &want, 1e-6, "p");
    }

    #[test]
    fn eps_hat_is_keras_epsilon_added_before_the_bias_correction() {
        // TensorFlow/Keras: p ← p − lr·√(1 − β2ᵗ)/(1 − β1ᵗ) · m/(√v + ε̂), in f64, with gradients
        // small enough next to ε̂ that where it is added shows.
        let (lr, (b1, b2), eps) = (0.1, (0.9, 0.999), 1e-3);
        let mut params = ParamStore::new();
        let id = params.add("w", Tensor::from_vec(vec![1.0; 3], &[3]).unwrap()).unwrap();
        let cfg = AdamConfig {
            lr,
            betas: (b1, b2),
            eps,
            weight_decay: 0.0,
        };
        let mut opt = Adam::adam(cfg).unwrap().with_eps_hat(true);
        let (mut p, mut m, mut v) = ([1f64; 3], [0f64; 3], [0f64; 3]);
        for t in 1..=4 {
            let g = [1e-3 * t as f64, -2e-3, 5e-4];
            params.zero_grad();
            set_grad(&mut params, id, g.iter().map(|&x| x as f32).collect());
            opt.step(&mut params).unwrap();
            let alpha = lr * (1.0 - b2.powi(t)).sqrt() / (1.0 - b1.powi(t));
            for i in 0..3 {
                m[i] = b1 * m[i] + (1.0 - b1) * g[i];
                v[i] = b2 * v[i] + (1.0 - b2) * g[i] * g[i];
                p[i] -= alpha * m[i] / (v[i].sqrt() + eps);
            }
            assert_close(params.value(id).data(), &p, 1e-6, &format!("step {t}"));
        }
        // PyTorch's placement takes other steps from the same gradients.
        let mut torch = ParamStore::new();
        let tid = torch.add("w", Tensor::from_vec(vec![1.0; 3], &[3]).unwrap()).unwrap();
        set_grad(&mut torch, tid, vec![1e-3, -2e-3, 5e-4]);
        Adam::adam(cfg).unwrap().step(&mut torch).unwrap();
        assert!((torch.value(tid).data()[2] - (1.0 - 0.1 * 5e-4 / (5e-4 + 1e-3)) as f32).abs() < 1e-6);
    }

    #[test]
    fn adam_matches_reference() {
        run_against_reference(DecayMode::L2, 0.0, 7, 5);
    }

    #[test]
    fn adam_l2_decay_matches_reference() {
        run_against_reference(DecayMode::L2, 0.1, 7, 5);
    }

    #[test]
    fn adamw_matches_reference() {
        run_against_reference(DecayMode::Decoupled, 0.05, 7, 5);
    }

    #[test]
    fn parallel_path_matches_reference() {
        // Larger than PAR_GRAIN: the rayon path, with a block boundary inside the tensor.
        run_against_reference(DecayMode::Decoupled, 0.05, PAR_GRAIN * 2 + 123, 3);
        run_against_reference(DecayMode::L2, 0.05, PAR_GRAIN * 2 + 123, 3);
    }

    #[test]
    fn adamw_decay_only_on_decayed_params() {
        // Zero gradient: Adam's step is 0 (m = 0), so only the decay moves the weight.
        let mut params = ParamStore::new();
        let w = params.add("blocks.0.mlp.fc1.weight", Tensor::full(&[4], 2.0)).unwrap();
        let b = params.add("blocks.0.mlp.fc1.bias", Tensor::full(&[4], 2.0)).unwrap();
        let n = params.add("blocks.0.norm1.weight", Tensor::full(&[4], 2.0)).unwrap();
        for id in [w, b, n] {
            set_grad(&mut params, id, vec![0.0; 4]);
        }
        let cfg = AdamConfig {
            lr: 0.1,
            weight_decay: 0.5,
            ..Default::default()
        };
        let mut opt = Adam::adamw(cfg).unwrap().with_no_decay(default_no_decay);
        opt.step(&mut params).unwrap();
        // p·(1 − lr·λ) = 2·(1 − 0.05) = 1.9
        assert_close(params.value(w).data(), &[1.9; 4], 1e-7, "weight");
        assert_close(params.value(b).data(), &[2.0; 4], 0.0, "bias");
        assert_close(params.value(n).data(), &[2.0; 4], 0.0, "norm");
    }

    #[test]
    fn default_no_decay_names() {
        for n in [
            "head.bias",
            "norm.weight",
            "blocks.3.norm2.bias",
            "cls_token",
            "pos_embed",
        ] {
            assert!(default_no_decay(n), "{n}");
        }
        for n in ["head.weight", "blocks.0.attn.qkv.weight", "patch_embed.proj.weight"] {
            assert!(!default_no_decay(n), "{n}");
        }
    }

    #[test]
    fn params_without_grad_are_skipped() {
        let mut params = ParamStore::new();
        let a = params.add("a", Tensor::full(&[2], 1.0)).unwrap();
        let b = params.add("b", Tensor::full(&[2], 1.0)).unwrap();
        let cfg = AdamConfig {
            lr: 0.1,
            weight_decay: 0.1,
            ..Default::default()
        };
        let mut opt = Adam::adamw(cfg).unwrap();
        set_grad(&mut params, a, vec![1.0, 1.0]);
        opt.step(&mut params).unwrap();
        assert_eq!(params.value(b).data(), &[1.0, 1.0], "no grad: not even decayed");
        assert_eq!((opt.steps(a), opt.steps(b)), (1, 0));
        // b's first step later is its own step 1 (full bias correction), like PyTorch.
        params.zero_grad();
        set_grad(&mut params, b, vec![1.0, 1.0]);
        opt.step(&mut params).unwrap();
        assert_eq!((opt.steps(a), opt.steps(b)), (1, 1));
        let want = 1.0 * (1.0 - 0.01) - 0.1 * 1.0 / (1.0 + 1e-8);
        assert_close(params.value(b).data(), &[want, want], 1e-6, "b");
    }

    #[test]
    fn adamw_minimises_a_quadratic() {
        // f(x) = ½ Σ aᵢ (xᵢ − cᵢ)², ∇f = aᵢ (xᵢ − cᵢ); curvatures spread over 3 decades.
        let a = [0.01f32, 0.1, 1.0, 10.0];
        let c = [1.0f32, -2.0, 0.5, 3.0];
        let mut params = ParamStore::new();
        let id = params.add("x", Tensor::zeros(&[4])).unwrap();
        let cfg = AdamConfig {
            lr: 0.1,
            weight_decay: 1e-4,
            ..Default::default()
        };
        let mut opt = Adam::adamw(cfg).unwrap();
        let total = 3000;
        let sched = crate::optim::LrScheduler::new(
            0.1,
            crate::optim::Schedule::WarmupCosine {
                warmup_steps: 50,
                total_steps: total,
                min_lr: 0.0,
            },
        )
        .unwrap();
        for s in 0..total {
            let x = params.value(id).to_vec();
            let g: Vec<f32> = (0..4).map(|i| a[i] * (x[i] - c[i])).collect();
            params.zero_grad();
            set_grad(&mut params, id, g);
            opt.set_lr(sched.lr(s));
            opt.step(&mut params).unwrap();
        }
        let x = params.value(id).to_vec();
        for i in 0..4 {
            assert!((x[i] - c[i]).abs() < 1e-2, "x = {x:?}, minimum at {c:?}");
        }
    }

    #[test]
    fn invalid_config_is_an_error() {
        for cfg in [
            AdamConfig {
                lr: -1.0,
                ..Default::default()
            },
            AdamConfig {
                betas: (1.0, 0.999),
                ..Default::default()
            },
            AdamConfig {
                betas: (0.9, -0.1),
                ..Default::default()
            },
            AdamConfig {
                eps: f64::NAN,
                ..Default::default()
            },
            AdamConfig {
                weight_decay: -0.1,
                ..Default::default()
            },
        ] {
            let e = Adam::adamw(cfg).unwrap_err().to_string();
            assert!(e.starts_with("Adam: invalid"), "{e}");
        }
    }

    #[test]
    fn state_round_trip_in_memory_and_errors() {
        let mut params = ParamStore::new();
        let id = params.add("w", Tensor::full(&[3], 1.0)).unwrap();
        params.add("unused", Tensor::full(&[2], 1.0)).unwrap();
        let mut opt = Adam::adamw(AdamConfig::default()).unwrap();
        set_grad(&mut params, id, vec![1.0, 2.0, 3.0]);
        opt.step(&mut params).unwrap();
        opt.step(&mut params).unwrap();
        let tensors = opt.state_tensors(&params);
        let meta = opt.state_metadata(&params);
        let names: Vec<&str> = tensors.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["optim.m.w", "optim.v.w"]);
        assert_eq!(meta.get("optim.step.w").map(String::as_str), Some("2"));
        assert_eq!(meta.get("optim.kind").map(String::as_str), Some("adamw"));

        let mut fresh = Adam::adamw(AdamConfig::default()).unwrap();
        assert_eq!(fresh.load_state(&params, &tensors, &meta).unwrap(), 1);
        assert_eq!(fresh.steps(id), 2);

        // Missing v, wrong shape, unknown parameter: one error listing each, state untouched.
        let bad = vec![
            ("optim.m.w".to_string(), Tensor::zeros(&[4])),
            ("optim.v.w".to_string(), Tensor::zeros(&[4])),
            ("optim.m.ghost".to_string(), Tensor::zeros(&[1])),
        ];
        let e = fresh.load_state(&params, &bad, &meta).unwrap_err().to_string();
        assert!(e.contains("[3]") && e.contains("[4]"), "{e}");
        assert!(e.contains("`ghost`"), "{e}");
        assert_eq!(fresh.steps(id), 2, "a failed load leaves the state as it was");
        let no_v = vec![("optim.m.w".to_string(), Tensor::zeros(&[3]))];
        let e = fresh.load_state(&params, &no_v, &meta).unwrap_err().to_string();
        assert!(e.contains("missing tensor `optim.v.w`"), "{e}");
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
}
