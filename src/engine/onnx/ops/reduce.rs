//! Reductions and normalisations: Reduce*, Softmax/LogSoftmax, LRN, LayerNormalization, BatchNormalization, InstanceNormalization.

use std::any::Any;
use std::borrow::Cow;

use ndarray::{ArrayD, IxDyn};

use super::super::data::{DType, Data, Fact, fmt_dims};
use super::elementwise::exp_f32;
use super::util::{array, broadcast, f32_input, input, like, norm_axes, norm_axis, std_slice};
use super::{Builder, Ctx, Op};

/// The op types this family supports.
pub(super) const OPS: &[(&str, Builder)] = &[
    ("ReduceMean", reduce),
    ("ReduceSum", reduce),
    ("ReduceMax", reduce),
    ("ReduceMin", reduce),
    ("ReduceProd", reduce),
    ("ReduceL1", reduce),
    ("ReduceL2", reduce),
    ("ReduceSumSquare", reduce),
    ("ReduceLogSum", reduce),
    ("ReduceLogSumExp", reduce),
    ("Softmax", softmax),
    ("LogSoftmax", softmax),
    ("LRN", lrn),
    ("LayerNormalization", layer_norm),
    ("BatchNormalization", batch_norm),
    ("InstanceNormalization", instance_norm),
];

fn float_input<'a>(inputs: &[Option<&'a Fact>], i: usize) -> Result<&'a Fact, String> {
    let f = input(inputs, i)?;
    if f.dtype != DType::F32 {
        return Err(format!("input {i} must be float, got {}", f.dtype));
    }
    Ok(f)
}

/// `f` folded over `row` with eight independent accumulators (so the loop
/// vectorises and long f32 sums keep their precision), each element
/// mapped by `pre` first.
#[inline(always)]
fn fold_lanes<T: Copy>(row: &[T], init: T, pre: impl Fn(T) -> T, f: impl Fn(T, T) -> T) -> T {
    let mut acc = [init; 8];
    let mut chunks = row.chunks_exact(8);
    for c in &mut chunks {
        for k in 0..8 {
            acc[k] = f(acc[k], pre(c[k]));
        }
    }
    let mut r = init;
    for &v in chunks.remainder() {
        r = f(r, pre(v));
    }
    acc.into_iter().fold(r, f)
}

/// A tensor seen as `[outer, red, inner]`, reduced over `red`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Split {
    outer: usize,
    red: usize,
    inner: usize,
}

/// `f` over the `red` axis of `x` (`[outer, red, inner]`), giving
/// `[outer, inner]`.
fn fold3<T: Copy>(
    x: &[T],
    s: Split,
    init: T,
    pre: impl Fn(T) -> T + Copy,
    f: impl Fn(T, T) -> T + Copy,
) -> Vec<T> {
    let mut out = vec![init; s.outer * s.inner];
    if out.is_empty() || s.red == 0 {
        return out;
    }
    if s.inner == 1 {
        for (o, row) in out.iter_mut().zip(x.chunks_exact(s.red)) {
            *o = fold_lanes(row, init, pre, f);
        }
    } else {
        for (acc, blk) in out
            .chunks_exact_mut(s.inner)
            .zip(x.chunks_exact(s.red * s.inner))
        {
            for row in blk.chunks_exact(s.inner) {
                for (a, &v) in acc.iter_mut().zip(row) {
                    *a = f(*a, pre(v));
                }
            }
        }
    }
    out
}

// ---------------------------------------------------------------- Reduce*

/// The function a [`Reduce`] folds with.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ReduceKind {
    /// Arithmetic mean.
    Mean,
    /// Sum.
    Sum,
    /// Largest (NaN if any is).
    Max,
    /// Smallest (NaN if any is).
    Min,
    /// Product.
    Prod,
    /// Sum of absolute values.
    L1,
    /// Square root of the sum of squares.
    L2,
    /// Sum of squares.
    SumSquare,
    /// ln of the sum.
    LogSum,
    /// ln of the sum of exponentials (computed stably).
    LogSumExp,
}

impl ReduceKind {
    fn takes_i64(self) -> bool {
        !matches!(
            self,
            ReduceKind::L2 | ReduceKind::LogSum | ReduceKind::LogSumExp
        )
    }
}

/// A reduction over `axes`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reduce {
    /// The function.
    pub kind: ReduceKind,
    /// The reduced axes, sorted, resolved against the input's rank at
    /// build. Empty: every element is reduced alone (`noop_with_empty_axes`,
    /// or a rank-0 input).
    pub axes: Vec<usize>,
    /// Keep reduced axes as size 1.
    pub keepdims: bool,
}

fn reduce(ctx: &Ctx) -> Result<Box<dyn Op>, String> {
    let kind = match ctx.op_type {
        "ReduceMean" => ReduceKind::Mean,
        "ReduceSum" => ReduceKind::Sum,
        "ReduceMax" => ReduceKind::Max,
        "ReduceMin" => ReduceKind::Min,
        "ReduceProd" => ReduceKind::Prod,
        "ReduceL1" => ReduceKind::L1,
        "ReduceL2" => ReduceKind::L2,
        "ReduceSumSquare" => ReduceKind::SumSquare,
        "ReduceLogSum" => ReduceKind::LogSum,
        "ReduceLogSumExp" => ReduceKind::LogSumExp,
        other => return Err(format!("{other} is not a reduction")),
    };
    let rank = ctx.required(0)?.rank();
    let since = if kind == ReduceKind::Sum { 13 } else { 18 };
    let axes = if ctx.opset >= since {
        if ctx.attrs.has("axes") {
            return Err(format!(
                "attribute axes is not allowed from opset {since}: axes is input 1"
            ));
        }
        ctx.const_input(1)?.map(Data::to_i64_vec)
    } else {
        if ctx.input(1).is_some() {
            return Err(format!(
                "axes is input 1 only from opset {since}; opset {} takes attribute axes",
                ctx.opset
            ));
        }
        ctx.attrs.ints("axes")?
    };
    let noop = ctx.attrs.int_or("noop_with_empty_axes", 0)? != 0;
    let mut axes = match axes {
        Some(a) if !a.is_empty() => norm_axes(&a, rank).map_err(|e| format!("axes: {e}"))?,
        _ if noop => vec![],
        _ => (0..rank).collect(),
    };
    axes.sort_unstable();
    Ok(Box::new(Reduce {
        kind,
        axes,
        keepdims: ctx.attrs.int_or("keepdims", 1)? != 0,
    }))
}

impl Reduce {
    fn out_dims(&self, dims: &[usize]) -> Result<Vec<usize>, String> {
        if let Some(&a) = self.axes.iter().find(|&&a| a >= dims.len()) {
            return Err(format!("axis {a} is out of range for rank {}", dims.len()));
        }
        Ok((0..dims.len())
            .filter_map(|i| match self.axes.contains(&i) {
                false => Some(dims[i]),
                true if self.keepdims => Some(1),
                true => None,
            })
            .collect())
    }

