//! # Scale by a constant
//!
//! Forward: `y = s · x` (any shape; used for attention's 1/√d_head).
//! Backward: `∂y/∂x = s`, so `dx = s · G`.

use crate::autograd::{Graph, Op, Var};
use crate::backend::cpu::map_into;
use crate::backend::Device;
use crate::error::Result;
use crate::tensor::Tensor;

/// `s · x`.
pub fn scale(x: &Tensor, s: f32) -> Result<Tensor> {
    match x.device() {
        Device::Cuda => Tensor::gpu_output(x.shape(), |dev, y| dev.scale(x.cuda()?, y, x.numel(), s)),
        Device::Cpu => {
            let mut y = Tensor::scratch(x.shape());
            let xd = x.data();
            map_into(y.data_mut(), |off, out| {
                for (o, &v) in out.iter_mut().zip(&xd[off..]) {
                    *o = s * v;
                }
            });
            Ok(y)
        }
    }
}

struct Scale(f32);

impl Op for Scale {
    fn name(&self) -> &'static str {
        "scale"
    }
    fn forward(&mut self, x: &[&Tensor]) -> Result<Tensor> {
        scale(x[0], self.0)
    }
    fn backward(&self, g: &Tensor, _x: &[&Tensor], _y: &Tensor, _needs: &[bool]) -> Result<Vec<Option<Tensor>>> {
        Ok(vec![Some(scale(g, self.0)?)])
    }
}

impl Graph {
    /// `s · x`.
    pub fn scale(&mut self, x: Var, s: f32) -> Result<Var> {
        self.apply(Scale(s), &[x])
    }
}
