//! The tensor: an f32 array, row-major and contiguous, with a shape checked at construction.
//!
//! A `Tensor` is a value: cloning it is cheap (the storage is reference counted) and reshaping it
//! shares the storage. Writing through [`Tensor::data_mut`] copies the storage first if it is
//! shared (copy on write), so a tensor saved for a backward pass can never be changed behind it.

use crate::backend::cpu::{pool, CpuBuffer};
use crate::backend::{Device, Storage};
use crate::error::{Error, Result};
use std::sync::Arc;

#[derive(Clone, Debug)]
pub struct Tensor {
    shape: Vec<usize>,
    storage: Storage,
}

/// The number of elements of a shape (1 for the scalar shape `[]`).
pub fn numel(shape: &[usize]) -> usize {
    shape.iter().product()
}

impl Tensor {
    /// A CPU tensor from its elements in row-major order; `data.len()` must equal the shape's size.
    pub fn from_vec(data: Vec<f32>, shape: &[usize]) -> Result<Tensor> {
        if data.len() != numel(shape) {
            return Err(Error::shape(
                "Tensor::from_vec",
                &[data.len()],
                shape,
                format!("{} elements cannot have shape {shape:?}", data.len()),
            ));
        }
        Ok(Tensor {
            shape: shape.to_vec(),
            storage: Storage::Cpu(Arc::new(CpuBuffer::new(data))),
        })
    }

    /// A CPU tensor from a slice (copied).
    pub fn from_slice(data: &[f32], shape: &[usize]) -> Result<Tensor> {
        let mut v = pool::take(data.len());
        v.copy_from_slice(data);
        Tensor::from_vec(v, shape)
    }

    pub fn zeros(shape: &[usize]) -> Tensor {
        Tensor::full(shape, 0.0)
    }

    pub fn ones(shape: &[usize]) -> Tensor {
        Tensor::full(shape, 1.0)
    }

    pub fn full(shape: &[usize], value: f32) -> Tensor {
        let mut v = pool::take(numel(shape));
        v.fill(value);
        Tensor::from_vec(v, shape).expect("length matches by construction")
    }

    /// A rank-0 tensor holding one number.
    pub fn scalar(value: f32) -> Tensor {
        Tensor::full(&[], value)
    }

    /// A CPU tensor whose elements are unspecified: for kernels that write every element.
    pub(crate) fn scratch(shape: &[usize]) -> Tensor {
        Tensor::from_vec(pool::take(numel(shape)), shape).expect("length matches by construction")
    }

    pub fn shape(&self) -> &[usize] {
        &self.shape
    }
    pub fn rank(&self) -> usize {
        self.shape.len()
    }
    pub fn numel(&self) -> usize {
        numel(&self.shape)
    }
    pub fn device(&self) -> Device {
        self.storage.device()
    }
    pub fn storage(&self) -> &Storage {
        &self.storage
    }

    /// Size of dimension `d`, counted from the end when negative.
    pub fn dim(&self, d: isize) -> usize {
        let r = self.rank() as isize;
        let i = if d < 0 { r + d } else { d };
        self.shape[i as usize]
    }

    /// The elements of a CPU tensor, row-major.
    pub fn data(&self) -> &[f32] {
        match &self.storage {
            Storage::Cpu(b) => b.as_slice(),
        }
    }

    /// Mutable access to the elements; copies the storage first if it is shared.
    pub fn data_mut(&mut self) -> &mut [f32] {
        match &mut self.storage {
            Storage::Cpu(b) => Arc::make_mut(b).as_mut_slice(),
        }
    }

    /// The elements copied into a `Vec` (from any device).
    pub fn to_vec(&self) -> Vec<f32> {
        self.data().to_vec()
    }

    /// The single element of a one-element tensor.
    pub fn item(&self) -> Result<f32> {
        if self.numel() != 1 {
            return Err(Error::shape(
                "Tensor::item",
                &self.shape,
                &[],
                "item() needs exactly one element",
            ));
        }
        Ok(self.data()[0])
    }

    /// The same elements under another shape of the same size (shares storage, no copy).
    pub fn reshape(&self, shape: &[usize]) -> Result<Tensor> {
        if numel(shape) != self.numel() {
            return Err(Error::shape("reshape", &self.shape, shape, "element counts differ"));
        }
        Ok(Tensor {
            shape: shape.to_vec(),
            storage: self.storage.clone(),
        })
    }

    /// True when both tensors have the same shape.
    pub fn same_shape(&self, other: &Tensor) -> bool {
        self.shape == other.shape
    }

    /// `self += other` element-wise (same shape), in place when the storage is not shared.
    pub fn add_assign(&mut self, other: &Tensor) -> Result<()> {
        if !self.same_shape(other) {
            return Err(Error::shape(
                "add_assign",
                &self.shape,
                &other.shape,
                "shapes must be equal",
            ));
        }
        let src = other.data();
        crate::backend::cpu::map_into(self.data_mut(), |off, out| {
            for (o, s) in out.iter_mut().zip(&src[off..]) {
                *o += *s;
            }
        });
        Ok(())
    }

    /// Euclidean norm of all elements (accumulated in f64).
    pub fn norm(&self) -> f64 {
        self.data().iter().map(|&x| (x as f64) * (x as f64)).sum::<f64>().sqrt()
    }
}
