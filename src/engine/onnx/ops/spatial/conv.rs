//! Conv (im2col + sgemm) and ConvTranspose (sgemm + col2im).

use std::any::Any;
use std::ops::Range;

use super::super::super::data::{Data, Fact, checked_len, fmt_dims};
use super::super::util::like;
use super::super::{Ctx, Op};
use super::{
    AutoPad, SCRATCH, auto_pad, checked_list, float_data, float_fact, group, kernel_of, list,
    opt_float_data, opt_float_fact, out_len, output, resolve_pads, sgemm, slice, spatial_rank,
    split, to3, valid, window,
};

/// An N-D convolution (ONNX `Conv`) with explicit padding.
#[derive(Clone, Debug, PartialEq)]
pub struct Conv {
    /// Kernel size per spatial axis (W's spatial dims).
    pub kernel: Vec<usize>,
    /// Stride per spatial axis.
    pub strides: Vec<usize>,
    /// Dilation per spatial axis.
    pub dilations: Vec<usize>,
    /// Padding in ONNX order: every axis's begin, then every axis's end.
    pub pads: Vec<usize>,
    /// Channel groups.
    pub group: usize,
}

/// A transposed N-D convolution (ONNX `ConvTranspose`) with explicit padding.
#[derive(Clone, Debug, PartialEq)]
pub struct ConvTranspose {
    /// Kernel size per spatial axis (W's spatial dims).
    pub kernel: Vec<usize>,
    /// Stride per spatial axis.
    pub strides: Vec<usize>,
    /// Dilation per spatial axis.
    pub dilations: Vec<usize>,
    /// Cells cut from the full output, ONNX order (begins, then ends).
    pub pads: Vec<usize>,
    /// Cells added at the end of each spatial axis (with `output_shape`
    /// or SAME_*, also whatever the target adds past the full output).
    pub output_padding: Vec<usize>,
    /// Channel groups.
    pub group: usize,
}

/// One convolution's sizes with the spatial axes padded to three.
#[derive(Debug)]
struct Geom {
    batch: usize,
    group: usize,
    /// Input channels per group.
    cin: usize,
    /// Output channels per group.
    cout: usize,
    /// X's spatial dims.
    i: [usize; 3],
    /// Y's spatial dims.
    o: [usize; 3],
    k: [usize; 3],
    s: [usize; 3],
    d: [usize; 3],
    /// Begin pads.
    p: [usize; 3],
}

impl Geom {
    /// Offset of tap `k` on spatial axis `a` from the strided position.
    fn off(&self, a: usize, k: usize) -> isize {
        (k * self.d[a]) as isize - self.p[a] as isize
    }
}

/// Checks W's rank and kernel against X and the built kernel.
fn check_w(x: &[usize], w: &[usize], kernel: &[usize]) -> Result<(), String> {
    if w.len() != x.len() {
        return Err(format!(
            "W {} must have the rank of X {}",
            fmt_dims(w),
            fmt_dims(x)
        ));
    }
    if w[2..] != *kernel {
        return Err(format!(
            "W {} has not the kernel {} the op was built for",
            fmt_dims(w),
            fmt_dims(kernel)
        ));
    }
    Ok(())
}

/// Checks the op's lists fit `n` spatial axes (the builders make them so).
fn check_lens(n: usize, lists: &[(&[usize], usize)]) -> Result<(), String> {
    if lists.iter().any(|(l, per)| l.len() != n * per) {
        return Err(format!("the op's attributes do not fit {n} spatial axes"));
    }
    Ok(())
}

/// Checks B is `[m]`.
fn check_b(b: Option<&[usize]>, m: usize) -> Result<(), String> {
    match b {
        Some(b) if b != [m] => Err(format!(
            "B {} must be [{m}], one value per output channel",
            fmt_dims(b)
        )),
        _ => Ok(()),
    }
}

/// `y`'s `[N, M, spatial]` planes set to the bias of their channel, or 0.
fn fill_bias(y: &mut [f32], bias: Option<&[f32]>, m: usize, plane: usize) {
    match bias {
        None => y.fill(0.0),
        Some(b) if plane > 0 => {
            for (i, p) in y.chunks_exact_mut(plane).enumerate() {
                p.fill(b[i % m]);
            }
        }
        Some(_) => {}
    }
}

/// `flops` of a conv-like op: 2 per MAC plus one per output for a bias.
fn conv_flops(macs: u64, inputs: &[Option<&Fact>], out: u64) -> u64 {
    2 * macs
        + if inputs.get(2).copied().flatten().is_some() {
            out
        } else {
            0
        }
}

impl Conv {
    fn geom(
        &self,
        x: &[usize],
        w: &[usize],
        b: Option<&[usize]>,
    ) -> Result<(Geom, Vec<usize>), String> {
        let n = spatial_rank("input X", x)?;
        check_w(x, w, &self.kernel)?;
        check_lens(
            n,
            &[(&self.strides, 1), (&self.dilations, 1), (&self.pads, 2)],
        )?;
        let (c, m, g) = (x[1], w[0], self.group);
        if c % g != 0 {
            return Err(format!("input channels {c} are not divisible by group {g}"));
        }
        if m % g != 0 {
            return Err(format!(
                "output channels {m} (W's first dim) are not divisible by group {g}"
            ));
        }
        if w[1] * g != c {
            return Err(format!(
                "W {} has {} input channels per group, X has {c} channels in {g} group(s)",
                fmt_dims(w),
                w[1]
            ));
        }
        check_b(b, m)?;
        let mut out = vec![x[0], m];
        for a in 0..n {
            let pads = (self.pads[a], self.pads[n + a]);
            let (k, s, d) = (self.kernel[a], self.strides[a], self.dilations[a]);
            out.push(out_len(a, x[2 + a], pads, k, s, d, false)?);
        }
        checked_len(&out)?;
        let geom = Geom {
            batch: x[0],
            group: g,
            cin: c / g,
            cout: m / g,
            i: to3(&x[2..], 1),
            o: to3(&out[2..], 1),
            k: to3(&self.kernel, 1),
            s: to3(&self.strides, 1),
            d: to3(&self.dilations, 1),
            p: to3(&self.pads[..n], 0),
        };
        Ok((geom, out))
    }
}

