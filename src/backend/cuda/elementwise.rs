//! The launch wrappers of `kernels/elementwise.cu`: broadcast adds and their reductions, column
//! sums, scale, in-place add, fill, permute, the row copies behind slice, concat and unslice,
//! and the full sum; with the by-value structs those kernels take and the shape rules (the
//! CPU ops' own) that fill them.

use super::device::CudaDevice;
use crate::error::{Error, Result};
use cudarc::driver::{DevicePtr, DevicePtrMut, DeviceRepr, LaunchConfig};

/// Highest tensor rank the general broadcast and permute kernels take (`VC_MAX_RANK`).
pub const MAX_RANK: usize = 8;

/// `struct VcBcast` of elementwise.cu (same layout: i32, i32 padding, then 4 × 8 i64).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
struct BcastArg {
    rank: i32,
    pad: i32,
    a_shape: [i64; MAX_RANK],
    a_stride: [i64; MAX_RANK],
    b_shape: [i64; MAX_RANK],
    b_stride: [i64; MAX_RANK],
}
unsafe impl DeviceRepr for BcastArg {}

/// `struct VcPerm` of elementwise.cu.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
struct PermArg {
    rank: i32,
    pad: i32,
    out_shape: [i64; MAX_RANK],
    src_stride: [i64; MAX_RANK],
}
unsafe impl DeviceRepr for PermArg {}

impl CudaDevice {
    /// `y[i] = a[i] + b[i mod block]` over `n` elements (residual add: block = n; bias: block = D).
    pub fn add_bcast_block(
        &self,
        a: &(impl DevicePtr<f32> + ?Sized),
        b: &(impl DevicePtr<f32> + ?Sized),
        y: &mut (impl DevicePtrMut<f32> + ?Sized),
        n: usize,
        block: usize,
    ) -> Result<()> {
        if block == 0 || !n.is_multiple_of(block) {
            return Err(Error::shape(
                "add_bcast_block",
                &[n],
                &[block],
                "the block must divide the size",
            ));
        }
        self.args("add")
            .input("a", a, n)
            .input("b", b, block)
            .output("y", y, n)
            .size(n)
            .size(block)
            .launch_elementwise("add_bcast_block", n)
    }

    /// `y = a + broadcast(b)` with numpy rules, the result shaped like `a` (as
    /// `ops::add::add_broadcast`): the block kernel when `b` broadcasts over leading dimensions
    /// only, the general strided kernel otherwise.
    pub fn add_broadcast(
        &self,
        a: &(impl DevicePtr<f32> + ?Sized),
        a_shape: &[usize],
        b: &(impl DevicePtr<f32> + ?Sized),
        b_shape: &[usize],
        y: &mut (impl DevicePtrMut<f32> + ?Sized),
    ) -> Result<()> {
        let s = bcast_arg("add_broadcast", a_shape, b_shape)?;
        let n: usize = a_shape.iter().product();
        if let Some(block) = leading_broadcast_block(a_shape, b_shape) {
            return self.add_bcast_block(a, b, y, n, block);
        }
        self.args("add_broadcast")
            .input("a", a, n)
            .input("b", b, b_shape.iter().product())
            .output("y", y, n)
            .size(n)
            .by_value(&s)
            .launch_elementwise("add_bcast_general", n)
    }

    /// Sum `g` (shaped `g_shape`) down to `b_shape`: the gradient of a broadcast operand (as
    /// `ops::add::reduce_to_shape`).
    pub fn reduce_to_shape(
        &self,
        g: &(impl DevicePtr<f32> + ?Sized),
        g_shape: &[usize],
        out: &mut (impl DevicePtrMut<f32> + ?Sized),
        b_shape: &[usize],
    ) -> Result<()> {
        let s = bcast_arg("reduce_to_shape", g_shape, b_shape)?;
        let n: usize = g_shape.iter().product();
        let nb: usize = b_shape.iter().product();
        if let Some(block) = leading_broadcast_block(g_shape, b_shape) {
            return self.sum_rows(g, out, n.checked_div(block).unwrap_or(0), block);
        }
        // One thread per element of b.
        self.args("reduce_to_shape")
            .input("g", g, n)
            .output("out", out, nb)
            .size(nb)
            .by_value(&s)
            .launch_elementwise("reduce_bcast_general", nb)
    }

