//! The tensor: an f32 array, row-major and contiguous, with a shape checked at construction.
//!
//! A `Tensor` is a value: cloning it is cheap (the storage is reference counted) and reshaping it
//! shares the storage. Writing through [`Tensor::data_mut`] copies the storage first if it is
//! shared (copy on write), so a tensor saved for a backward pass can never be changed behind it.
//!
//! A tensor lives on one [`Device`]. CPU tensors expose their elements ([`Tensor::data`]); GPU
//! tensors hold a [`CudaBuffer`] that only kernels touch ([`Tensor::cuda`]). [`Tensor::to_device`]
//! copies between the two, and [`Tensor::values`] reads the elements from either.

use crate::backend::cpu::{pool, CpuBuffer};
use crate::backend::cuda::{CudaBuffer, CudaDevice};
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

fn not_on_gpu(shape: &[usize]) -> Error {
    Error::Device(format!("a CPU tensor of shape {shape:?} was given to a GPU kernel"))
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

    /// A GPU tensor owning `buf`, whose length must equal the shape's size.
    pub fn from_cuda(buf: CudaBuffer, shape: &[usize]) -> Result<Tensor> {
        if buf.len() != numel(shape) {
            return Err(Error::shape(
                "Tensor::from_cuda",
                &[buf.len()],
                shape,
                format!("a device buffer of {} elements cannot have shape {shape:?}", buf.len()),
            ));
        }
        Ok(Tensor {
            shape: shape.to_vec(),
            storage: Storage::Cuda(Arc::new(buf)),
        })
    }

    /// A new GPU tensor of `shape`: a buffer of its size from the device's cache, written by
    /// `write` (which queues the kernels that fill every element). The GPU arm of most ops.
    pub fn gpu_output(
        shape: &[usize],
        write: impl FnOnce(&CudaDevice, &mut CudaBuffer) -> Result<()>,
    ) -> Result<Tensor> {
        let dev = CudaDevice::global()?;
        let mut buf = dev.alloc(numel(shape))?;
        write(&dev, &mut buf)?;
        Tensor::from_cuda(buf, shape)
    }

    /// A tensor filled with `value` on `device`.
    pub fn full_on(shape: &[usize], value: f32, device: Device) -> Result<Tensor> {
        match device {
            Device::Cpu => Ok(Tensor::full(shape, value)),
            Device::Cuda => Tensor::gpu_output(shape, |dev, buf| dev.fill(buf, numel(shape), value)),
        }
    }

    /// Zeros on `device`.
    pub fn zeros_on(shape: &[usize], device: Device) -> Result<Tensor> {
        Tensor::full_on(shape, 0.0, device)
    }

    /// The same tensor on `device`: shared (no copy) when it is already there, else copied.
    /// A copy from the GPU waits for the work that writes the tensor.
    pub fn to_device(&self, device: Device) -> Result<Tensor> {
        let storage = match (&self.storage, device) {
            (Storage::Cpu(_), Device::Cpu) | (Storage::Cuda(_), Device::Cuda) => self.storage.clone(),
            (Storage::Cpu(b), Device::Cuda) => Storage::Cuda(Arc::new(CudaDevice::global()?.upload(b.as_slice())?)),
            (Storage::Cuda(b), Device::Cpu) => {
                Storage::Cpu(Arc::new(CpuBuffer::new(CudaDevice::global()?.download(&**b)?)))
            }
        };
        Ok(Tensor {
            shape: self.shape.clone(),
            storage,
        })
    }

    /// The elements in row-major order, from any device (a GPU tensor is downloaded).
    pub fn values(&self) -> Result<Vec<f32>> {
        match &self.storage {
            Storage::Cpu(b) => Ok(b.as_slice().to_vec()),
            Storage::Cuda(b) => CudaDevice::global()?.download(&**b),
        }
    }

    /// The device buffer of a GPU tensor; an error for a CPU one.
    pub fn cuda(&self) -> Result<&CudaBuffer> {
        match &self.storage {
            Storage::Cuda(b) => Ok(b),
            Storage::Cpu(_) => Err(not_on_gpu(&self.shape)),
        }
    }

    /// Mutable access to a GPU tensor's buffer; copies it first if it is shared (copy on write).
    pub fn cuda_mut(&mut self) -> Result<&mut CudaBuffer> {
        match &mut self.storage {
            Storage::Cuda(b) => {
                if Arc::get_mut(b).is_none() {
                    *b = Arc::new(CudaDevice::global()?.copy(&**b)?);
                }
                Ok(Arc::get_mut(b).expect("unique after the copy"))
            }
            Storage::Cpu(_) => Err(not_on_gpu(&self.shape)),
        }
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
    ///
    /// # Panics
    /// On a GPU tensor: its elements are not in host memory. Ops check their inputs' device
    /// ([`crate::backend::same_device`]) before reading them; elsewhere use [`Tensor::values`].
    pub fn data(&self) -> &[f32] {
        match &self.storage {
            Storage::Cpu(b) => b.as_slice(),
            Storage::Cuda(_) => panic!("Tensor::data on a GPU tensor (a bug: use values() or to_device)"),
        }
    }

    /// Mutable access to the elements of a CPU tensor; copies the storage first if it is shared.
    ///
    /// # Panics
    /// On a GPU tensor, as [`Tensor::data`] (use [`Tensor::cuda_mut`]).
    pub fn data_mut(&mut self) -> &mut [f32] {
        match &mut self.storage {
            Storage::Cpu(b) => Arc::make_mut(b).as_mut_slice(),
            Storage::Cuda(_) => panic!("Tensor::data_mut on a GPU tensor (a bug: use cuda_mut)"),
        }
    }

    /// The elements of a CPU tensor copied into a `Vec` (see [`Tensor::values`] for any device).
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
        Ok(self.values()?[0])
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
        match crate::backend::same_device("add_assign", &[self, other])? {
            Device::Cpu => {
                let src = other.data();
                crate::backend::cpu::map_into(self.data_mut(), |off, out| {
                    for (o, s) in out.iter_mut().zip(&src[off..]) {
                        *o += *s;
                    }
                });
            }
            Device::Cuda => {
                let n = self.numel();
                let dev = CudaDevice::global()?;
                dev.add_assign(self.cuda_mut()?, other.cuda()?, n)?;
            }
        }
        Ok(())
    }

    /// Euclidean norm of all elements of a CPU tensor (accumulated in f64).
    pub fn norm(&self) -> f64 {
        self.data().iter().map(|&x| (x as f64) * (x as f64)).sum::<f64>().sqrt()
    }
}