impl Op for Conv {
    fn infer(&self, inputs: &[Option<&Fact>]) -> Result<Vec<Fact>, String> {
        let x = float_fact(inputs, 0, "X")?;
        let w = float_fact(inputs, 1, "W")?;
        let b = opt_float_fact(inputs, 2, "B")?;
        let (_, out) = self.geom(&x.dims, &w.dims, b.map(|b| &b.dims[..]))?;
        Ok(vec![like(x, out)?])
    }

    fn eval(&self, inputs: &[Option<&Data>]) -> Result<Vec<Data>, String> {
        let (x, w) = (float_data(inputs, 0)?, float_data(inputs, 1)?);
        let b = opt_float_data(inputs, 2)?;
        let (g, out) = self.geom(x.shape(), w.shape(), b.map(|b| b.shape()))?;
        let mut y = vec![0.0; checked_len(&out)?];
        let bias = b.map(slice);
        conv(&slice(x), &slice(w), bias.as_deref(), &mut y, &g, SCRATCH);
        Ok(vec![output(&out, y)?])
    }

    fn flops(&self, inputs: &[Option<&Fact>], outputs: &[Fact]) -> u64 {
        let (Some(w), Some(y)) = (inputs.get(1).copied().flatten(), outputs.first()) else {
            return 0;
        };
        let per_out = w.dims.iter().skip(1).product::<usize>() as u64;
        conv_flops(y.len() as u64 * per_out, inputs, y.len() as u64)
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}

/// `y = W ⊛ x + bias` per batch and group: im2col over as many output
/// rows as fit in `scratch` floats, then one sgemm; 1×1 unstrided convs
/// multiply `x` directly.
fn conv(x: &[f32], w: &[f32], bias: Option<&[f32]>, y: &mut [f32], g: &Geom, scratch: usize) {
    let (isz, osz) = (g.i.iter().product::<usize>(), g.o.iter().product::<usize>());
    let rows = g.cin * g.k.iter().product::<usize>();
    let (cin_all, cout_all) = (g.cin * g.group, g.cout * g.group);
    fill_bias(y, bias, cout_all, osz);
    let pointwise = rows == g.cin && g.s == [1; 3] && g.p == [0; 3] && g.i == g.o;
    let (lines, ow) = (g.o[0] * g.o[1], g.o[2]);
    let step = (scratch / (rows * ow).max(1)).clamp(1, lines.max(1));
    let mut cols = if pointwise {
        Vec::new()
    } else {
        vec![0.0; rows * step * ow]
    };
    for n in 0..g.batch {
        for gi in 0..g.group {
            let xg = &x[(n * cin_all + gi * g.cin) * isz..][..g.cin * isz];
            let wg = &w[gi * g.cout * rows..][..g.cout * rows];
            let yg = &mut y[(n * cout_all + gi * g.cout) * osz..][..g.cout * osz];
            if pointwise {
                sgemm(
                    (g.cout, rows, osz),
                    1.0,
                    wg,
                    (rows, 1),
                    xg,
                    (osz, 1),
                    1.0,
                    yg,
                    osz,
                );
                continue;
            }
            for l0 in (0..lines).step_by(step) {
                let l1 = (l0 + step).min(lines);
                let ncols = (l1 - l0) * ow;
                let cols = &mut cols[..rows * ncols];
                im2col(xg, g, l0..l1, cols);
                let yc = &mut yg[l0 * ow..];
                sgemm(
                    (g.cout, rows, ncols),
                    1.0,
                    wg,
                    (rows, 1),
                    cols,
                    (ncols, 1),
                    1.0,
                    yc,
                    osz,
                );
            }
        }
    }
}

/// The im2col matrix of one group's input `x` (`[cin, i...]`) for output
/// rows `lines` (each an `(od, oh)` pair of `o[2]` cells): row
/// `(c, kd, kh, kw)`, column the output cell, zero where the tap is padding.
fn im2col(x: &[f32], g: &Geom, lines: Range<usize>, cols: &mut [f32]) {
    let [id, ih, iw] = g.i;
    let [_, oh, ow] = g.o;
    let isz = id * ih * iw;
    let mut dst_rows = cols.chunks_exact_mut(lines.len() * ow);
    for c in 0..g.cin {
        let xc = &x[c * isz..][..isz];
        for kd in 0..g.k[0] {
            for kh in 0..g.k[1] {
                for kw in 0..g.k[2] {
                    let Some(dst) = dst_rows.next() else {
                        return;
                    };
                    let (offd, offh, offw) = (g.off(0, kd), g.off(1, kh), g.off(2, kw));
                    let (lo, hi) = valid(iw, ow, g.s[2], offw);
                    if lo == hi {
                        dst.fill(0.0);
                        continue;
                    }
                    for (line, dl) in lines.clone().zip(dst.chunks_exact_mut(ow)) {
                        let zd = ((line / oh) * g.s[0]) as isize + offd;
                        let zh = ((line % oh) * g.s[1]) as isize + offh;
                        if !(0..id as isize).contains(&zd) || !(0..ih as isize).contains(&zh) {
                            dl.fill(0.0);
                            continue;
                        }
                        let src = &xc[(zd as usize * ih + zh as usize) * iw..][..iw];
                        dl[..lo].fill(0.0);
                        dl[hi..].fill(0.0);
                        let at = |o: usize| (o as isize * g.s[2] as isize + offw) as usize;
                        if g.s[2] == 1 {
                            dl[lo..hi].copy_from_slice(&src[at(lo)..at(hi)]);
                        } else {
                            for (o, v) in (lo..hi).zip(&mut dl[lo..hi]) {
                                *v = src[at(o)];
                            }
                        }
                    }
                }
            }
        }
    }
}

impl ConvTranspose {
    fn geom(
        &self,
        x: &[usize],
        w: &[usize],
        b: Option<&[usize]>,
    ) -> Result<(Geom, Vec<usize>), String> {
        let n = spatial_rank("input X", x)?;
        check_w(x, w, &self.kernel)?;
        let (s, d, p, op) = (
            &self.strides,
            &self.dilations,
            &self.pads,
            &self.output_padding,
        );
        check_lens(n, &[(s, 1), (d, 1), (p, 2), (op, 1)])?;
        let (c, g) = (x[1], self.group);
        if c % g != 0 {
            return Err(format!("input channels {c} are not divisible by group {g}"));
        }
        if w[0] != c {
            return Err(format!(
                "W {} must have X's {c} input channels as its first dim",
                fmt_dims(w)
            ));
        }
        let m = w[1] * g;
        check_b(b, m)?;
        let mut out = vec![x[0], m];
        for a in 0..n {
            let (pb, pe) = (self.pads[a], self.pads[n + a]);
            let full = full_len(
                a,
                x[2 + a],
                self.strides[a],
                self.kernel[a],
                self.dilations[a],
            )? + self.output_padding[a];
            if full <= pb + pe {
                return Err(format!(
                    "pads {pb} + {pe} leave no output of the {full} cells along spatial axis {a}"
                ));
            }
            out.push(full - pb - pe);
        }
        checked_len(&out)?;
        let geom = Geom {
            batch: x[0],
            group: g,
            cin: c / g,
            cout: w[1],
            i: to3(&x[2..], 1),
            o: to3(&out[2..], 1),
            k: to3(&self.kernel, 1),
            s: to3(&self.strides, 1),
            d: to3(&self.dilations, 1),
            p: to3(&self.pads[..n], 0),
        };
        Ok((geom, out))
    }
}

/// Unpadded output length of a transposed conv along spatial axis `a`.
fn full_len(a: usize, input: usize, s: usize, k: usize, d: usize) -> Result<usize, String> {
    if input == 0 {
        return Err(format!("X is empty along spatial axis {a}"));
    }
    Ok(s * (input - 1) + window(k, d))
}

impl Op for ConvTranspose {
    fn infer(&self, inputs: &[Option<&Fact>]) -> Result<Vec<Fact>, String> {
        let x = float_fact(inputs, 0, "X")?;
        let w = float_fact(inputs, 1, "W")?;
        let b = opt_float_fact(inputs, 2, "B")?;
        let (_, out) = self.geom(&x.dims, &w.dims, b.map(|b| &b.dims[..]))?;
        Ok(vec![like(x, out)?])
    }