    /// Column sums: `out[c] = Σ_r x[r, c]` of a `[rows, cols]` matrix (bias gradients).
    pub fn sum_rows(
        &self,
        x: &(impl DevicePtr<f32> + ?Sized),
        out: &mut (impl DevicePtrMut<f32> + ?Sized),
        rows: usize,
        cols: usize,
    ) -> Result<()> {
        let op = "sum_rows";
        let px = self.ptr_in(op, "x", x, rows * cols)?;
        let po = self.ptr_out(op, "out", out, cols)?;
        if cols == 0 {
            return Ok(());
        }
        if rows == 0 {
            return self.fill(out, cols, 0.0);
        }
        let col_blocks = cols.div_ceil(32);
        if col_blocks > i32::MAX as usize {
            return Err(Error::Device(format!(
                "sum_rows: {cols} columns is too many for one grid"
            )));
        }
        let col_blocks = col_blocks as u32;
        let pass = |src: u64, dst: u64, rows: usize, chunks: usize, rows_per_chunk: usize| {
            let cfg = LaunchConfig {
                grid_dim: (col_blocks, chunks as u32, 1),
                block_dim: (32, 8, 1),
                shared_mem_bytes: 0,
            };
            self.args(op)
                .ptr(src)
                .ptr(dst)
                .size(rows)
                .size(cols)
                .size(rows_per_chunk)
                .launch("sum_rows", cfg)
        };
        // Few rows: one pass. Many: first [chunks, cols] partials, then their column sums.
        let chunks = (self.sm_count() as usize * 4)
            .div_ceil(col_blocks as usize)
            .clamp(1, rows.div_ceil(64))
            .min(self.max_grid_yz() as usize);
        if chunks <= 1 {
            return pass(px, po, rows, 1, rows);
        }
        let rows_per_chunk = rows.div_ceil(chunks);
        let chunks = rows.div_ceil(rows_per_chunk);
        let mut partial = self.alloc(chunks * cols)?;
        let pp = self.ptr_out(op, "partial", &mut partial, chunks * cols)?;
        pass(px, pp, rows, chunks, rows_per_chunk)?;
        pass(pp, po, chunks, 1, chunks)
    }

    /// `y = s·x`.
    pub fn scale(
        &self,
        x: &(impl DevicePtr<f32> + ?Sized),
        y: &mut (impl DevicePtrMut<f32> + ?Sized),
        n: usize,
        s: f32,
    ) -> Result<()> {
        self.args("scale")
            .input("x", x, n)
            .output("y", y, n)
            .size(n)
            .arg(s)
            .launch_elementwise("scale", n)
    }

    /// `y += x` (gradient accumulation).
    pub fn add_assign(
        &self,
        y: &mut (impl DevicePtrMut<f32> + ?Sized),
        x: &(impl DevicePtr<f32> + ?Sized),
        n: usize,
    ) -> Result<()> {
        self.args("add_assign")
            .output("y", y, n)
            .input("x", x, n)
            .size(n)
            .launch_elementwise("add_assign", n)
    }

    /// `y[..n] = v`.
    pub fn fill(&self, y: &mut (impl DevicePtrMut<f32> + ?Sized), n: usize, v: f32) -> Result<()> {
        self.args("fill")
            .output("y", y, n)
            .size(n)
            .arg(v)
            .launch_elementwise("fill", n)
    }

    /// Output dimension `d` is input dimension `perm[d]` (as `ops::shape::permute`); the
    /// backward is this with the inverse permutation.
    pub fn permute(
        &self,
        x: &(impl DevicePtr<f32> + ?Sized),
        y: &mut (impl DevicePtrMut<f32> + ?Sized),
        shape: &[usize],
        perm: &[usize],
    ) -> Result<()> {
        let r = shape.len();
        let mut seen = vec![false; r];
        let ok = perm.len() == r && perm.iter().all(|&p| p < r && !std::mem::replace(&mut seen[p], true));
        if !ok {
            return Err(Error::shape(
                "permute",
                shape,
                perm,
                "perm must be a permutation of the dimensions",
            ));
        }
        if r > MAX_RANK {
            return Err(Error::shape(
                "permute",
                shape,
                perm,
                format!("the CUDA kernel takes at most {MAX_RANK} dimensions"),
            ));
        }
        let n: usize = shape.iter().product();
        let strides = contiguous_strides(shape);
        let mut arg = PermArg {
            rank: r as i32,
            ..Default::default()
        };
        for d in 0..r {
            arg.out_shape[d] = shape[perm[d]] as i64;
            arg.src_stride[d] = strides[perm[d]] as i64;
        }
        self.args("permute")
            .input("x", x, n)
            .output("y", y, n)
            .size(n)
            .by_value(&arg)
            .launch_elementwise("permute", n)
    }

