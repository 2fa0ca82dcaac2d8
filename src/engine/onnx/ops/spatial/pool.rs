//! MaxPool, AveragePool, GlobalMaxPool and GlobalAveragePool.

use std::any::Any;

use super::super::super::attrs::required;
use super::super::super::data::{Data, Fact, checked_len, fmt_dims};
use super::super::util::like;
use super::super::{Ctx, Op};
use super::{
    AutoPad, auto_pad, checked_list, flag, float_data, float_fact, list, out_len, output,
    resolve_pads, slice, spatial_rank, to3, valid,
};

/// What a pool computes over its window.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PoolKind {
    /// The largest value.
    Max,
    /// The mean.
    Avg,
}

impl PoolKind {
    /// The value of a window without input cells.
    fn empty(self) -> f32 {
        match self {
            PoolKind::Max => f32::NEG_INFINITY,
            PoolKind::Avg => 0.0,
        }
    }
}

/// A windowed pool (ONNX `MaxPool`, `AveragePool`) with explicit padding.
#[derive(Clone, Debug, PartialEq)]
pub struct Pool {
    /// Max or average.
    pub kind: PoolKind,
    /// Window size per spatial axis.
    pub kernel: Vec<usize>,
    /// Stride per spatial axis.
    pub strides: Vec<usize>,
    /// Padding in ONNX order: every axis's begin, then every axis's end.
    pub pads: Vec<usize>,
    /// Dilation per spatial axis.
    pub dilations: Vec<usize>,
    /// Output lengths round up: a last, partial window counts when it
    /// starts inside the input or the begin padding.
    pub ceil_mode: bool,
    /// Average: divide by the window's cells inside the padded input
    /// (but not past its end in ceil mode) rather than by its input cells.
    pub count_include_pad: bool,
}

/// Where one output cell's window falls along one axis.
#[derive(Clone, Copy, Debug)]
struct Span {
    /// First input cell.
    first: usize,
    /// Input cells.
    count: usize,
    /// Cells inside the padded input.
    padded: usize,
}

/// The window of every output cell along one axis.
fn spans(
    input: usize,
    out: usize,
    k: usize,
    s: usize,
    d: usize,
    (pb, pe): (usize, usize),
) -> Vec<Span> {
    (0..out)
        .map(|o| {
            let start = (o * s) as isize - pb as isize;
            let (lo, hi) = valid(input, k, d, start);
            let (_, padded) = valid(input + pb + pe, k, d, (o * s) as isize);
            Span {
                first: if lo < hi {
                    (start + (lo * d) as isize) as usize
                } else {
                    0
                },
                count: hi - lo,
                padded,
            }
        })
        .collect()
}

impl Pool {
    fn out_dims(&self, x: &[usize]) -> Result<Vec<usize>, String> {
        let n = spatial_rank("input X", x)?;
        let lens = [&self.kernel, &self.strides, &self.dilations].map(|l| l.len());
        if lens != [n; 3] || self.pads.len() != 2 * n {
            return Err(format!(
                "X {} has {n} spatial axes, the kernel {}",
                fmt_dims(x),
                fmt_dims(&self.kernel)
            ));
        }
        let mut out = x[..2].to_vec();
        for a in 0..n {
            let pads = (self.pads[a], self.pads[n + a]);
            let (k, s, d) = (self.kernel[a], self.strides[a], self.dilations[a]);
            out.push(out_len(a, x[2 + a], pads, k, s, d, self.ceil_mode)?);
        }
        checked_len(&out)?;
        Ok(out)
    }
}

