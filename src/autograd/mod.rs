//! Reverse-mode automatic differentiation over a recorded tape.
//!
//! # How it works
//! A [`Graph`] is a tape: every op applied through it appends a node holding the op's output value,
//! the handles ([`Var`]) of its inputs and the op itself (which may have saved what its backward
//! needs, such as layernorm's per-row mean and 1/std). Because a node can only use values recorded
//! before it, the tape is already in topological order, and backward is one walk from the end:
//!
//! ```text
//! grad[loss] = 1
//! for node in tape, last to first:
//!     if grad[node] is known:
//!         for (input, g) in node.op.backward(grad[node]):
//!             grad[input] += g          // += : a value feeding two consumers gets both grads
//! ```
//!
//! The `+=` is what makes residual connections work: `x` feeds both the attention branch and the
//! skip path, and its gradient is the sum of what comes back along each.
//!
//! Parameters live outside the tape, in a [`ParamStore`], under timm-style names. Each step builds
//! a fresh `Graph`, brings parameters in with [`Graph::param`], runs the model, calls
//! [`Graph::backward`] and adds the result into the store with
//! [`ParamStore::accumulate_grads`]. [`Graph::no_grad`] records nothing for backward (evaluation):
//! ops then drop what they saved, so memory is that of the forward values alone.
//!
//! The rules in each op's [`Op::backward`] are written with device-dispatching kernel calls only
//! (see `crate::backend`), so one rule serves every backend.

use crate::error::{Error, Result};
use crate::tensor::Tensor;

pub mod profile;

/// A handle to a value recorded on a [`Graph`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Var(usize);

impl Var {
    pub fn index(self) -> usize {
        self.0
    }
}

/// An operation: its forward, and the rule that turns the output's gradient into the inputs'.
pub trait Op {
    /// A short name, used in error messages.
    fn name(&self) -> &'static str;

    /// Compute the output. The op may keep in `self` whatever its backward will need.
    fn forward(&mut self, inputs: &[&Tensor]) -> Result<Tensor>;

    /// Given dL/d(output), return dL/d(input) for each input. `needs[i]` says whether input `i`
    /// wants a gradient; return `None` for those that do not (saves the work).
    fn backward(
        &self,
        grad_out: &Tensor,
        inputs: &[&Tensor],
        output: &Tensor,
        needs: &[bool],
    ) -> Result<Vec<Option<Tensor>>>;
}

struct Node {
    value: Tensor,
    /// `None` for leaves (inputs, parameters) and for nodes recorded without grad.
    op: Option<Box<dyn Op>>,
    inputs: Vec<Var>,
    requires_grad: bool,
    param: Option<ParamId>,
}

/// The tape. Build one per step (or per evaluation batch).
pub struct Graph {
    nodes: Vec<Node>,
    grad_enabled: bool,
}

impl Default for Graph {
    fn default() -> Self {
        Graph::new()
    }
}

impl Graph {
    /// A tape that records for backward.
    pub fn new() -> Graph {
        Graph {
            nodes: Vec::new(),
            grad_enabled: true,
        }
    }

    /// A tape that records nothing for backward (evaluation, inference).
    pub fn no_grad() -> Graph {
        Graph {
            nodes: Vec::new(),
            grad_enabled: false,
        }
    }

    pub fn grad_enabled(&self) -> bool {
        self.grad_enabled
    }

    fn push_leaf(&mut self, value: Tensor, requires_grad: bool, param: Option<ParamId>) -> Var {
        self.nodes.push(Node {
            value,
            op: None,
            inputs: Vec::new(),
            requires_grad: requires_grad && self.grad_enabled,
            param,
        });
        Var(self.nodes.len() - 1)
    }

    /// A value that needs no gradient (images, labels, masks).
    pub fn constant(&mut self, value: Tensor) -> Var {
        self.push_leaf(value, false, None)
    }

    /// A value whose gradient is wanted (used by the gradient checks).
    pub fn leaf(&mut self, value: Tensor) -> Var {
        self.push_leaf(value, true, None)
    }

    /// A parameter from the store; its gradient is reported under its [`ParamId`].
    pub fn param(&mut self, params: &ParamStore, id: ParamId) -> Var {
        self.push_leaf(params.value(id).clone(), true, Some(id))
    }

