//! Exponential moving average (EMA) of the weights, evaluated instead of the weights themselves.
//!
//! After every optimiser step `t` (counting from 1), each parameter's shadow copy `θ̄` moves a
//! fraction `1 − d_t` of the way to the parameter `θ`:
//!
//! ```text
//! θ̄ ← d_t·θ̄ + (1 − d_t)·θ,        d_t = min(d, (1 + t) / (10 + t))
//! ```
//!
//! The shadow starts as the initial weights. The warm-up `d_t` is TensorFlow's
//! `tf.train.ExponentialMovingAverage(decay, num_updates)`: early on the average follows the
//! weights closely, because weights from the first steps are far from any good model. `d = 0.999`
//! averages over about `1 / (1 − d)` = 1,000 steps. Averaging the iterates of SGD-like
//! optimisers (Polyak & Juditsky, "Acceleration of stochastic approximation by averaging",
//! 1992) cancels much of the noise of the last steps; timm's `ModelEmaV3` and most recent ViT
//! recipes (DeiT) evaluate such an average.
//!
//! The average has no gradient: it is not part of the graph and costs two element-wise passes
//! over the parameters a step. Training reads and updates `θ`; evaluation swaps the shadows in
//! ([`Ema::swap`]) and back out.

use std::collections::HashMap;

use crate::autograd::{ParamId, ParamStore};
use crate::backend::Device;
use crate::error::{Error, Result};
use crate::ops::scale::scale;
use crate::tensor::Tensor;

/// Checkpoint tensors holding the shadows are named `ema.<parameter>`.
pub const PREFIX: &str = "ema.";
/// Checkpoint metadata key of the number of updates so far.
pub const UPDATES_KEY: &str = "ema.updates";

/// The moving average of every parameter of a [`ParamStore`].
pub struct Ema {
    decay: f64,
    updates: u64,
    /// One shadow per parameter, by [`ParamId`] index.
    shadow: Vec<Tensor>,
}

impl Ema {
    /// Start the average at the store's current values. `decay` must be in `[0, 1)`.
    pub fn new(decay: f64, params: &ParamStore) -> Result<Ema> {
        if !(decay.is_finite() && (0.0..1.0).contains(&decay)) {
            return Err(Error::config(format!("EMA: decay must be in [0, 1), found {decay}")));
        }
        Ok(Ema {
            decay,
            updates: 0,
            shadow: params.ids().map(|id| params.value(id).clone()).collect(),
        })
    }

    /// The decay the next update will use: `min(d, (1 + t) / (10 + t))` at update `t`.
    pub fn current_decay(&self) -> f64 {
        let t = (self.updates + 1) as f64;
        self.decay.min((1.0 + t) / (10.0 + t))
    }

    /// Updates so far.
    pub fn updates(&self) -> u64 {
        self.updates
    }

    /// Move every shadow towards its parameter (call after each optimiser step).
    pub fn update(&mut self, params: &ParamStore) -> Result<()> {
        let d = self.current_decay();
        for (id, avg) in params.ids().zip(self.shadow.iter_mut()) {
            let value = params.value(id);
            if avg.device() == Device::Cpu && value.device() == Device::Cpu {
                // In place on the host (the shadow's storage is not shared after the first step).
                let (d, e) = (d as f32, (1.0 - d) as f32);
                let src = value.data();
                crate::backend::cpu::map_into(avg.data_mut(), |off, out| {
                    for (o, &p) in out.iter_mut().zip(&src[off..]) {
                        *o = d * *o + e * p;
                    }
                });
            } else {
                let mut next = scale(avg, d as f32)?;
                next.add_assign(&scale(value, (1.0 - d) as f32)?)?;
                *avg = next;
            }
        }
        self.updates += 1;
        Ok(())
    }

    /// Exchange the parameters' values with the averages (call again to undo).
    pub fn swap(&mut self, params: &mut ParamStore) {
        let ids: Vec<ParamId> = params.ids().collect();
        for (id, avg) in ids.into_iter().zip(self.shadow.iter_mut()) {
            std::mem::swap(params.value_mut(id), avg);
        }
    }

    /// Move the averages to `device` (with the model).
    pub fn to_device(&mut self, device: Device) -> Result<()> {
        for t in &mut self.shadow {
            *t = t.to_device(device)?;
        }
        Ok(())
    }

    /// The averages as checkpoint tensors (`ema.<name>`) and the update count as metadata.
    pub fn state(&self, params: &ParamStore) -> (Vec<(String, Tensor)>, HashMap<String, String>) {
        let tensors = params
            .ids()
            .zip(&self.shadow)
            .map(|(id, t)| (format!("{PREFIX}{}", params.name(id)), t.clone()))
            .collect();
        let meta = HashMap::from([(UPDATES_KEY.to_string(), self.updates.to_string())]);
        (tensors, meta)
    }