    fn eval(&self, inputs: &[Option<&Data>]) -> Result<Vec<Data>, String> {
        let (x, w) = (float_data(inputs, 0)?, float_data(inputs, 1)?);
        let b = opt_float_data(inputs, 2)?;
        let (g, out) = self.geom(x.shape(), w.shape(), b.map(|b| b.shape()))?;
        let mut y = vec![0.0; checked_len(&out)?];
        let bias = b.map(slice);
        conv_transpose(&slice(x), &slice(w), bias.as_deref(), &mut y, &g, SCRATCH);
        Ok(vec![output(&out, y)?])
    }

    fn flops(&self, inputs: &[Option<&Fact>], outputs: &[Fact]) -> u64 {
        let (Some(x), Some(w), Some(y)) = (
            inputs.first().copied().flatten(),
            inputs.get(1).copied().flatten(),
            outputs.first(),
        ) else {
            return 0;
        };
        // Every input cell meets every tap of its group's output channels.
        let per_in = w.dims.iter().skip(1).product::<usize>() as u64;
        conv_flops(x.len() as u64 * per_in, inputs, y.len() as u64)
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}

/// `y = Wᵀ ⊛ x + bias` per batch and group: one sgemm into columns for
/// as many input rows as fit in `scratch` floats, scattered into `y` by
/// col2im.
fn conv_transpose(
    x: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
    y: &mut [f32],
    g: &Geom,
    scratch: usize,
) {
    let (isz, osz) = (g.i.iter().product::<usize>(), g.o.iter().product::<usize>());
    let rows = g.cout * g.k.iter().product::<usize>();
    let (cin_all, cout_all) = (g.cin * g.group, g.cout * g.group);
    fill_bias(y, bias, cout_all, osz);
    let (lines, iw) = (g.i[0] * g.i[1], g.i[2]);
    let step = (scratch / (rows * iw).max(1)).clamp(1, lines.max(1));
    let mut cols = vec![0.0; rows * step * iw];
    for n in 0..g.batch {
        for gi in 0..g.group {
            let xg = &x[(n * cin_all + gi * g.cin) * isz..][..g.cin * isz];
            let wg = &w[gi * g.cin * rows..][..g.cin * rows];
            let yg = &mut y[(n * cout_all + gi * g.cout) * osz..][..g.cout * osz];
            for l0 in (0..lines).step_by(step) {
                let l1 = (l0 + step).min(lines);
                let ncols = (l1 - l0) * iw;
                let cols = &mut cols[..rows * ncols];
                let xc = &xg[l0 * iw..];
                sgemm(
                    (rows, g.cin, ncols),
                    1.0,
                    wg,
                    (1, rows),
                    xc,
                    (isz, 1),
                    0.0,
                    cols,
                    ncols,
                );
                col2im(cols, g, l0..l1, yg);
            }
        }
    }
}

/// Adds the columns of input rows `lines` (row `(m, kd, kh, kw)`, column
/// the input cell) into one group's output `y` (`[cout, o...]`).
fn col2im(cols: &[f32], g: &Geom, lines: Range<usize>, y: &mut [f32]) {
    let [od, oh, ow] = g.o;
    let [_, ih, iw] = g.i;
    let osz = od * oh * ow;
    let mut src_rows = cols.chunks_exact(lines.len() * iw);
    for m in 0..g.cout {
        let ym = &mut y[m * osz..][..osz];
        for kd in 0..g.k[0] {
            for kh in 0..g.k[1] {
                for kw in 0..g.k[2] {
                    let Some(src) = src_rows.next() else {
                        return;
                    };
                    let (offd, offh, offw) = (g.off(0, kd), g.off(1, kh), g.off(2, kw));
                    let (lo, hi) = valid(ow, iw, g.s[2], offw);
                    if lo == hi {
                        continue;
                    }
                    for (line, sl) in lines.clone().zip(src.chunks_exact(iw)) {
                        let zd = ((line / ih) * g.s[0]) as isize + offd;
                        let zh = ((line % ih) * g.s[1]) as isize + offh;
                        if !(0..od as isize).contains(&zd) || !(0..oh as isize).contains(&zh) {
                            continue;
                        }
                        let dst = &mut ym[(zd as usize * oh + zh as usize) * ow..][..ow];
                        let at = |i: usize| (i as isize * g.s[2] as isize + offw) as usize;
                        if g.s[2] == 1 {
                            for (d, v) in dst[at(lo)..at(hi)].iter_mut().zip(&sl[lo..hi]) {
                                *d += v;
                            }
                        } else {
                            for i in lo..hi {
                                dst[at(i)] += sl[i];
                            }
                        }
                    }
                }
            }
        }
    }
}

/// A Conv of the attributes Conv and ConvTranspose share (kernel,
/// strides, dilations, group), its pads still empty.
fn common(ctx: &Ctx) -> Result<Conv, String> {
    let (x, w) = (ctx.required(0)?, ctx.required(1)?);
    let n = spatial_rank("input X", &x.dims)?;
    if w.rank() != x.rank() {
        return Err(format!(
            "W {} must have the rank of X {}",
            fmt_dims(&w.dims),
            fmt_dims(&x.dims)
        ));
    }
    let kernel = kernel_of(ctx, &w.dims)?;
    let strides = list(ctx, "strides", n, 1, 1)?;
    let dilations = list(ctx, "dilations", n, 1, 1)?;
    Ok(Conv {
        kernel,
        strides,
        dilations,
        pads: Vec::new(),
        group: group(ctx)?,
    })
}

/// Builds `Conv`.
pub(super) fn build_conv(ctx: &Ctx) -> Result<Box<dyn Op>, String> {
    let mut op = common(ctx)?;
    let input = &ctx.required(0)?.dims[2..];
    op.pads = resolve_pads(
        ctx,
        auto_pad(ctx)?,
        input,
        &op.kernel,
        &op.strides,
        &op.dilations,
    )?;
    op.infer(ctx.inputs)?;
    Ok(Box::new(op))
}

/// Builds `ConvTranspose`: `output_shape` (spatial, or with N and C) or
/// SAME_* (`in * stride`) fix the output and the pads follow the spec
/// (the odd cell cut at the begin, except for SAME_UPPER); a target past
/// the full output grows at the end.
pub(super) fn build_conv_transpose(ctx: &Ctx) -> Result<Box<dyn Op>, String> {
    let Conv {
        kernel,
        strides,
        dilations,
        group,
        ..
    } = common(ctx)?;
    let n = kernel.len();
    let input = &ctx.required(0)?.dims[2..];
    let mut output_padding = list(ctx, "output_padding", n, 0, 0)?;
    for (a, &op) in output_padding.iter().enumerate() {
        let lim = strides[a].max(dilations[a]);
        if op >= lim {
            return Err(format!(
                "attribute output_padding value {op} must be less than the stride or dilation \
                 ({lim}) of spatial axis {a}"
            ));
        }
    }
    let auto = auto_pad(ctx)?;
    let same = matches!(auto, AutoPad::SameUpper | AutoPad::SameLower);
    let target = match ctx.attrs.ints("output_shape")? {
        Some(v) if v.len() == n || v.len() == n + 2 => {
            Some(checked_list("output_shape", &v[v.len() - n..], n, 1)?)
        }
        Some(v) => {
            return Err(format!(
                "attribute output_shape has {} values, want {n} (or {} with N and C)",
                v.len(),
                n + 2
            ));
        }
        None if same => Some(input.iter().zip(&strides).map(|(i, s)| i * s).collect()),
        None => None,
    };
    let pads = match target {
        None if auto == AutoPad::Valid => vec![0; 2 * n],
        None => list(ctx, "pads", 2 * n, 0, 0)?,
        Some(t) => {
            let mut pads = vec![0; 2 * n];
            for a in 0..n {
                let full =
                    full_len(a, input[a], strides[a], kernel[a], dilations[a])? + output_padding[a];
                if full >= t[a] {
                    (pads[a], pads[n + a]) = split(full - t[a], auto == AutoPad::SameUpper);
                } else {
                    output_padding[a] += t[a] - full;
                }
            }
            pads
        }
    };
    let op = ConvTranspose {
        kernel,
        strides,
        dilations,
        pads,
        output_padding,
        group,
    };
    op.infer(ctx.inputs)?;
    Ok(Box::new(op))
}

#[cfg(test)]
mod tests {
    use ndarray::{ArrayD, IxDyn};
    use proptest::prelude::*;

