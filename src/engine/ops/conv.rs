//! 2-D convolution: im2col + GEMM for dense and grouped convolutions, a
//! direct kernel for depthwise ones. Bias, a folded batch norm and the
//! following activation are applied in the same pass.

use ndarray::Array4;

use super::activation::Activation;
use super::norm::BatchNorm2d;
use super::window_out;
use crate::engine::{Cost, Layer, Shape, ShapeError, Tensor, Workspace, f32_bytes};

/// Stride, padding and groups of a convolution.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Conv2dConfig {
    /// Step between windows, both directions.
    pub stride: usize,
    /// Zeros added on every side.
    pub padding: usize,
    /// Channel groups; `groups == in == out` is a depthwise convolution.
    pub groups: usize,
}

impl Default for Conv2dConfig {
    fn default() -> Self {
        Self {
            stride: 1,
            padding: 0,
            groups: 1,
        }
    }
}

/// A 2-D convolution with optional bias, folded batch norm and activation.
#[derive(Clone, Debug)]
pub struct Conv2d {
    cin: usize,
    cout: usize,
    kh: usize,
    kw: usize,
    cfg: Conv2dConfig,
    /// `[cout][cin / groups][kh][kw]`.
    weight: Vec<f32>,
    /// One per output channel (zeros when the convolution has no bias).
    bias: Vec<f32>,
    act: Activation,
    /// Parameters of the reference definition: weights, plus the bias if it
    /// had one, plus 2 per channel for a folded batch norm.
    ref_params: usize,
}

/// A convolution over `weight` (`[out, in / groups, kh, kw]`) with an optional bias.
///
/// Panics if the weight shape does not fit `cfg.groups` or the bias length
/// is not the number of output channels.
pub fn conv2d(weight: Array4<f32>, bias: Option<Vec<f32>>, cfg: Conv2dConfig) -> Conv2d {
    let (cout, cin_g, kh, kw) = weight.dim();
    assert!(
        cfg.groups >= 1 && cfg.stride >= 1,
        "groups and stride are at least 1"
    );
    assert_eq!(cout % cfg.groups, 0, "output channels divisible by groups");
    let has_bias = bias.is_some();
    let bias = bias.unwrap_or_else(|| vec![0.0; cout]);
    assert_eq!(bias.len(), cout, "one bias per output channel");
    let weight = weight
        .as_standard_layout()
        .iter()
        .copied()
        .collect::<Vec<_>>();
    Conv2d {
        cin: cin_g * cfg.groups,
        cout,
        kh,
        kw,
        cfg,
        ref_params: weight.len() + if has_bias { cout } else { 0 },
        weight,
        bias,
        act: Activation::Identity,
    }
}

impl Conv2d {
    /// The same convolution followed by `act`.
    pub fn with_activation(mut self, act: Activation) -> Self {
        self.act = act;
        self
    }

    /// Folds an inference-mode batch norm that follows this convolution into
    /// its weights and bias: `w' = w * g / sqrt(v + eps)`,
    /// `b' = (b - m) * g / sqrt(v + eps) + beta`.
    pub fn fold_batch_norm(mut self, bn: &BatchNorm2d) -> Self {
        assert_eq!(
            bn.channels(),
            self.cout,
            "batch norm channels match conv outputs"
        );
        let per_out = self.weight.len() / self.cout;
        for o in 0..self.cout {
            let (scale, shift) = bn.scale_shift(o);
            self.weight[o * per_out..(o + 1) * per_out]
                .iter_mut()
                .for_each(|w| *w *= scale);
            self.bias[o] = self.bias[o] * scale + shift;
        }
        self.ref_params += bn.params();
        self
    }

    /// Input channels.
    pub fn in_channels(&self) -> usize {
        self.cin
    }

    /// Output channels.
    pub fn out_channels(&self) -> usize {
        self.cout
    }

    /// Kernel height and width.
    pub fn kernel(&self) -> (usize, usize) {
        (self.kh, self.kw)
    }