    /// `dst[o·dst_stride + dst_off + k] = src[o·src_stride + src_off + k]` for `o < outer`,
    /// `k < row_len`: the building block of slice, concat and unslice.
    #[allow(clippy::too_many_arguments)]
    pub fn copy_rows(
        &self,
        src: &(impl DevicePtr<f32> + ?Sized),
        dst: &mut (impl DevicePtrMut<f32> + ?Sized),
        outer: usize,
        row_len: usize,
        src_stride: usize,
        src_off: usize,
        dst_stride: usize,
        dst_off: usize,
    ) -> Result<()> {
        let n = outer * row_len;
        if n == 0 {
            return Ok(());
        }
        let src_need = (outer - 1) * src_stride + src_off + row_len;
        let dst_need = (outer - 1) * dst_stride + dst_off + row_len;
        self.args("copy_rows")
            .input("src", src, src_need)
            .output("dst", dst, dst_need)
            .size(outer)
            .size(row_len)
            .size(src_stride)
            .size(src_off)
            .size(dst_stride)
            .size(dst_off)
            .launch_elementwise("copy_rows", n)
    }

    /// `y = x[..., start..start+len, ...]` along `axis` (as `ops::concat::slice`).
    pub fn slice(
        &self,
        x: &(impl DevicePtr<f32> + ?Sized),
        y: &mut (impl DevicePtrMut<f32> + ?Sized),
        shape: &[usize],
        axis: usize,
        start: usize,
        len: usize,
    ) -> Result<()> {
        if axis >= shape.len() || start + len > shape[axis] {
            return Err(Error::shape("slice", shape, &[axis, start, len], "slice out of range"));
        }
        let (outer, n, inner) = split(shape, axis);
        self.copy_rows(x, y, outer, len * inner, n * inner, start * inner, len * inner, 0)
    }

    /// Zeros of `full` shape with `g` written at `start..` along `axis` (as `ops::concat::unslice`).
    pub fn unslice(
        &self,
        g: &(impl DevicePtr<f32> + ?Sized),
        y: &mut (impl DevicePtrMut<f32> + ?Sized),
        full: &[usize],
        axis: usize,
        start: usize,
        len: usize,
    ) -> Result<()> {
        if axis >= full.len() || start + len > full[axis] {
            return Err(Error::shape("unslice", full, &[axis, start, len], "slice out of range"));
        }
        let (outer, n, inner) = split(full, axis);
        self.fill(y, outer * n * inner, 0.0)?;
        self.copy_rows(g, y, outer, len * inner, len * inner, 0, n * inner, start * inner)
    }

    /// Lay the `parts` (each `(data, shape)`) end to end along `axis` into `y` (as
    /// `ops::concat::concat`); shapes must agree except along `axis`.
    pub fn concat(
        &self,
        parts: &[(&dyn DevicePtr<f32>, &[usize])],
        y: &mut (impl DevicePtrMut<f32> + ?Sized),
        axis: usize,
    ) -> Result<()> {
        let Some(&(_, first)) = parts.first() else {
            return Err(Error::config("concat of no tensors"));
        };
        if axis >= first.len() {
            return Err(Error::shape("concat", first, &[axis], "axis out of range"));
        }
        let total: usize = parts.iter().map(|(_, s)| s.get(axis).copied().unwrap_or(0)).sum();
        for &(_, s) in parts {
            let ok = s.len() == first.len() && s.iter().zip(first).enumerate().all(|(d, (a, b))| d == axis || a == b);
            if !ok {
                return Err(Error::shape(
                    "concat",
                    first,
                    s,
                    format!("shapes must match except along axis {axis}"),
                ));
            }
        }
        let (outer, _, inner) = split(first, axis);
        let mut off = 0;
        for &(x, s) in parts {
            let len = s[axis];
            self.copy_rows(x, y, outer, len * inner, len * inner, 0, total * inner, off * inner)?;
            off += len;
        }
        Ok(())
    }