    use super::super::super::super::proto::AttributeProto;
    use super::super::super::testing::{
        In, assert_close, build, f32s, int, ints, run, string, values,
    };
    use super::super::tests::rand;
    use super::*;

    fn as_i64(v: &[usize]) -> Vec<i64> {
        v.iter().map(|&u| u as i64).collect()
    }

    /// Direct convolution: every output cell sums its taps.
    fn naive_conv(
        x: &ArrayD<f32>,
        w: &ArrayD<f32>,
        b: Option<&[f32]>,
        (s, d, p): (&[usize], &[usize], &[usize]),
        group: usize,
    ) -> ArrayD<f32> {
        let n = s.len();
        let (xs, ws) = (x.shape(), w.shape());
        let (cg, mg) = (xs[1] / group, ws[0] / group);
        let mut out = vec![xs[0], ws[0]];
        for a in 0..n {
            out.push((xs[2 + a] + p[a] + p[n + a] - (ws[2 + a] - 1) * d[a] - 1) / s[a] + 1);
        }
        ArrayD::from_shape_fn(IxDyn(&out), |o| {
            let mut acc = b.map_or(0.0, |b| b[o[1]]);
            for ci in 0..cg {
                for k in ndarray::indices(IxDyn(&ws[2..])) {
                    let mut xi = vec![o[0], o[1] / mg * cg + ci];
                    let mut wi = vec![o[1], ci];
                    let mut inside = true;
                    for a in 0..n {
                        let pos = (o[2 + a] * s[a] + k[a] * d[a]) as isize - p[a] as isize;
                        inside &= (0..xs[2 + a] as isize).contains(&pos);
                        xi.push(pos.max(0) as usize);
                        wi.push(k[a]);
                    }
                    if inside {
                        acc += x[IxDyn(&xi)] * w[IxDyn(&wi)];
                    }
                }
            }
            acc
        })
    }