    /// How to see an input of `dims` as `[outer, red, inner]`: directly
    /// when the reduced axes are adjacent (ignoring size-1 axes), else
    /// after moving them last (the permutation returned).
    fn split(&self, dims: &[usize]) -> (Split, Option<Vec<usize>>) {
        let red: usize = self.axes.iter().map(|&a| dims[a]).product();
        let total: usize = dims.iter().product();
        let big: Vec<usize> = (0..dims.len()).filter(|&i| dims[i] != 1).collect();
        let pos: Vec<usize> = (0..big.len())
            .filter(|&p| self.axes.contains(&big[p]))
            .collect();
        let (Some(&first), Some(&last)) = (pos.first(), pos.last()) else {
            return (
                Split {
                    outer: total,
                    red: 1,
                    inner: 1,
                },
                None,
            );
        };
        if last - first + 1 == pos.len() {
            let outer = big[..first].iter().map(|&i| dims[i]).product();
            let inner = big[last + 1..].iter().map(|&i| dims[i]).product();
            (Split { outer, red, inner }, None)
        } else {
            let mut perm: Vec<usize> = (0..dims.len()).filter(|i| !self.axes.contains(i)).collect();
            let outer = perm.iter().map(|&i| dims[i]).product();
            perm.extend(&self.axes);
            (
                Split {
                    outer,
                    red,
                    inner: 1,
                },
                Some(perm),
            )
        }
    }
}

/// The elements of `a` with its axes in `perm` order, or as they are.
fn arranged<'a, T: Copy>(a: &'a ArrayD<T>, perm: &Option<Vec<usize>>) -> Cow<'a, [T]> {
    match perm {
        None => std_slice(a),
        Some(p) => Cow::Owned(a.view().permuted_axes(&p[..]).iter().copied().collect()),
    }
}

#[inline(always)]
fn max_nan(x: f32, y: f32) -> f32 {
    if x >= y || x.is_nan() { x } else { y }
}

#[inline(always)]
fn min_nan(x: f32, y: f32) -> f32 {
    if x <= y || x.is_nan() { x } else { y }
}

fn reduce_f32(kind: ReduceKind, x: &[f32], s: Split) -> Vec<f32> {
    let id = |v: f32| v;
    let add = |a: f32, b: f32| a + b;
    match kind {
        ReduceKind::Sum => fold3(x, s, 0.0, id, add),
        ReduceKind::Mean => {
            let n = s.red as f32;
            let mut v = fold3(x, s, 0.0, id, add);
            v.iter_mut().for_each(|v| *v /= n);
            v
        }
        ReduceKind::Max => fold3(x, s, f32::NEG_INFINITY, id, max_nan),
        ReduceKind::Min => fold3(x, s, f32::INFINITY, id, min_nan),
        ReduceKind::Prod => fold3(x, s, 1.0, id, |a, b| a * b),
        ReduceKind::L1 => fold3(x, s, 0.0, f32::abs, add),
        ReduceKind::SumSquare => fold3(x, s, 0.0, |v| v * v, add),
        ReduceKind::L2 => {
            let mut v = fold3(x, s, 0.0, |v| v * v, add);
            v.iter_mut().for_each(|v| *v = v.sqrt());
            v
        }
        ReduceKind::LogSum => {
            let mut v = fold3(x, s, 0.0, id, add);
            v.iter_mut().for_each(|v| *v = v.ln());
            v
        }
        ReduceKind::LogSumExp => {
            let m = fold3(x, s, f32::NEG_INFINITY, id, max_nan);
            let mut sum = vec![0.0f32; m.len()];
            if !m.is_empty() {
                for (o, blk) in x.chunks_exact((s.red * s.inner).max(1)).enumerate() {
                    let (ms, acc) = (
                        &m[o * s.inner..][..s.inner],
                        &mut sum[o * s.inner..][..s.inner],
                    );
                    for row in blk.chunks_exact(s.inner) {
                        for ((a, &v), &mx) in acc.iter_mut().zip(row).zip(ms) {
                            *a += (v - mx).exp();
                        }
                    }
                }
            }
            m.iter()
                .zip(sum)
                .map(|(&mx, s)| if mx.is_finite() { mx + s.ln() } else { mx })
                .collect()
        }
    }
}

fn reduce_i64(kind: ReduceKind, x: &[i64], s: Split) -> Result<Vec<i64>, String> {
    let id = |v: i64| v;
    let add = i64::wrapping_add;
    Ok(match kind {
        ReduceKind::Sum => fold3(x, s, 0, id, add),
        ReduceKind::Mean => {
            let n = s.red.max(1) as i64;
            fold3(x, s, 0, id, add).into_iter().map(|v| v / n).collect()
        }
        ReduceKind::Max => fold3(x, s, i64::MIN, id, i64::max),
        ReduceKind::Min => fold3(x, s, i64::MAX, id, i64::min),
        ReduceKind::Prod => fold3(x, s, 1, id, i64::wrapping_mul),
        ReduceKind::L1 => fold3(x, s, 0, i64::wrapping_abs, add),
        ReduceKind::SumSquare => fold3(x, s, 0, |v| v.wrapping_mul(v), add),
        k => return Err(format!("{k:?} needs a float input")),
    })
}

impl Op for Reduce {
    fn infer(&self, inputs: &[Option<&Fact>]) -> Result<Vec<Fact>, String> {
        let x = input(inputs, 0)?;
        if x.dtype == DType::I64 && !self.kind.takes_i64() {
            return Err(format!(
                "Reduce{:?} needs a float input, got i64",
                self.kind
            ));
        }
        Ok(vec![like(x, self.out_dims(&x.dims)?)?])
    }

    fn eval(&self, inputs: &[Option<&Data>]) -> Result<Vec<Data>, String> {
        let x = input(inputs, 0)?;
        let dims = self.out_dims(x.dims())?;
        let (s, perm) = self.split(x.dims());
        Ok(vec![match x {
            Data::F32(a) => Data::F32(array(&dims, reduce_f32(self.kind, &arranged(a, &perm), s))?),
            Data::I64(a) => Data::I64(array(
                &dims,
                reduce_i64(self.kind, &arranged(a, &perm), s)?,
            )?),
        }])
    }

    fn flops(&self, inputs: &[Option<&Fact>], _outputs: &[Fact]) -> u64 {
        inputs
            .first()
            .copied()
            .flatten()
            .map_or(0, |f| f.len() as u64)
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}

// ---------------------------------------------------------------- Softmax

/// Softmax (or log-softmax) over `axis`, or over every axis from `axis`
/// on when `coerce_2d` (opset < 13).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Softmax {
    /// The (first) softmax axis, resolved at build.
    pub axis: usize,
    /// Log-softmax.
    pub log: bool,
    /// Flatten `[axis, rank)` into one softmax axis (opset < 13).
    pub coerce_2d: bool,
}

fn softmax(ctx: &Ctx) -> Result<Box<dyn Op>, String> {
    let rank = ctx.required(0)?.rank();
    let coerce_2d = ctx.opset < 13;
    let axis = ctx.attrs.int_or("axis", if coerce_2d { 1 } else { -1 })?;
    Ok(Box::new(Softmax {
        axis: norm_axis(axis, rank).map_err(|e| format!("attribute axis: {e}"))?,
        log: ctx.op_type == "LogSoftmax",
        coerce_2d,
    }))
}

impl Softmax {
    fn split(&self, dims: &[usize]) -> Result<Split, String> {
        if self.axis >= dims.len() {
            return Err(format!(
                "axis {} is out of range for rank {}",
                self.axis,
                dims.len()
            ));
        }
        let outer = dims[..self.axis].iter().product();
        Ok(if self.coerce_2d {
            Split {
                outer,
                red: dims[self.axis..].iter().product(),
                inner: 1,
            }
        } else {
            Split {
                outer,
                red: dims[self.axis],
                inner: dims[self.axis + 1..].iter().product(),
            }
        })
    }

