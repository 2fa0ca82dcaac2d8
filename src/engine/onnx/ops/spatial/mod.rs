//! Convolutions, pools and matrix products: generic reference kernels (im2col, col2im and sgemm).
//!
//! The lowering maps the common cases onto the engine's own kernels; these
//! run whatever it cannot (dilations, uneven pads, 1-D and 3-D windows,
//! transposed convolutions, batched products). Windowed ops take one to
//! three spatial axes (`[N, C, ...]` tensors of rank 3 to 5) and hold
//! their padding explicitly, `auto_pad` resolved at build from the input's
//! shape.

pub mod conv;
pub mod linear;
pub mod pool;

use std::borrow::Cow;

use ndarray::{ArrayD, IxDyn};

pub use conv::{Conv, ConvTranspose};
pub use linear::{Gemm, MatMul};
pub use pool::{GlobalPool, Pool, PoolKind};

use super::super::data::{DType, Data, Fact, MAX_ELEMENTS, checked_len, fmt_dims};
use super::util::input;
use super::{Builder, Ctx};

/// The op types this family supports.
pub(super) const OPS: &[(&str, Builder)] = &[
    ("Conv", conv::build_conv),
    ("ConvTranspose", conv::build_conv_transpose),
    ("MaxPool", pool::build_max),
    ("AveragePool", pool::build_avg),
    ("GlobalMaxPool", pool::build_global_max),
    ("GlobalAveragePool", pool::build_global_avg),
    ("Gemm", linear::build_gemm),
    ("MatMul", linear::build_matmul),
];

/// Most spatial axes the windowed kernels handle.
const MAX_SPATIAL: usize = 3;

/// Floats of im2col/col2im scratch one step may use (8 MiB).
const SCRATCH: usize = 1 << 21;

/// Number of spatial axes of `dims`, an `[N, C, spatial...]` shape.
fn spatial_rank(what: &str, dims: &[usize]) -> Result<usize, String> {
    if !(3..=2 + MAX_SPATIAL).contains(&dims.len()) {
        return Err(format!(
            "{what} must be [N, C, spatial...] with 1 to {MAX_SPATIAL} spatial axes, got {}",
            fmt_dims(dims)
        ));
    }
    Ok(dims.len() - 2)
}

/// The values of list attribute `name`, `n` of them, each in `min..=MAX_ELEMENTS`.
fn checked_list(name: &str, v: &[i64], n: usize, min: usize) -> Result<Vec<usize>, String> {
    if v.len() != n {
        return Err(format!("attribute {name} has {} values, want {n}", v.len()));
    }
    v.iter()
        .map(|&x| {
            usize::try_from(x)
                .ok()
                .filter(|u| (min..=MAX_ELEMENTS).contains(u))
                .ok_or_else(|| {
                    format!("attribute {name} value {x} is out of range ({min} to {MAX_ELEMENTS})")
                })
        })
        .collect()
}

/// List attribute `name` (see [`checked_list`]), `default` repeated when absent.
fn list(ctx: &Ctx, name: &str, n: usize, min: usize, default: usize) -> Result<Vec<usize>, String> {
    match ctx.attrs.ints(name)? {
        None => Ok(vec![default; n]),
        Some(v) => checked_list(name, &v, n, min),
    }
}

/// A 0/1 flag attribute.
fn flag(ctx: &Ctx, name: &str) -> Result<bool, String> {
    match ctx.attrs.int_or(name, 0)? {
        0 => Ok(false),
        1 => Ok(true),
        v => Err(format!("attribute {name} must be 0 or 1, got {v}")),
    }
}

/// The `group` attribute.
fn group(ctx: &Ctx) -> Result<usize, String> {
    let g = ctx.attrs.int_or("group", 1)?;
    usize::try_from(g)
        .ok()
        .filter(|u| (1..=MAX_ELEMENTS).contains(u))
        .ok_or_else(|| format!("attribute group must be positive, got {g}"))
}

/// The kernel from W's spatial dims, checked against `kernel_shape`.
fn kernel_of(ctx: &Ctx, w: &[usize]) -> Result<Vec<usize>, String> {
    let kernel = w.get(2..).unwrap_or_default().to_vec();
    if kernel.contains(&0) {
        return Err(format!("W {} has an empty kernel", fmt_dims(w)));
    }
    if let Some(ks) = ctx.attrs.ints("kernel_shape")?
        && !ks
            .iter()
            .map(|&k| usize::try_from(k).ok())
            .eq(kernel.iter().map(|&k| Some(k)))
    {
        return Err(format!(
            "attribute kernel_shape {ks:?} does not match W's spatial dims {}",
            fmt_dims(&kernel)
        ));
    }
    Ok(kernel)
}

/// How `auto_pad` chooses the padding.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum AutoPad {
    NotSet,
    Valid,
    SameUpper,
    SameLower,
}