    /// `out[0] = scale · Σ x[..n]` (one block, f64 accumulation).
    pub fn sum_all(
        &self,
        x: &(impl DevicePtr<f32> + ?Sized),
        out: &mut (impl DevicePtrMut<f32> + ?Sized),
        n: usize,
        scale: f64,
    ) -> Result<()> {
        let cfg = LaunchConfig {
            grid_dim: (1, 1, 1),
            block_dim: (1024, 1, 1),
            shared_mem_bytes: 0,
        };
        self.args("sum_all")
            .input("x", x, n)
            .output("out", out, 1)
            .size(n)
            .arg(scale)
            .launch("sum_all", cfg)
    }
}

// ---------------------------------------------------------------------------------------------
// Shape helpers (the same rules as the CPU ops)
// ---------------------------------------------------------------------------------------------

fn contiguous_strides(shape: &[usize]) -> Vec<usize> {
    let mut s = vec![1; shape.len()];
    for d in (0..shape.len().saturating_sub(1)).rev() {
        s[d] = s[d + 1] * shape[d + 1];
    }
    s
}

/// (outer, axis length, inner) of a shape around `axis`.
fn split(shape: &[usize], axis: usize) -> (usize, usize, usize) {
    (
        shape[..axis].iter().product(),
        shape[axis],
        shape[axis + 1..].iter().product(),
    )
}

/// If `b` broadcasts only over leading dimensions of `a`, the length of the repeated block
/// (`ops::add`'s rule).
fn leading_broadcast_block(a: &[usize], b: &[usize]) -> Option<usize> {
    let b_trim: Vec<usize> = b.iter().copied().skip_while(|&d| d == 1).collect();
    a.ends_with(&b_trim).then(|| b_trim.iter().product())
}

/// The kernel's broadcast description, with `ops::add`'s checks.
fn bcast_arg(op: &'static str, a: &[usize], b: &[usize]) -> Result<BcastArg> {
    if b.len() > a.len() {
        return Err(Error::shape(op, a, b, "b has more dimensions than a"));
    }
    if a.len() > MAX_RANK {
        return Err(Error::shape(
            op,
            a,
            b,
            format!("the CUDA kernels take at most {MAX_RANK} dimensions"),
        ));
    }
    let off = a.len() - b.len();
    let mut s = BcastArg {
        rank: a.len() as i32,
        ..Default::default()
    };
    let a_strides = contiguous_strides(a);
    let mut bs = 1usize;
    for d in (0..a.len()).rev() {
        let bd = if d >= off { b[d - off] } else { 1 };
        if bd != a[d] && bd != 1 {
            return Err(Error::shape(op, a, b, "each dimension of b must be 1 or equal to a's"));
        }
        s.a_shape[d] = a[d] as i64;
        s.a_stride[d] = a_strides[d] as i64;
        s.b_shape[d] = bd as i64;
        s.b_stride[d] = if bd == 1 { 0 } else { bs as i64 };
        bs *= bd;
    }
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broadcast_descriptions() {
        // Position embedding [1, T, D] onto [B, T, D]: a leading broadcast (block T·D).
        assert_eq!(leading_broadcast_block(&[2, 3, 4], &[1, 3, 4]), Some(12));
        assert_eq!(leading_broadcast_block(&[2, 3, 4], &[4]), Some(4));
        // [B, 1, D] onto [B, T, D] is not: it needs the general kernel.
        assert_eq!(leading_broadcast_block(&[2, 3, 4], &[2, 1, 4]), None);
        let s = bcast_arg("t", &[2, 3, 4], &[2, 1, 4]).unwrap();
        assert_eq!(&s.b_shape[..3], &[2, 1, 4]);
        assert_eq!(&s.b_stride[..3], &[4, 0, 1]);
        assert_eq!(&s.a_stride[..3], &[12, 4, 1]);
        assert!(bcast_arg("t", &[2, 3], &[3, 3]).is_err());
        assert!(bcast_arg("t", &[3], &[2, 3]).is_err());
    }

    #[test]
    fn kernel_arg_structs_match_the_cuda_layout() {
        // struct VcBcast { int; int; long long[8] × 4 } and VcPerm { int; int; long long[8] × 2 }.
        assert_eq!(std::mem::size_of::<BcastArg>(), 8 + 4 * 64);
        assert_eq!(std::mem::size_of::<PermArg>(), 8 + 2 * 64);
        assert_eq!(std::mem::align_of::<BcastArg>(), 8);
    }
}