    /// Restore the averages a checkpoint `path` holds (written by [`Ema::state`]). Returns
    /// `false`, changing nothing, when it holds none (a run that turns `--ema` on when resumed
    /// starts its average at the current weights); a partial or misshapen set is an error.
    pub fn load_state(
        &mut self,
        path: &std::path::Path,
        params: &ParamStore,
        tensors: &[(String, Tensor)],
        meta: &HashMap<String, String>,
    ) -> Result<bool> {
        let by_name: HashMap<&str, &Tensor> = tensors
            .iter()
            .filter_map(|(n, t)| n.strip_prefix(PREFIX).map(|p| (p, t)))
            .collect();
        if by_name.is_empty() {
            return Ok(false);
        }
        let updates: u64 = meta
            .get(UPDATES_KEY)
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| Error::checkpoint(path, format!("has EMA tensors but no valid `{UPDATES_KEY}`")))?;
        let mut shadow = Vec::with_capacity(self.shadow.len());
        for id in params.ids() {
            let name = params.name(id);
            let want = params.value(id);
            match by_name.get(name) {
                Some(t) if t.shape() == want.shape() => shadow.push(t.to_device(want.device())?),
                Some(t) => {
                    return Err(Error::checkpoint(
                        path,
                        format!(
                            "`{PREFIX}{name}` has shape {:?}, the parameter {:?}",
                            t.shape(),
                            want.shape()
                        ),
                    ))
                }
                None => return Err(Error::checkpoint(path, format!("`{PREFIX}{name}` is missing"))),
            }
        }
        if by_name.len() != shadow.len() {
            return Err(Error::checkpoint(
                path,
                format!(
                    "has {} EMA tensors for a model of {} parameters",
                    by_name.len(),
                    shadow.len()
                ),
            ));
        }
        self.shadow = shadow;
        self.updates = updates;
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store(values: &[f32]) -> ParamStore {
        let mut s = ParamStore::new();
        s.add("w", Tensor::from_slice(values, &[values.len()]).unwrap())
            .unwrap();
        s
    }

    #[test]
    fn average_follows_the_rule_with_its_warm_up() {
        let mut p = store(&[0.0, 10.0]);
        let mut ema = Ema::new(0.9, &p).unwrap();
        let mut expect = [0.0f64, 10.0];
        for t in 1..=30u64 {
            let v = [t as f64, 10.0 - t as f64];
            p.set(
                p.id("w").unwrap(),
                Tensor::from_slice(&[v[0] as f32, v[1] as f32], &[2]).unwrap(),
            )
            .unwrap();
            let d = 0.9f64.min((1.0 + t as f64) / (10.0 + t as f64));
            assert_eq!(ema.current_decay(), d);
            ema.update(&p).unwrap();
            for i in 0..2 {
                expect[i] = d * expect[i] + (1.0 - d) * v[i];
            }
        }
        let mut p2 = store(&[0.0, 0.0]);
        ema.swap(&mut p2);
        let got = p2.value(p2.id("w").unwrap()).to_vec();
        for i in 0..2 {
            assert!((got[i] as f64 - expect[i]).abs() < 1e-4, "{got:?} vs {expect:?}");
        }
        assert_eq!(ema.updates(), 30);
    }

    #[test]
    fn swap_twice_restores_and_state_round_trips() {
        let mut p = store(&[1.0, 2.0, 3.0]);
        let mut ema = Ema::new(0.5, &p).unwrap();
        p.set(p.id("w").unwrap(), Tensor::from_slice(&[3.0, 2.0, 1.0], &[3]).unwrap())
            .unwrap();
        ema.update(&p).unwrap();
        ema.swap(&mut p);
        let averaged = p.value(p.id("w").unwrap()).to_vec();
        assert_ne!(averaged, vec![3.0, 2.0, 1.0]);
        ema.swap(&mut p);
        assert_eq!(p.value(p.id("w").unwrap()).to_vec(), vec![3.0, 2.0, 1.0]);

        let (tensors, meta) = ema.state(&p);
        assert_eq!(tensors[0].0, "ema.w");
        let mut back = Ema::new(0.5, &p).unwrap();
        assert!(back.load_state(std::path::Path::new("x"), &p, &tensors, &meta).unwrap());
        assert_eq!(back.updates(), 1);
        back.swap(&mut p);
        assert_eq!(p.value(p.id("w").unwrap()).to_vec(), averaged);

        // None saved: nothing changes; a misshapen one: an error naming it.
        assert!(!back.load_state(std::path::Path::new("x"), &p, &[], &meta).unwrap());
        let bad = vec![("ema.w".to_string(), Tensor::zeros(&[2]))];
        let e = back.load_state(std::path::Path::new("x"), &p, &bad, &meta).unwrap_err();
        assert!(e.to_string().contains("ema.w"), "{e}");
    }

    #[test]
    fn bad_decay_is_refused() {
        let p = store(&[1.0]);
        assert!(Ema::new(1.0, &p).is_err());
        assert!(Ema::new(f64::NAN, &p).is_err());
        assert!(Ema::new(0.0, &p).is_ok());
    }
}