fn auto_pad(ctx: &Ctx) -> Result<AutoPad, String> {
    Ok(match ctx.attrs.string_or("auto_pad", "NOTSET")?.as_str() {
        "NOTSET" | "" => AutoPad::NotSet,
        "VALID" => AutoPad::Valid,
        "SAME_UPPER" => AutoPad::SameUpper,
        "SAME_LOWER" => AutoPad::SameLower,
        other => {
            return Err(format!(
                "attribute auto_pad {other:?} is not NOTSET, VALID, SAME_UPPER or SAME_LOWER"
            ));
        }
    })
}

/// `total` split into (begin, end): the odd one at the end when `upper`.
fn split(total: usize, upper: bool) -> (usize, usize) {
    let small = total / 2;
    if upper {
        (small, total - small)
    } else {
        (total - small, small)
    }
}

/// Explicit pads (ONNX order: begins, then ends) of a conv or pool over
/// the spatial dims `input`. With SAME_* the output is `ceil(in / stride)`
/// and the padding is what that needs (explicit `pads` are then ignored,
/// as onnxruntime does).
fn resolve_pads(
    ctx: &Ctx,
    auto: AutoPad,
    input: &[usize],
    kernel: &[usize],
    strides: &[usize],
    dilations: &[usize],
) -> Result<Vec<usize>, String> {
    let n = input.len();
    let mut pads = vec![0; 2 * n];
    match auto {
        AutoPad::NotSet => return list(ctx, "pads", 2 * n, 0, 0),
        AutoPad::Valid => {}
        AutoPad::SameUpper | AutoPad::SameLower => {
            for i in 0..n {
                let out = input[i].div_ceil(strides[i]).max(1);
                let total = ((out - 1) * strides[i] + window(kernel[i], dilations[i]))
                    .saturating_sub(input[i]);
                (pads[i], pads[n + i]) = split(total, auto == AutoPad::SameUpper);
            }
        }
    }
    Ok(pads)
}

/// Extent of a kernel of `k` taps `d` apart.
fn window(k: usize, d: usize) -> usize {
    (k - 1) * d + 1
}

/// Output length along spatial axis `axis` of a window sliding over
/// `input` padded by `pb` and `pe`. With `ceil` the last, partial window
/// counts when it starts inside the input or the begin padding.
fn out_len(
    axis: usize,
    input: usize,
    (pb, pe): (usize, usize),
    k: usize,
    s: usize,
    d: usize,
    ceil: bool,
) -> Result<usize, String> {
    let dk = window(k, d);
    let padded = input + pb + pe;
    if padded < dk {
        return Err(format!(
            "the window ({k} taps, dilation {d}: {dk} cells) is larger than the padded input \
             ({input} + {pb} + {pe}) along spatial axis {axis}"
        ));
    }
    let span = padded - dk;
    if !ceil {
        return Ok(span / s + 1);
    }
    let out = span.div_ceil(s) + 1;
    Ok(if (out - 1) * s >= input + pb {
        out - 1
    } else {
        out
    })
}

/// `v` with `fill` prepended up to three spatial axes.
fn to3(v: &[usize], fill: usize) -> [usize; 3] {
    let mut o = [fill; 3];
    o[3 - v.len()..].copy_from_slice(v);
    o
}

/// Inputs `o` in `0..n_out` whose `o * s + off` lands in `0..n_in`, as a range.
fn valid(n_in: usize, n_out: usize, s: usize, off: isize) -> (usize, usize) {
    let lo = if off >= 0 {
        0
    } else {
        off.unsigned_abs().div_ceil(s)
    };
    let hi = if off >= n_in as isize {
        0
    } else {
        ((n_in as isize - 1 - off) as usize / s + 1).min(n_out)
    };
    (lo.min(hi), hi)
}

/// Input `i`'s fact, which must be present and float.
fn float_fact<'a>(inputs: &[Option<&'a Fact>], i: usize, name: &str) -> Result<&'a Fact, String> {
    let f = input(inputs, i)?;
    if f.dtype != DType::F32 {
        return Err(format!(
            "input {name} must be a float tensor, got {}",
            f.dtype
        ));
    }
    Ok(f)
}

/// Input `i`'s fact if present, which must then be float.
fn opt_float_fact<'a>(
    inputs: &[Option<&'a Fact>],
    i: usize,
    name: &str,
) -> Result<Option<&'a Fact>, String> {
    match inputs.get(i).copied().flatten() {
        None => Ok(None),
        Some(_) => float_fact(inputs, i, name).map(Some),
    }
}

/// Input `i`'s f32 array, which must be present.
fn float_data<'a>(inputs: &[Option<&'a Data>], i: usize) -> Result<&'a ArrayD<f32>, String> {
    input(inputs, i)?
        .f32()
        .map_err(|e| format!("input {i}: {e}"))
}

