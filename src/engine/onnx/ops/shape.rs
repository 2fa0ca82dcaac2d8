//! Shape and data-movement ops: the shape arithmetic torch exports (Shape, Cast, Constant, Range, ...), Reshape and its kin, Transpose, Concat, Split, Slice, Gather, Pad, Resize.

use std::any::Any;
use std::borrow::Cow;

use ndarray::{Array1, ArrayD, ArrayViewD, IxDyn};

use super::super::attrs::required;
use super::super::data::{DType, Data, Fact, MAX_ELEMENTS, checked_len, dims_of, fmt_dims};
use super::super::proto::data_type;
use super::util::{broadcast, input, like, norm_axes, norm_axis};
use super::{Builder, Ctx, Op};

/// The op types this family supports.
pub(super) const OPS: &[(&str, Builder)] = &[
    ("Identity", identity),
    ("Dropout", dropout),
    ("Constant", constant),
    ("ConstantOfShape", constant_of_shape),
    ("Shape", shape),
    ("Size", size),
    ("Cast", cast),
    ("CastLike", cast_like),
    ("Flatten", flatten),
    ("Reshape", reshape),
    ("Squeeze", squeeze),
    ("Unsqueeze", unsqueeze),
    ("Transpose", transpose),
    ("Concat", concat),
    ("Split", split),
    ("Slice", slice),
    ("Gather", gather),
    ("GatherElements", gather_elements),
    ("Pad", pad),
    ("Resize", resize),
    ("Upsample", upsample),
    ("Expand", expand),
    ("Range", range),
    ("Tile", tile),
];

/// Applies `$e` to the array of either type, keeping the type.
macro_rules! each {
    ($d:expr, $a:ident => $e:expr) => {
        match $d {
            Data::F32($a) => Data::F32($e),
            Data::I64($a) => Data::I64($e),
        }
    };
}

macro_rules! any {
    () => {
        fn as_any(&self) -> &dyn Any {
            self
        }
    };
}

// ---------------------------------------------------------------- helpers

/// Checks `op` against the node's input facts, so bad shapes fail at build.
fn done<O: Op + 'static>(op: O, ctx: &Ctx) -> Result<Box<dyn Op>, String> {
    op.infer(ctx.inputs)?;
    Ok(Box::new(op))
}

/// The elements of `a` in row-major order, borrowed when it is standard layout.
fn elems<T: Clone>(a: &ArrayD<T>) -> Cow<'_, [T]> {
    match a.as_slice() {
        Some(s) => Cow::Borrowed(s),
        None => Cow::Owned(a.iter().cloned().collect()),
    }
}

/// An array of `dims` over the row-major `v`.
fn array<T>(dims: &[usize], v: Vec<T>) -> Result<ArrayD<T>, String> {
    ArrayD::from_shape_vec(IxDyn(dims), v)
        .map_err(|e| format!("internal error: {e} for shape {}", fmt_dims(dims)))
}

fn prod(d: &[usize]) -> usize {
    d.iter().product()
}

/// Row-major strides of `dims`, in elements.
fn strides(dims: &[usize]) -> Vec<usize> {
    let mut s = vec![1; dims.len()];
    for i in (1..dims.len()).rev() {
        s[i - 1] = s[i] * dims[i];
    }
    s
}

/// [`checked_len`], and no single dimension past [`MAX_ELEMENTS`] either
/// (a zero elsewhere would hide it, and per-axis tables are built from it).
fn check_dims(dims: &[usize]) -> Result<(), String> {
    checked_len(dims)?;
    match dims.iter().find(|&&d| d > MAX_ELEMENTS) {
        Some(d) => Err(format!(
            "dimension {d} of shape {} is more than the {MAX_ELEMENTS} odin allows",
            fmt_dims(dims)
        )),
        None => Ok(()),
    }
}

/// The constant value of input `i` (`what` names it in errors), if present.
fn const_data<'a>(ctx: &Ctx<'a>, i: usize, what: &str) -> Result<Option<&'a Data>, String> {
    ctx.input(i)
        .map(|f| {
            f.value
                .as_deref()
                .ok_or_else(|| format!("{what} input must be constant"))
        })
        .transpose()
}

/// The constant integers of input `i`, if present.
fn const_ints(ctx: &Ctx, i: usize, what: &str) -> Result<Option<Vec<i64>>, String> {
    const_data(ctx, i, what)?
        .map(|v| match v {
            Data::I64(a) => Ok(a.iter().copied().collect()),
            Data::F32(_) => Err(format!("{what} input must be an integer tensor")),
        })
        .transpose()
}

/// The constant floats of input `i`, if present.
fn const_floats(ctx: &Ctx, i: usize, what: &str) -> Result<Option<Vec<f64>>, String> {
    const_data(ctx, i, what)?
        .map(|v| match v {
            Data::F32(a) => Ok(a.iter().map(|&v| v as f64).collect()),
            Data::I64(_) => Err(format!("{what} input must be a float tensor")),
        })
        .transpose()
}

/// `i` (negative counts from the end) as an index into `n`.
#[allow(
    clippy::cast_possible_truncation,
    reason = "checked to lie in 0..rank or 0..dim above"
)]
fn wrap_index(i: i64, n: usize) -> Result<usize, String> {
    let j = if i < 0 { i + n as i64 } else { i };
    if (0..n as i64).contains(&j) {
        Ok(j as usize)
    } else {
        Err(format!("index {i} is out of range for a dimension of {n}"))
    }
}

fn fact_of(d: &Data) -> Fact {
    Fact::new(d.dtype(), d.dims().to_vec())
}

// ------------------------------------------------------ per-axis remapping

/// Where each output index along one axis reads: an input index, or
/// `None` for the fill value.
type Map = Vec<Option<usize>>;

fn ident_map(d: usize) -> Map {
    (0..d).map(Some).collect()
}

/// A run of one axis's map, in blocks of the axes after it.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Seg {
    /// `n` consecutive input blocks from block `s`.
    Run(usize, usize),
    /// Input block `s`, `n` times.
    Same(usize, usize),
    /// `n` blocks of the fill value.
    Fill(usize),
}

fn segments(map: &[Option<usize>]) -> Vec<Seg> {
    let mut segs: Vec<Seg> = Vec::new();
    for &m in map {
        let merged = match (segs.last_mut(), m) {
            (Some(Seg::Fill(n)), None) => {
                *n += 1;
                true
            }
            (Some(Seg::Same(s, n)), Some(i)) if *s == i => {
                *n += 1;
                true
            }
            (Some(Seg::Run(s, n)), Some(i)) if *s + *n == i => {
                *n += 1;
                true
            }
            (Some(seg), Some(i)) if *seg == Seg::Run(i, 1) => {
                *seg = Seg::Same(i, 2);
                true
            }
            _ => false,
        };
        if !merged {
            segs.push(m.map_or(Seg::Fill(1), |i| Seg::Run(i, 1)));
        }
    }
    segs
}

struct Remap<'a, T> {
    src: &'a [T],
    strides: Vec<usize>,
    blocks: Vec<usize>,
    maps: &'a [Map],
    leaf: usize,
    segs: Vec<Seg>,
    fill: T,
}

impl<T: Copy> Remap<'_, T> {
    fn run(&self, axis: usize, off: usize, out: &mut Vec<T>) {
        if axis == self.leaf {
            let l = self.strides[axis];
            for seg in &self.segs {
                match *seg {
                    Seg::Run(s, n) => {
                        out.extend_from_slice(&self.src[off + s * l..off + (s + n) * l])
                    }
                    Seg::Same(s, n) if l == 1 => out.resize(out.len() + n, self.src[off + s]),
                    Seg::Same(s, n) => {
                        let b = &self.src[off + s * l..off + (s + 1) * l];
                        for _ in 0..n {
                            out.extend_from_slice(b);
                        }
                    }
                    Seg::Fill(n) => out.resize(out.len() + n * l, self.fill),
                }
            }
            return;
        }
        let block = self.blocks[axis];
        let mut prev: Option<(usize, usize)> = None;
        for &m in &self.maps[axis] {
            match (m, prev) {
                (None, _) => {
                    out.resize(out.len() + block, self.fill);
                    prev = None;
                }
                (Some(s), Some((p, start))) if p == s => {
                    out.extend_from_within(start..start + block)
                }
                (Some(s), _) => {
                    let start = out.len();
                    self.run(axis + 1, off + s * self.strides[axis], out);
                    prev = Some((s, start));
                }
            }
        }
    }
}

/// The row-major elements of the tensor whose index along each axis `a`
/// reads input index `maps[a][i]` of `src` (of `dims`), or `fill`.
/// Trailing axes mapped onto themselves are copied as whole blocks, and
/// an outer index that repeats its predecessor copies the block just made.
fn remap<T: Copy>(src: &[T], dims: &[usize], maps: &[Map], fill: T) -> Vec<T> {
    let out_dims: Vec<usize> = maps.iter().map(Vec::len).collect();
    let n = prod(&out_dims);
    let mut out = Vec::with_capacity(n);
    if n == 0 {
        return out;
    }
    let ident = |k: usize| {
        maps[k].len() == dims[k] && maps[k].iter().enumerate().all(|(i, &m)| m == Some(i))
    };
    let mut t = dims.len();
    while t > 0 && ident(t - 1) {
        t -= 1;
    }
    if t == 0 {
        out.extend_from_slice(src);
        return out;
    }
    let r = Remap {
        src,
        strides: strides(dims),
        blocks: strides(&out_dims),
        maps,
        leaf: t - 1,
        segs: segments(&maps[t - 1]),
        fill,
    };
    r.run(0, 0, &mut out);
    out
}

/// [`remap`] of either type, shaped `out_dims` (of the maps' element count).
#[allow(
    clippy::cast_possible_truncation,
    reason = "float to integer truncates toward zero and saturates, as ONNX Cast does"
)]
fn remap_data(d: &Data, maps: &[Map], fill: f32, out_dims: &[usize]) -> Result<Data, String> {
    Ok(match d {
        Data::F32(a) => Data::F32(array(out_dims, remap(&elems(a), a.shape(), maps, fill))?),
        Data::I64(a) => Data::I64(array(
            out_dims,
            remap(&elems(a), a.shape(), maps, fill as i64),
        )?),
    })
}

// ------------------------------------------------ Identity, Dropout, Constant

/// Identity, and Dropout at inference: output 0 is input 0; with `mask`
/// (the type of Dropout's mask output, when the node declares one) output
/// 1 is all ones of the same shape.
#[derive(Debug)]
pub struct Identity {
    /// Type of the mask output, if any.
    pub mask: Option<DType>,
}

impl Op for Identity {
    fn infer(&self, inputs: &[Option<&Fact>]) -> Result<Vec<Fact>, String> {
        let x = input(inputs, 0)?;
        let mut out = vec![Fact::new(x.dtype, x.dims.clone())];
        out.extend(self.mask.map(|t| Fact::new(t, x.dims.clone())));
        Ok(out)
    }

    fn eval(&self, inputs: &[Option<&Data>]) -> Result<Vec<Data>, String> {
        let x = input(inputs, 0)?;
        let mut out = vec![x.clone()];
        let d = IxDyn(x.dims());
        out.extend(self.mask.map(|t| match t {
            DType::F32 => Data::F32(ArrayD::ones(d)),
            DType::I64 => Data::I64(ArrayD::ones(d)),
        }));
        Ok(out)
    }

    fn flops(&self, _: &[Option<&Fact>], _: &[Fact]) -> u64 {
        0
    }

    any!();
}

fn identity(ctx: &Ctx) -> Result<Box<dyn Op>, String> {
    done(Identity { mask: None }, ctx)
}

fn dropout(ctx: &Ctx) -> Result<Box<dyn Op>, String> {
    if ctx.opset >= 12 {
        let mode = const_data(ctx, 2, "training_mode")?;
        if mode.is_some_and(|m| m.to_f64_vec().iter().any(|&v| v != 0.0)) {
            return Err("training_mode true is not supported: odin runs inference only".into());
        }
    }
    let mask = if ctx.outputs > 1 {
        // The mask is bool from opset 10, the input's type before.
        Some(if ctx.opset >= 10 {
            DType::I64
        } else {
            ctx.required(0)?.dtype
        })
    } else {
        None
    };
    done(Identity { mask }, ctx)
}

/// Constant: a value from the node's attributes.
#[derive(Debug)]
pub struct Constant {
    /// The value.
    pub value: Data,
}

impl Op for Constant {
    fn infer(&self, _: &[Option<&Fact>]) -> Result<Vec<Fact>, String> {
        Ok(vec![fact_of(&self.value)])
    }

    fn eval(&self, _: &[Option<&Data>]) -> Result<Vec<Data>, String> {
        Ok(vec![self.value.clone()])
    }

    fn flops(&self, _: &[Option<&Fact>], _: &[Fact]) -> u64 {
        0
    }

    any!();
}

fn constant(ctx: &Ctx) -> Result<Box<dyn Op>, String> {
    let a = ctx.attrs;
    for bad in ["sparse_value", "value_string", "value_strings"] {
        if a.has(bad) {
            return Err(format!(
                "attribute {bad} is not supported (odin holds only dense numeric tensors)"
            ));
        }
    }
    let mut found = Vec::new();
    found.extend(a.tensor("value")?);
    let scalar = IxDyn(&[]);
    found.extend(
        a.float("value_float")?
            .map(|v| Data::F32(ArrayD::from_elem(scalar.clone(), v))),
    );
    found.extend(
        a.floats("value_floats")?
            .map(|v| Data::F32(Array1::from(v).into_dyn())),
    );
    found.extend(
        a.int("value_int")?
            .map(|v| Data::I64(ArrayD::from_elem(scalar.clone(), v))),
    );
    found.extend(
        a.ints("value_ints")?
            .map(|v| Data::I64(Array1::from(v).into_dyn())),
    );
    if found.len() != 1 {
        return Err(format!(
            "exactly one of the attributes value, value_float, value_floats, value_int, value_ints is required, got {}",
            found.len()
        ));
    }
    let value = found.pop().expect("one value");
    done(Constant { value }, ctx)
}

/// ConstantOfShape: a tensor of `dims` filled with `value`.
#[derive(Debug)]
pub struct ConstantOfShape {
    /// Output dimensions (input 0's constant value).
    pub dims: Vec<usize>,
    /// The fill value, one element.
    pub value: Data,
}

impl Op for ConstantOfShape {
    fn infer(&self, _: &[Option<&Fact>]) -> Result<Vec<Fact>, String> {
        Ok(vec![Fact::new(self.value.dtype(), self.dims.clone())])
    }

    fn eval(&self, _: &[Option<&Data>]) -> Result<Vec<Data>, String> {
        let d = IxDyn(&self.dims);
        Ok(vec![
            each!(&self.value, a => ArrayD::from_elem(d, a.iter().next().copied().unwrap_or_default())),
        ])
    }

    fn flops(&self, _: &[Option<&Fact>], _: &[Fact]) -> u64 {
        0
    }

    any!();
}

fn constant_of_shape(ctx: &Ctx) -> Result<Box<dyn Op>, String> {
    let f = ctx.required(0)?;
    if f.rank() != 1 {
        return Err(format!(
            "shape input must be 1-D, got shape {}",
            fmt_dims(&f.dims)
        ));
    }
    let dims = dims_of(&const_ints(ctx, 0, "shape")?.unwrap_or_default())?;
    let value = match ctx.attrs.tensor("value")? {
        None => Data::F32(ArrayD::zeros(IxDyn(&[]))),
        Some(v) if v.len() == 1 => v,
        Some(v) => {
            return Err(format!(
                "attribute value must hold one element, it has shape {}",
                fmt_dims(v.dims())
            ));
        }
    };
    done(ConstantOfShape { dims, value }, ctx)
}

// ------------------------------------------------------------ Shape, Size, Cast