    /// Stride, padding, groups.
    pub fn config(&self) -> Conv2dConfig {
        self.cfg
    }

    /// The weights, `[out][in / groups][kh][kw]`.
    pub fn weight(&self) -> &[f32] {
        &self.weight
    }

    /// The bias (folded batch norm included).
    pub fn bias(&self) -> &[f32] {
        &self.bias
    }

    /// The fused activation.
    pub fn activation(&self) -> Activation {
        self.act
    }

    fn is_depthwise(&self) -> bool {
        self.cfg.groups > 1 && self.cfg.groups == self.cin && self.cfg.groups == self.cout
    }

    fn out_hw(&self, h: usize, w: usize) -> Option<(usize, usize)> {
        let oh = window_out(h, self.kh, self.cfg.stride, self.cfg.padding, false)?;
        let ow = window_out(w, self.kw, self.cfg.stride, self.cfg.padding, false)?;
        Some((oh, ow))
    }

    fn forward_depthwise(&self, x: &[f32], s: Shape, y: &mut [f32], oh: usize, ow: usize) {
        let (kh, kw, stride, pad) = (self.kh, self.kw, self.cfg.stride, self.cfg.padding);
        for (c, (xc, yc)) in x
            .chunks_exact(s.h * s.w)
            .zip(y.chunks_exact_mut(oh * ow))
            .enumerate()
        {
            let c = c % self.cout;
            let wk = &self.weight[c * kh * kw..(c + 1) * kh * kw];
            let b = self.bias[c];
            for oy in 0..oh {
                for ox in 0..ow {
                    let mut acc = b;
                    for ky in 0..kh {
                        let iy = (oy * stride + ky) as isize - pad as isize;
                        if iy < 0 || iy >= s.h as isize {
                            continue;
                        }
                        for kx in 0..kw {
                            let ix = (ox * stride + kx) as isize - pad as isize;
                            if ix < 0 || ix >= s.w as isize {
                                continue;
                            }
                            acc += wk[ky * kw + kx] * xc[iy as usize * s.w + ix as usize];
                        }
                    }
                    yc[oy * ow + ox] = self.act.apply_one(acc);
                }
            }
        }
    }

    fn forward_gemm(
        &self,
        x: &[f32],
        s: Shape,
        y: &mut [f32],
        oh: usize,
        ow: usize,
        ws: &mut Workspace,
    ) {
        let g = self.cfg.groups;
        let (cin_g, cout_g) = (self.cin / g, self.cout / g);
        let k = cin_g * self.kh * self.kw;
        let n = oh * ow;
        let direct = self.kh == 1 && self.kw == 1 && self.cfg.stride == 1 && self.cfg.padding == 0;
        for (xi, yi) in x
            .chunks_exact(s.per_image())
            .zip(y.chunks_exact_mut(self.cout * n))
        {
            for gi in 0..g {
                let xg = &xi[gi * cin_g * s.h * s.w..(gi + 1) * cin_g * s.h * s.w];
                let yg = &mut yi[gi * cout_g * n..(gi + 1) * cout_g * n];
                let wg = &self.weight[gi * cout_g * k..(gi + 1) * cout_g * k];
                let cols: &[f32] = if direct {
                    xg
                } else {
                    let buf = ws.scratch(k * n);
                    im2col(
                        xg,
                        cin_g,
                        s.h,
                        s.w,
                        self.kh,
                        self.kw,
                        self.cfg.stride,
                        self.cfg.padding,
                        oh,
                        ow,
                        buf,
                    );
                    buf
                };
                gemm_f32(cout_g, n, k, wg, cols, yg);
                for (o, row) in yg.chunks_exact_mut(n).enumerate() {
                    let b = self.bias[gi * cout_g + o];
                    let act = self.act;
                    row.iter_mut().for_each(|v| *v = act.apply_one(*v + b));
                }
            }
        }
    }
}