    /// Softmax of `x`, seen as `[outer, red, inner]`, in place.
    fn apply(&self, x: &mut [f32], s: Split) {
        if x.is_empty() {
            return;
        }
        let log = self.log;
        if s.inner == 1 {
            for row in x.chunks_exact_mut(s.red) {
                let m = fold_lanes(row, f32::NEG_INFINITY, |v| v, max_nan);
                if log {
                    let sum = fold_lanes(row, 0.0, |v| exp_f32(v - m), |a, b| a + b);
                    let k = m + sum.ln();
                    row.iter_mut().for_each(|v| *v -= k);
                } else {
                    row.iter_mut().for_each(|v| *v = exp_f32(*v - m));
                    let r = 1.0 / fold_lanes(row, 0.0, |v| v, |a, b| a + b);
                    row.iter_mut().for_each(|v| *v *= r);
                }
            }
        } else {
            let mut m = vec![0.0f32; s.inner];
            let mut sum = vec![0.0f32; s.inner];
            for blk in x.chunks_exact_mut(s.red * s.inner) {
                m.fill(f32::NEG_INFINITY);
                for row in blk.chunks_exact(s.inner) {
                    for (a, &v) in m.iter_mut().zip(row) {
                        *a = max_nan(*a, v);
                    }
                }
                sum.fill(0.0);
                for row in blk.chunks_exact_mut(s.inner) {
                    for ((v, a), &mx) in row.iter_mut().zip(&mut sum).zip(&m) {
                        let e = exp_f32(*v - mx);
                        *a += e;
                        if log {
                            *v -= mx;
                        } else {
                            *v = e;
                        }
                    }
                }
                if log {
                    sum.iter_mut().for_each(|a| *a = a.ln());
                    for row in blk.chunks_exact_mut(s.inner) {
                        row.iter_mut().zip(&sum).for_each(|(v, &l)| *v -= l);
                    }
                } else {
                    sum.iter_mut().for_each(|a| *a = 1.0 / *a);
                    for row in blk.chunks_exact_mut(s.inner) {
                        row.iter_mut().zip(&sum).for_each(|(v, &r)| *v *= r);
                    }
                }
            }
        }
    }
}

impl Op for Softmax {
    fn infer(&self, inputs: &[Option<&Fact>]) -> Result<Vec<Fact>, String> {
        let x = float_input(inputs, 0)?;
        self.split(&x.dims)?;
        Ok(vec![Fact::f32(x.dims.clone())])
    }

    fn eval(&self, inputs: &[Option<&Data>]) -> Result<Vec<Data>, String> {
        let x = f32_input(inputs, 0)?;
        let s = self.split(x.shape())?;
        let mut out = x.as_standard_layout().into_owned();
        self.apply(out.as_slice_mut().expect("standard layout"), s);
        Ok(vec![Data::F32(out)])
    }

    fn flops(&self, _inputs: &[Option<&Fact>], outputs: &[Fact]) -> u64 {
        outputs.iter().map(|f| 4 * f.len() as u64).sum()
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}

// ---------------------------------------------------------------- LRN

/// Local response normalisation across channels (axis 1).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Lrn {
    /// Number of channels in each window.
    pub size: usize,
    /// Scale of the square sum.
    pub alpha: f32,
    /// Exponent.
    pub beta: f32,
    /// Offset.
    pub bias: f32,
}

fn lrn(ctx: &Ctx) -> Result<Box<dyn Op>, String> {
    ctx.required(0)?;
    let size = super::super::attrs::required(ctx.attrs.int("size"), "size")?;
    if size < 1 {
        return Err(format!("attribute size must be positive, got {size}"));
    }
    Ok(Box::new(Lrn {
        size: usize::try_from(size).map_err(|_| format!("attribute size {size} is too large"))?,
        alpha: ctx.attrs.float_or("alpha", 1e-4)?,
        beta: ctx.attrs.float_or("beta", 0.75)?,
        bias: ctx.attrs.float_or("bias", 1.0)?,
    }))
}

/// `[N, C, plane]` of an N-C-... tensor, or an error naming `what`.
fn nc_plane(dims: &[usize], what: &str) -> Result<(usize, usize, usize), String> {
    if dims.len() < 2 {
        return Err(format!(
            "{what} needs an N x C x ... input of rank 2 or more, got shape {}",
            fmt_dims(dims)
        ));
    }
    Ok((dims[0], dims[1], dims[2..].iter().product()))
}

impl Op for Lrn {
    fn infer(&self, inputs: &[Option<&Fact>]) -> Result<Vec<Fact>, String> {
        let x = float_input(inputs, 0)?;
        nc_plane(&x.dims, "LRN")?;
        Ok(vec![Fact::f32(x.dims.clone())])
    }

    fn eval(&self, inputs: &[Option<&Data>]) -> Result<Vec<Data>, String> {
        let x = f32_input(inputs, 0)?;
        let (_, c, plane) = nc_plane(x.shape(), "LRN")?;
        let xs = std_slice(x);
        let mut out = vec![0.0f32; xs.len()];
        let (before, after) = ((self.size - 1) / 2, self.size / 2);
        let k = self.alpha / self.size as f32;
        let mut sq = vec![0.0f32; plane];
        if plane > 0 && c > 0 {
            for (xb, ob) in xs
                .chunks_exact(c * plane)
                .zip(out.chunks_exact_mut(c * plane))
            {
                for ch in 0..c {
                    sq.fill(0.0);
                    let (lo, hi) = (
                        ch.saturating_sub(before),
                        (ch.saturating_add(after)).min(c - 1),
                    );
                    for p in xb[lo * plane..(hi + 1) * plane].chunks_exact(plane) {
                        sq.iter_mut().zip(p).for_each(|(a, &v)| *a += v * v);
                    }
                    let (xp, op) = (&xb[ch * plane..][..plane], &mut ob[ch * plane..][..plane]);
                    for ((o, &v), &s) in op.iter_mut().zip(xp).zip(&sq) {
                        *o = v / (self.bias + k * s).powf(self.beta);
                    }
                }
            }
        }
        Ok(vec![Data::F32(array(x.shape(), out)?)])
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}

// ---------------------------------------------------------------- LayerNormalization

/// Layer normalisation over the axes `[axis, rank)`, then `* scale + bias`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LayerNorm {
    /// First normalised axis, resolved at build.
    pub axis: usize,
    /// Added to the variance.
    pub epsilon: f32,
}

fn layer_norm(ctx: &Ctx) -> Result<Box<dyn Op>, String> {
    if ctx.outputs > 1 {
        return Err(format!(
            "the node declares {} outputs; the Mean and InvStdDev outputs are not supported",
            ctx.outputs
        ));
    }
    let rank = ctx.required(0)?.rank();
    ctx.required(1)?;
    let axis = ctx.attrs.int_or("axis", -1)?;
    Ok(Box::new(LayerNorm {
        axis: norm_axis(axis, rank).map_err(|e| format!("attribute axis: {e}"))?,
        epsilon: ctx.attrs.float_or("epsilon", 1e-5)?,
    }))
}