/// Shape: input 0's dimensions `start..end` (opset 15; negative values
/// count from the end, both are clamped to the rank).
#[derive(Debug)]
pub struct ShapeOp {
    /// First dimension reported.
    pub start: i64,
    /// One past the last, or the rank.
    pub end: Option<i64>,
}

impl ShapeOp {
    #[allow(
        clippy::cast_possible_truncation,
        reason = "checked to lie in 0..rank or 0..dim above"
    )]
    fn bounds(&self, rank: usize) -> (usize, usize) {
        let r = rank as i64;
        let clamp = |v: i64| (if v < 0 { v + r } else { v }).clamp(0, r) as usize;
        let s = clamp(self.start);
        (s, clamp(self.end.unwrap_or(r)).max(s))
    }

    /// What Shape gives for a tensor of `dims`: an i64 1-D value.
    pub fn of_dims(&self, dims: &[usize]) -> Data {
        let (s, e) = self.bounds(dims.len());
        Data::I64(Array1::from_iter(dims[s..e].iter().map(|&d| d as i64)).into_dyn())
    }
}

impl Op for ShapeOp {
    fn infer(&self, inputs: &[Option<&Fact>]) -> Result<Vec<Fact>, String> {
        let (s, e) = self.bounds(input(inputs, 0)?.rank());
        Ok(vec![Fact::i64(vec![e - s])])
    }

    fn eval(&self, inputs: &[Option<&Data>]) -> Result<Vec<Data>, String> {
        Ok(vec![self.of_dims(input(inputs, 0)?.dims())])
    }

    fn flops(&self, _: &[Option<&Fact>], _: &[Fact]) -> u64 {
        0
    }

    any!();
}

fn shape(ctx: &Ctx) -> Result<Box<dyn Op>, String> {
    let (start, end) = if ctx.opset >= 15 {
        (ctx.attrs.int_or("start", 0)?, ctx.attrs.int("end")?)
    } else {
        (0, None)
    };
    done(ShapeOp { start, end }, ctx)
}

/// Size: input 0's element count, an i64 scalar.
#[derive(Debug)]
pub struct Size;

impl Op for Size {
    fn infer(&self, inputs: &[Option<&Fact>]) -> Result<Vec<Fact>, String> {
        input(inputs, 0)?;
        Ok(vec![Fact::i64(vec![])])
    }

    fn eval(&self, inputs: &[Option<&Data>]) -> Result<Vec<Data>, String> {
        let n = input(inputs, 0)?.len() as i64;
        Ok(vec![Data::I64(ArrayD::from_elem(IxDyn(&[]), n))])
    }

    fn flops(&self, _: &[Option<&Fact>], _: &[Fact]) -> u64 {
        0
    }

    any!();
}

fn size(ctx: &Ctx) -> Result<Box<dyn Op>, String> {
    done(Size, ctx)
}

/// Cast (and CastLike): floats to integers truncate toward zero; to bool
/// gives 0 or 1. Narrow integer and float types are held as i64 and f32,
/// so no wrapping or rounding to the target width happens.
#[derive(Debug)]
pub struct Cast {
    /// Target type.
    pub to: DType,
    /// The target is BOOL.
    pub to_bool: bool,
}

impl Op for Cast {
    fn infer(&self, inputs: &[Option<&Fact>]) -> Result<Vec<Fact>, String> {
        Ok(vec![Fact::new(self.to, input(inputs, 0)?.dims.clone())])
    }

    fn eval(&self, inputs: &[Option<&Data>]) -> Result<Vec<Data>, String> {
        let x = input(inputs, 0)?;
        Ok(vec![match (x, self.to_bool) {
            (Data::F32(a), true) => Data::I64(a.mapv(|v| (v != 0.0) as i64)),
            (Data::I64(a), true) => Data::I64(a.mapv(|v| (v != 0) as i64)),
            (x, false) => x.cast(self.to),
        }])
    }

    any!();
}

fn cast(ctx: &Ctx) -> Result<Box<dyn Op>, String> {
    let t = required(ctx.attrs.int("to"), "to")?;
    let ty = i32::try_from(t).unwrap_or(-1);
    let to = DType::from_onnx(ty)
        .ok_or_else(|| format!("cast to {} ({t}) is not supported", data_type::name(ty)))?;
    done(
        Cast {
            to,
            to_bool: ty == data_type::BOOL,
        },
        ctx,
    )
}

fn cast_like(ctx: &Ctx) -> Result<Box<dyn Op>, String> {
    // A bool target is held as i64 and cannot be told apart: it casts as an integer.
    let to = ctx.required(1)?.dtype;
    done(Cast { to, to_bool: false }, ctx)
}

// ------------------------------------------ Reshape, Flatten, (Un)Squeeze

/// Reshape, and Flatten, Squeeze and Unsqueeze: the same elements under
/// new dimensions, resolved at build from the input's.
#[derive(Debug)]
pub struct Reshape {
    /// Output dimensions.
    pub dims: Vec<usize>,
}

impl Op for Reshape {
    fn infer(&self, inputs: &[Option<&Fact>]) -> Result<Vec<Fact>, String> {
        let x = input(inputs, 0)?;
        if x.len() != prod(&self.dims) {
            return Err(format!(
                "cannot reshape {} ({} elements) to {}",
                fmt_dims(&x.dims),
                x.len(),
                fmt_dims(&self.dims)
            ));
        }
        Ok(vec![like(x, self.dims.clone())?])
    }

    fn eval(&self, inputs: &[Option<&Data>]) -> Result<Vec<Data>, String> {
        let x = input(inputs, 0)?;
        Ok(vec![
            each!(x, a => array(&self.dims, elems(a).into_owned())?),
        ])
    }

    fn flops(&self, _: &[Option<&Fact>], _: &[Fact]) -> u64 {
        0
    }

    any!();
}

/// Reshape's target `shape` over an input of `dims`: 0 copies the input's
/// dimension (unless `allowzero`), one -1 is inferred.
fn resolve_shape(dims: &[usize], shape: &[i64], allowzero: bool) -> Result<Vec<usize>, String> {
    let mut out = Vec::with_capacity(shape.len());
    let mut infer_at = None;
    for (i, &s) in shape.iter().enumerate() {
        out.push(match s {
            -1 => {
                if infer_at.replace(i).is_some() {
                    return Err(format!("shape {shape:?} has more than one -1"));
                }
                1
            }
            0 if !allowzero => *dims.get(i).ok_or_else(|| {
                format!(
                    "shape {shape:?} copies dimension {i} (0) of an input of rank {}",
                    dims.len()
                )
            })?,
            s => usize::try_from(s).map_err(|_| format!("shape {shape:?} has {s}"))?,
        });
    }
    let total = checked_len(dims)?;
    if let Some(i) = infer_at {
        let rest = checked_len(&out)?;
        if rest == 0 || total % rest != 0 {
            return Err(format!(
                "shape {shape:?}: cannot infer the -1 for {} elements of {}",
                total,
                fmt_dims(dims)
            ));
        }
        out[i] = total / rest;
    }
    let n = checked_len(&out)?;
    if n != total {
        return Err(format!(
            "shape {shape:?} has {n} elements, the input {} has {total}",
            fmt_dims(dims)
        ));
    }
    Ok(out)
}

fn reshape(ctx: &Ctx) -> Result<Box<dyn Op>, String> {
    let x = ctx.required(0)?;
    let (shape, allowzero) = if ctx.opset < 5 {
        (required(ctx.attrs.ints("shape"), "shape")?, false)
    } else {
        let s = const_ints(ctx, 1, "shape")?.ok_or("shape input (1) is required")?;
        (s, ctx.opset >= 14 && ctx.attrs.int_or("allowzero", 0)? != 0)
    };
    let dims = resolve_shape(&x.dims, &shape, allowzero)?;
    done(Reshape { dims }, ctx)
}

#[allow(
    clippy::cast_possible_truncation,
    reason = "checked to lie in 0..rank or 0..dim above"
)]
fn flatten(ctx: &Ctx) -> Result<Box<dyn Op>, String> {
    let x = ctx.required(0)?;
    let r = x.rank() as i64;
    let axis = ctx.attrs.int_or("axis", 1)?;
    let a = if axis < 0 { axis + r } else { axis };
    if !(0..=r).contains(&a) {
        return Err(format!("axis {axis} is out of range for rank {r}"));
    }
    let (lo, hi) = x.dims.split_at(a as usize);
    done(
        Reshape {
            dims: vec![prod(lo), prod(hi)],
        },
        ctx,
    )
}

/// Squeeze/Unsqueeze axes: an attribute before opset 13, input 1 from it.
fn axes_of(ctx: &Ctx) -> Result<Option<Vec<i64>>, String> {
    if ctx.opset < 13 {
        ctx.attrs.ints("axes")
    } else {
        const_ints(ctx, 1, "axes")
    }
}

fn squeeze(ctx: &Ctx) -> Result<Box<dyn Op>, String> {
    let x = ctx.required(0)?;
    let dims = match axes_of(ctx)?.filter(|a| !a.is_empty()) {
        None => x.dims.iter().copied().filter(|&d| d != 1).collect(),
        Some(a) => {
            let a = norm_axes(&a, x.rank())?;
            if let Some(&i) = a.iter().find(|&&i| x.dims[i] != 1) {
                return Err(format!(
                    "cannot squeeze axis {i} of size {} (shape {})",
                    x.dims[i],
                    fmt_dims(&x.dims)
                ));
            }
            x.dims
                .iter()
                .enumerate()
                .filter(|(i, _)| !a.contains(i))
                .map(|(_, &d)| d)
                .collect()
        }
    };
    done(Reshape { dims }, ctx)
}

fn unsqueeze(ctx: &Ctx) -> Result<Box<dyn Op>, String> {
    let x = ctx.required(0)?;
    let axes = axes_of(ctx)?.ok_or("axes are required")?;
    let rank = x.rank() + axes.len();
    let axes = norm_axes(&axes, rank)?;
    let mut rest = x.dims.iter();
    let dims = (0..rank)
        .map(|i| {
            if axes.contains(&i) {
                1
            } else {
                rest.next().copied().unwrap_or(1)
            }
        })
        .collect();
    done(Reshape { dims }, ctx)
}

// -------------------------------------------------------------- Transpose

/// Transpose: output axis `i` is input axis `perm[i]`.
#[derive(Debug)]
pub struct Transpose {
    /// The permutation.
    pub perm: Vec<usize>,
}

impl Op for Transpose {
    fn infer(&self, inputs: &[Option<&Fact>]) -> Result<Vec<Fact>, String> {
        let x = input(inputs, 0)?;
        if x.rank() != self.perm.len() {
            return Err(format!(
                "perm {:?} does not fit an input of rank {}",
                self.perm,
                x.rank()
            ));
        }
        Ok(vec![like(
            x,
            self.perm.iter().map(|&p| x.dims[p]).collect(),
        )?])
    }

    fn eval(&self, inputs: &[Option<&Data>]) -> Result<Vec<Data>, String> {
        let x = input(inputs, 0)?;
        Ok(vec![each!(x, a => permute(a, &self.perm)?)])
    }

    any!();
}

/// `dims` and `perm` with size-1 axes dropped and input axes that stay
/// adjacent in the output merged: the reduced input dims and permutation.
fn simplify(dims: &[usize], perm: &[usize]) -> (Vec<usize>, Vec<usize>) {
    let kept: Vec<usize> = (0..dims.len()).filter(|&a| dims[a] != 1).collect();
    // Runs of consecutive kept axes, in output order: (first, last) positions in `kept`.
    let mut groups: Vec<(usize, usize)> = Vec::new();
    for k in perm
        .iter()
        .filter_map(|&a| kept.iter().position(|&k| k == a))
    {
        match groups.last_mut() {
            Some((_, last)) if *last + 1 == k => *last = k,
            _ => groups.push((k, k)),
        }
    }
    let mut order: Vec<usize> = (0..groups.len()).collect();
    order.sort_by_key(|&g| groups[g].0);
    let rd = order
        .iter()
        .map(|&g| (groups[g].0..=groups[g].1).map(|k| dims[kept[k]]).product())
        .collect();
    let mut rp = vec![0; groups.len()];
    for (i, &g) in order.iter().enumerate() {
        rp[g] = i;
    }
    (rd, rp)
}

/// `dst` (cols × rows) = the transpose of `src` (rows × cols), in tiles.
fn transpose_2d<T: Copy>(src: &[T], rows: usize, cols: usize, dst: &mut [T]) {
    const B: usize = 32;
    for r0 in (0..rows).step_by(B) {
        for c0 in (0..cols).step_by(B) {
            for r in r0..(r0 + B).min(rows) {
                let row = &src[r * cols..(r + 1) * cols];
                for c in c0..(c0 + B).min(cols) {
                    dst[c * rows + r] = row[c];
                }
            }
        }
    }
}

fn permute<T: Copy + Default>(a: &ArrayD<T>, perm: &[usize]) -> Result<ArrayD<T>, String> {
    let dims = a.shape();
    let out_dims: Vec<usize> = perm.iter().map(|&p| dims[p]).collect();
    let src = elems(a);
    if src.is_empty() {
        return array(&out_dims, Vec::new());
    }
    let (rd, rp) = simplify(dims, perm);
    let n = rp.len();
    let v = if rp.iter().enumerate().all(|(i, &p)| i == p) {
        src.into_owned()
    } else if rp == [1, 0] || rp == [0, 2, 1] {
        // NCHW <-> NHWC and other batched matrix transposes.
        let (rows, cols) = (rd[n - 2], rd[n - 1]);
        let mut out = vec![T::default(); src.len()];
        for (s, d) in src
            .chunks_exact(rows * cols)
            .zip(out.chunks_exact_mut(rows * cols))
        {
            transpose_2d(s, rows, cols, d);
        }
        out
    } else if rp[n - 1] == n - 1 {
        // The last axis stays: copy whole rows.
        let inner = rd[n - 1];
        let st = strides(&rd);
        let od: Vec<usize> = rp[..n - 1].iter().map(|&p| rd[p]).collect();
        let os: Vec<usize> = rp[..n - 1].iter().map(|&p| st[p]).collect();
        let mut idx = vec![0; n - 1];
        let mut off = 0;
        let mut out = Vec::with_capacity(src.len());
        for _ in 0..prod(&od) {
            out.extend_from_slice(&src[off..off + inner]);
            for k in (0..n - 1).rev() {
                idx[k] += 1;
                off += os[k];
                if idx[k] < od[k] {
                    break;
                }
                off -= os[k] * od[k];
                idx[k] = 0;
            }
        }
        out
    } else {
        let v = ArrayViewD::from_shape(IxDyn(&rd), &src[..]).map_err(|e| e.to_string())?;
        v.permuted_axes(IxDyn(&rp)).iter().copied().collect()
    };
    array(&out_dims, v)
}

fn transpose(ctx: &Ctx) -> Result<Box<dyn Op>, String> {
    let r = ctx.required(0)?.rank();
    let perm = match ctx.attrs.ints("perm")? {
        None => (0..r).rev().collect(),
        Some(p) => {
            let perm = norm_axes(&p, r)?;
            if perm.len() != r {
                return Err(format!("perm {p:?} does not fit an input of rank {r}"));
            }
            perm
        }
    };
    done(Transpose { perm }, ctx)
}

// ---------------------------------------------------------- Concat, Split

/// Concat along `axis`.
#[derive(Debug)]
pub struct Concat {
    /// The axis.
    pub axis: usize,
}