    pub fn value(&self, v: Var) -> &Tensor {
        &self.nodes[v.0].value
    }

    pub fn shape(&self, v: Var) -> &[usize] {
        self.nodes[v.0].value.shape()
    }

    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// Apply `op` to `inputs` and record it.
    pub fn apply(&mut self, mut op: impl Op + 'static, inputs: &[Var]) -> Result<Var> {
        let value = {
            let xs: Vec<&Tensor> = inputs.iter().map(|v| &self.nodes[v.0].value).collect();
            let timer = profile::start();
            let y = op.forward(&xs)?;
            profile::stop(timer, op.name(), "forward");
            y
        };
        let requires_grad = self.grad_enabled && inputs.iter().any(|v| self.nodes[v.0].requires_grad);
        self.nodes.push(Node {
            value,
            op: if requires_grad { Some(Box::new(op)) } else { None },
            inputs: if requires_grad { inputs.to_vec() } else { Vec::new() },
            requires_grad,
            param: None,
        });
        Ok(Var(self.nodes.len() - 1))
    }

    /// Backward from a one-element loss (its gradient is 1).
    pub fn backward(&self, loss: Var) -> Result<Gradients> {
        let value = self.value(loss);
        if value.numel() != 1 {
            return Err(Error::shape(
                "backward",
                value.shape(),
                &[],
                "backward() starts from a one-element loss; use backward_with for others",
            ));
        }
        let seed = Tensor::full_on(value.shape(), 1.0, value.device())?;
        self.backward_with(loss, seed)
    }

    /// Backward from any value, given dL/d(value).
    pub fn backward_with(&self, out: Var, grad_out: Tensor) -> Result<Gradients> {
        if grad_out.shape() != self.shape(out) {
            return Err(Error::shape(
                "backward_with",
                self.shape(out),
                grad_out.shape(),
                "the seed gradient must have the output's shape",
            ));
        }
        let mut grads: Vec<Option<Tensor>> = vec![None; out.0 + 1];
        grads[out.0] = Some(grad_out);
        for i in (0..=out.0).rev() {
            let node = &self.nodes[i];
            let Some(op) = &node.op else { continue };
            let Some(g) = grads[i].take() else { continue };
            let xs: Vec<&Tensor> = node.inputs.iter().map(|v| &self.nodes[v.0].value).collect();
            let needs: Vec<bool> = node.inputs.iter().map(|v| self.nodes[v.0].requires_grad).collect();
            let timer = profile::start();
            let input_grads = op.backward(&g, &xs, &node.value, &needs)?;
            profile::stop(timer, op.name(), "backward");
            drop(g);
            for ((input, need), ig) in node.inputs.iter().zip(&needs).zip(input_grads) {
                let (true, Some(ig)) = (*need, ig) else {
                    continue;
                };
                if ig.shape() != self.shape(*input) {
                    return Err(Error::shape(
                        op.name(),
                        self.shape(*input),
                        ig.shape(),
                        "backward returned a gradient of the wrong shape (a bug in the op)",
                    ));
                }
                accumulate(&mut grads[input.0], ig)?;
            }
        }
        // Keep only the gradients of leaves: the ones a caller can ask for.
        for (i, g) in grads.iter_mut().enumerate() {
            if self.nodes[i].op.is_some() {
                *g = None;
            }
        }
        let params = self
            .nodes
            .iter()
            .enumerate()
            .take(out.0 + 1)
            .filter_map(|(i, n)| n.param.map(|p| (p, Var(i))))
            .collect();
        Ok(Gradients { grads, params })
    }
}

fn accumulate(slot: &mut Option<Tensor>, g: Tensor) -> Result<()> {
    match slot {
        None => *slot = Some(g),
        Some(acc) => acc.add_assign(&g)?,
    }
    Ok(())
}

/// The result of a backward pass: the gradient of every leaf that wanted one.
pub struct Gradients {
    grads: Vec<Option<Tensor>>,
    params: Vec<(ParamId, Var)>,
}

impl Gradients {
    /// dL/d(v) for a leaf `v`; `None` when the loss does not depend on it.
    pub fn get(&self, v: Var) -> Option<&Tensor> {
        self.grads.get(v.0).and_then(|g| g.as_ref())
    }

