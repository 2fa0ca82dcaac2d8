//! Max, average and adaptive average pooling.

use super::window_out;
use crate::engine::{Cost, Layer, Shape, ShapeError, Tensor, Workspace, f32_bytes, par_for_each};

/// Window, stride and padding of a pooling layer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PoolConfig {
    /// Square window side.
    pub kernel: usize,
    /// Step between windows.
    pub stride: usize,
    /// Padding on every side (ignored cells: -inf for max; counted as zeros for average).
    pub padding: usize,
    /// Round the output size up rather than down (PyTorch `ceil_mode`).
    pub ceil: bool,
}

impl PoolConfig {
    /// A `kernel` x `kernel` window moving by `stride`, no padding.
    pub fn new(kernel: usize, stride: usize) -> Self {
        Self {
            kernel,
            stride,
            padding: 0,
            ceil: false,
        }
    }

    /// Cells of window `o` (along one axis of length `len`) inside the padded
    /// input: PyTorch's average divisor with `count_include_pad`. A ceil-mode
    /// window can overhang the right padding; those cells do not count.
    fn cells(&self, o: usize, len: usize) -> f32 {
        let start = o * self.stride;
        ((start + self.kernel).min(len + 2 * self.padding) - start) as f32
    }

    fn out_shape(&self, kind: &'static str, input: Shape) -> Result<Shape, ShapeError> {
        let fail = |reason: String| Err(ShapeError::new(kind, input, reason));
        if self.kernel == 0 || self.stride == 0 {
            return fail(format!(
                "kernel {} and stride {} must be at least 1",
                self.kernel, self.stride
            ));
        }
        // PyTorch's rule; it also keeps every window overlapping the input.
        if self.padding * 2 > self.kernel {
            return fail(format!(
                "padding {} larger than half the {}x{} window",
                self.padding, self.kernel, self.kernel
            ));
        }
        let oh = window_out(input.h, self.kernel, self.stride, self.padding, self.ceil);
        let ow = window_out(input.w, self.kernel, self.stride, self.padding, self.ceil);
        match (oh, ow) {
            (Some(oh), Some(ow)) => Ok(Shape::new(input.n, input.c, oh, ow)),
            _ => fail(format!("{0}x{0} window does not fit", self.kernel)),
        }
    }
}

/// Max pooling.
#[derive(Clone, Copy, Debug)]
pub struct MaxPool2d(pub PoolConfig);

/// Average pooling (padding counted as zeros, as PyTorch's default).
#[derive(Clone, Copy, Debug)]
pub struct AvgPool2d(pub PoolConfig);

/// How a pooling layer combines the cells of a window.
trait Reducer {
    /// The value padding cells hold: the identity of `combine`.
    const PAD: f32;
    fn combine(a: f32, b: f32) -> f32;
}

/// Max pooling: padding is -inf, so it never wins.
struct MaxOf;

impl Reducer for MaxOf {
    const PAD: f32 = f32::NEG_INFINITY;
    #[inline(always)]
    fn combine(a: f32, b: f32) -> f32 {
        a.max(b)
    }
}

/// Average pooling sums; padding counts as zeros.
struct SumOf;

impl Reducer for SumOf {
    const PAD: f32 = 0.0;
    #[inline(always)]
    fn combine(a: f32, b: f32) -> f32 {
        a + b
    }
}