impl Op for Concat {
    fn infer(&self, inputs: &[Option<&Fact>]) -> Result<Vec<Fact>, String> {
        let first = input(inputs, 0)?;
        let mut dims = first.dims.clone();
        if self.axis >= dims.len() {
            return Err(format!(
                "axis {} is out of range for rank {}",
                self.axis,
                dims.len()
            ));
        }
        dims[self.axis] = 0;
        for i in 0..inputs.len() {
            let f = input(inputs, i)?;
            let same = f.rank() == dims.len()
                && (0..dims.len()).all(|a| a == self.axis || f.dims[a] == first.dims[a]);
            if !same || f.dtype != first.dtype {
                return Err(format!(
                    "input {i} ({} {}) does not concatenate with input 0 ({} {}) along axis {}",
                    f.dtype,
                    fmt_dims(&f.dims),
                    first.dtype,
                    fmt_dims(&first.dims),
                    self.axis
                ));
            }
            dims[self.axis] += f.dims[self.axis];
        }
        Ok(vec![like(first, dims)?])
    }

    fn eval(&self, inputs: &[Option<&Data>]) -> Result<Vec<Data>, String> {
        let all = (0..inputs.len())
            .map(|i| input(inputs, i))
            .collect::<Result<Vec<_>, _>>()?;
        let first = all.first().ok_or("input 0 is required")?;
        let mut dims = first.dims().to_vec();
        dims[self.axis] = all.iter().map(|d| d.dims()[self.axis]).sum();
        let outer = prod(&dims[..self.axis]);
        Ok(vec![match first {
            Data::F32(_) => Data::F32(array(
                &dims,
                join(
                    &all.iter().map(|d| d.f32()).collect::<Result<Vec<_>, _>>()?,
                    outer,
                ),
            )?),
            Data::I64(_) => Data::I64(array(
                &dims,
                join(
                    &all.iter().map(|d| d.i64()).collect::<Result<Vec<_>, _>>()?,
                    outer,
                ),
            )?),
        }])
    }

    any!();
}

/// Concatenates `outer` blocks of each of `arrs` in turn.
fn join<T: Copy>(arrs: &[&ArrayD<T>], outer: usize) -> Vec<T> {
    let parts: Vec<Cow<[T]>> = arrs.iter().map(|a| elems(a)).collect();
    let mut out = Vec::with_capacity(parts.iter().map(|p| p.len()).sum());
    if outer == 0 {
        return out;
    }
    let chunks: Vec<usize> = parts.iter().map(|p| p.len() / outer).collect();
    for o in 0..outer {
        for (p, &c) in parts.iter().zip(&chunks) {
            out.extend_from_slice(&p[o * c..(o + 1) * c]);
        }
    }
    out
}

fn concat(ctx: &Ctx) -> Result<Box<dyn Op>, String> {
    let r = ctx.required(0)?.rank();
    let axis = norm_axis(required(ctx.attrs.int("axis"), "axis")?, r)?;
    done(Concat { axis }, ctx)
}

/// Split along `axis` into pieces of `sizes`.
#[derive(Debug)]
pub struct Split {
    /// The axis.
    pub axis: usize,
    /// Size of each output along the axis.
    pub sizes: Vec<usize>,
}

impl Op for Split {
    fn infer(&self, inputs: &[Option<&Fact>]) -> Result<Vec<Fact>, String> {
        let x = input(inputs, 0)?;
        let d = x.dims.get(self.axis).copied();
        if d != Some(self.sizes.iter().sum()) {
            return Err(format!(
                "split sizes {:?} do not add up to axis {} of {}",
                self.sizes,
                self.axis,
                fmt_dims(&x.dims)
            ));
        }
        self.sizes
            .iter()
            .map(|&s| {
                let mut dims = x.dims.clone();
                dims[self.axis] = s;
                like(x, dims)
            })
            .collect()
    }

    fn eval(&self, inputs: &[Option<&Data>]) -> Result<Vec<Data>, String> {
        let x = input(inputs, 0)?;
        let dims = x.dims();
        let (outer, len, inner) = (
            prod(&dims[..self.axis]),
            dims[self.axis],
            prod(&dims[self.axis + 1..]),
        );
        let mut start = 0;
        let mut out = Vec::with_capacity(self.sizes.len());
        for &s in &self.sizes {
            let mut od = dims.to_vec();
            od[self.axis] = s;
            out.push(match x {
                Data::F32(a) => Data::F32(array(
                    &od,
                    piece_of(&elems(a), outer, len, inner, start, s),
                )?),
                Data::I64(a) => Data::I64(array(
                    &od,
                    piece_of(&elems(a), outer, len, inner, start, s),
                )?),
            });
            start += s;
        }
        Ok(out)
    }

    any!();
}

/// Elements `start..start + n` along the middle axis of `src`, viewed as
/// `outer × len × inner`.
fn piece_of<T: Copy>(
    src: &[T],
    outer: usize,
    len: usize,
    inner: usize,
    start: usize,
    n: usize,
) -> Vec<T> {
    let mut v = Vec::with_capacity(outer * n * inner);
    for o in 0..outer {
        let b = (o * len + start) * inner;
        v.extend_from_slice(&src[b..b + n * inner]);
    }
    v
}

#[allow(
    clippy::cast_possible_truncation,
    reason = "checked to lie in 0..rank or 0..dim above"
)]
fn split(ctx: &Ctx) -> Result<Box<dyn Op>, String> {
    let x = ctx.required(0)?;
    let axis = norm_axis(ctx.attrs.int_or("axis", 0)?, x.rank())?;
    let d = x.dims[axis];
    let given = if ctx.opset < 13 {
        ctx.attrs.ints("split")?
    } else {
        const_ints(ctx, 1, "split")?
    };
    let num = if ctx.opset >= 18 {
        ctx.attrs.int("num_outputs")?
    } else {
        None
    };
    let sizes = match (given, num) {
        (Some(_), Some(_)) => return Err("split and num_outputs cannot both be given".into()),
        (Some(s), None) => {
            if s.len() != ctx.outputs {
                return Err(format!(
                    "split {s:?} has {} sizes for {} outputs",
                    s.len(),
                    ctx.outputs
                ));
            }
            dims_of(&s).map_err(|e| format!("split {s:?}: {e}"))?
        }
        (None, num) => {
            let n = num.unwrap_or(ctx.outputs as i64);
            if n != ctx.outputs as i64 || n < 1 {
                return Err(format!(
                    "num_outputs {n} does not match the node's {} outputs",
                    ctx.outputs
                ));
            }
            let n = n as usize;
            // Uneven: chunks of ceil(d / n), the last one smaller.
            let chunk = d.div_ceil(n);
            let last = d
                .checked_sub(chunk * (n - 1))
                .ok_or_else(|| format!("cannot split {d} into {n} chunks of {chunk}"))?;
            let mut s = vec![chunk; n - 1];
            s.push(last);
            s
        }
    };
    done(Split { axis, sizes }, ctx)
}

// ------------------------------------------------------------------ Slice

/// Slice, resolved per axis of the input to clamped (start, end, step):
/// the output reads `start, start + step, ...` while short of `end`.
#[derive(Debug)]
pub struct Slice {
    /// (start, end, step) for every input axis.
    pub ranges: Vec<(i64, i64, i64)>,
}

fn range_len(s: i64, e: i64, step: i64) -> usize {
    let (s, e, step) = (s as i128, e as i128, step as i128);
    let n = if step > 0 {
        (e - s + step - 1) / step
    } else {
        (s - e - step - 1) / -step
    };
    n.max(0) as usize
}

impl Slice {
    #[allow(
        clippy::cast_possible_truncation,
        reason = "checked to lie in 0..rank or 0..dim above"
    )]
    fn maps(&self, dims: &[usize]) -> Result<Vec<Map>, String> {
        if dims.len() != self.ranges.len() {
            return Err(format!(
                "slice of rank {} does not fit {}",
                self.ranges.len(),
                fmt_dims(dims)
            ));
        }
        dims.iter()
            .zip(&self.ranges)
            .map(|(&d, &(s, e, step))| {
                let n = range_len(s, e, step);
                let last = s as i128 + (n as i128 - 1) * step as i128;
                if n > 0
                    && !((0..d as i128).contains(&(s as i128)) && (0..d as i128).contains(&last))
                {
                    return Err(format!(
                        "slice {s}:{e}:{step} does not fit a dimension of {d}"
                    ));
                }
                Ok((0..n)
                    .map(|k| Some((s + k as i64 * step) as usize))
                    .collect())
            })
            .collect()
    }
}

impl Op for Slice {
    fn infer(&self, inputs: &[Option<&Fact>]) -> Result<Vec<Fact>, String> {
        let x = input(inputs, 0)?;
        let maps = self.maps(&x.dims)?;
        Ok(vec![like(x, maps.iter().map(Vec::len).collect())?])
    }

    fn eval(&self, inputs: &[Option<&Data>]) -> Result<Vec<Data>, String> {
        let x = input(inputs, 0)?;
        let maps = self.maps(x.dims())?;
        let dims: Vec<usize> = maps.iter().map(Vec::len).collect();
        Ok(vec![remap_data(x, &maps, 0.0, &dims)?])
    }

    any!();
}

/// One axis of a slice, clamped as the spec says.
fn resolve_range(start: i64, end: i64, step: i64, d: usize) -> Result<(i64, i64, i64), String> {
    if step == 0 {
        return Err("steps must not be 0".into());
    }
    let d = d as i64;
    let norm = |v: i64| if v < 0 { v + d } else { v };
    Ok(if step > 0 {
        (norm(start).max(0).min(d), norm(end).max(0).min(d), step)
    } else {
        (
            norm(start).max(0).min(d - 1),
            norm(end).max(-1).min(d - 1),
            step,
        )
    })
}

fn slice(ctx: &Ctx) -> Result<Box<dyn Op>, String> {
    let x = ctx.required(0)?;
    let a = ctx.attrs;
    let (starts, ends, axes, steps) = if ctx.opset < 10 {
        (
            required(a.ints("starts"), "starts")?,
            required(a.ints("ends"), "ends")?,
            a.ints("axes")?,
            None,
        )
    } else {
        (
            const_ints(ctx, 1, "starts")?.ok_or("starts input (1) is required")?,
            const_ints(ctx, 2, "ends")?.ok_or("ends input (2) is required")?,
            const_ints(ctx, 3, "axes")?,
            const_ints(ctx, 4, "steps")?,
        )
    };
    let n = starts.len();
    let axes = axes.unwrap_or_else(|| (0..n as i64).collect());
    let steps = steps.unwrap_or_else(|| vec![1; n]);
    if ends.len() != n || axes.len() != n || steps.len() != n {
        return Err(format!(
            "starts, ends, axes and steps have {n}, {}, {} and {} values",
            ends.len(),
            axes.len(),
            steps.len()
        ));
    }
    let axes = norm_axes(&axes, x.rank())?;
    let mut ranges: Vec<(i64, i64, i64)> = x.dims.iter().map(|&d| (0, d as i64, 1)).collect();
    for (i, &ax) in axes.iter().enumerate() {
        ranges[ax] = resolve_range(starts[i], ends[i], steps[i], x.dims[ax])?;
    }
    done(Slice { ranges }, ctx)
}

// ---------------------------------------------------- Gather, GatherElements

/// Gather along `axis`: output dims are `data[:axis] + indices + data[axis+1:]`.
#[derive(Debug)]
pub struct Gather {
    /// The axis of the data.
    pub axis: usize,
}

/// Checks `idx` is an integer tensor whose constant values, if known, fit `n`.
fn check_indices(idx: &Fact, n: usize) -> Result<(), String> {
    if idx.dtype != DType::I64 {
        return Err("indices must be an integer tensor".into());
    }
    if let Some(v) = &idx.value {
        for i in v.to_i64_vec() {
            wrap_index(i, n)?;
        }
    }
    Ok(())
}

impl Op for Gather {
    fn infer(&self, inputs: &[Option<&Fact>]) -> Result<Vec<Fact>, String> {
        let (x, idx) = (input(inputs, 0)?, input(inputs, 1)?);
        let n = *x
            .dims
            .get(self.axis)
            .ok_or_else(|| format!("axis {} is out of range for rank {}", self.axis, x.rank()))?;
        check_indices(idx, n)?;
        let dims = [&x.dims[..self.axis], &idx.dims, &x.dims[self.axis + 1..]].concat();
        Ok(vec![like(x, dims)?])
    }

    fn eval(&self, inputs: &[Option<&Data>]) -> Result<Vec<Data>, String> {
        let (x, idx) = (input(inputs, 0)?, input(inputs, 1)?.i64()?);
        let d = x.dims();
        let mut maps: Vec<Map> = d.iter().map(|&k| ident_map(k)).collect();
        maps[self.axis] = idx
            .iter()
            .map(|&i| wrap_index(i, d[self.axis]).map(Some))
            .collect::<Result<_, _>>()?;
        let dims = [&d[..self.axis], idx.shape(), &d[self.axis + 1..]].concat();
        Ok(vec![remap_data(x, &maps, 0.0, &dims)?])
    }

    any!();
}

fn gather(ctx: &Ctx) -> Result<Box<dyn Op>, String> {
    let r = ctx.required(0)?.rank();
    let axis = norm_axis(ctx.attrs.int_or("axis", 0)?, r)?;
    done(Gather { axis }, ctx)
}

/// GatherElements along `axis`: output\[i\]\[j\]... = data at `i, j, ...`
/// with the `axis` index replaced by indices\[i\]\[j\]....
#[derive(Debug)]
pub struct GatherElements {
    /// The axis.
    pub axis: usize,
}

impl Op for GatherElements {
    fn infer(&self, inputs: &[Option<&Fact>]) -> Result<Vec<Fact>, String> {
        let (x, idx) = (input(inputs, 0)?, input(inputs, 1)?);
        let fits = idx.rank() == x.rank()
            && self.axis < x.rank()
            && (0..x.rank()).all(|a| a == self.axis || idx.dims[a] <= x.dims[a]);
        if !fits {
            return Err(format!(
                "indices {} do not fit data {} along axis {}",
                fmt_dims(&idx.dims),
                fmt_dims(&x.dims),
                self.axis
            ));
        }
        check_indices(idx, x.dims[self.axis])?;
        Ok(vec![like(x, idx.dims.clone())?])
    }

    fn eval(&self, inputs: &[Option<&Data>]) -> Result<Vec<Data>, String> {
        let (x, idx) = (input(inputs, 0)?, input(inputs, 1)?.i64()?);
        let dims = idx.shape().to_vec();
        Ok(vec![
            each!(x, a => array(&dims, gather_elements_of(a, idx, self.axis)?)?),
        ])
    }

    any!();
}

fn gather_elements_of<T: Copy>(
    data: &ArrayD<T>,
    idx: &ArrayD<i64>,
    axis: usize,
) -> Result<Vec<T>, String> {
    let src = elems(data);
    let st = strides(data.shape());
    let n = data.shape()[axis];
    let id = idx.shape();
    let mut pos = vec![0; id.len()];
    let mut out = Vec::with_capacity(idx.len());
    for &i in idx.iter() {
        let j = wrap_index(i, n)?;
        let off: usize = (0..id.len())
            .map(|a| if a == axis { j } else { pos[a] } * st[a])
            .sum();
        out.push(src[off]);
        for a in (0..id.len()).rev() {
            pos[a] += 1;
            if pos[a] < id[a] {
                break;
            }
            pos[a] = 0;
        }
    }
    Ok(out)
}

fn gather_elements(ctx: &Ctx) -> Result<Box<dyn Op>, String> {
    let r = ctx.required(0)?.rank();
    let axis = norm_axis(ctx.attrs.int_or("axis", 0)?, r)?;
    done(GatherElements { axis }, ctx)
}

// -------------------------------------------------------------------- Pad

/// How Pad fills the new border.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PadMode {
    /// The constant value.
    Constant,
    /// Mirror without repeating the edge (`[1,2,3]` → `3,2 | 1,2,3 | 2,1`).
    Reflect,
    /// Repeat the edge.
    Edge,
    /// Wrap around.
    Wrap,
}