    /// `(parameter, gradient)` for every parameter the loss depends on.
    pub fn params(&self) -> impl Iterator<Item = (ParamId, &Tensor)> {
        self.params.iter().filter_map(|(p, v)| self.get(*v).map(|g| (*p, g)))
    }
}

/// A handle to a parameter in a [`ParamStore`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ParamId(pub usize);

/// Named parameters and their accumulated gradients.
#[derive(Default, Clone)]
pub struct ParamStore {
    names: Vec<String>,
    values: Vec<Tensor>,
    grads: Vec<Option<Tensor>>,
}

impl ParamStore {
    pub fn new() -> ParamStore {
        ParamStore::default()
    }

    /// Add a parameter; names must be unique.
    pub fn add(&mut self, name: impl Into<String>, value: Tensor) -> Result<ParamId> {
        let name = name.into();
        if self.id(&name).is_some() {
            return Err(Error::config(format!("parameter `{name}` is defined twice")));
        }
        self.names.push(name);
        self.values.push(value);
        self.grads.push(None);
        Ok(ParamId(self.values.len() - 1))
    }

    pub fn len(&self) -> usize {
        self.values.len()
    }
    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }
    pub fn id(&self, name: &str) -> Option<ParamId> {
        self.names.iter().position(|n| n == name).map(ParamId)
    }
    pub fn ids(&self) -> impl Iterator<Item = ParamId> {
        (0..self.values.len()).map(ParamId)
    }
    pub fn name(&self, id: ParamId) -> &str {
        &self.names[id.0]
    }
    pub fn value(&self, id: ParamId) -> &Tensor {
        &self.values[id.0]
    }
    pub fn value_mut(&mut self, id: ParamId) -> &mut Tensor {
        &mut self.values[id.0]
    }
    pub fn grad(&self, id: ParamId) -> Option<&Tensor> {
        self.grads[id.0].as_ref()
    }
    /// The value and the gradient of one parameter, for an optimiser's update.
    pub fn value_and_grad_mut(&mut self, id: ParamId) -> (&mut Tensor, Option<&Tensor>) {
        (&mut self.values[id.0], self.grads[id.0].as_ref())
    }
    pub fn grad_mut(&mut self, id: ParamId) -> Option<&mut Tensor> {
        self.grads[id.0].as_mut()
    }
    /// Total number of scalars.
    pub fn numel(&self) -> usize {
        self.values.iter().map(|t| t.numel()).sum()
    }

    /// Forget one parameter's gradient (a frozen parameter: optimisers skip it).
    pub fn clear_grad(&mut self, id: ParamId) {
        self.grads[id.0] = None;
    }

    /// Forget all gradients.
    pub fn zero_grad(&mut self) {
        self.grads.iter_mut().for_each(|g| *g = None);
    }

    /// Add the parameter gradients of a backward pass into the store.
    pub fn accumulate_grads(&mut self, grads: &Gradients) -> Result<()> {
        for (id, g) in grads.params() {
            accumulate(&mut self.grads[id.0], g.clone())?;
        }
        Ok(())
    }

    /// Move every value (and gradient) to `device`; a no-op for those already there. All or
    /// nothing: if a copy fails, the store is left as it was.
    pub fn to_device(&mut self, device: crate::backend::Device) -> Result<()> {
        let values = self
            .values
            .iter()
            .map(|v| v.to_device(device))
            .collect::<Result<Vec<_>>>()?;
        let grads = self
            .grads
            .iter()
            .map(|g| g.as_ref().map(|g| g.to_device(device)).transpose())
            .collect::<Result<Vec<_>>>()?;
        (self.values, self.grads) = (values, grads);
        Ok(())
    }

    /// The device of the parameters (the CPU for an empty store).
    pub fn device(&self) -> crate::backend::Device {
        self.values.first().map_or(crate::backend::Device::Cpu, |v| v.device())
    }

    /// Replace a parameter's value (shape must match): used when loading checkpoints.
    pub fn set(&mut self, id: ParamId, value: Tensor) -> Result<()> {
        if value.shape() != self.values[id.0].shape() {
            return Err(Error::shape(
                "ParamStore::set",
                self.values[id.0].shape(),
                value.shape(),
                format!("parameter `{}` has another shape", self.names[id.0]),
            ));
        }
        self.values[id.0] = value;
        Ok(())
    }
}