/// Pools every plane of `x` into `out` with a separable reduction: for each
/// output row, the window's input rows are combined into one padded row
/// (vertical pass, element-wise over contiguous rows, so it vectorises), then
/// windows slide along that row (horizontal pass). The padded row spans
/// every window, with `R::PAD` in the cells outside the input, so neither
/// pass needs bounds checks per cell. Every window holds at least one input
/// row, as `window_out` and `padding <= kernel / 2` guarantee.
///
/// Returns the reduced values; `AvgPool2d` divides them afterwards.
/// Pools every plane of `x`; with a pool in `ws`, the planes are split
/// into one contiguous run per thread (each plane is computed whole, so
/// the values do not depend on the split).
fn pool_planes<R: Reducer>(x: &Tensor, out: Shape, cfg: PoolConfig, ws: &Workspace) -> Tensor {
    let s = x.shape();
    let mut y = Tensor::zeros(out);
    let planes = s.n * s.c;
    let per = planes.div_ceil(ws.threads()).max(1);
    let runs: Vec<_> = x
        .as_slice()
        .chunks(per * s.h * s.w)
        .zip(y.as_mut_slice().chunks_mut(per * out.h * out.w))
        .collect();
    par_for_each(ws.pool(), runs, |(xs, ys)| {
        pool_run::<R>(xs, s, ys, out, cfg)
    });
    y
}

/// Pools the planes `xs` (of `s`'s height and width) into `ys` (of `out`'s).
fn pool_run<R: Reducer>(xs: &[f32], s: Shape, ys: &mut [f32], out: Shape, cfg: PoolConfig) {
    let (k, st, p) = (cfg.kernel, cfg.stride, cfg.padding);
    // Padded row: `p` cells, the input row, then up to the last window's end.
    let span = (out.w - 1) * st + k;
    let inner = s.w.min(span - p);
    let mut row = vec![R::PAD; span];
    for (xp, yp) in xs
        .chunks_exact(s.h * s.w)
        .zip(ys.chunks_exact_mut(out.h * out.w))
    {
        for (oy, yrow) in yp.chunks_exact_mut(out.w).enumerate() {
            let y0 = (oy * st).saturating_sub(p);
            let y1 = (oy * st + k - p).min(s.h);
            let dst = &mut row[p..p + inner];
            dst.copy_from_slice(&xp[y0 * s.w..][..inner]);
            for iy in y0 + 1..y1 {
                let src = &xp[iy * s.w..][..inner];
                dst.iter_mut()
                    .zip(src)
                    .for_each(|(d, &v)| *d = R::combine(*d, v));
            }
            slide::<R>(&row, k, st, yrow);
        }
    }
}

fn slide<R: Reducer>(row: &[f32], kernel: usize, stride: usize, out: &mut [f32]) {
    fn fixed<R: Reducer, const K: usize, const S: usize>(row: &[f32], out: &mut [f32]) {
        let row = &row[..(out.len() - 1) * S + K];
        for (i, o) in out.iter_mut().enumerate() {
            let w = &row[i * S..i * S + K];
            *o = w[1..].iter().fold(w[0], |a, &b| R::combine(a, b));
        }
    }
    match (kernel, stride) {
        (2, 2) => fixed::<R, 2, 2>(row, out),
        (3, 2) => fixed::<R, 3, 2>(row, out),
        (3, 1) => fixed::<R, 3, 1>(row, out),
        _ => {
            for (i, o) in out.iter_mut().enumerate() {
                let w = &row[i * stride..][..kernel];
                *o = w[1..].iter().fold(w[0], |a, &b| R::combine(a, b));
            }
        }
    }
}

impl Layer for MaxPool2d {
    fn kind(&self) -> &'static str {
        "maxpool"
    }

    fn output_shape(&self, input: Shape) -> Result<Shape, ShapeError> {
        self.0.out_shape(self.kind(), input)
    }

    fn forward(&self, x: &Tensor, ws: &mut Workspace) -> Tensor {
        let out = self.output_shape(x.shape()).expect("maxpool input shape");
        pool_planes::<MaxOf>(x, out, self.0, ws)
    }

    fn cost(&self, input: Shape) -> Cost {
        pool_cost(
            self.output_shape(input),
            input,
            self.0.kernel * self.0.kernel,
        )
    }

    fn params(&self) -> usize {
        0
    }
}

