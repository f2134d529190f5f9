//! Gradient clipping: bound the size of a step when a minibatch produces a gradient spike.
//!
//! # By global L2 norm (`torch.nn.utils.clip_grad_norm_`)
//! Treat every parameter's gradient as one long vector `g` and rescale it if it is too long:
//!
//! ```text
//! ‖g‖ = √( Σ_params Σ_elements gᵢ² )            accumulated in f64
//! g  ← g · max_norm / max(‖g‖, max_norm)        i.e. unchanged if ‖g‖ ≤ max_norm, else ‖g‖ = max_norm
//! ```
//!
//! One common scale keeps the *direction* of the full gradient (per-tensor clipping would not),
//! so clipping only shortens the step. The sum of squares is accumulated in f64 because a ViT has
//! ~10⁷–10⁸ gradient elements: an f32 running sum loses the small contributions once it is large.
//! PyTorch computes the scale as `max_norm / (‖g‖ + 1e-6)` clamped to 1; the form above differs by
//! that 1e-6 only, and gives exactly `max_norm` after clipping. The pre-clip norm is returned
//! (worth logging: it is the first sign of a training blow-up). A non-finite norm (a NaN or inf
//! gradient) leaves the gradients unchanged; the caller should see it and skip the step.
//!
//! # By value (`torch.nn.utils.clip_grad_value_`)
//! `gᵢ ← clamp(gᵢ, −c, c)` element-wise. Cruder: it changes the gradient's direction.
//!
//! # On the GPU
//! `kernels/clip.cu`: each gradient's squares are summed in f64 into per-block partials (kept as
//! their roots, so that f32 does not overflow), all partials of all gradients are read back at
//! once (the one host synchronisation of a clipped step: the scale depends on the norm), and the
//! rescale and the clamp run in place.

use crate::autograd::ParamStore;
use crate::backend::cpu::{map_into, PAR_GRAIN};
use crate::backend::cuda::CudaDevice;
use crate::backend::Device;
use crate::error::{Error, Result};
use crate::tensor::Tensor;
use rayon::prelude::*;

fn sum_squares(x: &[f32]) -> f64 {
    let serial = |x: &[f32]| x.iter().map(|&v| (v as f64) * (v as f64)).sum::<f64>();
    if x.len() >= PAR_GRAIN {
        x.par_chunks(PAR_GRAIN).map(serial).sum()
    } else {
        serial(x)
    }
}

/// `Σ x²` over GPU tensors: per-block partial norms of every tensor into one buffer, read once,
/// squared and summed in f64.
fn sum_squares_cuda(xs: &[&Tensor]) -> Result<f64> {
    if xs.is_empty() {
        return Ok(0.0);
    }
    let dev = CudaDevice::global()?;
    let counts: Vec<usize> = xs.iter().map(|x| dev.sum_squares_blocks(x.numel())).collect();
    let mut partial = dev.alloc(counts.iter().sum())?;
    let mut off = 0;
    for (x, &c) in xs.iter().zip(&counts) {
        let mut all = partial.view_mut();
        let mut dst = all.slice_mut(off..off + c);
        dev.sum_squares_partials(x.cuda()?, &mut dst, x.numel())?;
        off += c;
    }
    Ok(dev.download(&partial)?.iter().map(|&v| (v as f64) * (v as f64)).sum())
}

/// The global L2 norm of all gradients in the store (parameters without a gradient count as 0).
pub fn grad_norm(params: &ParamStore) -> Result<f64> {
    let grads: Vec<&Tensor> = params.ids().filter_map(|id| params.grad(id)).collect();
    let (gpu, cpu): (Vec<&Tensor>, Vec<&Tensor>) = grads.into_iter().partition(|g| g.device() == Device::Cuda);
    let cpu_sum: f64 = cpu.iter().map(|g| sum_squares(g.data())).sum();
    Ok((cpu_sum + sum_squares_cuda(&gpu)?).sqrt())
}

/// Scale all gradients so that their global L2 norm is at most `max_norm`; returns the norm
/// before clipping.
pub fn clip_grad_norm(params: &mut ParamStore, max_norm: f64) -> Result<f64> {
    if !(max_norm.is_finite() && max_norm >= 0.0) {
        return Err(Error::config(format!(
            "clip_grad_norm: invalid max_norm {max_norm} (expected a finite value >= 0)"
        )));
    }
    let total = grad_norm(params)?;
    // `total > max_norm` is false for NaN: a non-finite norm leaves the gradients alone.
    if total.is_finite() && total > max_norm {
        let scale = (max_norm / total) as f32;
        let ids: Vec<_> = params.ids().collect();
        for id in ids {
            if let Some(g) = params.grad_mut(id) {
                match g.device() {
                    Device::Cpu => map_into(g.data_mut(), |_, block| block.iter_mut().for_each(|x| *x *= scale)),
                    Device::Cuda => {
                        let n = g.numel();
                        CudaDevice::global()?.scale_inplace(g.cuda_mut()?, n, scale)?;
                    }
                }
            }
        }
    }
    Ok(total)
}