/// Checks that a parameter of shape `p` broadcasts to x (`dims`) and
/// varies only over the axes `[axis, rank)`.
fn row_param(dims: &[usize], axis: usize, p: &[usize], what: &str) -> Result<(), String> {
    let bad = || {
        format!(
            "{what} of shape {} does not broadcast to the normalised axes {} of X",
            fmt_dims(p),
            fmt_dims(&dims[axis.min(dims.len())..])
        )
    };
    if broadcast(dims, p).ok().as_deref() != Some(dims) {
        return Err(bad());
    }
    let pad = dims.len() - p.len();
    if (0..axis).any(|i| i >= pad && p[i - pad] != 1) {
        return Err(bad());
    }
    Ok(())
}

/// A parameter as one value per element of a normalised row.
fn row_values(
    dims: &[usize],
    axis: usize,
    p: &ArrayD<f32>,
    what: &str,
) -> Result<Vec<f32>, String> {
    row_param(dims, axis, p.shape(), what)?;
    let pad = dims.len() - p.ndim();
    let tail: Vec<usize> = (axis..dims.len())
        .map(|i| if i < pad { 1 } else { p.shape()[i - pad] })
        .collect();
    let q = array(&tail, std_slice(p).into_owned())?;
    let v = q
        .broadcast(IxDyn(&dims[axis..]))
        .ok_or_else(|| format!("{what} does not broadcast"))?;
    Ok(v.iter().copied().collect())
}

/// Mean and 1/sqrt(var + eps) of `row`.
fn moments(row: &[f32], eps: f32) -> (f32, f32) {
    let n = row.len().max(1) as f32;
    let mean = fold_lanes(row, 0.0, |v| v, |a, b| a + b) / n;
    let var = fold_lanes(row, 0.0, |v| (v - mean) * (v - mean), |a, b| a + b) / n;
    (mean, 1.0 / (var + eps).sqrt())
}

impl Op for LayerNorm {
    fn infer(&self, inputs: &[Option<&Fact>]) -> Result<Vec<Fact>, String> {
        let x = float_input(inputs, 0)?;
        if self.axis >= x.rank() {
            return Err(format!(
                "axis {} is out of range for rank {}",
                self.axis,
                x.rank()
            ));
        }
        row_param(&x.dims, self.axis, &float_input(inputs, 1)?.dims, "Scale")?;
        if inputs.get(2).copied().flatten().is_some() {
            row_param(&x.dims, self.axis, &float_input(inputs, 2)?.dims, "B")?;
        }
        Ok(vec![Fact::f32(x.dims.clone())])
    }

    fn eval(&self, inputs: &[Option<&Data>]) -> Result<Vec<Data>, String> {
        let x = f32_input(inputs, 0)?;
        let dims = x.shape();
        if self.axis >= dims.len() {
            return Err(format!(
                "axis {} is out of range for rank {}",
                self.axis,
                dims.len()
            ));
        }
        let scale = row_values(dims, self.axis, f32_input(inputs, 1)?, "Scale")?;
        let n = scale.len();
        let bias = match inputs.get(2).copied().flatten() {
            Some(_) => row_values(dims, self.axis, f32_input(inputs, 2)?, "B")?,
            None => vec![0.0; n],
        };
        let mut out = x.as_standard_layout().into_owned();
        let xs = out.as_slice_mut().expect("standard layout");
        if n > 0 {
            for row in xs.chunks_exact_mut(n) {
                let (mean, inv) = moments(row, self.epsilon);
                for ((v, &s), &b) in row.iter_mut().zip(&scale).zip(&bias) {
                    *v = (*v - mean) * inv * s + b;
                }
            }
        }
        Ok(vec![Data::F32(out)])
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}

// ---------------------------------------------------------------- BatchNormalization

/// Batch normalisation in inference mode: per channel (axis 1),
/// `(x - mean) / sqrt(var + epsilon) * scale + B`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BatchNorm {
    /// Added to the variance.
    pub epsilon: f32,
}

fn batch_norm(ctx: &Ctx) -> Result<Box<dyn Op>, String> {
    if ctx.attrs.int_or("training_mode", 0)? != 0 || ctx.outputs > 1 {
        return Err(
            "training mode is not supported (training_mode=1 or more than one output)".into(),
        );
    }
    if ctx.opset < 9 && ctx.attrs.int_or("spatial", 1)? != 1 {
        return Err("attribute spatial: only spatial=1 is supported".into());
    }
    for i in 0..5 {
        ctx.required(i)?;
    }
    Ok(Box::new(BatchNorm {
        epsilon: ctx.attrs.float_or("epsilon", 1e-5)?,
    }))
}

/// Checks that inputs `1..=count` are float vectors of x's channel count.
fn per_channel(inputs: &[Option<&Fact>], count: usize, what: &str) -> Result<Fact, String> {
    let x = float_input(inputs, 0)?;
    let (_, c, _) = nc_plane(&x.dims, what)?;
    for i in 1..=count {
        let p = float_input(inputs, i)?;
        if p.dims != [c] {
            return Err(format!(
                "input {i} has shape {}, want [{c}] (X has {c} channels)",
                fmt_dims(&p.dims)
            ));
        }
    }
    Ok(Fact::f32(x.dims.clone()))
}

/// `y = x * s[c] + t[c]` over an N-C-... tensor.
fn channel_affine(x: &ArrayD<f32>, s: &[f32], t: &[f32]) -> Result<ArrayD<f32>, String> {
    let (_, c, plane) = nc_plane(x.shape(), "BatchNormalization")?;
    if s.len() != c || t.len() != c {
        return Err(format!(
            "per-channel parameters have {} values for {c} channels",
            s.len()
        ));
    }
    let mut out = x.as_standard_layout().into_owned();
    let xs = out.as_slice_mut().expect("standard layout");
    if plane > 0 {
        for (k, p) in xs.chunks_exact_mut(plane).enumerate() {
            let (s, t) = (s[k % c], t[k % c]);
            p.iter_mut().for_each(|v| *v = *v * s + t);
        }
    }
    Ok(out)
}

impl BatchNorm {
    /// Per-channel `s = scale / sqrt(var + epsilon)` and `t = B - mean * s`,
    /// so that the op is `y = x * s + t` (computed in f64). Lengths should
    /// agree; extra values are ignored.
    #[allow(
        clippy::cast_possible_truncation,
        reason = "folded in f64 for accuracy, stored as the f32 the op computes in"
    )]
    pub fn scale_shift(
        &self,
        scale: &[f32],
        bias: &[f32],
        mean: &[f32],
        var: &[f32],
    ) -> (Vec<f32>, Vec<f32>) {
        let eps = self.epsilon as f64;
        scale
            .iter()
            .zip(bias)
            .zip(mean.iter().zip(var))
            .map(|((&g, &b), (&m, &v))| {
                let s = g as f64 / (v as f64 + eps).sqrt();
                (s as f32, (b as f64 - m as f64 * s) as f32)
            })
            .unzip()
    }
}

impl Op for BatchNorm {
    fn infer(&self, inputs: &[Option<&Fact>]) -> Result<Vec<Fact>, String> {
        Ok(vec![per_channel(inputs, 4, "BatchNormalization")?])
    }