impl Layer for AvgPool2d {
    fn kind(&self) -> &'static str {
        "avgpool"
    }

    fn output_shape(&self, input: Shape) -> Result<Shape, ShapeError> {
        self.0.out_shape(self.kind(), input)
    }

    fn forward(&self, x: &Tensor, ws: &mut Workspace) -> Tensor {
        let out = self.output_shape(x.shape()).expect("avgpool input shape");
        let mut y = pool_planes::<SumOf>(x, out, self.0, ws);
        let s = x.shape();
        let cells_w: Vec<f32> = (0..out.w).map(|ox| self.0.cells(ox, s.w)).collect();
        for plane in y.as_mut_slice().chunks_exact_mut(out.h * out.w) {
            for (oy, yrow) in plane.chunks_exact_mut(out.w).enumerate() {
                let cells_h = self.0.cells(oy, s.h);
                yrow.iter_mut()
                    .zip(&cells_w)
                    .for_each(|(v, cw)| *v /= cells_h * cw);
            }
        }
        y
    }

    fn cost(&self, input: Shape) -> Cost {
        pool_cost(
            self.output_shape(input),
            input,
            self.0.kernel * self.0.kernel,
        )
    }

    fn params(&self) -> usize {
        0
    }
}

/// Sum with eight independent accumulators, so the loop vectorises (one
/// running sum is a dependency chain the compiler may not reorder).
fn sum(xs: &[f32]) -> f32 {
    let mut acc = [0.0f32; 8];
    let chunks = xs.chunks_exact(8);
    let tail: f32 = chunks.remainder().iter().sum();
    for c in chunks {
        acc.iter_mut().zip(c).for_each(|(a, v)| *a += v);
    }
    acc.iter().sum::<f32>() + tail
}

fn pool_cost(out: Result<Shape, ShapeError>, input: Shape, window: usize) -> Cost {
    let Ok(out) = out else {
        return Cost::default();
    };
    Cost {
        macs: 0,
        flops: (out.len() * window) as u64,
        weight_bytes: 0,
        activation_bytes: f32_bytes(input.len() + out.len()),
    }
}

/// Adaptive average pooling to a fixed `out_h` x `out_w` grid (PyTorch's
/// bins: `[floor(i * H / oh), ceil((i + 1) * H / oh))`). `1 x 1` is global
/// average pooling.
#[derive(Clone, Copy, Debug)]
pub struct AdaptiveAvgPool2d {
    /// Output height.
    pub out_h: usize,
    /// Output width.
    pub out_w: usize,
}

impl AdaptiveAvgPool2d {
    /// Global average pooling.
    pub fn global() -> Self {
        Self { out_h: 1, out_w: 1 }
    }
}