    /// Direct transposed convolution: every input cell scatters its taps.
    fn naive_conv_t(
        x: &ArrayD<f32>,
        w: &ArrayD<f32>,
        b: Option<&[f32]>,
        (s, d, p, op): (&[usize], &[usize], &[usize], &[usize]),
        group: usize,
    ) -> ArrayD<f32> {
        let n = s.len();
        let (xs, ws) = (x.shape(), w.shape());
        let (cg, mg) = (xs[1] / group, ws[1]);
        let mut out = vec![xs[0], mg * group];
        for a in 0..n {
            out.push(s[a] * (xs[2 + a] - 1) + op[a] + (ws[2 + a] - 1) * d[a] + 1 - p[a] - p[n + a]);
        }
        let mut y = ArrayD::from_shape_fn(IxDyn(&out), |o| b.map_or(0.0, |b| b[o[1]]));
        for xi in ndarray::indices(xs) {
            for m in 0..mg {
                for k in ndarray::indices(IxDyn(&ws[2..])) {
                    let mut yi = vec![xi[0], xi[1] / cg * mg + m];
                    let mut wi = vec![xi[1], m];
                    let mut inside = true;
                    for a in 0..n {
                        let pos = (xi[2 + a] * s[a] + k[a] * d[a]) as isize - p[a] as isize;
                        inside &= (0..out[2 + a] as isize).contains(&pos);
                        yi.push(pos.max(0) as usize);
                        wi.push(k[a]);
                    }
                    if inside {
                        y[IxDyn(&yi)] += x[&xi] * w[IxDyn(&wi)];
                    }
                }
            }
        }
        y
    }

    /// Per spatial axis: kernel, stride, dilation, begin pad, end pad, extra input cells.
    type Axis = (usize, usize, usize, usize, usize, usize);

    fn axes() -> impl Strategy<Value = Vec<Axis>> {
        proptest::collection::vec(
            (
                1usize..=3,
                1usize..=3,
                1usize..=2,
                0usize..=2,
                0usize..=2,
                0usize..=4,
            ),
            1..=2,
        )
    }

    struct Case {
        x: Vec<usize>,
        w: Vec<usize>,
        s: Vec<usize>,
        d: Vec<usize>,
        p: Vec<usize>,
    }

    fn case(batch: usize, c: usize, wc: (usize, usize), axes: &[Axis], transposed: bool) -> Case {
        let mut x = vec![batch, c];
        let mut w = vec![wc.0, wc.1];
        let (mut s, mut d, mut pb, mut pe) = (vec![], vec![], vec![], vec![]);
        for &(k, st, dl, b, e, extra) in axes {
            let dk = (k - 1) * dl + 1;
            x.push(if transposed {
                1 + extra
            } else {
                (dk + extra).saturating_sub(b + e).max(1)
            });
            w.push(k);
            s.push(st);
            d.push(dl);
            pb.push(b);
            pe.push(e);
        }
        pb.extend(pe);
        Case { x, w, s, d, p: pb }
    }