    fn eval(&self, inputs: &[Option<&Data>]) -> Result<Vec<Data>, String> {
        let p = |i| f32_input(inputs, i).map(|a| std_slice(a));
        let (s, t) = self.scale_shift(&p(1)?, &p(2)?, &p(3)?, &p(4)?);
        Ok(vec![Data::F32(channel_affine(
            f32_input(inputs, 0)?,
            &s,
            &t,
        )?)])
    }

    fn flops(&self, _inputs: &[Option<&Fact>], outputs: &[Fact]) -> u64 {
        outputs.iter().map(|f| 2 * f.len() as u64).sum()
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}

// ---------------------------------------------------------------- InstanceNormalization

/// Instance normalisation: each (n, c) plane normalised, then
/// `* scale[c] + B[c]`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct InstanceNorm {
    /// Added to the variance.
    pub epsilon: f32,
}

fn instance_norm(ctx: &Ctx) -> Result<Box<dyn Op>, String> {
    for i in 0..3 {
        ctx.required(i)?;
    }
    Ok(Box::new(InstanceNorm {
        epsilon: ctx.attrs.float_or("epsilon", 1e-5)?,
    }))
}

impl Op for InstanceNorm {
    fn infer(&self, inputs: &[Option<&Fact>]) -> Result<Vec<Fact>, String> {
        Ok(vec![per_channel(inputs, 2, "InstanceNormalization")?])
    }