/// Input `i`'s f32 array if present.
fn opt_float_data<'a>(
    inputs: &[Option<&'a Data>],
    i: usize,
) -> Result<Option<&'a ArrayD<f32>>, String> {
    match inputs.get(i).copied().flatten() {
        None => Ok(None),
        Some(_) => float_data(inputs, i).map(Some),
    }
}

/// The elements of `a` in row-major order, borrowed when they already are.
fn slice(a: &ArrayD<f32>) -> Cow<'_, [f32]> {
    match a.as_slice() {
        Some(s) => Cow::Borrowed(s),
        None => Cow::Owned(a.iter().copied().collect()),
    }
}

/// An f32 value of `dims` over `y`.
fn output(dims: &[usize], y: Vec<f32>) -> Result<Data, String> {
    checked_len(dims)?;
    ArrayD::from_shape_vec(IxDyn(dims), y)
        .map(Data::F32)
        .map_err(|e| format!("output {}: {e}", fmt_dims(dims)))
}

/// `c = alpha·a·b + beta·c` for an `m×k` matrix `a`, a `k×n` matrix `b`
/// (each given by its row and column strides) and an `m×n` matrix `c`
/// with row stride `rsc`; with `beta == 0` the old `c` is not read.
#[allow(clippy::too_many_arguments)]
fn sgemm(
    (m, k, n): (usize, usize, usize),
    alpha: f32,
    a: &[f32],
    (rsa, csa): (usize, usize),
    b: &[f32],
    (rsb, csb): (usize, usize),
    beta: f32,
    c: &mut [f32],
    rsc: usize,
) {
    if m == 0 || n == 0 {
        return;
    }
    let end =
        |rows: usize, cols: usize, rs: usize, cs: usize| (rows - 1) * rs + (cols - 1) * cs + 1;
    assert!(c.len() >= end(m, n, rsc, 1), "sgemm: c is too short");
    if k == 0 {
        for i in 0..m {
            for v in &mut c[i * rsc..i * rsc + n] {
                *v = if beta == 0.0 { 0.0 } else { *v * beta };
            }
        }
        return;
    }
    assert!(a.len() >= end(m, k, rsa, csa), "sgemm: a is too short");
    assert!(b.len() >= end(k, n, rsb, csb), "sgemm: b is too short");
    // SAFETY: the asserts above keep every element the strides reach
    // (the last at `(rows-1)*rs + (cols-1)*cs`) inside its slice, and `c`
    // is borrowed mutably so it aliases neither `a` nor `b`.
    unsafe {
        matrixmultiply::sgemm(
            m,
            k,
            n,
            alpha,
            a.as_ptr(),
            rsa as isize,
            csa as isize,
            b.as_ptr(),
            rsb as isize,
            csb as isize,
            beta,
            c.as_mut_ptr(),
            rsc as isize,
            1,
        )
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    /// Deterministic values in [-1, 1).
    pub(in super::super) fn rand(len: usize, seed: u64) -> Vec<f32> {
        let mut s = seed | 1;
        (0..len)
            .map(|_| {
                s = s
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                (s >> 40) as f32 / (1u64 << 23) as f32 - 1.0
            })
            .collect()
    }

    #[test]
    fn window_arithmetic() {
        // Floor and ceil lengths; ceil drops a window starting in the end padding.
        assert_eq!(out_len(0, 5, (0, 0), 2, 2, 1, false).unwrap(), 2);
        assert_eq!(out_len(0, 5, (0, 0), 2, 2, 1, true).unwrap(), 3);
        assert_eq!(out_len(0, 6, (2, 2), 3, 2, 1, true).unwrap(), 4);
        assert!(
            out_len(1, 2, (0, 1), 2, 1, 3, false)
                .unwrap_err()
                .contains("larger than the padded input")
        );
        assert_eq!(split(3, true), (1, 2));
        assert_eq!(split(3, false), (2, 1));
        assert_eq!(to3(&[4, 5], 1), [1, 4, 5]);
        // o*2 - 1 in 0..5 for o in 0..4: o = 1, 2.
        assert_eq!(valid(5, 4, 2, -1), (1, 3));
        assert_eq!(valid(0, 4, 1, -3), (3, 3));
        assert_eq!(valid(3, 4, 1, 5), (0, 0));
    }

    #[test]
    fn sgemm_strides() {
        // [[1, 2], [3, 4]]^T · [[1, 0], [0, 1]] into a 2×2 with row stride 3.
        let a = [1.0, 2.0, 3.0, 4.0];
        let b = [1.0, 0.0, 0.0, 1.0];
        let mut c = [9.0; 6];
        sgemm((2, 2, 2), 1.0, &a, (1, 2), &b, (2, 1), 0.0, &mut c, 3);
        assert_eq!(c, [1.0, 3.0, 9.0, 2.0, 4.0, 9.0]);
        sgemm((2, 0, 2), 1.0, &[], (0, 0), &[], (0, 0), 2.0, &mut c, 3);
        assert_eq!(c, [2.0, 6.0, 9.0, 4.0, 8.0, 9.0]);
    }
}