impl Layer for AdaptiveAvgPool2d {
    fn kind(&self) -> &'static str {
        if self.out_h == 1 && self.out_w == 1 {
            "gap"
        } else {
            "adaptive_avgpool"
        }
    }

    fn output_shape(&self, input: Shape) -> Result<Shape, ShapeError> {
        if self.out_h == 0 || self.out_w == 0 || input.h == 0 || input.w == 0 {
            return Err(ShapeError::new(
                self.kind(),
                input,
                "empty input or output grid",
            ));
        }
        Ok(Shape::new(input.n, input.c, self.out_h, self.out_w))
    }

    fn forward(&self, x: &Tensor, _ws: &mut Workspace) -> Tensor {
        let s = x.shape();
        let out = self.output_shape(s).expect("adaptive pool input shape");
        if (out.h, out.w) == (s.h, s.w) {
            // Every bin is one cell (VGG's 7x7 pool on a 7x7 map).
            return x.clone();
        }
        let mut y = Tensor::zeros(out);
        let plane = s.h * s.w;
        if (out.h, out.w) == (1, 1) {
            for (v, xp) in y
                .as_mut_slice()
                .iter_mut()
                .zip(x.as_slice().chunks_exact(plane))
            {
                *v = sum(xp) / plane as f32;
            }
            return y;
        }
        let bin =
            |o: usize, outs: usize, len: usize| (o * len / outs, ((o + 1) * len).div_ceil(outs));
        let bins_w: Vec<_> = (0..out.w).map(|ox| bin(ox, out.w, s.w)).collect();
        for (xp, yp) in x
            .as_slice()
            .chunks_exact(plane)
            .zip(y.as_mut_slice().chunks_exact_mut(out.h * out.w))
        {
            for (oy, yrow) in yp.chunks_exact_mut(out.w).enumerate() {
                let (ya, yb) = bin(oy, out.h, s.h);
                for (v, &(xa, xb)) in yrow.iter_mut().zip(&bins_w) {
                    let total: f32 = (ya..yb).map(|iy| sum(&xp[iy * s.w..][xa..xb])).sum();
                    *v = total / ((yb - ya) * (xb - xa)) as f32;
                }
            }
        }
        y
    }

    fn cost(&self, input: Shape) -> Cost {
        let out = Shape::new(input.n, input.c, self.out_h, self.out_w);
        Cost {
            macs: 0,
            flops: input.len() as u64,
            weight_bytes: 0,
            activation_bytes: f32_bytes(input.len() + out.len()),
        }
    }

    fn params(&self) -> usize {
        0
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// PyTorch's output length (floor division, ceil-mode rule), kept apart
    /// from `window_out` on purpose.
    fn torch_len(len: usize, k: usize, s: usize, p: usize, ceil: bool) -> Option<usize> {
        if len == 0 || k == 0 || s == 0 || 2 * p > k {
            return None;
        }
        let (l, k, s, p) = (len as i64, k as i64, s as i64, p as i64);
        let mut out = (l + 2 * p - k + if ceil { s - 1 } else { 0 }).div_euclid(s) + 1;
        if ceil && (out - 1) * s >= l + p {
            out -= 1;
        }
        (out >= 1).then_some(out as usize)
    }

    /// Naive pooling: for each output, visit the `k x k` window cell by cell.
    /// Returns the values and, per output, the sum of |x| over the window
    /// (the scale of its rounding error). `avg` divides by PyTorch's
    /// count_include_pad divisor: the window clipped to the padded input.
    fn reference(x: &Tensor, cfg: PoolConfig, avg: bool) -> Option<(Tensor, Vec<f32>)> {
        let s = x.shape();
        let (k, st, p) = (cfg.kernel, cfg.stride, cfg.padding);
        let oh = torch_len(s.h, k, st, p, cfg.ceil)?;
        let ow = torch_len(s.w, k, st, p, cfg.ceil)?;
        let (k, st, p) = (k as i64, st as i64, p as i64);
        let (h, w) = (s.h as i64, s.w as i64);
        let xa = x.array();
        let mut y = Tensor::zeros(Shape::new(s.n, s.c, oh, ow));
        let mut scale = Vec::new();
        let mut ya = y.view_mut();
        for n in 0..s.n {
            for c in 0..s.c {
                for oy in 0..oh {
                    for ox in 0..ow {
                        let (y0, x0) = (oy as i64 * st - p, ox as i64 * st - p);
                        let mut acc = if avg { 0.0f32 } else { f32::NEG_INFINITY };
                        let mut abs = 0.0f32;
                        for ky in 0..k {
                            for kx in 0..k {
                                let (iy, ix) = (y0 + ky, x0 + kx);
                                if iy < 0 || iy >= h || ix < 0 || ix >= w {
                                    continue;
                                }
                                let v = xa[[n, c, iy as usize, ix as usize]];
                                acc = if avg { acc + v } else { acc.max(v) };
                                abs += v.abs();
                            }
                        }
                        if avg {
                            let cells_y = (y0 + k).min(h + p) - y0;
                            let cells_x = (x0 + k).min(w + p) - x0;
                            let cells = (cells_y * cells_x) as f32;
                            acc /= cells;
                            abs /= cells;
                        }
                        ya[[n, c, oy, ox]] = acc;
                        scale.push(abs);
                    }
                }
            }
        }
        Some((y, scale))
    }

    /// Pools of 2 and 3 threads, built once for all cases.
    fn split_pools() -> &'static [std::sync::Arc<rayon::ThreadPool>] {
        static POOLS: std::sync::OnceLock<Vec<std::sync::Arc<rayon::ThreadPool>>> =
            std::sync::OnceLock::new();
        POOLS.get_or_init(|| {
            [2, 3]
                .iter()
                .map(|&t| {
                    let pool = rayon::ThreadPoolBuilder::new().num_threads(t).build();
                    std::sync::Arc::new(pool.expect("a rayon pool"))
                })
                .collect()
        })
    }

    /// Checks one configuration against the reference (shape, errors and
    /// values); returns whether it produced an output.
    fn check(shape: Shape, cfg: PoolConfig, seed: u64) -> bool {
        let x = Tensor::random(shape, seed);
        let mut ws = Workspace::new();
        let max = MaxPool2d(cfg);
        let avg = AvgPool2d(cfg);
        let Some((want_max, _)) = reference(&x, cfg, false) else {
            assert!(max.output_shape(shape).is_err(), "{cfg:?} on {shape}");
            assert!(avg.output_shape(shape).is_err(), "{cfg:?} on {shape}");
            return false;
        };
        let ctx = format!("{cfg:?} on {shape}");
        assert_eq!(max.output_shape(shape), Ok(want_max.shape()), "{ctx}");
        // Max selects one of its inputs: exact.
        let got = max.forward(&x, &mut ws);
        assert!(got.as_slice().iter().all(|v| v.is_finite()), "{ctx}");
        assert_eq!(got, want_max, "{ctx}");

        // Average: both sides sum at most k*k terms in different orders.
        // The error of an n-term f32 sum is at most (n - 1) * eps * sum|x|
        // for any order, so the two differ by at most 2 * n * eps *
        // sum|x| / cells, plus one rounding of the division each.
        let (want, scale) = reference(&x, cfg, true).expect("same shape as max");
        let got_avg = avg.forward(&x, &mut ws);
        // Split over 2 and 3 threads (uneven runs of planes): the same bits.
        for pool in split_pools() {
            let mut pws = Workspace::with_pool(pool.clone());
            assert_eq!(
                max.forward(&x, &mut pws),
                got,
                "{ctx}, {} threads",
                pws.threads()
            );
            assert_eq!(
                avg.forward(&x, &mut pws),
                got_avg,
                "{ctx}, {} threads",
                pws.threads()
            );
        }
        let got = got_avg;
        assert_eq!(got.shape(), want.shape(), "{ctx}");
        let n = (cfg.kernel * cfg.kernel) as f32;
        for ((g, w), s) in got.as_slice().iter().zip(want.as_slice()).zip(&scale) {
            let tol = 2.0 * n * f32::EPSILON * s + 2.0 * f32::EPSILON * w.abs();
            assert!((g - w).abs() <= tol, "{ctx}: {g} vs {w} (tol {tol})");
        }
        true
    }

    #[test]
    fn pools_match_reference_over_configs() {
        let mut checked = 0;
        let mut seed = 0;
        for kernel in [1, 2, 3, 5, 7] {
            for stride in [1, 2, 3] {
                let mut paddings = vec![0, 1, kernel / 2];
                paddings.dedup();
                for padding in paddings {
                    for ceil in [false, true] {
                        for (n, h, w) in [(1, 7, 9), (2, 11, 5), (1, 13, 13), (2, 6, 3), (1, 1, 4)]
                        {
                            let cfg = PoolConfig {
                                kernel,
                                stride,
                                padding,
                                ceil,
                            };
                            seed += 1;
                            checked += usize::from(check(Shape::new(n, 3, h, w), cfg, seed));
                        }
                    }
                }
            }
        }
        // Most configurations fit; the ones that do not were checked to error.
        assert!(
            checked > 200,
            "only {checked} configurations produced output"
        );
    }

    #[test]
    fn pools_match_reference_on_model_shapes() {
        let stem = PoolConfig {
            kernel: 3,
            stride: 2,
            padding: 1,
            ceil: false,
        };
        assert!(check(Shape::new(1, 4, 112, 112), stem, 1));
        assert!(check(Shape::new(1, 4, 56, 56), PoolConfig::new(2, 2), 2));
        assert!(check(Shape::new(1, 4, 55, 55), PoolConfig::new(3, 2), 3));
    }

    #[test]
    fn known_values() {
        let mut ws = Workspace::new();
        let x = Tensor::from_vec(Shape::new(1, 1, 4, 4), (0..16).map(|v| v as f32).collect());
        let y = MaxPool2d(PoolConfig::new(2, 2)).forward(&x, &mut ws);
        assert_eq!(y.as_slice(), &[5.0, 7.0, 13.0, 15.0]);
        // count_include_pad: a corner window of a padded 3x3 pool sees 4 of
        // its 9 cells, an edge window 6, the inner one all 9.
        let ones = Tensor::from_vec(Shape::new(1, 1, 4, 4), vec![1.0; 16]);
        let cfg = PoolConfig {
            kernel: 3,
            stride: 2,
            padding: 1,
            ceil: false,
        };
        let y = AvgPool2d(cfg).forward(&ones, &mut ws);
        assert_eq!(y.as_slice(), &[4.0 / 9.0, 6.0 / 9.0, 6.0 / 9.0, 1.0]);
        // A ceil-mode window hanging off the right edge divides by the
        // cells inside the input only: all ones stay ones.
        let ones = Tensor::from_vec(Shape::new(1, 1, 3, 3), vec![1.0; 9]);
        let cfg = PoolConfig {
            ceil: true,
            ..PoolConfig::new(2, 2)
        };
        let y = AvgPool2d(cfg).forward(&ones, &mut ws);
        assert_eq!(y.as_slice(), &[1.0; 4]);
    }

    /// Naive adaptive average pool with PyTorch's bins
    /// `[floor(i * H / oh), ceil((i + 1) * H / oh))`; also returns the mean
    /// of |x| per bin, the scale of its rounding error.
    fn adaptive_reference(x: &Tensor, oh: usize, ow: usize) -> (Tensor, Vec<f32>) {
        let s = x.shape();
        let xa = x.array();
        let mut y = Tensor::zeros(Shape::new(s.n, s.c, oh, ow));
        let mut scale = Vec::new();
        let mut ya = y.view_mut();
        for n in 0..s.n {
            for c in 0..s.c {
                for oy in 0..oh {
                    let (y0, y1) = (oy * s.h / oh, ((oy + 1) * s.h).div_ceil(oh));
                    for ox in 0..ow {
                        let (x0, x1) = (ox * s.w / ow, ((ox + 1) * s.w).div_ceil(ow));
                        let (mut sum, mut abs) = (0.0f32, 0.0f32);
                        for iy in y0..y1 {
                            for ix in x0..x1 {
                                sum += xa[[n, c, iy, ix]];
                                abs += xa[[n, c, iy, ix]].abs();
                            }
                        }
                        let cells = ((y1 - y0) * (x1 - x0)) as f32;
                        ya[[n, c, oy, ox]] = sum / cells;
                        scale.push(abs / cells);
                    }
                }
            }
        }
        (y, scale)
    }

    #[test]
    fn adaptive_matches_reference() {
        let mut ws = Workspace::new();
        let mut seed = 100;
        for (h, w) in [(7, 7), (13, 9), (5, 11), (14, 14), (6, 6), (1, 3)] {
            for (oh, ow) in [(1, 1), (7, 7), (3, 5), (6, 6), (2, 3)] {
                for n in [1, 2] {
                    seed += 1;
                    let x = Tensor::random(Shape::new(n, 3, h, w), seed);
                    let pool = AdaptiveAvgPool2d {
                        out_h: oh,
                        out_w: ow,
                    };
                    let (want, scale) = adaptive_reference(&x, oh, ow);
                    assert_eq!(pool.output_shape(x.shape()), Ok(want.shape()));
                    let got = pool.forward(&x, &mut ws);
                    assert_eq!(got.shape(), want.shape());
                    // Sums of at most h*w terms in different orders: as for
                    // average pooling, 2 * n * eps * mean|x| plus the division.
                    let terms = (h.div_ceil(oh) + 1) * (w.div_ceil(ow) + 1);
                    for ((g, r), s) in got.as_slice().iter().zip(want.as_slice()).zip(&scale) {
                        let tol =
                            2.0 * terms as f32 * f32::EPSILON * s + 2.0 * f32::EPSILON * r.abs();
                        assert!((g - r).abs() <= tol, "{h}x{w} -> {oh}x{ow}: {g} vs {r}");
                    }
                }
            }
        }
        // A pool to the input's own size copies it (each bin is one cell).
        let x = Tensor::random(Shape::new(1, 2, 6, 6), 9);
        let same = AdaptiveAvgPool2d { out_h: 6, out_w: 6 }.forward(&x, &mut ws);
        assert_eq!(same, x);
    }

    #[test]
    fn adaptive_rejects_empty_grids() {
        let s = Shape::new(1, 2, 4, 4);
        assert!(
            AdaptiveAvgPool2d { out_h: 0, out_w: 2 }
                .output_shape(s)
                .is_err()
        );
        assert!(
            AdaptiveAvgPool2d::global()
                .output_shape(Shape::new(1, 2, 0, 4))
                .is_err()
        );
    }

    #[test]
    fn bad_configs_are_shape_errors() {
        let s = Shape::new(1, 1, 8, 8);
        let bad = [
            PoolConfig::new(0, 1),
            PoolConfig::new(2, 0),
            PoolConfig::new(9, 1),
            PoolConfig {
                padding: 2,
                ..PoolConfig::new(3, 1)
            },
        ];
        for cfg in bad {
            let err = MaxPool2d(cfg).output_shape(s).expect_err("rejected");
            assert_eq!((err.layer, err.input), ("maxpool", s));
            assert!(AvgPool2d(cfg).output_shape(s).is_err());
            assert_eq!(MaxPool2d(cfg).cost(s), Cost::default());
        }
    }

    proptest! {
        #[test]
        fn output_shape_is_pytorch_or_an_error(
            h in 0usize..40,
            w in 0usize..40,
            kernel in 0usize..9,
            stride in 0usize..5,
            padding in 0usize..5,
            ceil: bool,
        ) {
            let cfg = PoolConfig { kernel, stride, padding, ceil };
            let input = Shape::new(2, 3, h, w);
            let want = torch_len(h, kernel, stride, padding, ceil)
                .zip(torch_len(w, kernel, stride, padding, ceil));
            for got in [MaxPool2d(cfg).output_shape(input), AvgPool2d(cfg).output_shape(input)] {
                match (got, want) {
                    (Ok(out), Some((oh, ow))) => {
                        prop_assert_eq!(out, Shape::new(2, 3, oh, ow));
                        prop_assert!(out.h >= 1 && out.w >= 1);
                    }
                    (Err(e), None) => prop_assert_eq!(e.input, input),
                    (got, want) => prop_assert!(false, "{:?}: got {:?}, want {:?}", cfg, got, want),
                }
            }
        }

        #[test]
        fn pools_match_reference_on_random_shapes(
            n in 1usize..3,
            h in 1usize..20,
            w in 1usize..20,
            kernel in 1usize..6,
            stride in 1usize..4,
            padding in 0usize..3,
            ceil: bool,
            seed: u64,
        ) {
            check(Shape::new(n, 2, h, w), PoolConfig { kernel, stride, padding, ceil }, seed);
        }
    }
}