    fn eval(&self, inputs: &[Option<&Data>]) -> Result<Vec<Data>, String> {
        let x = f32_input(inputs, 0)?;
        let (_, c, plane) = nc_plane(x.shape(), "InstanceNormalization")?;
        let (scale, bias) = (
            std_slice(f32_input(inputs, 1)?),
            std_slice(f32_input(inputs, 2)?),
        );
        if scale.len() != c || bias.len() != c {
            return Err(format!("scale and B need {c} values"));
        }
        let mut out = x.as_standard_layout().into_owned();
        let xs = out.as_slice_mut().expect("standard layout");
        if plane > 0 {
            for (k, p) in xs.chunks_exact_mut(plane).enumerate() {
                let (mean, inv) = moments(p, self.epsilon);
                let (s, b) = (inv * scale[k % c], bias[k % c]);
                p.iter_mut().for_each(|v| *v = (*v - mean) * s + b);
            }
        }
        Ok(vec![Data::F32(out)])
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::{
        In, assert_close, f32s, float, i64s, int, ints, run, run_n, values,
    };
    use super::*;
    use proptest::prelude::*;

    fn dynf(dims: &[usize], v: Vec<f32>) -> In {
        In::Dynamic(f32s(dims, v))
    }

    fn filled(dims: &[usize], seed: f32) -> Vec<f32> {
        let n: usize = dims.iter().product();
        (0..n)
            .map(|i| ((i as f32 + seed) * 0.731).sin() * 2.0)
            .collect()
    }

    /// Row-major multi-indices of `dims`.
    fn indices(dims: &[usize]) -> Vec<Vec<usize>> {
        let n: usize = dims.iter().product();
        (0..n)
            .map(|mut f| {
                let mut idx = vec![0; dims.len()];
                for k in (0..dims.len()).rev() {
                    idx[k] = f % dims[k];
                    f /= dims[k];
                }
                idx
            })
            .collect()
    }

    /// The groups of `x` a reduction over `axes` folds, in output order.
    fn groups(x: &ArrayD<f32>, axes: &[usize]) -> Vec<Vec<f64>> {
        let d = x.shape();
        let kept: Vec<usize> = (0..d.len()).filter(|i| !axes.contains(i)).collect();
        let kd: Vec<usize> = kept.iter().map(|&i| d[i]).collect();
        let rd: Vec<usize> = axes.iter().map(|&i| d[i]).collect();
        indices(&kd)
            .into_iter()
            .map(|k| {
                indices(&rd)
                    .into_iter()
                    .map(|r| {
                        let mut full = vec![0; d.len()];
                        kept.iter().zip(&k).for_each(|(&a, &v)| full[a] = v);
                        axes.iter().zip(&r).for_each(|(&a, &v)| full[a] = v);
                        x[IxDyn(&full)] as f64
                    })
                    .collect()
            })
            .collect()
    }

    fn naive(kind: ReduceKind, g: &[f64]) -> f64 {
        let sum = |f: &dyn Fn(f64) -> f64| g.iter().map(|&v| f(v)).sum::<f64>();
        match kind {
            ReduceKind::Sum => sum(&|v| v),
            ReduceKind::Mean => sum(&|v| v) / g.len() as f64,
            ReduceKind::Max => g.iter().copied().fold(f64::NEG_INFINITY, f64::max),
            ReduceKind::Min => g.iter().copied().fold(f64::INFINITY, f64::min),
            ReduceKind::Prod => g.iter().product(),
            ReduceKind::L1 => sum(&f64::abs),
            ReduceKind::L2 => sum(&|v| v * v).sqrt(),
            ReduceKind::SumSquare => sum(&|v| v * v),
            ReduceKind::LogSum => sum(&|v| v).ln(),
            ReduceKind::LogSumExp => sum(&f64::exp).ln(),
        }
    }

    const KINDS: [ReduceKind; 10] = [
        ReduceKind::Mean,
        ReduceKind::Sum,
        ReduceKind::Max,
        ReduceKind::Min,
        ReduceKind::Prod,
        ReduceKind::L1,
        ReduceKind::L2,
        ReduceKind::SumSquare,
        ReduceKind::LogSum,
        ReduceKind::LogSumExp,
    ];

    proptest! {
        #[test]
        fn reduce_matches_naive(
            dims in prop::collection::vec(0usize..4, 0..=4),
            mask in prop::collection::vec(any::<bool>(), 4),
            keepdims in any::<bool>(),
            k in 0usize..KINDS.len(),
        ) {
            let axes: Vec<usize> = (0..dims.len()).filter(|&i| mask[i]).collect();
            let op = Reduce { kind: KINDS[k], axes: axes.clone(), keepdims };
            let x = ArrayD::from_shape_vec(IxDyn(&dims), filled(&dims, 3.0)).unwrap();
            let fact = Fact::f32(dims.clone());
            let want_fact = op.infer(&[Some(&fact)]).unwrap();
            let got = op.eval(&[Some(&Data::F32(x.clone()))]).unwrap();
            prop_assert_eq!(got[0].dims(), &want_fact[0].dims[..]);
            let want: Vec<f64> = groups(&x, &axes).iter().map(|g| naive(KINDS[k], g)).collect();
            let got = values(&got[0]);
            prop_assert_eq!(got.len(), want.len());
            for (g, w) in got.iter().zip(&want) {
                let ok = (g.is_nan() && w.is_nan())
                    || *g as f64 == *w
                    || ((*g as f64) - w).abs() <= 1e-5 * (1.0 + w.abs());
                prop_assert!(ok, "{:?} over {:?} of {:?}: got {}, want {}", KINDS[k], axes, dims, g, w);
            }
        }

        #[test]
        fn softmax_matches_naive(
            dims in prop::collection::vec(1usize..4, 1..=4),
            axis in 0usize..4,
            coerce in any::<bool>(),
            log in any::<bool>(),
        ) {
            let axis = axis % dims.len();
            let op = Softmax { axis, log, coerce_2d: coerce };
            let x = ArrayD::from_shape_vec(IxDyn(&dims), filled(&dims, 1.0)).unwrap();
            let got = values(&op.eval(&[Some(&Data::F32(x.clone()))]).unwrap()[0]);
            let axes: Vec<usize> = if coerce { (axis..dims.len()).collect() } else { vec![axis] };
            // Each group's softmax, scattered back to the group's positions.
            let kept: Vec<usize> = (0..dims.len()).filter(|i| !axes.contains(i)).collect();
            for idx in indices(&dims) {
                let key: Vec<usize> = kept.iter().map(|&a| idx[a]).collect();
                let g: Vec<f64> = indices(&dims)
                    .into_iter()
                    .filter(|j| kept.iter().map(|&a| j[a]).collect::<Vec<_>>() == key)
                    .map(|j| x[IxDyn(&j)] as f64)
                    .collect();
                let lse = g.iter().map(|v| v.exp()).sum::<f64>().ln();
                let v = x[IxDyn(&idx)] as f64 - lse;
                let want = if log { v } else { v.exp() };
                let flat = idx.iter().zip(&dims).fold(0, |acc, (&i, &d)| acc * d + i);
                prop_assert!((got[flat] as f64 - want).abs() < 1e-5, "{:?} {} {:?}", dims, axis, idx);
            }
        }
    }

    #[test]
    fn reduce_axes_by_opset() {
        // x[n, c, h, w] = c * 10 + h * 2 + w over [1, 2, 2, 2].
        let x = || {
            dynf(
                &[1, 2, 2, 2],
                vec![0.0, 1.0, 2.0, 3.0, 10.0, 11.0, 12.0, 13.0],
            )
        };
        let axes = |v: &[i64]| In::Const(i64s(&[v.len()], v.to_vec()));
        let got = run("ReduceMean", 13, &[ints("axes", &[2, 3])], &[x()]).unwrap();
        assert_eq!(got[0].dims(), &[1, 2, 1, 1]);
        assert_eq!(values(&got[0]), vec![1.5, 11.5]);
        let got = run(
            "ReduceMean",
            18,
            &[int("keepdims", 0)],
            &[x(), axes(&[-1, -2])],
        )
        .unwrap();
        assert_eq!(got[0].dims(), &[1, 2]);
        assert_eq!(values(&got[0]), vec![1.5, 11.5]);
        // ReduceSum takes axes as an input from opset 13.
        let got = run("ReduceSum", 11, &[ints("axes", &[1])], &[x()]).unwrap();
        assert_eq!(values(&got[0]), vec![10.0, 12.0, 14.0, 16.0]);
        let got = run("ReduceSum", 13, &[], &[x(), axes(&[1])]).unwrap();
        assert_eq!(got[0].dims(), &[1, 1, 2, 2]);
        assert_eq!(values(&got[0]), vec![10.0, 12.0, 14.0, 16.0]);
        // No axes: everything; noop_with_empty_axes: identity.
        let got = run("ReduceMax", 18, &[], &[x()]).unwrap();
        assert_eq!(
            (got[0].dims(), values(&got[0])),
            (&[1, 1, 1, 1][..], vec![13.0])
        );
        let got = run("ReduceSum", 13, &[int("keepdims", 0)], &[x(), axes(&[])]).unwrap();
        assert_eq!((got[0].dims(), values(&got[0])), (&[][..], vec![52.0]));
        let noop = [int("noop_with_empty_axes", 1)];
        let got = run("ReduceSum", 13, &noop, &[x(), axes(&[])]).unwrap();
        assert_eq!(got[0].dims(), &[1, 2, 2, 2]);
        assert_eq!(
            values(&got[0]),
            vec![0.0, 1.0, 2.0, 3.0, 10.0, 11.0, 12.0, 13.0]
        );
        let got = run("ReduceL2", 18, &noop, &[dynf(&[2], vec![-3.0, 4.0])]).unwrap();
        assert_eq!(values(&got[0]), vec![3.0, 4.0]);
        let got = run("ReduceL2", 13, &[], &[dynf(&[2], vec![-3.0, 4.0])]).unwrap();
        assert_eq!(values(&got[0]), vec![5.0]);
        // The wrong form for the opset, and bad axes.
        let err = run("ReduceMean", 18, &[ints("axes", &[1])], &[x()]).unwrap_err();
        assert!(
            err.contains("attribute axes") && err.contains("input 1"),
            "{err}"
        );
        let err = run("ReduceMean", 13, &[], &[x(), axes(&[1])]).unwrap_err();
        assert!(err.contains("opset 18"), "{err}");
        let err = run(
            "ReduceSum",
            13,
            &[],
            &[x(), In::Dynamic(i64s(&[1], vec![1]))],
        )
        .unwrap_err();
        assert!(err.contains("constant"), "{err}");
        let err = run("ReduceMin", 11, &[ints("axes", &[4])], &[x()]).unwrap_err();
        assert!(err.contains("axes") && err.contains("axis 4"), "{err}");
        let err = run("ReduceMin", 11, &[ints("axes", &[1, -3])], &[x()]).unwrap_err();
        assert!(err.contains("repeated"), "{err}");
        // Integers: shape arithmetic.
        let s = In::Const(i64s(&[3], vec![2, 3, 4]));
        let got = run("ReduceProd", 13, &[int("keepdims", 0)], &[s]).unwrap();
        assert_eq!(got[0].to_i64_vec(), vec![24]);
        let s = In::Dynamic(i64s(&[2, 2], vec![1, -8, 3, 4]));
        let got = run("ReduceMean", 13, &[ints("axes", &[1])], &[s]).unwrap();
        assert_eq!(got[0].to_i64_vec(), vec![-3, 3]);
        let err = run("ReduceL2", 13, &[], &[In::Dynamic(i64s(&[1], vec![1]))]).unwrap_err();
        assert!(err.contains("float"), "{err}");
        let got = run(
            "ReduceLogSumExp",
            13,
            &[],
            &[dynf(&[2], vec![1000.0, 1000.0])],
        )
        .unwrap();
        assert_close(&values(&got[0]), &[1000.0 + 2f32.ln()], 1e-6);
    }

    #[test]
    fn reduce_splits() {
        let r = |axes: Vec<usize>| Reduce {
            kind: ReduceKind::Mean,
            axes,
            keepdims: true,
        };
        // The SE squeeze: one contiguous plane per (n, c).
        let s = |outer, red, inner| Split { outer, red, inner };
        assert_eq!(r(vec![2, 3]).split(&[2, 64, 7, 7]), (s(128, 49, 1), None));
        assert_eq!(r(vec![1]).split(&[2, 3, 4]), (s(2, 3, 4), None));
        // Size-1 axes between reduced ones do not force a permutation.
        assert_eq!(r(vec![1, 3]).split(&[2, 3, 1, 4]), (s(2, 12, 1), None));
        assert_eq!(
            r(vec![0, 2]).split(&[2, 3, 4]),
            (s(3, 8, 1), Some(vec![1, 0, 2]))
        );
        assert_eq!(r(vec![]).split(&[2, 3]), (s(6, 1, 1), None));
    }

    #[test]
    #[allow(clippy::approx_constant, clippy::excessive_precision)] // golden values as printed
    fn softmax_opsets_differ() {
        // x = (np.arange(24, dtype=np.float32).reshape(2, 3, 4) * 0.37 % 2.1) - 1.0
        // Softmax/LogSoftmax at opsets 11 and 13 (default axis) by onnxruntime 1.32.
        let x = vec![
            -1.0,
            -0.63,
            -0.26,
            0.110000014,
            0.48000002,
            0.85,
            -0.8799999,
            -0.50999975,
            -0.13999987,
            0.23000002,
            0.60000014,
            0.9700003,
            -0.75999975,
            -0.38999987,
            -0.019999504,
            0.35000038,
            0.7200003,
            1.0900002,
            -0.63999987,
            -0.2699995,
            0.10000038,
            0.47000027,
            0.84000063,
            -0.8899994,
        ];
        let s11 = [
            0.025641877,
            0.03712263,
            0.05374372,
            0.077806644,
            0.11264337,
            0.16307771,
            0.028911138,
            0.04185566,
            0.06059588,
            0.08772674,
            0.12700507,
            0.18386965,
            0.030575313,
            0.04426493,
            0.0640839,
            0.09277647,
            0.1343157,
            0.19445345,
            0.034473564,
            0.049908593,
            0.07225439,
            0.10460516,
            0.15144056,
            0.026848052,
        ];
        let s13 = [
            0.13196044,
            0.19104369,
            0.27658057,
            0.40041527,
            0.32510045,
            0.4706592,
            0.08344055,
            0.12079979,
            0.13196044,
            0.19104367,
            0.2765806,
            0.40041533,
            0.13196044,
            0.19104367,
            0.27658066,
            0.40041533,
            0.3251005,
            0.4706592,
            0.083440535,
            0.1207998,
            0.20344856,
            0.2945395,
            0.42641518,
            0.075596757,
        ];
        let l11 = [
            -3.6635284, -3.2935286, -2.9235287, -2.5535285, -2.1835284, -1.8135285, -3.5435286,
            -3.1735282, -2.8035283, -2.4335284, -2.0635285, -1.6935283, -3.4875624, -3.1175625,
            -2.7475622, -2.3775623, -2.0075624, -1.6375625, -3.3675625, -2.9975622, -2.6275623,
            -2.2575624, -1.887562, -3.617562,
        ];
        let l13 = [
            -2.025253,
            -1.655253,
            -1.285253,
            -0.91525304,
            -1.123621,
            -0.753621,
            -2.483621,
            -2.1136208,
            -2.025253,
            -1.6552532,
            -1.285253,
            -0.915253,
            -2.025253,
            -1.6552532,
            -1.2852528,
            -0.915253,
            -1.1236209,
            -0.753621,
            -2.483621,
            -2.1136208,
            -1.5923421,
            -1.2223423,
            -0.85234183,
            -2.582342,
        ];
        for (op, opset, want) in [
            ("Softmax", 11, &s11),
            ("Softmax", 13, &s13),
            ("LogSoftmax", 11, &l11),
            ("LogSoftmax", 13, &l13),
        ] {
            let got = run(op, opset, &[], &[dynf(&[2, 3, 4], x.clone())]).unwrap();
            assert_close(&values(&got[0]), want, 1e-5);
        }
        // Stable for large inputs; axis checked at build; floats only.
        let got = run("Softmax", 13, &[], &[dynf(&[2], vec![1000.0, 1000.0])]).unwrap();
        assert_eq!(values(&got[0]), vec![0.5, 0.5]);
        let got = run("LogSoftmax", 13, &[], &[dynf(&[2], vec![-1e4, 0.0])]).unwrap();
        assert_eq!(values(&got[0]), vec![-1e4, 0.0]);
        let err = run(
            "Softmax",
            13,
            &[int("axis", 3)],
            &[dynf(&[2, 2], vec![0.0; 4])],
        )
        .unwrap_err();
        assert!(err.contains("axis") && err.contains("rank 2"), "{err}");
        let err = run("Softmax", 11, &[], &[dynf(&[3], vec![0.0; 3])]).unwrap_err();
        assert!(err.contains("axis 1"), "{err}");
        let err = run("Softmax", 13, &[], &[In::Dynamic(i64s(&[2], vec![1, 2]))]).unwrap_err();
        assert!(err.contains("float"), "{err}");
    }

    #[test]
    fn lrn_windows() {
        // xl = np.arange(20, dtype=np.float32).reshape(1, 5, 2, 2) * 0.5 - 4
        // size 3: onnxruntime 1.32; size 4 (even, refused by onnxruntime): numpy, the spec's formula:
        //   sq[:, c] = (x[:, max(0, c - (size-1)//2) : min(C-1, c + ceil((size-1)/2)) + 1]**2).sum(1)
        //   y = x / (bias + alpha / size * sq) ** beta
        let x: Vec<f32> = (0..20).map(|i| i as f32 * 0.5 - 4.0).collect();
        let attrs = |size| {
            [
                int("size", size),
                float("alpha", 0.1),
                float("beta", 0.75),
                float("bias", 2.0),
            ]
        };
        let w3 = [
            -1.9168292,
            -1.7692605,
            -1.589054,
            -1.3761467,
            -0.9584146,
            -0.75635165,
            -0.5240795,
            -0.26844567,
            0.0,
            0.26844567,
            0.5240795,
            0.75635165,
            0.9584146,
            1.1274021,
            1.2637743,
            1.3702298,
            1.9168292,
            2.033721,
            2.1230736,
            2.1885715,
        ];
        let w4 = [
            -2.0118935,
            -1.8330681,
            -1.6195158,
            -1.3751774,
            -0.9767873,
            -0.74885064,
            -0.5029734,
            -0.24961688,
            0.0,
            0.23574644,
            0.44998857,
            0.6381955,
            1.0059468,
            1.1973169,
            1.3587604,
            1.4913605,
            2.0118935,
            2.1589637,
            2.279483,
            2.3757768,
        ];
        for (size, want) in [(3, &w3), (4, &w4)] {
            let got = run("LRN", 13, &attrs(size), &[dynf(&[1, 5, 2, 2], x.clone())]).unwrap();
            assert_close(&values(&got[0]), want, 2e-6);
        }
        let err = run("LRN", 13, &[], &[dynf(&[1, 1, 1, 1], vec![0.0])]).unwrap_err();
        assert!(err.contains("size is required"), "{err}");
        let err = run(
            "LRN",
            13,
            &[int("size", 0)],
            &[dynf(&[1, 1, 1, 1], vec![0.0])],
        )
        .unwrap_err();
        assert!(err.contains("size must be positive"), "{err}");
        let err = run("LRN", 13, &[int("size", 3)], &[dynf(&[4], vec![0.0; 4])]).unwrap_err();
        assert!(err.contains("rank 2 or more"), "{err}");
    }

    /// (x - mean) / sqrt(var + eps) over consecutive groups of `n`.
    fn normalised(x: &[f32], n: usize, eps: f64) -> Vec<f64> {
        x.chunks(n)
            .flat_map(|g| {
                let m = g.iter().map(|&v| v as f64).sum::<f64>() / n as f64;
                let var = g.iter().map(|&v| (v as f64 - m).powi(2)).sum::<f64>() / n as f64;
                g.iter().map(move |&v| (v as f64 - m) / (var + eps).sqrt())
            })
            .collect()
    }

    #[test]
    fn layer_norm() {
        let x = filled(&[2, 3, 4], 0.5);
        let scale = filled(&[4], 9.0);
        let bias = filled(&[4], 2.0);
        let norm = normalised(&x, 4, 1e-5);
        let want: Vec<f32> = norm
            .iter()
            .enumerate()
            .map(|(i, &v)| (v * scale[i % 4] as f64 + bias[i % 4] as f64) as f32)
            .collect();
        let ins = |s: &[usize]| {
            [
                dynf(&[2, 3, 4], x.clone()),
                In::Const(f32s(s, scale.clone())),
                In::Const(f32s(&[4], bias.clone())),
            ]
        };
        let got = run("LayerNormalization", 17, &[], &ins(&[4])).unwrap();
        assert_close(&values(&got[0]), &want, 1e-5);
        let got = run("LayerNormalization", 17, &[], &ins(&[1, 1, 4])).unwrap();
        assert_close(&values(&got[0]), &want, 1e-5);
        // Over the last two axes, a [3, 4] scale, no bias, another epsilon.
        let scale = filled(&[3, 4], 4.0);
        let norm = normalised(&x, 12, 0.5);
        let want: Vec<f32> = norm
            .iter()
            .enumerate()
            .map(|(i, &v)| (v * scale[i % 12] as f64) as f32)
            .collect();
        let attrs = [int("axis", 1), float("epsilon", 0.5)];
        let got = run(
            "LayerNormalization",
            17,
            &attrs,
            &[dynf(&[2, 3, 4], x.clone()), dynf(&[3, 4], scale.clone())],
        )
        .unwrap();
        assert_close(&values(&got[0]), &want, 1e-5);
        // A [4] scale over the last two axes broadcasts too.
        let s4 = filled(&[4], 1.0);
        let got = run(
            "LayerNormalization",
            17,
            &attrs,
            &[dynf(&[2, 3, 4], x.clone()), dynf(&[4], s4.clone())],
        )
        .unwrap();
        let want: Vec<f32> = norm
            .iter()
            .enumerate()
            .map(|(i, &v)| (v * s4[i % 4] as f64) as f32)
            .collect();
        assert_close(&values(&got[0]), &want, 1e-5);
        // Errors.
        let err = run_n("LayerNormalization", 17, &[], &ins(&[4]), 3).unwrap_err();
        assert!(err.contains("Mean and InvStdDev"), "{err}");
        let err = run(
            "LayerNormalization",
            17,
            &[],
            &[dynf(&[2, 3, 4], x.clone()), dynf(&[3], vec![1.0; 3])],
        )
        .unwrap_err();
        assert!(err.contains("Scale of shape [3]"), "{err}");
        let err = run(
            "LayerNormalization",
            17,
            &[],
            &[dynf(&[2, 3, 4], x.clone()), dynf(&[2, 1, 4], vec![1.0; 8])],
        )
        .unwrap_err();
        assert!(err.contains("Scale of shape [2, 1, 4]"), "{err}");
        let err = run(
            "LayerNormalization",
            17,
            &[int("axis", 3)],
            &[dynf(&[2, 3, 4], x.clone()), dynf(&[4], vec![1.0; 4])],
        )
        .unwrap_err();
        assert!(err.contains("axis 3"), "{err}");
        let err = run(
            "LayerNormalization",
            17,
            &[],
            &[
                dynf(&[2, 3, 4], x),
                dynf(&[4], vec![1.0; 4]),
                dynf(&[5], vec![0.0; 5]),
            ],
        )
        .unwrap_err();
        assert!(err.contains("B of shape [5]"), "{err}");
    }

    #[test]
    fn batch_norm() {
        let bn = BatchNorm { epsilon: 1e-3 };
        let (s, t) = bn.scale_shift(&[2.0, 1.0], &[0.5, -1.0], &[1.0, -2.0], &[3.999, 0.249]);
        assert_close(&s, &[1.0, 2.0], 1e-6);
        assert_close(&t, &[-0.5, 3.0], 1e-6);
        // Through the op: per channel over [2, 2, 3] (N=2, C=2, plane 3).
        let x = filled(&[2, 2, 3], 0.0);
        let want: Vec<f32> = x
            .iter()
            .enumerate()
            .map(|(i, &v)| v * s[(i / 3) % 2] + t[(i / 3) % 2])
            .collect();
        let p = |v: Vec<f32>| In::Const(f32s(&[2], v));
        let ins = || {
            [
                dynf(&[2, 2, 3], x.clone()),
                p(vec![2.0, 1.0]),
                p(vec![0.5, -1.0]),
                p(vec![1.0, -2.0]),
                p(vec![3.999, 0.249]),
            ]
        };
        let eps = [float("epsilon", 1e-3)];
        let got = run("BatchNormalization", 15, &eps, &ins()).unwrap();
        assert_close(&values(&got[0]), &want, 1e-6);
        let got = run(
            "BatchNormalization",
            7,
            &[float("epsilon", 1e-3), int("spatial", 1)],
            &ins(),
        )
        .unwrap();
        assert_close(&values(&got[0]), &want, 1e-6);
        // Default epsilon, against the formula.
        let got = run("BatchNormalization", 15, &[], &ins()).unwrap();
        let (s, t) = BatchNorm { epsilon: 1e-5 }.scale_shift(
            &[2.0, 1.0],
            &[0.5, -1.0],
            &[1.0, -2.0],
            &[3.999, 0.249],
        );
        assert_close(
            &s,
            &[
                2.0 / (3.999f32 + 1e-5).sqrt(),
                1.0 / (0.249f32 + 1e-5).sqrt(),
            ],
            1e-6,
        );
        let want: Vec<f32> = x
            .iter()
            .enumerate()
            .map(|(i, &v)| v * s[(i / 3) % 2] + t[(i / 3) % 2])
            .collect();
        assert_close(&values(&got[0]), &want, 1e-6);
        // Refused forms.
        let err = run("BatchNormalization", 15, &[int("training_mode", 1)], &ins()).unwrap_err();
        assert!(err.contains("training mode is not supported"), "{err}");
        let err = run_n("BatchNormalization", 9, &[], &ins(), 5).unwrap_err();
        assert!(err.contains("training mode is not supported"), "{err}");
        let err = run("BatchNormalization", 7, &[int("spatial", 0)], &ins()).unwrap_err();
        assert!(err.contains("spatial=1"), "{err}");
        let mut bad = ins();
        bad[3] = In::Const(f32s(&[3], vec![0.0; 3]));
        let err = run("BatchNormalization", 15, &[], &bad).unwrap_err();
        assert!(err.contains("input 3 has shape [3], want [2]"), "{err}");
        let err = run("BatchNormalization", 15, &[], &ins()[..4]).unwrap_err();
        assert!(err.contains("input 4 is required"), "{err}");
    }

    #[test]
    fn instance_norm() {
        let x = filled(&[2, 3, 5], 1.0);
        let (scale, bias) = (vec![1.0, 2.0, -1.0], vec![0.0, 0.5, 3.0]);
        let norm = normalised(&x, 5, 1e-5);
        let want: Vec<f32> = norm
            .iter()
            .enumerate()
            .map(|(i, &v)| (v * scale[(i / 5) % 3] as f64 + bias[(i / 5) % 3] as f64) as f32)
            .collect();
        let got = run(
            "InstanceNormalization",
            6,
            &[],
            &[dynf(&[2, 3, 5], x), dynf(&[3], scale), dynf(&[3], bias)],
        )
        .unwrap();
        assert_close(&values(&got[0]), &want, 1e-5);
    }
}