    fn attrs(c: &Case, group: usize) -> Vec<AttributeProto> {
        vec![
            ints("kernel_shape", &as_i64(&c.w[2..])),
            ints("strides", &as_i64(&c.s)),
            ints("dilations", &as_i64(&c.d)),
            ints("pads", &as_i64(&c.p)),
            int("group", group as i64),
        ]
    }

    fn arr(dims: &[usize], seed: u64) -> ArrayD<f32> {
        let n = dims.iter().product();
        ArrayD::from_shape_vec(IxDyn(dims), rand(n, seed)).unwrap()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(200))]

        #[test]
        fn conv_matches_naive(
            batch in 1usize..=2, group in 1usize..=3, cg in 1usize..=3, mg in 1usize..=2,
            axes in axes(), bias in any::<bool>(), seed in any::<u64>(),
        ) {
            let c = case(batch, cg * group, (mg * group, cg), &axes, false);
            let (x, w) = (arr(&c.x, seed), arr(&c.w, seed ^ 1));
            let b = rand(mg * group, seed ^ 2);
            let b = bias.then_some(&b[..]);
            let mut ins = vec![In::Dynamic(Data::F32(x.clone())), In::Const(Data::F32(w.clone()))];
            if let Some(b) = b {
                ins.push(In::Const(f32s(&[b.len()], b.to_vec())));
            }
            let got = run("Conv", 11, &attrs(&c, group), &ins).unwrap();
            let want = naive_conv(&x, &w, b, (&c.s, &c.d, &c.p), group);
            prop_assert_eq!(got[0].dims(), want.shape());
            assert_close(&values(&got[0]), want.as_slice().unwrap(), 1e-4);
            // One output row per im2col step.
            let op = build("Conv", 11, &attrs(&c, group), &ins, 1).unwrap();
            let (g, _) = op.as_any().downcast_ref::<Conv>().unwrap().geom(&c.x, &c.w, None).unwrap();
            let mut y = vec![f32::NAN; want.len()];
            conv(x.as_slice().unwrap(), w.as_slice().unwrap(), b, &mut y, &g, 1);
            assert_close(&y, want.as_slice().unwrap(), 1e-4);
        }

        #[test]
        fn conv_transpose_matches_naive(
            batch in 1usize..=2, group in 1usize..=3, cg in 1usize..=2, mg in 1usize..=3,
            axes in axes(), op in 0usize..=2, bias in any::<bool>(), seed in any::<u64>(),
        ) {
            let c = case(batch, cg * group, (cg * group, mg), &axes, true);
            let op: Vec<usize> = c.s.iter().zip(&c.d).map(|(s, d)| op % s.max(d)).collect();
            let full = |a: usize| c.s[a] * (c.x[2 + a] - 1) + op[a] + (c.w[2 + a] - 1) * c.d[a] + 1;
            let n = c.s.len();
            prop_assume!((0..n).all(|a| full(a) > c.p[a] + c.p[n + a]));
            let (x, w) = (arr(&c.x, seed), arr(&c.w, seed ^ 1));
            let b = rand(mg * group, seed ^ 2);
            let b = bias.then_some(&b[..]);
            let mut ins = vec![In::Dynamic(Data::F32(x.clone())), In::Const(Data::F32(w.clone()))];
            if let Some(b) = b {
                ins.push(In::Const(f32s(&[b.len()], b.to_vec())));
            }
            let mut at = attrs(&c, group);
            at.push(ints("output_padding", &as_i64(&op)));
            let got = run("ConvTranspose", 11, &at, &ins).unwrap();
            let want = naive_conv_t(&x, &w, b, (&c.s, &c.d, &c.p, &op), group);
            prop_assert_eq!(got[0].dims(), want.shape());
            assert_close(&values(&got[0]), want.as_slice().unwrap(), 1e-4);
            // One input row per sgemm/col2im step.
            let ct = build("ConvTranspose", 11, &at, &ins, 1).unwrap();
            let (g, _) = ct.as_any().downcast_ref::<ConvTranspose>().unwrap().geom(&c.x, &c.w, None).unwrap();
            let mut y = vec![f32::NAN; want.len()];
            conv_transpose(x.as_slice().unwrap(), w.as_slice().unwrap(), b, &mut y, &g, 1);
            assert_close(&y, want.as_slice().unwrap(), 1e-4);
        }
    }

    #[test]
    fn conv_3d_and_pointwise() {
        let (x, w) = (arr(&[2, 4, 3, 4, 5], 7), arr(&[6, 2, 2, 1, 3], 8));
        let (s, d, p) = ([1, 2, 1], [2, 1, 1], [1, 0, 2, 0, 1, 1]);
        let at = [
            ints("strides", &as_i64(&s)),
            ints("dilations", &as_i64(&d)),
            ints("pads", &as_i64(&p)),
            int("group", 2),
        ];
        let ins = [
            In::Dynamic(Data::F32(x.clone())),
            In::Const(Data::F32(w.clone())),
        ];
        let got = run("Conv", 11, &at, &ins).unwrap();
        let want = naive_conv(&x, &w, None, (&s, &d, &p), 2);
        assert_eq!(got[0].dims(), want.shape());
        assert_close(&values(&got[0]), want.as_slice().unwrap(), 1e-4);
        // 1×1, unstrided: the direct sgemm path, with a bias.
        let (x, w) = (arr(&[2, 3, 4, 5], 9), arr(&[4, 3, 1, 1], 10));
        let b = rand(4, 11);
        let ins = [
            In::Dynamic(Data::F32(x.clone())),
            In::Const(Data::F32(w.clone())),
            In::Const(f32s(&[4], b.clone())),
        ];
        let got = run("Conv", 11, &[], &ins).unwrap();
        let want = naive_conv(&x, &w, Some(&b), (&[1, 1], &[1, 1], &[0; 4]), 1);
        assert_close(&values(&got[0]), want.as_slice().unwrap(), 1e-4);
    }

