//! Max, average and adaptive average pooling.

use super::window_out;
use crate::engine::{Cost, Layer, Shape, ShapeError, Tensor, Workspace, f32_bytes};

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

    fn out_shape(&self, kind: &'static str, input: Shape) -> Result<Shape, ShapeError> {
        if self.padding * 2 > self.kernel {
            return Err(ShapeError::new(
                kind,
                input,
                "padding larger than half the window",
            ));
        }
        let oh = window_out(input.h, self.kernel, self.stride, self.padding, self.ceil);
        let ow = window_out(input.w, self.kernel, self.stride, self.padding, self.ceil);
        match (oh, ow) {
            (Some(oh), Some(ow)) => Ok(Shape::new(input.n, input.c, oh, ow)),
            _ => Err(ShapeError::new(
                kind,
                input,
                format!("{0}x{0} window does not fit", self.kernel),
            )),
        }
    }
}

/// Max pooling.
#[derive(Clone, Copy, Debug)]
pub struct MaxPool2d(pub PoolConfig);

/// Average pooling (padding counted as zeros, as PyTorch's default).
#[derive(Clone, Copy, Debug)]
pub struct AvgPool2d(pub PoolConfig);

/// Pools every plane over windows and reduces each window with `reduce`,
/// which receives the in-bounds values' iterator and the window's cell count.
fn pool_planes(
    x: &Tensor,
    out: Shape,
    cfg: PoolConfig,
    reduce: impl Fn(&mut dyn Iterator<Item = f32>, usize) -> f32,
) -> Tensor {
    let s = x.shape();
    let mut y = Tensor::zeros(out);
    let (k, st, p) = (
        cfg.kernel as isize,
        cfg.stride as isize,
        cfg.padding as isize,
    );
    let (h, w) = (s.h as isize, s.w as isize);
    for (xp, yp) in x
        .as_slice()
        .chunks_exact(s.h * s.w)
        .zip(y.as_mut_slice().chunks_exact_mut(out.h * out.w))
    {
        for oy in 0..out.h as isize {
            let y0 = oy * st - p;
            let (ya, yb) = (y0.max(0), (y0 + k).min(h));
            for ox in 0..out.w as isize {
                let x0 = ox * st - p;
                let (xa, xb) = (x0.max(0), (x0 + k).min(w));
                // Cells of the window inside the padded input (PyTorch's divisor).
                let cells = ((y0 + k).min(h + p) - y0) * ((x0 + k).min(w + p) - x0);
                let mut it =
                    (ya..yb).flat_map(|iy| (xa..xb).map(move |ix| xp[(iy * w + ix) as usize]));
                yp[(oy * out.w as isize + ox) as usize] = reduce(&mut it, cells as usize);
            }
        }
    }
    y
}

impl Layer for MaxPool2d {
    fn kind(&self) -> &'static str {
        "maxpool"
    }

    fn output_shape(&self, input: Shape) -> Result<Shape, ShapeError> {
        self.0.out_shape(self.kind(), input)
    }

    fn forward(&self, x: &Tensor, _ws: &mut Workspace) -> Tensor {
        let out = self.output_shape(x.shape()).expect("maxpool input shape");
        pool_planes(x, out, self.0, |it, _| it.fold(f32::NEG_INFINITY, f32::max))
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

    fn forward(&self, x: &Tensor, _ws: &mut Workspace) -> Tensor {
        let out = self.output_shape(x.shape()).expect("avgpool input shape");
        pool_planes(x, out, self.0, |it, cells| it.sum::<f32>() / cells as f32)
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
        let mut y = Tensor::zeros(out);
        for (xp, yp) in x
            .as_slice()
            .chunks_exact(s.h * s.w)
            .zip(y.as_mut_slice().chunks_exact_mut(out.h * out.w))
        {
            for oy in 0..out.h {
                let (ya, yb) = (oy * s.h / out.h, ((oy + 1) * s.h).div_ceil(out.h));
                for ox in 0..out.w {
                    let (xa, xb) = (ox * s.w / out.w, ((ox + 1) * s.w).div_ceil(out.w));
                    let sum: f32 = (ya..yb)
                        .flat_map(|iy| &xp[iy * s.w + xa..iy * s.w + xb])
                        .sum();
                    yp[oy * out.w + ox] = sum / ((yb - ya) * (xb - xa)) as f32;
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