/// Pad (negative pads crop; the crop is applied first).
#[derive(Debug)]
pub struct Pad {
    /// Fill mode.
    pub mode: PadMode,
    /// Begin pads of every axis, then end pads of every axis.
    pub pads: Vec<i64>,
    /// The fill value of constant mode.
    pub value: f32,
}

impl Pad {
    /// Per axis: (first kept input index, kept length, begin pad, end pad).
    fn plan(&self, dims: &[usize]) -> Result<Vec<(i64, i64, i64, i64)>, String> {
        let r = dims.len();
        if self.pads.len() != 2 * r {
            return Err(format!(
                "{} pads do not fit an input of rank {r}",
                self.pads.len()
            ));
        }
        let plan = dims
            .iter()
            .enumerate()
            .map(|(a, &d)| {
                let (b, e) = (self.pads[a], self.pads[r + a]);
                let (lo, cut_end) = (b.saturating_neg().max(0), e.saturating_neg().max(0));
                let c = (d as i64)
                    .checked_sub(lo)
                    .and_then(|c| c.checked_sub(cut_end));
                let c = c
                    .filter(|&c| c >= 0)
                    .ok_or_else(|| format!("pads {b}, {e} crop more than axis {a} of size {d}"))?;
                let (pb, pe) = (b.max(0), e.max(0));
                if c == 0 && (pb > 0 || pe > 0) && self.mode != PadMode::Constant {
                    return Err(format!(
                        "cannot pad axis {a}, which is empty, in {:?} mode",
                        self.mode
                    ));
                }
                Ok((lo, c, pb, pe))
            })
            .collect::<Result<Vec<_>, String>>()?;
        let out = self.out_dims(&plan)?;
        check_dims(&out)?;
        Ok(plan)
    }

    fn out_dims(&self, plan: &[(i64, i64, i64, i64)]) -> Result<Vec<usize>, String> {
        plan.iter()
            .map(|&(_, c, pb, pe)| {
                c.checked_add(pb)
                    .and_then(|v| v.checked_add(pe))
                    .and_then(|v| usize::try_from(v).ok())
                    .ok_or_else(|| format!("pads {:?} overflow", self.pads))
            })
            .collect()
    }

    #[allow(
        clippy::cast_possible_truncation,
        reason = "checked to lie in 0..rank or 0..dim above"
    )]
    fn maps(&self, dims: &[usize]) -> Result<Vec<Map>, String> {
        let plan = self.plan(dims)?;
        Ok(plan
            .iter()
            .map(|&(lo, c, pb, pe)| {
                (-pb..c + pe)
                    .map(|i| {
                        let j = if (0..c).contains(&i) {
                            i
                        } else {
                            match self.mode {
                                PadMode::Constant => return None,
                                PadMode::Edge => i.clamp(0, c - 1),
                                PadMode::Wrap => i.rem_euclid(c),
                                PadMode::Reflect if c == 1 => 0,
                                PadMode::Reflect => {
                                    let p = 2 * (c - 1);
                                    let m = i.rem_euclid(p);
                                    if m >= c { p - m } else { m }
                                }
                            }
                        };
                        Some((lo + j) as usize)
                    })
                    .collect()
            })
            .collect())
    }
}

impl Op for Pad {
    fn infer(&self, inputs: &[Option<&Fact>]) -> Result<Vec<Fact>, String> {
        let x = input(inputs, 0)?;
        let dims = self.out_dims(&self.plan(&x.dims)?)?;
        Ok(vec![like(x, dims)?])
    }

    fn eval(&self, inputs: &[Option<&Data>]) -> Result<Vec<Data>, String> {
        let x = input(inputs, 0)?;
        let maps = self.maps(x.dims())?;
        let dims: Vec<usize> = maps.iter().map(Vec::len).collect();
        Ok(vec![remap_data(x, &maps, self.value, &dims)?])
    }

    any!();
}

#[allow(
    clippy::cast_possible_truncation,
    reason = "the pad value of an f32 tensor"
)]
fn pad(ctx: &Ctx) -> Result<Box<dyn Op>, String> {
    let r = ctx.required(0)?.rank();
    let mode = match ctx.attrs.string_or("mode", "constant")?.as_str() {
        "constant" => PadMode::Constant,
        "reflect" => PadMode::Reflect,
        "edge" => PadMode::Edge,
        "wrap" => PadMode::Wrap,
        m => {
            return Err(format!(
                "mode {m:?} is not supported (constant, reflect, edge, wrap)"
            ));
        }
    };
    let (raw, value, axes) = if ctx.opset < 11 {
        (
            required(ctx.attrs.ints("pads"), "pads")?,
            ctx.attrs.float_or("value", 0.0)?,
            None,
        )
    } else {
        let pads = const_ints(ctx, 1, "pads")?.ok_or("pads input (1) is required")?;
        let value = const_data(ctx, 2, "constant_value")?
            .and_then(|v| v.to_f64_vec().first().copied())
            .unwrap_or(0.0) as f32;
        let axes = if ctx.opset >= 18 {
            const_ints(ctx, 3, "axes")?
        } else {
            None
        };
        (pads, value, axes)
    };
    let axes = match axes {
        Some(a) => norm_axes(&a, r)?,
        None => (0..r).collect(),
    };
    let k = axes.len();
    if raw.len() != 2 * k {
        return Err(format!(
            "pads has {} values, {k} axes need {}",
            raw.len(),
            2 * k
        ));
    }
    let mut pads = vec![0; 2 * r];
    for (i, &a) in axes.iter().enumerate() {
        pads[a] = raw[i];
        pads[r + a] = raw[k + i];
    }
    done(Pad { mode, pads, value }, ctx)
}

// ----------------------------------------------------------------- Resize

/// How Resize rounds a source coordinate to the nearest input index.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NearestMode {
    /// Round, halves down (the default from opset 11).
    RoundPreferFloor,
    /// Round, halves up.
    RoundPreferCeil,
    /// Round down.
    Floor,
    /// Round up.
    Ceil,
    /// Resize-10 and Upsample as onnxruntime runs them: down on an axis
    /// that is upsampled, up on one that is downsampled.
    Legacy,
}

/// How an output coordinate maps back to the input
/// (`coordinate_transformation_mode`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CoordMode {
    /// `(x + 0.5) / scale - 0.5`.
    HalfPixel,
    /// Half pixel, centred when the output size was rounded (opset 19).
    HalfPixelSymmetric,
    /// `x / scale` (the only one of Resize-10 and Upsample).
    Asymmetric,
    /// `x * (in - 1) / (out - 1)`.
    AlignCorners,
    /// Half pixel, but 0 for an output of length 1.
    PytorchHalfPixel,
    /// `(x + 0.5) / scale`.
    TfHalfPixelForNn,
}

/// Interpolation of Resize.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ResizeMode {
    /// Nearest neighbour.
    Nearest(NearestMode),
    /// Separable linear over every resized axis.
    Linear,
}

#[derive(Debug)]
enum Plan {
    /// Per-axis source indices; (kh, kw) when the maps are an integer
    /// upscale of the last two axes of a 4-D tensor.
    Nearest(Vec<Map>, Option<(usize, usize)>),
    /// Per-axis (i0, i1, weight of i1), `None` for an axis left as is.
    Linear(Vec<Option<Vec<(usize, usize, f32)>>>),
}

/// Resize and Upsample, resolved at build for the input's dimensions.
#[derive(Debug)]
pub struct Resize {
    /// Interpolation.
    pub mode: ResizeMode,
    /// Coordinate transformation.
    pub coord: CoordMode,
    /// Input dimensions it was built for.
    pub in_dims: Vec<usize>,
    /// Output dimensions.
    pub out_dims: Vec<usize>,
    /// Per-axis scale of the coordinate transformation (the given scale,
    /// or output / input length when sizes were given).
    pub scales: Vec<f64>,
    plan: Plan,
}

impl Resize {
    #[allow(
        clippy::cast_possible_truncation,
        reason = "clamped to the input axis above"
    )]
    fn new(
        mode: ResizeMode,
        coord: CoordMode,
        in_dims: Vec<usize>,
        out_dims: Vec<usize>,
        scales: Vec<f64>,
    ) -> Self {
        let axes = 0..in_dims.len();
        let source = |a: usize, j: usize| {
            let (s, i, o) = (scales[a], in_dims[a] as f64, out_dims[a] as f64);
            let x = j as f64;
            match coord {
                CoordMode::HalfPixel => (x + 0.5) / s - 0.5,
                CoordMode::HalfPixelSymmetric => {
                    let adj = o / (s * i);
                    i / 2.0 * (1.0 - adj) + (x + 0.5) / s - 0.5
                }
                CoordMode::Asymmetric => x / s,
                CoordMode::AlignCorners if o <= 1.0 => 0.0,
                CoordMode::AlignCorners => x * (i - 1.0) / (o - 1.0),
                CoordMode::PytorchHalfPixel if o <= 1.0 => 0.0,
                CoordMode::PytorchHalfPixel => (x + 0.5) / s - 0.5,
                CoordMode::TfHalfPixelForNn => (x + 0.5) / s,
            }
        };
        let clamp = |v: f64, a: usize| v.max(0.0).min(in_dims[a].saturating_sub(1) as f64);
        let plan = match mode {
            ResizeMode::Nearest(nm) => {
                let maps: Vec<Map> = axes
                    .map(|a| {
                        (0..out_dims[a])
                            .map(|j| {
                                let x = source(a, j);
                                let f = x.floor();
                                let v = match nm {
                                    NearestMode::RoundPreferFloor if x - f <= 0.5 => f,
                                    NearestMode::RoundPreferCeil if x - f < 0.5 => f,
                                    NearestMode::RoundPreferFloor
                                    | NearestMode::RoundPreferCeil => f + 1.0,
                                    NearestMode::Floor => f,
                                    NearestMode::Ceil => x.ceil(),
                                    NearestMode::Legacy if scales[a] < 1.0 => x.ceil(),
                                    NearestMode::Legacy => f,
                                };
                                Some(clamp(v, a) as usize)
                            })
                            .collect()
                    })
                    .collect();
                let k = |a: usize| {
                    let (i, o) = (in_dims[a], out_dims[a]);
                    (i > 0 && o % i == 0)
                        .then_some(o / i)
                        .filter(|&k| maps[a].iter().enumerate().all(|(j, &m)| m == Some(j / k)))
                };
                let upscale = if in_dims.len() == 4 && k(0) == Some(1) && k(1) == Some(1) {
                    k(2).zip(k(3))
                } else {
                    None
                };
                Plan::Nearest(maps, upscale)
            }
            ResizeMode::Linear => Plan::Linear(
                axes.map(|a| {
                    let t: Vec<(usize, usize, f32)> = (0..out_dims[a])
                        .map(|j| {
                            let x = clamp(source(a, j), a);
                            let i0 = x.floor() as usize;
                            let i1 = (i0 + 1).min(in_dims[a].saturating_sub(1));
                            (i0, i1, (x - i0 as f64) as f32)
                        })
                        .collect();
                    let same = out_dims[a] == in_dims[a]
                        && t.iter()
                            .enumerate()
                            .all(|(j, &(i0, _, w))| i0 == j && w == 0.0);
                    (!same).then_some(t)
                })
                .collect(),
            ),
        };
        Self {
            mode,
            coord,
            in_dims,
            out_dims,
            scales,
            plan,
        }
    }
}

/// Nearest upscaling of `[N, C, H, W]` by `kh` and `kw`.
fn upscale<T: Copy + Default>(src: &[T], dims: &[usize], kh: usize, kw: usize) -> Vec<T> {
    let (w, ow) = (dims[3], dims[3] * kw);
    let mut out = vec![T::default(); src.len() * kh * kw];
    if out.is_empty() {
        return out;
    }
    for (row, block) in src.chunks_exact(w).zip(out.chunks_exact_mut(ow * kh)) {
        let (first, rest) = block.split_at_mut(ow);
        for (&v, c) in row.iter().zip(first.chunks_exact_mut(kw)) {
            c.fill(v);
        }
        for r in rest.chunks_exact_mut(ow) {
            r.copy_from_slice(first);
        }
    }
    out
}

/// Linear interpolation of `src` (of `dims`) along `axis` by `table`.
fn lerp_axis(src: &[f32], dims: &[usize], axis: usize, table: &[(usize, usize, f32)]) -> Vec<f32> {
    let (outer, len, inner) = (prod(&dims[..axis]), dims[axis], prod(&dims[axis + 1..]));
    let mut out = Vec::with_capacity(outer * table.len() * inner);
    for o in 0..outer {
        let s = &src[o * len * inner..(o + 1) * len * inner];
        for &(i0, i1, w) in table {
            let a = &s[i0 * inner..(i0 + 1) * inner];
            if w == 0.0 {
                out.extend_from_slice(a);
            } else {
                let b = &s[i1 * inner..(i1 + 1) * inner];
                out.extend(a.iter().zip(b).map(|(&a, &b)| a + (b - a) * w));
            }
        }
    }
    out
}

impl Op for Resize {
    fn infer(&self, inputs: &[Option<&Fact>]) -> Result<Vec<Fact>, String> {
        let x = input(inputs, 0)?;
        if x.dims != self.in_dims {
            return Err(format!(
                "built for an input of {}, got {}",
                fmt_dims(&self.in_dims),
                fmt_dims(&x.dims)
            ));
        }
        if matches!(self.mode, ResizeMode::Linear) && x.dtype != DType::F32 {
            return Err("linear resize needs a float input".into());
        }
        Ok(vec![like(x, self.out_dims.clone())?])
    }

    fn eval(&self, inputs: &[Option<&Data>]) -> Result<Vec<Data>, String> {
        let x = input(inputs, 0)?;
        if x.dims() != self.in_dims {
            return Err(format!("built for an input of {}", fmt_dims(&self.in_dims)));
        }
        let out = &self.out_dims;
        Ok(vec![match &self.plan {
            Plan::Nearest(_, Some((kh, kw))) => {
                each!(x, a => array(out, upscale(&elems(a), &self.in_dims, *kh, *kw))?)
            }
            Plan::Nearest(maps, None) => remap_data(x, maps, 0.0, out)?,
            Plan::Linear(tables) => {
                let mut cur = elems(x.f32()?);
                let mut dims = self.in_dims.clone();
                for (a, t) in tables.iter().enumerate() {
                    if let Some(t) = t {
                        cur = Cow::Owned(lerp_axis(&cur, &dims, a, t));
                        dims[a] = t.len();
                    }
                }
                Data::F32(array(out, cur.into_owned())?)
            }
        }])
    }

    fn flops(&self, _: &[Option<&Fact>], outputs: &[Fact]) -> u64 {
        let n: u64 = outputs.iter().map(|f| f.len() as u64).sum();
        match &self.plan {
            Plan::Linear(t) => 3 * n * t.iter().filter(|t| t.is_some()).count().max(1) as u64,
            Plan::Nearest(..) => n,
        }
    }

    any!();
}