/// Folds `f` over the input cells of every output cell's window, per
/// `[N, C]` plane, starting from `y`'s values: per output row and window
/// row, one pass over the output row for each tap of the last axis.
/// `sizes` are the input and output plane sizes, the input's spatial dims
/// and the dilations; `(k, s, p)` the last axis's kernel, stride and begin pad.
fn fold(
    xs: &[f32],
    y: &mut [f32],
    sp: &[Vec<Span>; 3],
    (isz, osz, [_, ih, iw], [dd, dh, dw]): (usize, usize, [usize; 3], [usize; 3]),
    (k, s, p): (usize, usize, usize),
    f: impl Fn(f32, f32) -> f32 + Copy,
) {
    let ow = sp[2].len();
    let taps: Vec<(isize, usize, usize)> = (0..k)
        .map(|j| {
            let off = (j * dw) as isize - p as isize;
            let (lo, hi) = valid(iw, ow, s, off);
            (off, lo, hi)
        })
        .filter(|&(_, lo, hi)| lo < hi)
        .collect();
    for (xp, yp) in xs.chunks_exact(isz).zip(y.chunks_exact_mut(osz)) {
        let mut lines = yp.chunks_exact_mut(ow);
        for a in &sp[0] {
            for b in &sp[1] {
                let Some(line) = lines.next() else {
                    return;
                };
                for jd in 0..a.count {
                    for jh in 0..b.count {
                        let base = ((a.first + jd * dd) * ih + b.first + jh * dh) * iw;
                        let row = &xp[base..base + iw];
                        for &(off, lo, hi) in &taps {
                            let first = (lo as isize * s as isize + off) as usize;
                            let out = &mut line[lo..hi];
                            if s == 1 {
                                for (v, &x) in out.iter_mut().zip(&row[first..]) {
                                    *v = f(*v, x);
                                }
                            } else {
                                for (v, &x) in out.iter_mut().zip(row[first..].iter().step_by(s)) {
                                    *v = f(*v, x);
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

impl Op for Pool {
    fn infer(&self, inputs: &[Option<&Fact>]) -> Result<Vec<Fact>, String> {
        let x = float_fact(inputs, 0, "X")?;
        Ok(vec![like(x, self.out_dims(&x.dims)?)?])
    }

    fn eval(&self, inputs: &[Option<&Data>]) -> Result<Vec<Data>, String> {
        let x = float_data(inputs, 0)?;
        let out = self.out_dims(x.shape())?;
        let n = self.kernel.len();
        let (i3, o3) = (to3(&x.shape()[2..], 1), to3(&out[2..], 1));
        let (k3, s3, d3) = (
            to3(&self.kernel, 1),
            to3(&self.strides, 1),
            to3(&self.dilations, 1),
        );
        let (pb, pe) = (to3(&self.pads[..n], 0), to3(&self.pads[n..], 0));
        let sp: [Vec<Span>; 3] =
            std::array::from_fn(|a| spans(i3[a], o3[a], k3[a], s3[a], d3[a], (pb[a], pe[a])));
        let (isz, osz) = (i3.iter().product::<usize>(), o3.iter().product::<usize>());
        let mut y = vec![self.kind.empty(); checked_len(&out)?];
        if isz == 0 {
            return Ok(vec![output(&out, y)?]);
        }
        let xs = slice(x);
        let (sizes, w) = ((isz, osz, i3, d3), (k3[2], s3[2], pb[2]));
        match self.kind {
            PoolKind::Max => fold(&xs, &mut y, &sp, sizes, w, |m, v| if v > m { v } else { m }),
            PoolKind::Avg => {
                fold(&xs, &mut y, &sp, sizes, w, |s, v| s + v);
                let cip = self.count_include_pad;
                for yp in y.chunks_exact_mut(osz) {
                    let mut yi = yp.iter_mut();
                    for a in &sp[0] {
                        for b in &sp[1] {
                            for (c, v) in sp[2].iter().zip(&mut yi) {
                                let div = if cip {
                                    a.padded * b.padded * c.padded
                                } else {
                                    a.count * b.count * c.count
                                };
                                *v = if div == 0 { 0.0 } else { *v / div as f32 };
                            }
                        }
                    }
                }
            }
        }
        Ok(vec![output(&out, y)?])
    }

    fn flops(&self, _inputs: &[Option<&Fact>], outputs: &[Fact]) -> u64 {
        let per_out = self.kernel.iter().product::<usize>() as u64;
        outputs.first().map_or(0, |y| y.len() as u64 * per_out)
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}

/// A pool over all spatial axes (ONNX `GlobalMaxPool`, `GlobalAveragePool`),
/// which stay as 1s.
#[derive(Clone, Debug, PartialEq)]
pub struct GlobalPool {
    /// Max or average.
    pub kind: PoolKind,
}

impl GlobalPool {
    fn out_dims(x: &[usize]) -> Result<Vec<usize>, String> {
        if x.len() < 3 {
            return Err(format!(
                "input X must be [N, C, spatial...], got {}",
                fmt_dims(x)
            ));
        }
        let mut out = vec![1; x.len()];
        out[..2].copy_from_slice(&x[..2]);
        Ok(out)
    }
}

impl Op for GlobalPool {
    fn infer(&self, inputs: &[Option<&Fact>]) -> Result<Vec<Fact>, String> {
        let x = float_fact(inputs, 0, "X")?;
        Ok(vec![like(x, Self::out_dims(&x.dims)?)?])
    }

    fn eval(&self, inputs: &[Option<&Data>]) -> Result<Vec<Data>, String> {
        let x = float_data(inputs, 0)?;
        let out = Self::out_dims(x.shape())?;
        let plane = x.shape()[2..].iter().product::<usize>();
        let mut y = vec![self.kind.empty(); out[0] * out[1]];
        if plane > 0 {
            let xs = slice(x);
            for (p, v) in xs.chunks_exact(plane).zip(&mut y) {
                *v = match self.kind {
                    PoolKind::Max => p.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v)),
                    PoolKind::Avg => p.iter().sum::<f32>() / plane as f32,
                };
            }
        }
        Ok(vec![output(&out, y)?])
    }

    fn flops(&self, inputs: &[Option<&Fact>], _outputs: &[Fact]) -> u64 {
        inputs
            .first()
            .copied()
            .flatten()
            .map_or(0, |x| x.len() as u64)
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}

fn build(ctx: &Ctx, kind: PoolKind) -> Result<Box<dyn Op>, String> {
    if kind == PoolKind::Max && ctx.outputs > 1 {
        return Err("MaxPool's second output (Indices) is not supported".into());
    }
    let x = ctx.required(0)?;
    let n = spatial_rank("input X", &x.dims)?;
    let ks = required(ctx.attrs.ints("kernel_shape"), "kernel_shape")?;
    let kernel = checked_list("kernel_shape", &ks, n, 1)?;
    let strides = list(ctx, "strides", n, 1, 1)?;
    let dilations = list(ctx, "dilations", n, 1, 1)?;
    let auto = auto_pad(ctx)?;
    let pads = resolve_pads(ctx, auto, &x.dims[2..], &kernel, &strides, &dilations)?;
    if auto == AutoPad::NotSet {
        for a in 0..2 * n {
            if pads[a] >= kernel[a % n] {
                return Err(format!(
                    "attribute pads {pads:?} must be smaller than kernel_shape {ks:?} \
                     (pad {} on spatial axis {})",
                    pads[a],
                    a % n
                ));
            }
        }
    }
    let op = Pool {
        kind,
        kernel,
        strides,
        pads,
        dilations,
        ceil_mode: flag(ctx, "ceil_mode")?,
        count_include_pad: kind == PoolKind::Avg && flag(ctx, "count_include_pad")?,
    };
    op.infer(ctx.inputs)?;
    Ok(Box::new(op))
}

/// Builds `MaxPool` (the Indices output refused, `storage_order` ignored).
pub(super) fn build_max(ctx: &Ctx) -> Result<Box<dyn Op>, String> {
    build(ctx, PoolKind::Max)
}

/// Builds `AveragePool`.
pub(super) fn build_avg(ctx: &Ctx) -> Result<Box<dyn Op>, String> {
    build(ctx, PoolKind::Avg)
}

fn build_global(ctx: &Ctx, kind: PoolKind) -> Result<Box<dyn Op>, String> {
    let op = GlobalPool { kind };
    op.infer(ctx.inputs)?;
    Ok(Box::new(op))
}

/// Builds `GlobalMaxPool`.
pub(super) fn build_global_max(ctx: &Ctx) -> Result<Box<dyn Op>, String> {
    build_global(ctx, PoolKind::Max)
}

/// Builds `GlobalAveragePool`.
pub(super) fn build_global_avg(ctx: &Ctx) -> Result<Box<dyn Op>, String> {
    build_global(ctx, PoolKind::Avg)
}

#[cfg(test)]
mod tests {
    use ndarray::{ArrayD, IxDyn};
    use proptest::prelude::*;

    use super::super::super::super::proto::AttributeProto;
    use super::super::super::testing::{
        In, assert_close, build, f32s, int, ints, run, run_n, string, values,
    };
    use super::super::tests::rand;
    use super::*;

    fn as_i64(v: &[usize]) -> Vec<i64> {
        v.iter().map(|&u| u as i64).collect()
    }

    /// Direct pool, the output length from the ONNX formula (as onnxruntime
    /// computes it, in floats, then dropping a window that starts in the
    /// end padding).
    fn naive_pool(x: &ArrayD<f32>, p: &Pool) -> ArrayD<f32> {
        let n = p.kernel.len();
        let xs = x.shape();
        let mut out = xs[..2].to_vec();
        for a in 0..n {
            let span = (xs[2 + a] + p.pads[a] + p.pads[n + a]
                - (p.kernel[a] - 1) * p.dilations[a]
                - 1) as f32;
            let s = p.strides[a];
            let mut o = if p.ceil_mode {
                (span / s as f32).ceil()
            } else {
                (span / s as f32).floor()
            } as usize
                + 1;
            if p.ceil_mode && (o - 1) * s >= xs[2 + a] + p.pads[a] {
                o -= 1;
            }
            out.push(o);
        }
        ArrayD::from_shape_fn(IxDyn(&out), |o| {
            let (mut acc, mut real, mut padded) = (p.kind.empty(), 0, 0);
            for k in ndarray::indices(IxDyn(&p.kernel)) {
                let mut xi = vec![o[0], o[1]];
                let (mut inside, mut in_pad) = (true, true);
                for a in 0..n {
                    let pos = (o[2 + a] * p.strides[a] + k[a] * p.dilations[a]) as isize
                        - p.pads[a] as isize;
                    inside &= (0..xs[2 + a] as isize).contains(&pos);
                    in_pad &= pos < (xs[2 + a] + p.pads[n + a]) as isize;
                    xi.push(pos.max(0) as usize);
                }
                padded += in_pad as usize;
                if inside {
                    real += 1;
                    let v = x[IxDyn(&xi)];
                    acc = if p.kind == PoolKind::Max {
                        acc.max(v)
                    } else {
                        acc + v
                    };
                }
            }
            match p.kind {
                PoolKind::Max => acc,
                PoolKind::Avg => {
                    let div = if p.count_include_pad { padded } else { real };
                    if div == 0 { 0.0 } else { acc / div as f32 }
                }
            }
        })
    }

    fn attrs(p: &Pool) -> Vec<AttributeProto> {
        vec![
            ints("kernel_shape", &as_i64(&p.kernel)),
            ints("strides", &as_i64(&p.strides)),
            ints("dilations", &as_i64(&p.dilations)),
            ints("pads", &as_i64(&p.pads)),
            int("ceil_mode", p.ceil_mode as i64),
            int("count_include_pad", p.count_include_pad as i64),
        ]
    }

    fn op_type(kind: PoolKind) -> &'static str {
        match kind {
            PoolKind::Max => "MaxPool",
            PoolKind::Avg => "AveragePool",
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(300))]

        #[test]
        fn pool_matches_naive(
            max in any::<bool>(), ceil_mode in any::<bool>(), cip in any::<bool>(),
            batch in 1usize..=2, c in 1usize..=3,
            axes in proptest::collection::vec(
                (1usize..=3, 1usize..=3, 1usize..=2, 0usize..=2, 0usize..=2, 0usize..=4), 1..=3),
            seed in any::<u64>(),
        ) {
            let kind = if max { PoolKind::Max } else { PoolKind::Avg };
            let mut x = vec![batch, c];
            let mut p = Pool {
                kind, kernel: vec![], strides: vec![], pads: vec![], dilations: vec![],
                ceil_mode, count_include_pad: cip && !max,
            };
            let mut ends = vec![];
            for &(k, s, d, pb, pe, extra) in &axes {
                let (pb, pe) = (pb.min(k - 1), pe.min(k - 1));
                x.push(((k - 1) * d + 1 + extra).saturating_sub(pb + pe).max(1));
                p.kernel.push(k);
                p.strides.push(s);
                p.dilations.push(d);
                p.pads.push(pb);
                ends.push(pe);
            }
            p.pads.extend(ends);
            let len = x.iter().product();
            let xa = ArrayD::from_shape_vec(IxDyn(&x), rand(len, seed)).unwrap();
            let got = run(op_type(kind), 19, &attrs(&p), &[In::Dynamic(Data::F32(xa.clone()))]).unwrap();
            let want = naive_pool(&xa, &p);
            prop_assert_eq!(got[0].dims(), want.shape());
            for (g, w) in values(&got[0]).iter().zip(want.iter()) {
                prop_assert!(g == w || (g - w).abs() <= 1e-5 * (1.0 + w.abs()), "got {}, want {}", g, w);
            }
        }
    }

    fn pool(op: &str, x: &Data, at: &[AttributeProto]) -> Data {
        run(op, 19, at, &[In::Dynamic(x.clone())])
            .unwrap()
            .remove(0)
    }

    #[test]
    fn average_pool_golden() {
        // From onnxruntime 1.32 (the ONNX reference evaluator agrees):
        //   x = np.arange(1, 6 or 7 or 21, dtype=np.float32).reshape(shape)
        //   sess.run(AveragePool(x, **attrs)) for each case below.
        let x5 = f32s(&[1, 1, 5], (1..=5).map(|v| v as f32).collect());
        let x6 = f32s(&[1, 1, 6], (1..=6).map(|v| v as f32).collect());
        let x20 = f32s(&[1, 1, 4, 5], (1..=20).map(|v| v as f32).collect());
        let k = |v: &[i64]| ints("kernel_shape", v);
        let s = |v: &[i64]| ints("strides", v);
        let p = |v: &[i64]| ints("pads", v);
        let ceil = int("ceil_mode", 1);
        let cip = |v| int("count_include_pad", v);
        #[rustfmt::skip]
        let cases: Vec<(&Data, Vec<AttributeProto>, Vec<f32>)> = vec![
            // The last window runs past the input: it counts only what it covers.
            (&x5, vec![k(&[2]), s(&[2]), ceil.clone(), cip(1)], vec![1.5, 3.5, 5.0]),
            (&x5, vec![k(&[3]), s(&[2]), p(&[1, 1]), ceil.clone(), cip(0)], vec![1.5, 3.0, 4.5]),
            (&x5, vec![k(&[3]), s(&[2]), p(&[1, 1]), ceil.clone(), cip(1)], vec![1.0, 3.0, 3.0]),
            (&x5, vec![k(&[3]), s(&[3]), p(&[1, 0]), ceil.clone(), cip(1)], vec![1.0, 4.0]),
            // A window starting in the end padding is dropped.
            (&x6, vec![k(&[3]), s(&[2]), p(&[2, 2]), ceil.clone(), cip(1)], vec![1.0 / 3.0, 2.0, 4.0, 11.0 / 3.0]),
            (&x6, vec![k(&[3]), s(&[2]), p(&[2, 2]), ceil.clone(), cip(0)], vec![1.0, 2.0, 4.0, 5.5]),
            // Dilated.
            (&x5, vec![k(&[2]), s(&[1]), ints("dilations", &[2]), p(&[1, 1]), cip(1)], vec![1.0, 2.0, 3.0, 4.0, 2.0]),
            (&x6, vec![k(&[2]), s(&[2]), ints("dilations", &[2]), ceil.clone(), cip(1)], vec![2.0, 4.0, 5.0]),
            // SAME: odd padding at the end (UPPER) or the begin (LOWER).
            (&x6, vec![k(&[2]), s(&[1]), string("auto_pad", "SAME_UPPER"), cip(1)], vec![1.5, 2.5, 3.5, 4.5, 5.5, 3.0]),
            (&x6, vec![k(&[2]), s(&[1]), string("auto_pad", "SAME_LOWER"), cip(1)], vec![0.5, 1.5, 2.5, 3.5, 4.5, 5.5]),
            (&x6, vec![k(&[4]), s(&[3]), string("auto_pad", "SAME_UPPER"), cip(1)], vec![2.5, 3.75]),
            (&x6, vec![k(&[4]), s(&[3]), string("auto_pad", "SAME_LOWER"), cip(0)], vec![2.0, 4.5]),
            (&x6, vec![k(&[3]), s(&[2]), string("auto_pad", "SAME_UPPER"), ceil.clone(), cip(1)], vec![2.0, 4.0, 11.0 / 3.0]),
            (&x6, vec![k(&[2]), s(&[3]), string("auto_pad", "VALID"), ceil.clone()], vec![1.5, 4.5]),
            // 2-D.
            (&x20, vec![k(&[3, 3]), s(&[2, 2]), p(&[1, 1, 1, 1]), ceil.clone(), cip(0)],
             vec![4.0, 5.5, 7.0, 11.5, 13.0, 14.5, 16.5, 18.0, 19.5]),
            (&x20, vec![k(&[3, 3]), s(&[2, 2]), p(&[1, 1, 1, 1]), ceil.clone(), cip(1)],
             vec![16.0 / 9.0, 33.0 / 9.0, 28.0 / 9.0, 23.0 / 3.0, 13.0, 29.0 / 3.0, 5.5, 9.0, 6.5]),
            (&x20, vec![k(&[2, 3]), s(&[2, 2]), ints("dilations", &[1, 2]), p(&[1, 0, 1, 1]), ceil.clone(), cip(1)],
             vec![1.5, 2.0, 10.5, 11.5, 9.0, 9.5]),
        ];
        for (x, at, want) in cases {
            let got = pool("AveragePool", x, &at);
            assert_close(&values(&got), &want, 1e-6);
        }
        // MaxPool, ceil mode with a begin pad, and SAME_LOWER (on -x).
        let neg = Data::F32(-x20.f32().unwrap());
        let got = pool(
            "MaxPool",
            &neg,
            &[k(&[2, 2]), s(&[2, 2]), ceil.clone(), p(&[1, 0, 0, 0])],
        );
        assert_eq!(
            values(&got),
            [-1., -3., -5., -6., -8., -10., -16., -18., -20.]
        );
        let got = pool(
            "MaxPool",
            &neg,
            &[k(&[2, 2]), s(&[2, 2]), string("auto_pad", "SAME_LOWER")],
        );
        assert_eq!(
            (got.dims(), &values(&got)[..]),
            (&[1, 1, 2, 3][..], &[-1., -2., -4., -11., -12., -14.][..])
        );
    }

    #[test]
    fn same_with_dilation_follows_the_spec() {
        // The spec pads for the dilated window: out = ceil(5 / 1), total
        // (5 - 1) + 3 - 5 = 2. (onnxruntime pads for the undilated kernel
        // and gives 4 cells; the reference evaluator gives 5 but shifted.)
        let x = f32s(&[1, 1, 5], (1..=5).map(|v| v as f32).collect());
        let at = [
            ints("kernel_shape", &[2]),
            ints("dilations", &[2]),
            string("auto_pad", "SAME_UPPER"),
        ];
        let op = build("AveragePool", 19, &at, &[In::Dynamic(x.clone())], 1).unwrap();
        assert_eq!(op.as_any().downcast_ref::<Pool>().unwrap().pads, [1, 1]);
        let got = pool("AveragePool", &x, &at);
        assert_eq!(values(&got), [2.0, 2.0, 3.0, 4.0, 4.0]);
    }

    #[test]
    fn global_pools() {
        let x = f32s(&[1, 2, 2, 2], vec![1., 2., 3., 6., -1., -2., -3., -4.]);
        let got = run("GlobalAveragePool", 13, &[], &[In::Dynamic(x.clone())]).unwrap();
        assert_eq!(
            (got[0].dims(), values(&got[0])),
            (&[1, 2, 1, 1][..], vec![3.0, -2.5])
        );
        let got = run("GlobalMaxPool", 13, &[], &[In::Dynamic(x)]).unwrap();
        assert_eq!(values(&got[0]), [6.0, -1.0]);
        let x = f32s(&[2, 1, 3], vec![1., 2., 3., 4., 5., 9.]);
        let got = run("GlobalAveragePool", 13, &[], &[In::Dynamic(x)]).unwrap();
        assert_eq!(
            (got[0].dims(), values(&got[0])),
            (&[2, 1, 1][..], vec![2.0, 6.0])
        );
        let x = f32s(&[2, 3], vec![0.0; 6]);
        let err = run("GlobalMaxPool", 13, &[], &[In::Dynamic(x)]).unwrap_err();
        assert!(err.contains("[N, C, spatial...]"), "{err}");
    }

    #[test]
    fn errors_and_flops() {
        let x = In::Dynamic(f32s(&[1, 1, 4, 4], vec![0.0; 16]));
        let k2 = ints("kernel_shape", &[2, 2]);
        let err = run_n(
            "MaxPool",
            12,
            std::slice::from_ref(&k2),
            std::slice::from_ref(&x),
            2,
        )
        .unwrap_err();
        assert!(err.contains("Indices) is not supported"), "{err}");
        let err = run("MaxPool", 12, &[], std::slice::from_ref(&x)).unwrap_err();
        assert!(err.contains("kernel_shape is required"), "{err}");
        let err = run(
            "MaxPool",
            12,
            &[ints("kernel_shape", &[2])],
            std::slice::from_ref(&x),
        )
        .unwrap_err();
        assert!(err.contains("kernel_shape has 1 values, want 2"), "{err}");
        let err = run(
            "AveragePool",
            12,
            &[k2.clone(), ints("pads", &[0, 2, 0, 0])],
            std::slice::from_ref(&x),
        )
        .unwrap_err();
        assert!(err.contains("must be smaller than kernel_shape"), "{err}");
        let err = run(
            "AveragePool",
            12,
            &[ints("kernel_shape", &[5, 1])],
            std::slice::from_ref(&x),
        )
        .unwrap_err();
        assert!(err.contains("larger than the padded input"), "{err}");
        let err = run(
            "AveragePool",
            12,
            &[k2.clone(), int("ceil_mode", 2)],
            std::slice::from_ref(&x),
        )
        .unwrap_err();
        assert!(err.contains("ceil_mode must be 0 or 1"), "{err}");
        let op = build("AveragePool", 12, &[k2, ints("strides", &[2, 2])], &[x], 1).unwrap();
        let xf = Fact::f32(vec![1, 1, 4, 4]);
        let out = op.infer(&[Some(&xf)]).unwrap();
        assert_eq!(op.flops(&[Some(&xf)], &out), 4 * 4);
        let p = op.as_any().downcast_ref::<Pool>().unwrap();
        assert_eq!(
            (p.kind, &p.pads[..], p.ceil_mode),
            (PoolKind::Avg, &[0; 4][..], false)
        );
    }
}