    fn pads_of(op_type: &str, x: &[usize], w: &[usize], attrs: &[AttributeProto]) -> Vec<usize> {
        let ins = [
            In::Dynamic(f32s(x, vec![0.0; x.iter().product()])),
            In::Const(f32s(w, vec![0.0; w.iter().product()])),
        ];
        let op = build(op_type, 11, attrs, &ins, 1).unwrap();
        if let Some(c) = op.as_any().downcast_ref::<Conv>() {
            c.pads.clone()
        } else {
            op.as_any()
                .downcast_ref::<ConvTranspose>()
                .unwrap()
                .pads
                .clone()
        }
    }

    #[test]
    fn conv_auto_pad() {
        // Odd totals go to the end for SAME_UPPER, to the begin for SAME_LOWER.
        let same = |mode: &str| {
            let at = [string("auto_pad", mode), ints("strides", &[2, 2])];
            pads_of("Conv", &[1, 1, 5, 6], &[1, 1, 2, 3], &at)
        };
        assert_eq!(same("SAME_UPPER"), vec![0, 0, 1, 1]);
        assert_eq!(same("SAME_LOWER"), vec![1, 1, 0, 0]);
        // Dilated: out = ceil(7 / 2) = 4, total = 3 * 2 + 5 - 7 = 4.
        let at = [
            string("auto_pad", "SAME_LOWER"),
            ints("strides", &[2]),
            ints("dilations", &[2]),
            ints("pads", &[9, 9]),
        ];
        assert_eq!(pads_of("Conv", &[1, 1, 7], &[1, 1, 3], &at), vec![2, 2]);
        let at = [string("auto_pad", "VALID"), ints("pads", &[1, 1])];
        assert_eq!(pads_of("Conv", &[1, 1, 7], &[1, 1, 3], &at), vec![0, 0]);
        // Values, as onnxruntime gives them:
        //   x = np.arange(5, dtype=np.float32).reshape(1, 1, 5); w = [[[1, 10]]]
        //   Conv(auto_pad=SAME_UPPER) -> [10, 21, 32, 43, 4]; SAME_LOWER -> [0, 10, 21, 32, 43]
        let x = f32s(&[1, 1, 5], vec![0.0, 1.0, 2.0, 3.0, 4.0]);
        let w = f32s(&[1, 1, 2], vec![1.0, 10.0]);
        for (mode, want) in [
            ("SAME_UPPER", [10.0, 21.0, 32.0, 43.0, 4.0]),
            ("SAME_LOWER", [0.0, 10.0, 21.0, 32.0, 43.0]),
        ] {
            let ins = [In::Dynamic(x.clone()), In::Const(w.clone())];
            let got = run("Conv", 11, &[string("auto_pad", mode)], &ins).unwrap();
            assert_eq!(values(&got[0]), want);
        }
    }

    #[test]
    fn conv_transpose_output_shape_and_auto_pad() {
        // Golden values from onnxruntime 1.32:
        //   x = np.array([[[1, 2, 3]]], np.float32); w = np.array([[[1, 10, 100]]], np.float32)
        //   ConvTranspose(strides=[2], **attrs) for each attrs below.
        let x = f32s(&[1, 1, 3], vec![1.0, 2.0, 3.0]);
        let w = f32s(&[1, 1, 3], vec![1.0, 10.0, 100.0]);
        let cases: Vec<(Vec<AttributeProto>, Vec<f32>)> = vec![
            (vec![], vec![1., 10., 102., 20., 203., 30., 300.]),
            (
                vec![ints("output_padding", &[1])],
                vec![1., 10., 102., 20., 203., 30., 300., 0.],
            ),
            (
                vec![ints("output_shape", &[8])],
                vec![1., 10., 102., 20., 203., 30., 300., 0.],
            ),
            (
                vec![ints("output_shape", &[1, 1, 6])],
                vec![10., 102., 20., 203., 30., 300.],
            ),
            (
                vec![string("auto_pad", "SAME_UPPER")],
                vec![1., 10., 102., 20., 203., 30.],
            ),
            (
                vec![string("auto_pad", "SAME_LOWER")],
                vec![10., 102., 20., 203., 30., 300.],
            ),
            (
                vec![ints("output_shape", &[6]), string("auto_pad", "SAME_UPPER")],
                vec![1., 10., 102., 20., 203., 30.],
            ),
            (
                // output_shape overrides pads; total 3 cut 2 at the begin, 1 at the end.
                vec![
                    ints("pads", &[1, 2]),
                    ints("output_padding", &[1]),
                    ints("output_shape", &[5]),
                ],
                vec![102., 20., 203., 30., 300.],
            ),
            (vec![ints("pads", &[1, 2])], vec![10., 102., 20., 203.]),
        ];
        for (mut at, want) in cases {
            at.push(ints("strides", &[2]));
            let ins = [In::Dynamic(x.clone()), In::Const(w.clone())];
            let got = run("ConvTranspose", 11, &at, &ins).unwrap();
            assert_eq!(values(&got[0]), want, "{at:?}");
        }
        // SAME with a target past the full output (1×1 kernel, stride 2)
        // grows at the end to in * stride as the spec says (onnxruntime
        // clamps the padding at 0 and gives 5 cells).
        let w1 = f32s(&[1, 1, 1], vec![1.0]);
        let ins = [In::Dynamic(x.clone()), In::Const(w1)];
        let at = [ints("strides", &[2]), string("auto_pad", "SAME_UPPER")];
        let got = run("ConvTranspose", 11, &at, &ins).unwrap();
        assert_eq!(values(&got[0]), [1., 0., 2., 0., 3., 0.]);
        let op = build("ConvTranspose", 11, &at, &ins, 1).unwrap();
        let ct = op.as_any().downcast_ref::<ConvTranspose>().unwrap();
        assert_eq!(
            (&ct.pads[..], &ct.output_padding[..]),
            (&[0, 0][..], &[1][..])
        );
        // SAME_LOWER with dilation: total 2 * 2 + 5 - 6 = 3.
        let at = [
            ints("strides", &[2]),
            ints("dilations", &[2]),
            string("auto_pad", "SAME_LOWER"),
        ];
        assert_eq!(
            pads_of("ConvTranspose", &[1, 1, 3], &[1, 1, 3], &at),
            vec![2, 1]
        );
    }