/// Output dims and coordinate scales from `scales` or `sizes` (over `axes`).
#[allow(
    clippy::cast_possible_truncation,
    reason = "bounded by MAX_ELEMENTS above"
)]
fn resize_dims(
    x: &Fact,
    scales: Option<Vec<f64>>,
    sizes: Option<Vec<i64>>,
    axes: Option<Vec<i64>>,
    policy: &str,
) -> Result<(Vec<usize>, Vec<f64>), String> {
    let r = x.rank();
    let axes = match axes {
        Some(a) => norm_axes(&a, r)?,
        None => (0..r).collect(),
    };
    let mut out = x.dims.clone();
    let mut sc = vec![1.0; r];
    let count = |what: &str, n: usize| {
        if n == axes.len() {
            Ok(())
        } else {
            Err(format!("{what} has {n} values for {} axes", axes.len()))
        }
    };
    match (scales, sizes) {
        (Some(_), Some(_)) => return Err("only one of scales and sizes may be given".into()),
        (None, None) => return Err("one of scales and sizes is required".into()),
        (Some(s), None) => {
            count("scales", s.len())?;
            for (&a, &s) in axes.iter().zip(&s) {
                if !(s > 0.0 && s.is_finite()) {
                    return Err(format!("scale {s} is not a positive number"));
                }
                let o = (x.dims[a] as f64 * s).floor();
                if o > MAX_ELEMENTS as f64 {
                    return Err(format!("scale {s} makes axis {a} too large"));
                }
                (out[a], sc[a]) = (o as usize, s);
            }
        }
        (None, Some(z)) => {
            count("sizes", z.len())?;
            let z = dims_of(&z).map_err(|e| format!("sizes: {e}"))?;
            check_dims(&z)?;
            let ratio = |a: usize, z: usize| -> Result<f64, String> {
                match x.dims[a] {
                    0 if z == 0 => Ok(1.0),
                    0 => Err(format!("cannot resize the empty axis {a} to {z}")),
                    i => Ok(z as f64 / i as f64),
                }
            };
            let ratios = axes
                .iter()
                .zip(&z)
                .map(|(&a, &z)| ratio(a, z))
                .collect::<Result<Vec<_>, _>>()?;
            let keep = match policy {
                "stretch" => None,
                "not_larger" => Some(ratios.iter().copied().fold(f64::INFINITY, f64::min)),
                "not_smaller" => Some(ratios.iter().copied().fold(0.0, f64::max)),
                p => return Err(format!("keep_aspect_ratio_policy {p:?} is not supported")),
            };
            for (i, &a) in axes.iter().enumerate() {
                match keep {
                    None => (out[a], sc[a]) = (z[i], ratios[i]),
                    Some(s) => (out[a], sc[a]) = ((s * x.dims[a] as f64 + 0.5).floor() as usize, s),
                }
            }
        }
    }
    check_dims(&out)?;
    Ok((out, sc))
}

fn resize_mode(mode: &str, nearest: NearestMode) -> Result<ResizeMode, String> {
    match mode {
        "nearest" => Ok(ResizeMode::Nearest(nearest)),
        "linear" | "bilinear" => Ok(ResizeMode::Linear),
        "cubic" => Err("mode cubic is not supported".into()),
        m => Err(format!("mode {m:?} is not supported (nearest, linear)")),
    }
}

fn resize_op(
    ctx: &Ctx,
    mode: ResizeMode,
    coord: CoordMode,
    scales: Option<Vec<f64>>,
    sizes: Option<Vec<i64>>,
) -> Result<Box<dyn Op>, String> {
    let x = ctx.required(0)?;
    let axes = if ctx.opset >= 18 {
        ctx.attrs.ints("axes")?
    } else {
        None
    };
    let policy = ctx.attrs.string_or("keep_aspect_ratio_policy", "stretch")?;
    let (out, sc) = resize_dims(x, scales, sizes, axes, &policy)?;
    done(Resize::new(mode, coord, x.dims.clone(), out, sc), ctx)
}

fn resize(ctx: &Ctx) -> Result<Box<dyn Op>, String> {
    let a = ctx.attrs;
    let mode = a.string_or("mode", "nearest")?;
    if ctx.opset < 11 {
        let mode = resize_mode(&mode, NearestMode::Legacy)?;
        let scales = const_floats(ctx, 1, "scales")?.ok_or("scales input (1) is required")?;
        return resize_op(ctx, mode, CoordMode::Asymmetric, Some(scales), None);
    }
    let coord = match a
        .string_or("coordinate_transformation_mode", "half_pixel")?
        .as_str()
    {
        "half_pixel" => CoordMode::HalfPixel,
        "half_pixel_symmetric" => CoordMode::HalfPixelSymmetric,
        "asymmetric" => CoordMode::Asymmetric,
        "align_corners" => CoordMode::AlignCorners,
        "pytorch_half_pixel" => CoordMode::PytorchHalfPixel,
        "tf_half_pixel_for_nn" => CoordMode::TfHalfPixelForNn,
        c => {
            return Err(format!(
                "coordinate_transformation_mode {c} is not supported"
            ));
        }
    };
    let nearest = match a.string_or("nearest_mode", "round_prefer_floor")?.as_str() {
        "round_prefer_floor" => NearestMode::RoundPreferFloor,
        "round_prefer_ceil" => NearestMode::RoundPreferCeil,
        "floor" => NearestMode::Floor,
        "ceil" => NearestMode::Ceil,
        m => return Err(format!("nearest_mode {m} is not supported")),
    };
    if a.int_or("antialias", 0)? != 0 {
        return Err("antialias is not supported".into());
    }
    let mode = resize_mode(&mode, nearest)?;
    let scales = const_floats(ctx, 2, "scales")?.filter(|s| !s.is_empty());
    let sizes = const_ints(ctx, 3, "sizes")?.filter(|s| !s.is_empty());
    resize_op(ctx, mode, coord, scales, sizes)
}

fn upsample(ctx: &Ctx) -> Result<Box<dyn Op>, String> {
    let mode = resize_mode(
        &ctx.attrs.string_or("mode", "nearest")?,
        NearestMode::Legacy,
    )?;
    let scales = if ctx.opset < 9 {
        required(ctx.attrs.floats("scales"), "scales")?
            .into_iter()
            .map(f64::from)
            .collect()
    } else {
        const_floats(ctx, 1, "scales")?.ok_or("scales input (1) is required")?
    };
    resize_op(ctx, mode, CoordMode::Asymmetric, Some(scales), None)
}

// ---------------------------------------------------- Expand, Range, Tile

/// Expand: numpy broadcast of the input to `shape`.
#[derive(Debug)]
pub struct Expand {
    /// The target shape (input 1's constant value).
    pub shape: Vec<usize>,
}

impl Op for Expand {
    fn infer(&self, inputs: &[Option<&Fact>]) -> Result<Vec<Fact>, String> {
        let x = input(inputs, 0)?;
        let dims = broadcast(&x.dims, &self.shape)?;
        check_dims(&dims)?;
        Ok(vec![like(x, dims)?])
    }

    fn eval(&self, inputs: &[Option<&Data>]) -> Result<Vec<Data>, String> {
        let x = input(inputs, 0)?;
        let out = broadcast(x.dims(), &self.shape)?;
        let mut padded = vec![1; out.len() - x.dims().len()];
        padded.extend_from_slice(x.dims());
        let maps: Vec<Map> = padded
            .iter()
            .zip(&out)
            .map(|(&i, &o)| {
                if i == o {
                    ident_map(o)
                } else {
                    vec![Some(0); o]
                }
            })
            .collect();
        Ok(vec![match x {
            Data::F32(a) => Data::F32(array(&out, remap(&elems(a), &padded, &maps, 0.0))?),
            Data::I64(a) => Data::I64(array(&out, remap(&elems(a), &padded, &maps, 0))?),
        }])
    }

    any!();
}

fn expand(ctx: &Ctx) -> Result<Box<dyn Op>, String> {
    let s = const_ints(ctx, 1, "shape")?.ok_or("shape input (1) is required")?;
    let shape = dims_of(&s).map_err(|e| format!("shape {s:?}: {e}"))?;
    done(Expand { shape }, ctx)
}

/// Range: `start, start + delta, ...` while short of `limit`.
#[derive(Debug)]
pub struct Range {
    /// Output type.
    pub dtype: DType,
    /// Output length.
    pub len: usize,
}

#[allow(clippy::cast_possible_truncation, reason = "clamped to 0..=i128::MAX")]
fn range_count(start: &Data, limit: &Data, delta: &Data) -> Result<usize, String> {
    let n = match (start, limit, delta) {
        (Data::I64(s), Data::I64(l), Data::I64(d)) => {
            let (s, l, d) = (s.first(), l.first(), d.first());
            let (s, l, d) = (
                *s.ok_or("start is empty")? as i128,
                *l.ok_or("limit is empty")? as i128,
                *d.ok_or("delta is empty")? as i128,
            );
            if d == 0 {
                return Err("delta must not be 0".into());
            }
            let diff = l - s;
            let (q, r) = (diff / d, diff % d);
            let n = if r != 0 && ((r > 0) == (d > 0)) {
                q + 1
            } else {
                q
            };
            n.max(0)
        }
        (Data::F32(s), Data::F32(l), Data::F32(d)) => {
            let first = |a: &ArrayD<f32>| a.first().map(|&v| v as f64).ok_or("an input is empty");
            let (s, l, d) = (first(s)?, first(l)?, first(d)?);
            if d == 0.0 {
                return Err("delta must not be 0".into());
            }
            let n = ((l - s) / d).ceil();
            if !n.is_finite() {
                return Err(format!("range {s}..{l} by {d} is not finite"));
            }
            n.max(0.0).min(i128::MAX as f64) as i128
        }
        _ => return Err("start, limit and delta must have the same type".into()),
    };
    let n = usize::try_from(n).map_err(|_| format!("range of {n} elements is too long"))?;
    checked_len(&[n])
}

impl Op for Range {
    fn infer(&self, _: &[Option<&Fact>]) -> Result<Vec<Fact>, String> {
        Ok(vec![Fact::new(self.dtype, vec![self.len])])
    }

    #[allow(
        clippy::cast_possible_truncation,
        reason = "every value lies between start and limit, both i64"
    )]
    fn eval(&self, inputs: &[Option<&Data>]) -> Result<Vec<Data>, String> {
        let (s, l, d) = (input(inputs, 0)?, input(inputs, 1)?, input(inputs, 2)?);
        if range_count(s, l, d)? != self.len {
            return Err("inputs differ from those it was built for".into());
        }
        let n = self.len;
        Ok(vec![match (s, d) {
            (Data::F32(s), Data::F32(d)) => {
                let (s, d) = (
                    s.first().copied().unwrap_or(0.0),
                    d.first().copied().unwrap_or(0.0),
                );
                Data::F32(Array1::from_iter((0..n).map(|i| s + i as f32 * d)).into_dyn())
            }
            _ => {
                // Every value lies between start and limit, but i * delta may not fit i64.
                let (s, d) = (s.to_i64_vec()[0] as i128, d.to_i64_vec()[0] as i128);
                Data::I64(Array1::from_iter((0..n).map(|i| (s + i as i128 * d) as i64)).into_dyn())
            }
        }])
    }

    any!();
}

fn range(ctx: &Ctx) -> Result<Box<dyn Op>, String> {
    let get = |i: usize, what: &str| -> Result<&Data, String> {
        const_data(ctx, i, what)?.ok_or_else(|| format!("{what} input ({i}) is required"))
    };
    let (s, l, d) = (get(0, "start")?, get(1, "limit")?, get(2, "delta")?);
    let len = range_count(s, l, d)?;
    done(
        Range {
            dtype: s.dtype(),
            len,
        },
        ctx,
    )
}

/// Tile: the input repeated `repeats[a]` times along each axis `a`.
#[derive(Debug)]
pub struct Tile {
    /// Repeats per axis.
    pub repeats: Vec<usize>,
}

impl Op for Tile {
    fn infer(&self, inputs: &[Option<&Fact>]) -> Result<Vec<Fact>, String> {
        let x = input(inputs, 0)?;
        if x.rank() != self.repeats.len() {
            return Err(format!(
                "{} repeats for an input of rank {}",
                self.repeats.len(),
                x.rank()
            ));
        }
        let dims = x
            .dims
            .iter()
            .zip(&self.repeats)
            .map(|(&d, &r)| d.checked_mul(r).ok_or("tile overflows"))
            .collect::<Result<Vec<_>, _>>()?;
        check_dims(&dims)?;
        Ok(vec![like(x, dims)?])
    }

    fn eval(&self, inputs: &[Option<&Data>]) -> Result<Vec<Data>, String> {
        let x = input(inputs, 0)?;
        let maps: Vec<Map> = x
            .dims()
            .iter()
            .zip(&self.repeats)
            .map(|(&d, &r)| (0..d * r).map(|j| Some(j % d)).collect())
            .collect();
        let dims: Vec<usize> = maps.iter().map(Vec::len).collect();
        Ok(vec![remap_data(x, &maps, 0.0, &dims)?])
    }

    any!();
}