/// Lays out the receptive fields of `x` (`[c][h][w]`) as the columns of a
/// `[c * kh * kw][oh * ow]` matrix.
#[allow(clippy::too_many_arguments)]
fn im2col(
    x: &[f32],
    c: usize,
    h: usize,
    w: usize,
    kh: usize,
    kw: usize,
    stride: usize,
    pad: usize,
    oh: usize,
    ow: usize,
    out: &mut [f32],
) {
    let n = oh * ow;
    for ci in 0..c {
        for ky in 0..kh {
            for kx in 0..kw {
                let row = &mut out[((ci * kh + ky) * kw + kx) * n..][..n];
                for oy in 0..oh {
                    let iy = (oy * stride + ky) as isize - pad as isize;
                    let dst = &mut row[oy * ow..(oy + 1) * ow];
                    if iy < 0 || iy >= h as isize {
                        dst.fill(0.0);
                        continue;
                    }
                    let src = &x[ci * h * w + iy as usize * w..][..w];
                    for (ox, d) in dst.iter_mut().enumerate() {
                        let ix = (ox * stride + kx) as isize - pad as isize;
                        *d = if ix < 0 || ix >= w as isize {
                            0.0
                        } else {
                            src[ix as usize]
                        };
                    }
                }
            }
        }
    }
}

/// `c[m][n] = a[m][k] * b[k][n]`, all row-major and contiguous.
pub(crate) fn gemm_f32(m: usize, n: usize, k: usize, a: &[f32], b: &[f32], c: &mut [f32]) {
    assert!(a.len() >= m * k && b.len() >= k * n && c.len() >= m * n);
    // SAFETY: the asserts above keep every index the strides reach inside
    // the three slices; `c` does not alias `a` or `b` (it is borrowed mutably).
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            c.as_mut_ptr(),
            1,
            n as isize,
            false,
            a.as_ptr(),
            1,
            k as isize,
            b.as_ptr(),
            1,
            n as isize,
            0.0,
            1.0,
            false,
            false,
            false,
            gemm::Parallelism::None,
        );
    }
}

impl Layer for Conv2d {
    fn kind(&self) -> &'static str {
        if self.is_depthwise() {
            "dwconv"
        } else {
            "conv"
        }
    }

    fn output_shape(&self, input: Shape) -> Result<Shape, ShapeError> {
        if input.c != self.cin {
            return Err(ShapeError::new(
                self.kind(),
                input,
                format!("expected {} input channels", self.cin),
            ));
        }
        let (oh, ow) = self.out_hw(input.h, input.w).ok_or_else(|| {
            ShapeError::new(
                self.kind(),
                input,
                format!(
                    "{}x{} kernel does not fit with padding {}",
                    self.kh, self.kw, self.cfg.padding
                ),
            )
        })?;
        Ok(Shape::new(input.n, self.cout, oh, ow))
    }

    fn forward(&self, x: &Tensor, ws: &mut Workspace) -> Tensor {
        let s = x.shape();
        let out = self.output_shape(s).expect("conv input shape");
        let mut y = Tensor::zeros(out);
        if self.is_depthwise() {
            self.forward_depthwise(x.as_slice(), s, y.as_mut_slice(), out.h, out.w);
        } else {
            self.forward_gemm(x.as_slice(), s, y.as_mut_slice(), out.h, out.w, ws);
        }
        y
    }

    fn cost(&self, input: Shape) -> Cost {
        let Ok(out) = self.output_shape(input) else {
            return Cost::default();
        };
        let macs = out.len() * (self.cin / self.cfg.groups) * self.kh * self.kw;
        Cost {
            macs: macs as u64,
            flops: 2 * macs as u64 + (out.len() as u64) * (1 + self.act.flops_per_element()),
            weight_bytes: f32_bytes(self.weight.len() + self.bias.len()),
            activation_bytes: f32_bytes(input.len() + out.len()),
        }
    }

    fn params(&self) -> usize {
        self.ref_params
    }
}