    #[test]
    fn errors() {
        let err =
            |op_type: &str, x: &[usize], w: &[usize], b: Option<usize>, at: &[AttributeProto]| {
                let mut ins = vec![
                    In::Dynamic(f32s(x, vec![0.0; x.iter().product()])),
                    In::Const(f32s(w, vec![0.0; w.iter().product()])),
                ];
                if let Some(b) = b {
                    ins.push(In::Const(f32s(&[b], vec![0.0; b])));
                }
                run(op_type, 11, at, &ins).unwrap_err()
            };
        let g2 = [int("group", 2)];
        assert!(
            err("Conv", &[1, 3, 4, 4], &[2, 1, 1, 1], None, &g2)
                .contains("not divisible by group 2")
        );
        assert!(err("Conv", &[1, 4, 4, 4], &[3, 2, 1, 1], None, &g2).contains("output channels 3"));
        assert!(
            err("Conv", &[1, 4, 4, 4], &[2, 4, 1, 1], None, &g2)
                .contains("4 input channels per group")
        );
        assert!(
            err("Conv", &[1, 1, 2, 2], &[1, 1, 3, 3], None, &[])
                .contains("larger than the padded input")
        );
        assert!(err("Conv", &[1, 1, 4], &[1, 1, 3, 3], None, &[]).contains("rank of X"));
        assert!(err("Conv", &[4, 4], &[1, 1], None, &[]).contains("1 to 3 spatial axes"));
        assert!(
            err("Conv", &[1, 1, 4, 4], &[2, 1, 3, 3], Some(3), &[]).contains("B [3] must be [2]")
        );
        assert!(
            err(
                "Conv",
                &[1, 1, 4, 4],
                &[1, 1, 3, 3],
                None,
                &[ints("kernel_shape", &[3, 2])]
            )
            .contains("kernel_shape [3, 2] does not match")
        );
        assert!(
            err(
                "Conv",
                &[1, 1, 4],
                &[1, 1, 3],
                None,
                &[ints("strides", &[0])]
            )
            .contains("strides value 0")
        );
        assert!(
            err("Conv", &[1, 1, 4], &[1, 1, 3], None, &[ints("pads", &[1])])
                .contains("pads has 1 values")
        );
        assert!(
            err(
                "Conv",
                &[1, 1, 4],
                &[1, 1, 3],
                None,
                &[string("auto_pad", "SAME")]
            )
            .contains("auto_pad \"SAME\"")
        );
        assert!(
            err("Conv", &[1, 1, 4], &[1, 1, 3], None, &[int("group", 0)])
                .contains("group must be positive")
        );
        let s2 = ints("strides", &[2]);
        assert!(
            err(
                "ConvTranspose",
                &[1, 1, 3],
                &[1, 1, 3],
                None,
                &[s2.clone(), ints("output_padding", &[2])]
            )
            .contains("output_padding value 2 must be less than")
        );
        assert!(
            err(
                "ConvTranspose",
                &[1, 1, 3],
                &[1, 1, 3],
                None,
                &[s2.clone(), ints("output_shape", &[1, 6])]
            )
            .contains("output_shape has 2 values")
        );
        assert!(
            err("ConvTranspose", &[1, 2, 3], &[1, 1, 3], None, &[])
                .contains("X's 2 input channels")
        );
        assert!(
            err(
                "ConvTranspose",
                &[1, 1, 1],
                &[1, 1, 1],
                None,
                &[ints("pads", &[1, 0])]
            )
            .contains("leave no output")
        );
        let i = [
            In::Dynamic(super::super::super::testing::i64s(&[1, 1, 3], vec![0; 3])),
            In::Const(f32s(&[1, 1, 1], vec![0.0])),
        ];
        assert!(
            run("Conv", 11, &[], &i)
                .unwrap_err()
                .contains("X must be a float tensor")
        );
    }

    #[test]
    fn flops_count_macs() {
        let ins = [
            In::Dynamic(f32s(&[1, 4, 8, 8], vec![0.0; 256])),
            In::Const(f32s(&[6, 2, 3, 3], vec![0.0; 108])),
            In::Const(f32s(&[6], vec![0.0; 6])),
        ];
        let at = [int("group", 2), ints("pads", &[1, 1, 1, 1])];
        let op = build("Conv", 11, &at, &ins, 1).unwrap();
        let facts = [
            Fact::f32(vec![1, 4, 8, 8]),
            Fact::f32(vec![6, 2, 3, 3]),
            Fact::f32(vec![6]),
        ];
        let refs: Vec<Option<&Fact>> = facts.iter().map(Some).collect();
        let out = op.infer(&refs).unwrap();
        let y = 6 * 8 * 8;
        assert_eq!(op.flops(&refs, &out), 2 * y * 2 * 9 + y);
    }
}