fn tile(ctx: &Ctx) -> Result<Box<dyn Op>, String> {
    let r = const_ints(ctx, 1, "repeats")?.ok_or("repeats input (1) is required")?;
    let repeats = r
        .iter()
        .map(|&v| usize::try_from(v).map_err(|_| format!("repeats {r:?} has {v}")))
        .collect::<Result<_, _>>()?;
    done(Tile { repeats }, ctx)
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;
    use super::*;
    use crate::engine::onnx::proto::{AttributeProto, TensorProto, attribute_type as at};
    use proptest::prelude::*;

    fn one(op: &str, opset: i64, attrs: &[AttributeProto], inputs: &[In]) -> Data {
        run(op, opset, attrs, inputs)
            .unwrap_or_else(|e| panic!("{op}: {e}"))
            .remove(0)
    }

    fn fails(op: &str, opset: i64, attrs: &[AttributeProto], inputs: &[In]) -> String {
        match run(op, opset, attrs, inputs) {
            Err(e) => e,
            Ok(_) => panic!("{op} should fail"),
        }
    }

    /// 0, 1, 2, ... of `dims`.
    fn seq(dims: &[usize]) -> Data {
        f32s(
            dims,
            (0..dims.iter().product::<usize>())
                .map(|v| v as f32)
                .collect(),
        )
    }

    fn tensor_attr(name: &str, t: TensorProto) -> AttributeProto {
        AttributeProto {
            name: Some(name.into()),
            r#type: Some(at::TENSOR),
            t: Some(t),
            ..Default::default()
        }
    }

    fn i64_tensor(dims: &[i64], v: &[i64]) -> TensorProto {
        TensorProto {
            dims: dims.to_vec(),
            data_type: Some(data_type::INT64),
            int64_data: v.to_vec(),
            ..Default::default()
        }
    }

    use In::{Absent, Const, Dynamic};

    #[test]
    fn identity_and_dropout() {
        let x = i64s(&[2], vec![3, 4]);
        assert_eq!(one("Identity", 13, &[], &[Dynamic(x.clone())]), x);
        let x = seq(&[2, 2]);
        let out = run_n(
            "Dropout",
            12,
            &[],
            &[Dynamic(x.clone()), Absent, Const(i64s(&[], vec![0]))],
            2,
        )
        .unwrap();
        assert_eq!(out[0], x);
        assert_eq!(out[1], i64s(&[2, 2], vec![1; 4]));
        let out = run_n(
            "Dropout",
            7,
            &[float("ratio", 0.3)],
            &[Dynamic(x.clone())],
            2,
        )
        .unwrap();
        assert_eq!(out[1], f32s(&[2, 2], vec![1.0; 4]));
        let e = fails(
            "Dropout",
            13,
            &[],
            &[Dynamic(x.clone()), Absent, Const(i64s(&[], vec![1]))],
        );
        assert!(e.contains("training_mode true"), "{e}");
        let e = fails(
            "Dropout",
            13,
            &[],
            &[Dynamic(x), Absent, Dynamic(i64s(&[], vec![0]))],
        );
        assert!(e.contains("training_mode input must be constant"), "{e}");
    }

    #[test]
    fn constants() {
        let t = tensor_attr("value", i64_tensor(&[2], &[3, -1]));
        assert_eq!(one("Constant", 13, &[t], &[]), i64s(&[2], vec![3, -1]));
        assert_eq!(
            one("Constant", 13, &[float("value_float", 2.5)], &[]),
            f32s(&[], vec![2.5])
        );
        assert_eq!(
            one("Constant", 13, &[floats("value_floats", &[1.0, 2.0])], &[]),
            f32s(&[2], vec![1.0, 2.0])
        );
        assert_eq!(
            one("Constant", 13, &[int("value_int", 7)], &[]),
            i64s(&[], vec![7])
        );
        assert_eq!(
            one("Constant", 13, &[ints("value_ints", &[1, 2, 3])], &[]),
            i64s(&[3], vec![1, 2, 3])
        );
        let sparse = AttributeProto {
            name: Some("sparse_value".into()),
            ..Default::default()
        };
        assert!(fails("Constant", 13, &[sparse], &[]).contains("sparse_value"));
        assert!(
            fails("Constant", 13, &[string("value_string", "a")], &[]).contains("value_string")
        );
        assert!(fails("Constant", 13, &[], &[]).contains("exactly one"));
        let two = [int("value_int", 1), float("value_float", 1.0)];
        assert!(fails("Constant", 13, &two, &[]).contains("got 2"));
    }

    #[test]
    fn constant_of_shape() {
        let seven = tensor_attr("value", i64_tensor(&[1], &[7]));
        let shape = || Const(i64s(&[2], vec![2, 3]));
        assert_eq!(
            one("ConstantOfShape", 9, &[seven], &[shape()]),
            i64s(&[2, 3], vec![7; 6])
        );
        assert_eq!(
            one("ConstantOfShape", 9, &[], &[shape()]),
            f32s(&[2, 3], vec![0.0; 6])
        );
        assert_eq!(
            one("ConstantOfShape", 9, &[], &[Const(i64s(&[0], vec![]))]),
            f32s(&[], vec![0.0])
        );
        let huge = Const(i64s(&[2], vec![1 << 20, 1 << 20]));
        assert!(fails("ConstantOfShape", 9, &[], &[huge]).contains("more than"));
        assert!(
            fails("ConstantOfShape", 9, &[], &[Const(i64s(&[1], vec![-2]))]).contains("negative")
        );
        let e = fails(
            "ConstantOfShape",
            9,
            &[],
            &[Dynamic(i64s(&[2], vec![2, 3]))],
        );
        assert!(e.contains("shape input must be constant"), "{e}");
        let wide = tensor_attr("value", i64_tensor(&[2], &[1, 2]));
        assert!(fails("ConstantOfShape", 9, &[wide], &[shape()]).contains("one element"));
    }

    #[test]
    fn shape_and_size() {
        let x = || Dynamic(seq(&[2, 3, 4, 5]));
        let shape = |attrs: &[AttributeProto]| one("Shape", 15, attrs, &[x()]).to_i64_vec();
        assert_eq!(shape(&[]), vec![2, 3, 4, 5]);
        assert_eq!(shape(&[int("start", 1)]), vec![3, 4, 5]);
        assert_eq!(shape(&[int("start", -1)]), vec![5]);
        assert_eq!(shape(&[int("end", -1)]), vec![2, 3, 4]);
        assert_eq!(
            shape(&[int("start", -10), int("end", 10)]),
            vec![2, 3, 4, 5]
        );
        assert_eq!(shape(&[int("start", 10)]), Vec::<i64>::new());
        assert_eq!(shape(&[int("start", 3), int("end", 1)]), Vec::<i64>::new());
        // Before opset 15 start and end do not exist.
        assert_eq!(
            one("Shape", 13, &[int("start", 1)], &[x()]).to_i64_vec(),
            vec![2, 3, 4, 5]
        );
        let op = ShapeOp {
            start: 1,
            end: Some(3),
        };
        assert_eq!(op.of_dims(&[7, 8, 9, 10]), i64s(&[2], vec![8, 9]));
        assert_eq!(op.of_dims(&[]), i64s(&[0], vec![]));
        assert_eq!(one("Size", 13, &[], &[x()]), i64s(&[], vec![120]));
    }

    #[test]
    fn casts() {
        let x = || Dynamic(f32s(&[4], vec![-1.7, -0.2, 0.0, 2.9]));
        let to = |t: i32| int("to", t as i64);
        assert_eq!(
            one("Cast", 13, &[to(data_type::INT64)], &[x()]),
            i64s(&[4], vec![-1, 0, 0, 2])
        );
        assert_eq!(
            one("Cast", 13, &[to(data_type::INT32)], &[x()]),
            i64s(&[4], vec![-1, 0, 0, 2])
        );
        assert_eq!(
            one("Cast", 13, &[to(data_type::BOOL)], &[x()]),
            i64s(&[4], vec![1, 1, 0, 1])
        );
        let i = || Dynamic(i64s(&[3], vec![3, 0, -2]));
        assert_eq!(
            one("Cast", 13, &[to(data_type::BOOL)], &[i()]),
            i64s(&[3], vec![1, 0, 1])
        );
        assert_eq!(
            one("Cast", 13, &[to(data_type::FLOAT16)], &[i()]),
            f32s(&[3], vec![3.0, 0.0, -2.0])
        );
        assert!(fails("Cast", 13, &[to(data_type::STRING)], &[x()]).contains("STRING"));
        assert!(fails("Cast", 13, &[], &[x()]).contains("to is required"));
        assert_eq!(
            one("CastLike", 15, &[], &[x(), Dynamic(i64s(&[], vec![0]))]),
            i64s(&[4], vec![-1, 0, 0, 2])
        );
    }

    #[test]
    fn flatten() {
        let x = || Dynamic(seq(&[2, 3, 4]));
        for (axis, dims) in [
            (1, [2, 12]),
            (0, [1, 24]),
            (-1, [6, 4]),
            (3, [24, 1]),
            (-3, [1, 24]),
        ] {
            let y = one("Flatten", 13, &[int("axis", axis)], &[x()]);
            assert_eq!(y, f32s(&dims, values(&seq(&[24]))), "axis {axis}");
        }
        assert_eq!(one("Flatten", 13, &[], &[x()]).dims(), &[2, 12]);
        assert!(fails("Flatten", 13, &[int("axis", 4)], &[x()]).contains("out of range"));
    }

    #[test]
    fn reshape() {
        let x = || Dynamic(seq(&[2, 3, 4]));
        let shape = |v: Vec<i64>| Const(i64s(&[v.len()], v));
        let r = |s: Vec<i64>| one("Reshape", 13, &[], &[x(), shape(s)]);
        assert_eq!(r(vec![0, -1]), f32s(&[2, 12], values(&seq(&[24]))));
        assert_eq!(r(vec![-1, 2, 0]).dims(), &[3, 2, 4]);
        assert_eq!(r(vec![24]).dims(), &[24]);
        let e = fails("Reshape", 13, &[], &[x(), shape(vec![5, 5])]);
        assert!(e.contains("has 25 elements") && e.contains("has 24"), "{e}");
        assert!(
            fails("Reshape", 13, &[], &[x(), shape(vec![-1, -1])]).contains("more than one -1")
        );
        assert!(fails("Reshape", 13, &[], &[x(), shape(vec![5, -1])]).contains("cannot infer"));
        assert!(fails("Reshape", 13, &[], &[x(), shape(vec![-2, 12])]).contains("-2"));
        let e = fails("Reshape", 13, &[], &[x(), Dynamic(i64s(&[2], vec![2, 12]))]);
        assert!(e.contains("shape input must be constant"), "{e}");
        // allowzero (opset 14): 0 is a real zero.
        let empty = || Dynamic(f32s(&[0, 3], vec![]));
        let z = [int("allowzero", 1)];
        assert_eq!(
            one("Reshape", 14, &z, &[empty(), shape(vec![3, 0])]).dims(),
            &[3, 0]
        );
        assert!(fails("Reshape", 14, &[], &[empty(), shape(vec![3, 0])]).contains("elements"));
        assert!(fails("Reshape", 14, &z, &[x(), shape(vec![0, -1])]).contains("cannot infer"));
        // Before opset 14 allowzero does not exist: 0 copies.
        assert_eq!(
            one("Reshape", 13, &z, &[x(), shape(vec![0, 12])]).dims(),
            &[2, 12]
        );
        // Opset < 5: an attribute.
        assert_eq!(
            one("Reshape", 4, &[ints("shape", &[4, -1])], &[x()]).dims(),
            &[4, 6]
        );
    }

    /// Transpose through ndarray's strided view, for reference.
    fn naive_transpose(x: &Data, perm: &[usize]) -> Vec<f32> {
        x.f32()
            .unwrap()
            .view()
            .permuted_axes(IxDyn(perm))
            .iter()
            .copied()
            .collect()
    }

    #[test]
    fn transpose() {
        let x = seq(&[2, 3]);
        assert_eq!(
            one("Transpose", 13, &[], &[Dynamic(x)]),
            f32s(&[3, 2], vec![0., 3., 1., 4., 2., 5.])
        );
        for (dims, perm) in [
            (vec![2, 3, 2, 5], vec![0, 2, 3, 1]),
            (vec![2, 3, 2, 5], vec![0, 3, 1, 2]),
            (vec![1, 40, 3, 37], vec![0, 2, 3, 1]),
            (vec![3, 2, 4], vec![1, 0, 2]),
            (vec![3, 2, 4], vec![2, 0, 1]),
            (vec![2, 1, 3, 1, 4], vec![4, 1, 0, 3, 2]),
        ] {
            let x = seq(&dims);
            let p: Vec<i64> = perm.iter().map(|&p| p as i64).collect();
            let y = one("Transpose", 13, &[ints("perm", &p)], &[Dynamic(x.clone())]);
            assert_eq!(values(&y), naive_transpose(&x, &perm), "{dims:?} {perm:?}");
        }
        let i = i64s(&[2, 2], vec![1, 2, 3, 4]);
        assert_eq!(
            one("Transpose", 13, &[], &[Dynamic(i)]),
            i64s(&[2, 2], vec![1, 3, 2, 4])
        );
        let x = || Dynamic(seq(&[2, 3]));
        assert!(fails("Transpose", 13, &[ints("perm", &[0, 0])], &[x()]).contains("repeated"));
        assert!(fails("Transpose", 13, &[ints("perm", &[0])], &[x()]).contains("perm"));
        assert!(fails("Transpose", 13, &[ints("perm", &[0, 2])], &[x()]).contains("out of range"));
    }

    proptest! {
        #[test]
        fn transpose_matches_strided_view(
            (dims, perm) in prop::collection::vec(1usize..5, 1..6).prop_flat_map(|dims| {
                let perm = Just((0..dims.len()).collect::<Vec<_>>()).prop_shuffle();
                (Just(dims), perm)
            })
        ) {
            let x = seq(&dims);
            let p: Vec<i64> = perm.iter().map(|&p| p as i64).collect();
            let y = one("Transpose", 13, &[ints("perm", &p)], &[Dynamic(x.clone())]);
            prop_assert_eq!(values(&y), naive_transpose(&x, &perm));
        }
    }

    #[test]
    fn squeeze_unsqueeze() {
        let x = || Dynamic(seq(&[2, 1, 3, 1]));
        let axes = |v: &[i64]| Const(i64s(&[v.len()], v.to_vec()));
        assert_eq!(
            one("Squeeze", 11, &[ints("axes", &[-1])], &[x()]).dims(),
            &[2, 1, 3]
        );
        assert_eq!(
            one("Squeeze", 13, &[], &[x(), axes(&[1])]).dims(),
            &[2, 3, 1]
        );
        assert_eq!(
            one("Squeeze", 13, &[], &[x()]),
            f32s(&[2, 3], values(&seq(&[6])))
        );
        assert_eq!(one("Squeeze", 11, &[], &[x()]).dims(), &[2, 3]);
        let e = fails("Squeeze", 13, &[], &[x(), axes(&[0])]);
        assert!(e.contains("cannot squeeze axis 0 of size 2"), "{e}");
        assert!(
            fails("Squeeze", 13, &[], &[x(), Dynamic(i64s(&[1], vec![1]))])
                .contains("axes input must be constant")
        );
        let y = || Dynamic(seq(&[2, 3]));
        assert_eq!(
            one("Unsqueeze", 11, &[ints("axes", &[0, -1])], &[y()]).dims(),
            &[1, 2, 3, 1]
        );
        assert_eq!(
            one("Unsqueeze", 13, &[], &[y(), axes(&[1])]),
            f32s(&[2, 1, 3], values(&seq(&[6])))
        );
        assert_eq!(
            one("Unsqueeze", 13, &[], &[y(), axes(&[-1, 0])]).dims(),
            &[1, 2, 3, 1]
        );
        assert!(fails("Unsqueeze", 13, &[], &[y()]).contains("axes are required"));
        assert!(fails("Unsqueeze", 13, &[], &[y(), axes(&[1, 1])]).contains("repeated"));
        assert!(fails("Unsqueeze", 13, &[], &[y(), axes(&[4])]).contains("out of range"));
    }

    #[test]
    fn concat() {
        let a = || Dynamic(f32s(&[2, 1], vec![1., 2.]));
        let b = || Dynamic(f32s(&[2, 2], vec![3., 4., 5., 6.]));
        let y = one("Concat", 13, &[int("axis", -1)], &[a(), b()]);
        assert_eq!(y, f32s(&[2, 3], vec![1., 3., 4., 2., 5., 6.]));
        let y = one(
            "Concat",
            13,
            &[int("axis", 0)],
            &[Dynamic(i64s(&[1], vec![1])), Const(i64s(&[2], vec![2, 3]))],
        );
        assert_eq!(y, i64s(&[3], vec![1, 2, 3]));
        let e = fails("Concat", 13, &[int("axis", 0)], &[a(), b()]);
        assert!(e.contains("does not concatenate"), "{e}");
        let e = fails(
            "Concat",
            13,
            &[int("axis", 1)],
            &[a(), Dynamic(i64s(&[2, 1], vec![1, 2]))],
        );
        assert!(e.contains("does not concatenate"), "{e}");
        assert!(fails("Concat", 13, &[], &[a()]).contains("axis is required"));
        assert!(fails("Concat", 13, &[int("axis", 2)], &[a()]).contains("out of range"));
    }

    #[test]
    fn split() {
        let x = || Dynamic(seq(&[2, 3]));
        let out = run_n(
            "Split",
            11,
            &[int("axis", 1), ints("split", &[1, 2])],
            &[x()],
            2,
        )
        .unwrap();
        assert_eq!(
            out,
            vec![
                f32s(&[2, 1], vec![0., 3.]),
                f32s(&[2, 2], vec![1., 2., 4., 5.])
            ]
        );
        let out = run_n(
            "Split",
            13,
            &[int("axis", -1)],
            &[x(), Const(i64s(&[2], vec![2, 1]))],
            2,
        )
        .unwrap();
        assert_eq!(
            out,
            vec![
                f32s(&[2, 2], vec![0., 1., 3., 4.]),
                f32s(&[2, 1], vec![2., 5.])
            ]
        );
        let out = run_n("Split", 13, &[], &[Dynamic(seq(&[6]))], 3).unwrap();
        assert_eq!(
            out.iter().map(values).collect::<Vec<_>>(),
            vec![vec![0., 1.], vec![2., 3.], vec![4., 5.]]
        );
        let out = run_n(
            "Split",
            18,
            &[int("num_outputs", 3)],
            &[Dynamic(i64s(&[5], vec![1, 2, 3, 4, 5]))],
            3,
        )
        .unwrap();
        assert_eq!(
            out,
            vec![
                i64s(&[2], vec![1, 2]),
                i64s(&[2], vec![3, 4]),
                i64s(&[1], vec![5])
            ]
        );
        let e = run_n("Split", 13, &[], &[x(), Const(i64s(&[2], vec![2, 2]))], 2).unwrap_err();
        assert!(e.contains("do not add up"), "{e}");
        let e = run_n("Split", 13, &[], &[x(), Const(i64s(&[2], vec![2, 1]))], 3).unwrap_err();
        assert!(e.contains("3 outputs"), "{e}");
        let e = run_n("Split", 18, &[int("num_outputs", 2)], &[x()], 3).unwrap_err();
        assert!(e.contains("num_outputs 2"), "{e}");
        let e = run_n(
            "Split",
            18,
            &[int("num_outputs", 4)],
            &[Dynamic(seq(&[5]))],
            4,
        )
        .unwrap_err();
        assert!(e.contains("cannot split 5"), "{e}");
    }

    #[test]
    fn slice() {
        let c = |v: &[i64]| Const(i64s(&[v.len()], v.to_vec()));
        let x = || Dynamic(seq(&[2, 4]));
        let y = one(
            "Slice",
            9,
            &[ints("starts", &[1]), ints("ends", &[3]), ints("axes", &[1])],
            &[x()],
        );
        assert_eq!(y, f32s(&[2, 2], vec![1., 2., 5., 6.]));
        let y = one("Slice", 13, &[], &[x(), c(&[1]), c(&[-1]), c(&[-1])]);
        assert_eq!(y, f32s(&[2, 2], vec![1., 2., 5., 6.]));
        let y = one(
            "Slice",
            9,
            &[ints("starts", &[1, 0]), ints("ends", &[2, 1])],
            &[x()],
        );
        assert_eq!(y, f32s(&[1, 1], vec![4.]));
        let v = || Dynamic(seq(&[5]));
        let s = |st: i64, en: i64, step: i64| {
            values(&one(
                "Slice",
                13,
                &[],
                &[v(), c(&[st]), c(&[en]), c(&[0]), c(&[step])],
            ))
        };
        assert_eq!(s(-1, i64::MIN, -1), vec![4., 3., 2., 1., 0.]);
        assert_eq!(s(0, i64::MAX, 2), vec![0., 2., 4.]);
        assert_eq!(s(10, -10, -2), vec![4., 2., 0.]);
        assert_eq!(s(3, 1, 1), Vec::<f32>::new());
        assert_eq!(s(1, 3, -1), Vec::<f32>::new());
        assert_eq!(s(-2, -4, -1), vec![3., 2.]);
        assert_eq!(s(1, 100, 3), vec![1., 4.]);
        // Negative step, start below the range: clamped to 0, so element 0
        // is kept (onnxruntime agrees: Slice(arange(3), [-10], [-10], [0], [-1]) = [0.]).
        assert_eq!(
            values(&one(
                "Slice",
                13,
                &[],
                &[Dynamic(seq(&[3])), c(&[-10]), c(&[-10]), c(&[0]), c(&[-1])]
            )),
            vec![0.]
        );
        // Two axes, one reversed, on i64 data.
        let i = Dynamic(i64s(&[2, 3], vec![1, 2, 3, 4, 5, 6]));
        let y = one(
            "Slice",
            13,
            &[],
            &[i, c(&[0, -1]), c(&[2, i64::MIN]), c(&[0, 1]), c(&[1, -2])],
        );
        assert_eq!(y, i64s(&[2, 2], vec![3, 1, 6, 4]));
        assert!(
            fails("Slice", 13, &[], &[v(), c(&[0]), c(&[1]), c(&[0]), c(&[0])])
                .contains("steps must not be 0")
        );
        let e = fails(
            "Slice",
            13,
            &[],
            &[v(), Dynamic(i64s(&[1], vec![0])), c(&[1])],
        );
        assert!(e.contains("starts input must be constant"), "{e}");
        assert!(fails("Slice", 13, &[], &[v(), c(&[0, 1]), c(&[1])]).contains("starts, ends"));
        assert!(
            fails("Slice", 13, &[], &[v(), c(&[0]), c(&[1]), c(&[1])]).contains("out of range")
        );
    }

    #[test]
    fn gather() {
        let x = || Dynamic(seq(&[3, 2]));
        let y = one(
            "Gather",
            13,
            &[],
            &[x(), Const(i64s(&[2, 2], vec![0, 1, 1, 2]))],
        );
        assert_eq!(y, f32s(&[2, 2, 2], vec![0., 1., 2., 3., 2., 3., 4., 5.]));
        let y = one(
            "Gather",
            13,
            &[int("axis", -1)],
            &[Dynamic(seq(&[2, 3])), Dynamic(i64s(&[2], vec![-1, 0]))],
        );
        assert_eq!(y, f32s(&[2, 2], vec![2., 0., 5., 3.]));
        let y = one("Gather", 13, &[], &[x(), Const(i64s(&[], vec![1]))]);
        assert_eq!(y, f32s(&[2], vec![2., 3.]));
        let y = one(
            "Gather",
            13,
            &[],
            &[
                Const(i64s(&[4], vec![9, 8, 7, 6])),
                Const(i64s(&[3], vec![3, 3, -4])),
            ],
        );
        assert_eq!(y, i64s(&[3], vec![6, 6, 9]));
        // Out of range: at build when the indices are constant, at eval otherwise.
        let e = build("Gather", 13, &[], &[x(), Const(i64s(&[1], vec![3]))], 1).unwrap_err();
        assert!(e.contains("index 3 is out of range"), "{e}");
        let dynamic = [x(), Dynamic(i64s(&[1], vec![-4]))];
        assert!(build("Gather", 13, &[], &dynamic, 1).is_ok());
        assert!(fails("Gather", 13, &[], &dynamic).contains("index -4 is out of range"));
        assert!(
            fails("Gather", 13, &[], &[x(), Dynamic(f32s(&[1], vec![0.]))])
                .contains("indices must be")
        );
        assert!(
            fails(
                "Gather",
                13,
                &[int("axis", 2)],
                &[x(), Dynamic(i64s(&[1], vec![0]))]
            )
            .contains("out of range")
        );
    }

    #[test]
    fn gather_elements() {
        // The two examples of the spec.
        let y = one(
            "GatherElements",
            13,
            &[int("axis", 1)],
            &[
                Dynamic(f32s(&[2, 2], vec![1., 2., 3., 4.])),
                Dynamic(i64s(&[2, 2], vec![0, 0, 1, 0])),
            ],
        );
        assert_eq!(y, f32s(&[2, 2], vec![1., 1., 4., 3.]));
        let data = || Dynamic(i64s(&[3, 3], (1..=9).collect()));
        let y = one(
            "GatherElements",
            13,
            &[],
            &[data(), Dynamic(i64s(&[2, 3], vec![1, 2, 0, 2, 0, 0]))],
        );
        assert_eq!(y, i64s(&[2, 3], vec![4, 8, 3, 7, 2, 3]));
        let y = one(
            "GatherElements",
            13,
            &[int("axis", -1)],
            &[data(), Dynamic(i64s(&[1, 2], vec![-1, 0]))],
        );
        assert_eq!(y, i64s(&[1, 2], vec![3, 1]));
        assert!(
            fails(
                "GatherElements",
                13,
                &[],
                &[data(), Dynamic(i64s(&[1, 1], vec![3]))]
            )
            .contains("out of range")
        );
        assert!(
            fails(
                "GatherElements",
                13,
                &[],
                &[data(), Dynamic(i64s(&[1, 4], vec![0; 4]))]
            )
            .contains("do not fit")
        );
    }

    #[test]
    fn pad() {
        let c = |v: &[i64]| Const(i64s(&[v.len()], v.to_vec()));
        let y = one(
            "Pad",
            2,
            &[ints("pads", &[0, 1, 0, 2]), float("value", 9.)],
            &[Dynamic(seq(&[2, 2]))],
        );
        assert_eq!(
            y,
            f32s(&[2, 5], vec![9., 0., 1., 9., 9., 9., 2., 3., 9., 9.])
        );
        let v = || Dynamic(f32s(&[3], vec![1., 2., 3.]));
        let p = |mode: &str, pads: &[i64]| {
            values(&one("Pad", 11, &[string("mode", mode)], &[v(), c(pads)]))
        };
        // numpy.pad([1, 2, 3], pads, mode) for each.
        assert_eq!(p("reflect", &[2, 2]), vec![3., 2., 1., 2., 3., 2., 1.]);
        assert_eq!(
            p("reflect", &[5, 5]),
            vec![2., 1., 2., 3., 2., 1., 2., 3., 2., 1., 2., 3., 2.]
        );
        assert_eq!(p("edge", &[2, 1]), vec![1., 1., 1., 2., 3., 3.]);
        assert_eq!(p("wrap", &[2, 1]), vec![2., 3., 1., 2., 3., 1.]);
        assert_eq!(
            p("wrap", &[5, 5]),
            vec![2., 3., 1., 2., 3., 1., 2., 3., 1., 2., 3., 1., 2.]
        );
        assert_eq!(p("constant", &[1, 0]), vec![0., 1., 2., 3.]);
        // Negative pads crop first.
        let w = || Dynamic(f32s(&[5], vec![1., 2., 3., 4., 5.]));
        assert_eq!(
            values(&one("Pad", 11, &[], &[w(), c(&[-1, 1])])),
            vec![2., 3., 4., 5., 0.]
        );
        assert_eq!(
            values(&one(
                "Pad",
                11,
                &[string("mode", "reflect")],
                &[w(), c(&[-1, 2])]
            )),
            vec![2., 3., 4., 5., 4., 3.]
        );
        assert_eq!(
            values(&one("Pad", 11, &[], &[w(), c(&[-2, -3])])),
            Vec::<f32>::new()
        );
        // An i64 input with a constant value.
        let i = Dynamic(i64s(&[2], vec![1, 2]));
        assert_eq!(
            one("Pad", 13, &[], &[i, c(&[1, 2]), Const(i64s(&[], vec![5]))]),
            i64s(&[5], vec![5, 1, 2, 5, 5])
        );
        // Opset 18 axes.
        let y = one(
            "Pad",
            18,
            &[],
            &[
                Dynamic(seq(&[2, 2])),
                c(&[1, 1]),
                Const(f32s(&[], vec![-1.])),
                c(&[-1]),
            ],
        );
        assert_eq!(y, f32s(&[2, 4], vec![-1., 0., 1., -1., -1., 2., 3., -1.]));
        let x = || Dynamic(seq(&[3]));
        assert!(fails("Pad", 11, &[], &[x(), c(&[-4, 0])]).contains("crop more"));
        assert!(fails("Pad", 11, &[], &[x(), c(&[1, 0, 0])]).contains("pads has 3 values"));
        assert!(
            fails("Pad", 11, &[], &[x(), Dynamic(i64s(&[2], vec![1, 1]))])
                .contains("pads input must be constant")
        );
        assert!(
            fails("Pad", 11, &[string("mode", "mirror")], &[x(), c(&[1, 1])]).contains("mirror")
        );
        assert!(fails("Pad", 11, &[string("mode", "edge")], &[x(), c(&[-3, 1])]).contains("empty"));
        assert!(fails("Pad", 11, &[], &[x(), c(&[1 << 40, 0])]).contains("more than"));
        let e = fails(
            "Pad",
            11,
            &[string("mode", "edge")],
            &[x(), c(&[i64::MAX, i64::MAX])],
        );
        assert!(e.contains("overflow"), "{e}");
        assert!(fails("Pad", 11, &[], &[x(), c(&[i64::MIN, 0])]).contains("crop more"));
    }

    /// numpy.pad, one element at a time: crop, then reflect by bouncing.
    fn naive_pad(
        x: &[f32],
        dims: &[usize],
        pads: &[i64],
        mode: PadMode,
        value: f32,
    ) -> (Vec<usize>, Vec<f32>) {
        let r = dims.len();
        let lo: Vec<i64> = (0..r).map(|a| (-pads[a]).max(0)).collect();
        let c: Vec<i64> = (0..r)
            .map(|a| dims[a] as i64 - lo[a] - (-pads[r + a]).max(0))
            .collect();
        let pb: Vec<i64> = (0..r).map(|a| pads[a].max(0)).collect();
        let out: Vec<usize> = (0..r)
            .map(|a| (c[a] + pb[a] + pads[r + a].max(0)) as usize)
            .collect();
        let n: usize = out.iter().product();
        let st = strides(dims);
        let mut v = Vec::with_capacity(n);
        for flat in 0..n {
            let mut rem = flat;
            let mut off = Some(0);
            for a in (0..r).rev() {
                let o = (rem % out[a]) as i64;
                rem /= out[a];
                let mut i = o - pb[a];
                let c = c[a];
                if !(0..c).contains(&i) {
                    match mode {
                        PadMode::Constant => off = None,
                        PadMode::Edge => i = i.clamp(0, c - 1),
                        PadMode::Wrap => {
                            while i < 0 {
                                i += c;
                            }
                            while i >= c {
                                i -= c;
                            }
                        }
                        PadMode::Reflect => {
                            while c > 1 && !(0..c).contains(&i) {
                                i = if i < 0 { -i } else { 2 * (c - 1) - i };
                            }
                            if c == 1 {
                                i = 0;
                            }
                        }
                    }
                }
                off = off.map(|off| off + (lo[a] + i) as usize * st[a]);
            }
            v.push(off.map_or(value, |o| x[o]));
        }
        (out, v)
    }

    proptest! {
        #[test]
        fn pad_matches_naive(
            dims in prop::collection::vec(1usize..5, 1..4),
            raw in prop::collection::vec(-2i64..5, 8),
            mode in prop::sample::select(vec![PadMode::Constant, PadMode::Reflect, PadMode::Edge, PadMode::Wrap]),
        ) {
            let r = dims.len();
            let mut pads = raw[..2 * r].to_vec();
            // Keep at least one element per axis after cropping.
            for a in 0..r {
                while (dims[a] as i64) - (-pads[a]).max(0) - (-pads[r + a]).max(0) < 1 {
                    pads[a] += 1;
                    pads[r + a] += 1;
                }
            }
            let x = seq(&dims);
            let name = match mode { PadMode::Constant => "constant", PadMode::Reflect => "reflect", PadMode::Edge => "edge", PadMode::Wrap => "wrap" };
            let y = one("Pad", 11, &[string("mode", name)], &[Dynamic(x.clone()), Const(i64s(&[2 * r], pads.clone())), Const(f32s(&[], vec![-7.]))]);
            let (want_dims, want) = naive_pad(&values(&x), &dims, &pads, mode, -7.);
            prop_assert_eq!(y.dims(), &want_dims[..]);
            prop_assert_eq!(values(&y), want);
        }
    }

    fn resize_scales(opset: i64, attrs: &[AttributeProto], x: Data, scales: &[f32]) -> Data {
        let s = Const(f32s(&[scales.len()], scales.to_vec()));
        match opset {
            10 => one("Resize", 10, attrs, &[Dynamic(x), s]),
            _ => one("Resize", opset, attrs, &[Dynamic(x), Absent, s]),
        }
    }

    fn resize_sizes(opset: i64, attrs: &[AttributeProto], x: Data, sizes: &[i64]) -> Data {
        let z = Const(i64s(&[sizes.len()], sizes.to_vec()));
        one("Resize", opset, attrs, &[Dynamic(x), Absent, Absent, z])
    }

    #[test]
    fn resize_nearest() {
        // 2x upscale of NCHW: the fast path.
        let y = resize_scales(13, &[], seq(&[1, 2, 2, 2]), &[1., 1., 2., 2.]);
        let plane = |b: f32| {
            [
                b,
                b,
                b + 1.,
                b + 1.,
                b,
                b,
                b + 1.,
                b + 1.,
                b + 2.,
                b + 2.,
                b + 3.,
                b + 3.,
                b + 2.,
                b + 2.,
                b + 3.,
                b + 3.,
            ]
        };
        assert_eq!(y, f32s(&[1, 2, 4, 4], [plane(0.), plane(4.)].concat()));
        // Golden values from onnxruntime 1.32:
        //   x = np.arange(1, 6, dtype=np.float32).reshape(1, 5)
        //   Resize-13(x, sizes=[1, 8], mode="nearest", nearest_mode=nm,
        //             coordinate_transformation_mode=ct)
        let x = || f32s(&[1, 5], vec![1., 2., 3., 4., 5.]);
        for (nm, ct, want) in [
            (
                "round_prefer_floor",
                "half_pixel",
                [1., 1., 2., 3., 3., 4., 5., 5.],
            ),
            (
                "round_prefer_floor",
                "asymmetric",
                [1., 2., 2., 3., 3., 4., 5., 5.],
            ),
            (
                "round_prefer_floor",
                "tf_half_pixel_for_nn",
                [1., 2., 3., 3., 4., 4., 5., 5.],
            ),
            (
                "round_prefer_floor",
                "align_corners",
                [1., 2., 2., 3., 3., 4., 4., 5.],
            ),
            (
                "round_prefer_ceil",
                "asymmetric",
                [1., 2., 2., 3., 4., 4., 5., 5.],
            ),
            ("floor", "half_pixel", [1., 1., 2., 2., 3., 3., 4., 5.]),
            ("floor", "asymmetric", [1., 1., 2., 2., 3., 4., 4., 5.]),
            ("ceil", "half_pixel", [1., 2., 3., 3., 4., 4., 5., 5.]),
            (
                "ceil",
                "tf_half_pixel_for_nn",
                [2., 2., 3., 4., 4., 5., 5., 5.],
            ),
        ] {
            let attrs = [
                string("nearest_mode", nm),
                string("coordinate_transformation_mode", ct),
            ];
            assert_eq!(
                values(&resize_sizes(13, &attrs, x(), &[1, 8])),
                want,
                "{nm} {ct}"
            );
        }
        // Resize-10 (asymmetric; onnxruntime rounds down when upsampling,
        // up when downsampling):
        //   Resize-10(np.arange(1, 9).reshape(1, 1, 2, 4), scales=[1, 1, 0.6, 0.6]) = [[1, 3]]
        //   Resize-10(np.arange(1, 11).reshape(1, 1, 1, 10), scales=[1, 1, 1, 0.3]) = [1, 5, 8]
        let x8 = f32s(&[1, 1, 2, 4], (1..=8).map(|v| v as f32).collect());
        assert_eq!(
            resize_scales(10, &[], x8.clone(), &[1., 1., 0.6, 0.6]),
            f32s(&[1, 1, 1, 2], vec![1., 3.])
        );
        let x10 = || f32s(&[1, 1, 1, 10], (1..=10).map(|v| v as f32).collect());
        assert_eq!(
            values(&resize_scales(10, &[], x10(), &[1., 1., 1., 0.3])),
            vec![1., 5., 8.]
        );
        // Upsample-7 with the scales attribute (onnxruntime):
        //   Upsample-7(np.arange(1, 11).reshape(1, 1, 1, 10), scales=[1, 1, 2, 1.5])
        let row = [1., 1., 2., 3., 3., 4., 5., 5., 6., 7., 7., 8., 9., 9., 10.];
        let y = one(
            "Upsample",
            7,
            &[floats("scales", &[1., 1., 2., 1.5])],
            &[Dynamic(x10())],
        );
        assert_eq!(y, f32s(&[1, 1, 2, 15], [row, row].concat()));
        // Opset 18 axes: only the last axis, halved.
        let y = one(
            "Resize",
            18,
            &[ints("axes", &[3])],
            &[Dynamic(x8), Absent, Const(f32s(&[1], vec![0.5]))],
        );
        assert_eq!(y, f32s(&[1, 1, 2, 2], vec![1., 3., 5., 7.]));
        // Integers resize too.
        let y = resize_sizes(13, &[], i64s(&[1, 2], vec![4, 5]), &[2, 4]);
        assert_eq!(y, i64s(&[2, 4], vec![4, 4, 5, 5, 4, 4, 5, 5]));
    }

    #[test]
    fn resize_linear() {
        // Golden values from onnxruntime 1.32:
        //   x = np.arange(1, 7, dtype=np.float32).reshape(1, 1, 2, 3)
        //   Resize-13(x, scales=[1, 1, 2, 1.5], mode="linear", coordinate_transformation_mode=ct)
        let x = || f32s(&[1, 1, 2, 3], (1..=6).map(|v| v as f32).collect());
        let half = [
            1.0, 1.5, 2.1666665, 2.8333333, 1.75, 2.25, 2.9166665, 3.5833335, 3.25, 3.75,
            4.4166665, 5.083333, 4.0, 4.5, 5.166667, 5.833333,
        ];
        for (ct, want) in [
            ("half_pixel", half),
            ("pytorch_half_pixel", half),
            (
                "align_corners",
                [
                    1.0, 1.6666667, 2.3333335, 3.0, 2.0, 2.6666665, 3.3333333, 4.0, 3.0, 3.6666667,
                    4.3333335, 5.0, 4.0, 4.666667, 5.333333, 6.0,
                ],
            ),
            (
                "asymmetric",
                [
                    1.0, 1.6666667, 2.3333335, 3.0, 2.5, 3.1666667, 3.8333335, 4.5, 4.0, 4.666667,
                    5.333333, 6.0, 4.0, 4.666667, 5.333333, 6.0,
                ],
            ),
        ] {
            let attrs = [
                string("mode", "linear"),
                string("coordinate_transformation_mode", ct),
            ];
            let y = resize_scales(13, &attrs, x(), &[1., 1., 2., 1.5]);
            assert_eq!(y.dims(), &[1, 1, 4, 4]);
            assert_close(&values(&y), &want, 1e-6);
        }
        // Upsample-9, linear (asymmetric, clamped at the edge):
        //   Upsample-9(np.arange(1, 11).reshape(1, 1, 1, 10), scales=[1, 1, 1, 1.7], mode="linear")
        let x10 = f32s(&[1, 1, 1, 10], (1..=10).map(|v| v as f32).collect());
        let y = one(
            "Upsample",
            9,
            &[string("mode", "linear")],
            &[Dynamic(x10), Const(f32s(&[4], vec![1., 1., 1., 1.7]))],
        );
        let want = [
            1.0, 1.5882353, 2.1764705, 2.764706, 3.352941, 3.9411764, 4.5294113, 5.117647,
            5.705882, 6.294118, 6.882353, 7.470588, 8.058823, 8.6470585, 9.235294, 9.823529, 10.0,
        ];
        assert_close(&values(&y), &want, 1e-6);
        // Opset 18 keep_aspect_ratio_policy:
        //   Resize-18(np.arange(1, 9).reshape(1, 1, 2, 4), sizes=[3, 3], axes=[2, 3],
        //             mode="linear", keep_aspect_ratio_policy="not_larger")
        let x8 = || f32s(&[1, 1, 2, 4], (1..=8).map(|v| v as f32).collect());
        let attrs = [
            string("mode", "linear"),
            ints("axes", &[2, 3]),
            string("keep_aspect_ratio_policy", "not_larger"),
        ];
        let y = resize_sizes(18, &attrs, x8(), &[3, 3]);
        assert_eq!(y.dims(), &[1, 1, 2, 3]);
        assert_close(
            &values(&y),
            &[1.8333335, 3.1666665, 4.5, 5.1666665, 6.5, 7.833333],
            1e-6,
        );
        // Opset 19 half_pixel_symmetric (onnxruntime and the onnx reference agree):
        //   Resize-19(x8, scales=[1, 1, 1, 0.7], mode="linear", coordinate_transformation_mode="half_pixel_symmetric")
        let attrs = [
            string("mode", "linear"),
            string("coordinate_transformation_mode", "half_pixel_symmetric"),
        ];
        let y = resize_scales(19, &attrs, x8(), &[1., 1., 1., 0.7]);
        assert_close(
            &values(&y),
            &[1.7857143, 3.2142856, 5.7857146, 7.214286],
            1e-6,
        );
        // Scale 1 everywhere leaves the input as is.
        let attrs = [string("mode", "linear")];
        assert_eq!(resize_scales(13, &attrs, x8(), &[1., 1., 1., 1.]), x8());
    }

    #[test]
    fn resize_errors() {
        let x = || Dynamic(seq(&[1, 1, 2, 2]));
        let s = || Const(f32s(&[4], vec![1., 1., 2., 2.]));
        let z = || Const(i64s(&[4], vec![1, 1, 4, 4]));
        assert!(
            fails(
                "Resize",
                13,
                &[string("mode", "cubic")],
                &[x(), Absent, s()]
            )
            .contains("cubic")
        );
        let tf = [string(
            "coordinate_transformation_mode",
            "tf_crop_and_resize",
        )];
        assert!(fails("Resize", 13, &tf, &[x(), Absent, s()]).contains("tf_crop_and_resize"));
        let e = fails(
            "Resize",
            13,
            &[],
            &[x(), Absent, Dynamic(f32s(&[4], vec![1., 1., 2., 2.]))],
        );
        assert!(e.contains("scales input must be constant"), "{e}");
        assert!(
            fails("Resize", 13, &[], &[x(), Absent, s(), z()])
                .contains("only one of scales and sizes")
        );
        assert!(
            fails("Resize", 13, &[], &[x(), Absent, Absent])
                .contains("one of scales and sizes is required")
        );
        assert!(
            fails("Resize", 18, &[int("antialias", 1)], &[x(), Absent, s()]).contains("antialias")
        );
        assert!(
            fails(
                "Resize",
                13,
                &[],
                &[x(), Absent, Const(f32s(&[2], vec![2., 2.]))]
            )
            .contains("2 values for 4 axes")
        );
        assert!(
            fails(
                "Resize",
                13,
                &[],
                &[x(), Absent, Const(f32s(&[4], vec![1., 1., 0., 2.]))]
            )
            .contains("positive")
        );
        let huge = Const(i64s(&[4], vec![1, 0, 1 << 40, 4]));
        assert!(
            fails(
                "Resize",
                13,
                &[],
                &[Dynamic(seq(&[1, 1, 2, 2])), Absent, Absent, huge]
            )
            .contains("more than")
        );
        let linear = [string("mode", "linear")];
        assert!(
            fails(
                "Resize",
                13,
                &linear,
                &[
                    Dynamic(i64s(&[2], vec![1, 2])),
                    Absent,
                    Const(f32s(&[1], vec![2.]))
                ]
            )
            .contains("float")
        );
    }

    proptest! {
        #[test]
        fn nearest_upscale_fast_path_matches_remap(
            n in 1usize..3, c in 1usize..4, h in 1usize..5, w in 1usize..5, kh in 1usize..4, kw in 1usize..4,
        ) {
            let dims = vec![n, c, h, w];
            let out = vec![n, c, h * kh, w * kw];
            let scales = vec![1.0, 1.0, kh as f64, kw as f64];
            let op = Resize::new(ResizeMode::Nearest(NearestMode::RoundPreferFloor), CoordMode::HalfPixel, dims.clone(), out.clone(), scales);
            let Plan::Nearest(maps, fast) = &op.plan else { panic!("nearest plan") };
            prop_assert_eq!(*fast, Some((kh, kw)));
            let x = seq(&dims);
            let got = op.eval(&[Some(&x)]).unwrap().remove(0);
            let want = remap(&values(&x), &dims, maps, 0.0);
            prop_assert_eq!(values(&got), want);
        }
    }

    #[test]
    fn expand_range_tile() {
        let c = |v: &[i64]| Const(i64s(&[v.len()], v.to_vec()));
        let y = one(
            "Expand",
            13,
            &[],
            &[Dynamic(f32s(&[3, 1], vec![1., 2., 3.])), c(&[2, 1, 4])],
        );
        let block = [1., 1., 1., 1., 2., 2., 2., 2., 3., 3., 3., 3.];
        assert_eq!(y, f32s(&[2, 3, 4], [block, block].concat()));
        assert_eq!(
            one("Expand", 13, &[], &[Dynamic(seq(&[2, 3])), c(&[3])]),
            seq(&[2, 3])
        );
        assert_eq!(
            one("Expand", 13, &[], &[Dynamic(i64s(&[], vec![5])), c(&[2])]),
            i64s(&[2], vec![5, 5])
        );
        assert!(fails("Expand", 13, &[], &[Dynamic(seq(&[2, 3])), c(&[4])]).contains("broadcast"));
        assert!(
            fails(
                "Expand",
                13,
                &[],
                &[Dynamic(seq(&[2, 3])), Dynamic(i64s(&[1], vec![3]))]
            )
            .contains("shape input must be constant")
        );

        let r = |s: Data, l: Data, d: Data| one("Range", 11, &[], &[Const(s), Const(l), Const(d)]);
        let i = |v: i64| i64s(&[], vec![v]);
        let f = |v: f32| f32s(&[], vec![v]);
        assert_eq!(r(i(1), i(10), i(3)), i64s(&[3], vec![1, 4, 7]));
        assert_eq!(r(i(10), i(1), i(-3)), i64s(&[3], vec![10, 7, 4]));
        assert_eq!(r(i(5), i(1), i(1)), i64s(&[0], vec![]));
        let m = i64::MIN;
        assert_eq!(
            r(i(m), i(i64::MAX), i(1 << 62)),
            i64s(&[4], vec![m, m + (1 << 62), 0, 1 << 62])
        );
        assert_eq!(
            r(f(0.), f(1.), f(0.25)),
            f32s(&[4], vec![0., 0.25, 0.5, 0.75])
        );
        assert_eq!(r(f(0.), f(1.1), f(0.5)), f32s(&[3], vec![0., 0.5, 1.0]));
        assert!(
            fails("Range", 11, &[], &[Const(i(0)), Const(i(1)), Const(i(0))])
                .contains("delta must not be 0")
        );
        assert!(
            fails("Range", 11, &[], &[Dynamic(i(0)), Const(i(1)), Const(i(1))])
                .contains("start input must be constant")
        );
        assert!(
            fails(
                "Range",
                11,
                &[],
                &[Const(i(0)), Const(i(i64::MAX)), Const(i(1))]
            )
            .contains("more than")
        );
        assert!(
            fails("Range", 11, &[], &[Const(i(0)), Const(f(1.)), Const(i(1))])
                .contains("same type")
        );

        let x = || Dynamic(f32s(&[2, 2], vec![1., 2., 3., 4.]));
        assert_eq!(
            one("Tile", 13, &[], &[x(), c(&[2, 1])]),
            f32s(&[4, 2], vec![1., 2., 3., 4., 1., 2., 3., 4.])
        );
        assert_eq!(
            one("Tile", 13, &[], &[x(), c(&[1, 2])]),
            f32s(&[2, 4], vec![1., 2., 1., 2., 3., 4., 3., 4.])
        );
        assert_eq!(one("Tile", 13, &[], &[x(), c(&[0, 2])]).dims(), &[0, 4]);
        assert!(fails("Tile", 13, &[], &[x(), c(&[1, -1])]).contains("-1"));
        assert!(fails("Tile", 13, &[], &[x(), c(&[2])]).contains("rank 2"));
        assert!(fails("Tile", 13, &[], &[x(), c(&[1 << 30, 1])]).contains("more than"));
    }

    #[test]
    fn remap_segments() {
        let segs = segments(&[
            Some(0),
            Some(1),
            Some(2),
            Some(2),
            Some(2),
            None,
            None,
            Some(1),
            Some(0),
        ]);
        assert_eq!(
            segs,
            vec![
                Seg::Run(0, 3),
                Seg::Same(2, 2),
                Seg::Fill(2),
                Seg::Run(1, 1),
                Seg::Run(0, 1)
            ]
        );
        // A 2x3 source: rows swapped and repeated, columns reversed with a fill.
        let maps = vec![
            vec![Some(1), Some(1), Some(0)],
            vec![None, Some(2), Some(1), Some(0)],
        ];
        let got = remap(&[1, 2, 3, 4, 5, 6], &[2, 3], &maps, 0);
        assert_eq!(got, vec![0, 6, 5, 4, 0, 6, 5, 4, 0, 3, 2, 1]);
    }
}