/// Clamp every gradient element to `[-clip_value, clip_value]`.
pub fn clip_grad_value(params: &mut ParamStore, clip_value: f32) -> Result<()> {
    if !(clip_value.is_finite() && clip_value >= 0.0) {
        return Err(Error::config(format!(
            "clip_grad_value: invalid clip value {clip_value} (expected a finite value >= 0)"
        )));
    }
    let ids: Vec<_> = params.ids().collect();
    for id in ids {
        if let Some(g) = params.grad_mut(id) {
            match g.device() {
                Device::Cpu => map_into(g.data_mut(), |_, block| {
                    block.iter_mut().for_each(|x| *x = x.clamp(-clip_value, clip_value))
                }),
                Device::Cuda => {
                    let n = g.numel();
                    CudaDevice::global()?.clamp_inplace(g.cuda_mut()?, n, clip_value)?;
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::autograd::{Graph, ParamId};
    use crate::tensor::Tensor;

    fn store_with_grads(grads: &[(&str, Vec<f32>)]) -> (ParamStore, Vec<ParamId>) {
        let mut params = ParamStore::new();
        let mut ids = Vec::new();
        for (name, g) in grads {
            let id = params.add(*name, Tensor::zeros(&[g.len()])).unwrap();
            let mut graph = Graph::new();
            let x = graph.param(&params, id);
            let seed = Tensor::from_vec(g.clone(), &[g.len()]).unwrap();
            let gr = graph.backward_with(x, seed).unwrap();
            params.accumulate_grads(&gr).unwrap();
            ids.push(id);
        }
        (params, ids)
    }

    #[test]
    fn norm_clip_scales_to_max_norm_keeping_direction() {
        // ‖(3, 4, 0, 12)‖ = 13.
        let (mut params, ids) = store_with_grads(&[("a", vec![3.0, 4.0]), ("b", vec![0.0, 12.0])]);
        params.add("no_grad", Tensor::ones(&[5])).unwrap();
        let before = clip_grad_norm(&mut params, 6.5).unwrap();
        assert!((before - 13.0).abs() < 1e-12, "{before}");
        assert!((grad_norm(&params).unwrap() - 6.5).abs() < 1e-6);
        // Same direction: every element halved.
        assert_eq!(params.grad(ids[0]).unwrap().data(), &[1.5, 2.0]);
        assert_eq!(params.grad(ids[1]).unwrap().data(), &[0.0, 6.0]);
    }

    #[test]
    fn norm_clip_leaves_small_gradients_alone() {
        let (mut params, ids) = store_with_grads(&[("a", vec![3.0, 4.0])]);
        assert_eq!(clip_grad_norm(&mut params, 5.0).unwrap(), 5.0);
        assert_eq!(params.grad(ids[0]).unwrap().data(), &[3.0, 4.0]);
        assert_eq!(clip_grad_norm(&mut params, 100.0).unwrap(), 5.0);
        assert_eq!(params.grad(ids[0]).unwrap().data(), &[3.0, 4.0]);
    }

    #[test]
    fn norm_is_accumulated_in_f64_over_many_elements() {
        // 2²⁰ + 1 elements: the parallel path; an f32 running sum of 1e-4² terms drifts.
        let n = (1 << 20) + 1;
        let (mut params, _) = store_with_grads(&[("big", vec![1e-4; n])]);
        let want = 1e-4f32 as f64 * (n as f64).sqrt();
        let got = clip_grad_norm(&mut params, 1.0).unwrap();
        assert!((got - want).abs() < 1e-9 * want, "{got} vs {want}");
    }

    #[test]
    fn non_finite_norm_leaves_gradients_unchanged() {
        let (mut params, ids) = store_with_grads(&[("a", vec![f32::NAN, 1.0])]);
        assert!(clip_grad_norm(&mut params, 0.5).unwrap().is_nan());
        assert_eq!(params.grad(ids[0]).unwrap().data()[1], 1.0);
    }

    #[test]
    fn value_clip_clamps_each_element() {
        let (mut params, ids) = store_with_grads(&[("a", vec![-3.0, -0.5, 0.0, 0.25, 2.0]), ("b", vec![10.0])]);
        clip_grad_value(&mut params, 1.0).unwrap();
        assert_eq!(params.grad(ids[0]).unwrap().data(), &[-1.0, -0.5, 0.0, 0.25, 1.0]);
        assert_eq!(params.grad(ids[1]).unwrap().data(), &[1.0]);
    }

    #[test]
    fn invalid_thresholds_are_errors() {
        let (mut params, _) = store_with_grads(&[("a", vec![1.0])]);
        assert!(clip_grad_norm(&mut params, -1.0).is_err());
        assert!(clip_grad_norm(&mut params, f64::INFINITY).is_err());
        assert!(clip_grad_value(&mut params, -0.1).is_err());
        assert!(clip_grad_value(&mut params, f32::NAN).is_err());
    }
}
