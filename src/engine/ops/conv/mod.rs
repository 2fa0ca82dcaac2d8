//! 2-D convolution: GEMM for dense and grouped convolutions, Winograd for
//! 3x3 stride-1 ones, a direct kernel for depthwise ones. Bias, a folded
//! batch norm and the following activation are applied in the same pass.
//!
//! Paths, chosen per call:
//!
//! ```text
//! depthwise (groups == in == out)    -> depthwise.rs: rows of outputs in
//!                                       vectors (AVX-512, AVX2 or portable)
//! CPU has AVX-512F, and
//!   3x3 stride 1, groups 1, >= 32    -> winograd.rs: F(2x2, 3x3) over the
//!   channels, > 64 outputs             GEMM below
//!   few output positions (7x7)       -> gemm.rs, gemm_small_n: channels
//!                                       along the vectors
//!   otherwise                        -> gemm.rs, gemm_rows: im2col fused
//!                                       into packing, own micro-kernel
//! otherwise                          -> im2col.rs + the `gemm` crate
//! ```
//!
//! A residual join can ride in the same store ([`Conv2d::forward_add`]):
//! `act((conv + bias) + side)`, the additions in the order a separate
//! pass would make them, so the result is the same bit for bit.
//!
//! Weights are packed for a path the first time it runs (a layer's
//! packing depends on its input size). The GEMM paths first pad and
//! phase-split the input (`im2col::phase_split`; 1x1 convolutions read it
//! as is or subsampled), so a row of outputs reads each tap as one
//! contiguous run, at any stride; the AVX-512 depthwise kernel reads the
//! unpadded input at stride 1 and 2, the others phase-split each plane. The GEMM kernels work on any range of
//! output-channel panels, the unit a later intra-op split would hand to
//! each thread.

mod depthwise;
#[cfg(target_arch = "x86_64")]
mod fused;
#[cfg(target_arch = "x86_64")]
mod gemm;
#[cfg(target_arch = "x86_64")]
mod gemm_bf16;
mod im2col;
#[cfg(target_arch = "x86_64")]
mod winograd;

/// The im2col path's matrix product, public for the kernel benches.
pub use im2col::gemm_f32;
use ndarray::Array4;

use super::activation::{Activation, add_activate};
use super::norm::BatchNorm2d;
use super::window_out;
use crate::engine::isa::Isa;
use crate::engine::{
    Cost, Layer, Precision, Shape, ShapeError, Tensor, Workspace, f32_bytes, par_for_each,
    with_thread_scratch,
};
use im2col::Phases;

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
    /// True when the AVX-512 kernels run this convolution (the CPU has
    /// AVX-512F and it is not depthwise).
    #[cfg(target_arch = "x86_64")]
    avx512: bool,
    /// `weight` packed for the AVX-512 GEMM, on first use. Each packing
    /// below is made only if the input sizes call for it, so a layer holds
    /// one or two copies of its weights, not four.
    #[cfg(target_arch = "x86_64")]
    packed: std::sync::OnceLock<gemm::PackedWeights>,
    /// `weight` transposed for the small-N GEMM, packed on first use (only
    /// layers with few output positions need it).
    #[cfg(target_arch = "x86_64")]
    packed_t: std::sync::OnceLock<gemm::PackedWeightsT>,
    /// Winograd-transformed weights of a 3x3 stride-1 convolution, made on
    /// first use (only for outputs larger than 7x7).
    #[cfg(target_arch = "x86_64")]
    winograd: std::sync::OnceLock<winograd::WinogradWeights>,
    /// The weights rounded to bf16 and packed for the bf16 GEMM, set by
    /// `set_precision(Bf16)`; when present every forward uses them.
    #[cfg(target_arch = "x86_64")]
    bf16: Option<gemm_bf16::PackedWeightsBf16>,
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
    let mut conv = Conv2d {
        cin: cin_g * cfg.groups,
        cout,
        kh,
        kw,
        cfg,
        ref_params: weight.len() + if has_bias { cout } else { 0 },
        weight,
        bias,
        act: Activation::Identity,
        #[cfg(target_arch = "x86_64")]
        avx512: false,
        #[cfg(target_arch = "x86_64")]
        packed: std::sync::OnceLock::new(),
        #[cfg(target_arch = "x86_64")]
        packed_t: std::sync::OnceLock::new(),
        #[cfg(target_arch = "x86_64")]
        winograd: std::sync::OnceLock::new(),
        #[cfg(target_arch = "x86_64")]
        bf16: None,
    };
    conv.pack();
    conv
}

/// Which kernels `forward` may use (tests run every path on one machine).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Path {
    /// The fastest the CPU supports.
    Fast,
    /// Depthwise with AVX2 (where the CPU has it), GEMM as `Portable`.
    #[cfg_attr(not(test), allow(dead_code))]
    Avx2,
    /// Portable code only: im2col + the `gemm` crate, scalar depthwise.
    #[cfg_attr(not(test), allow(dead_code))]
    Portable,
}

impl Conv2d {
    /// `act(self(x) + side)`, the residual join done in the convolution's
    /// final store rather than in a second pass over the output: bit for
    /// bit `forward` followed by adding `side` (laid out as the output) and
    /// applying `act`. The store takes the join only when this
    /// convolution's own activation is the identity and it is not
    /// depthwise; otherwise the join is a second pass.
    ///
    /// Panics if `side` is not as long as the output.
    pub fn forward_add(
        &self,
        x: &Tensor,
        side: &[f32],
        act: Activation,
        ws: &mut Workspace,
    ) -> Tensor {
        self.forward_add_with(x, side, act, ws, Path::Fast)
    }

    fn forward_add_with(
        &self,
        x: &Tensor,
        side: &[f32],
        act: Activation,
        ws: &mut Workspace,
        path: Path,
    ) -> Tensor {
        let out = self.output_shape(x.shape()).expect("conv input shape");
        assert_eq!(side.len(), out.len(), "side operand laid out as the output");
        if self.act != Activation::Identity || self.is_depthwise() {
            let mut y = self.forward_with(x, ws, path, None);
            add_activate(y.as_mut_slice(), side, act);
            return y;
        }
        self.forward_with(x, ws, path, Some((side, act)))
    }

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
        self.pack();
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

    /// Chooses the kernels and drops packings of older weights.
    fn pack(&mut self) {
        #[cfg(target_arch = "x86_64")]
        {
            self.avx512 = !self.is_depthwise() && Isa::active() == Isa::Avx512;
            self.packed = std::sync::OnceLock::new();
            self.packed_t = std::sync::OnceLock::new();
            self.winograd = std::sync::OnceLock::new();
            self.bf16 = None;
        }
    }

    fn out_hw(&self, h: usize, w: usize) -> Option<(usize, usize)> {
        let oh = window_out(h, self.kh, self.cfg.stride, self.cfg.padding, false)?;
        let ow = window_out(w, self.kw, self.cfg.stride, self.cfg.padding, false)?;
        Some((oh, ow))
    }

    /// True when the fast path computes this convolution on `input` with
    /// Winograd F(2x2, 3x3).
    #[cfg(target_arch = "x86_64")]
    fn uses_winograd(&self, input: Shape) -> bool {
        let Ok(out) = self.output_shape(input) else {
            return false;
        };
        self.avx512
            && self.bf16.is_none()
            && (self.kh, self.kw, self.cfg.stride, self.cfg.groups) == (3, 3, 1, 1)
            && winograd::worth_it(self.cin, self.cout, out.h, out.w)
    }

    /// True when the input can be read as the GEMM's B matrix directly: a
    /// 1x1, stride-1, unpadded convolution.
    pub(crate) fn is_pointwise(&self) -> bool {
        self.kh == 1 && self.kw == 1 && self.cfg.stride == 1 && self.cfg.padding == 0
    }

    /// True for a strided 1x1 unpadded convolution (a ResNet shortcut):
    /// its B matrix is the subsampled input.
    fn is_strided_pointwise(&self) -> bool {
        self.kh == 1 && self.kw == 1 && self.cfg.stride > 1 && self.cfg.padding == 0
    }

    /// The convolution on `path`; with `join` (a side operand laid out as
    /// the output, and the activation after it), `act((conv + bias) +
    /// side)`, which needs `self.act` to be the identity and the
    /// convolution not depthwise.
    fn forward_with(
        &self,
        x: &Tensor,
        ws: &mut Workspace,
        path: Path,
        join: Option<(&[f32], Activation)>,
    ) -> Tensor {
        let s = x.shape();
        let out = self.output_shape(s).expect("conv input shape");
        let (oh, ow) = (out.h, out.w);
        if out.is_empty() {
            return Tensor::zeros(out);
        }
        assert!(
            join.is_none() || (self.act == Activation::Identity && !self.is_depthwise()),
            "a join in the store follows an identity, not depthwise, convolution"
        );
        let (side, act) = join.map_or((None, self.act), |(side, act)| (Some(side), act));
        assert!(
            side.is_none_or(|s| s.len() == out.len()),
            "side shaped as the output"
        );
        let ph = Phases::new(s.h, s.w, self.cfg.padding, self.cfg.stride);
        #[cfg(target_arch = "x86_64")]
        if self.avx512 && path == Path::Fast {
            // The GEMM writes every output once, so skip zeroing them.
            let mut y = ws.buffer(out.len());
            let dst = &mut y.spare_capacity_mut()[..out.len()];
            if self.uses_winograd(s) {
                self.forward_winograd(x.as_slice(), s, dst, (oh, ow), (side, act), ws);
            } else {
                self.forward_packed(x.as_slice(), s, ph, dst, (oh, ow), (side, act), ws);
            }
            // SAFETY: `forward_winograd` writes every output of every image
            // (all tiles, clipped to the output), `forward_packed` runs
            // `gemm_rows` or `gemm_small_n` over every panel of every group
            // of every image, which writes all `out.len()` elements.
            unsafe { y.set_len(out.len()) };
            return Tensor::from_vec(out, y);
        }
        if self.is_depthwise() {
            let d = depthwise::Depthwise {
                x: x.as_slice(),
                h: s.h,
                w: s.w,
                pad: self.cfg.padding,
                plane: ph.plane(),
                c: self.cout,
                kh: self.kh,
                kw: self.kw,
                s: ph.s,
                l: ph.l,
                oh,
                ow,
                weight: &self.weight,
                bias: &self.bias,
                act: self.act,
            };
            let isa = match path {
                Path::Fast => Isa::active(),
                Path::Avx2 => Isa::Avx2,
                Path::Portable => Isa::Portable,
            };
            let mut y = ws.buffer(out.len());
            let pool = ws.pool();
            let threads = ws.threads().min(self.cout);
            let (plane_in, plane_out) = (s.h * s.w, oh * ow);
            // Per image, contiguous channel ranges, one per thread.
            let mut work = Vec::new();
            let mut rest = &mut y.spare_capacity_mut()[..out.len()];
            for image in 0..s.n {
                for t in 0..threads {
                    let (c0, c1) = (t * self.cout / threads, (t + 1) * self.cout / threads);
                    let (mine, tail) = rest.split_at_mut((c1 - c0) * plane_out);
                    rest = tail;
                    let base = image * self.cout;
                    let part = depthwise::Depthwise {
                        x: &d.x[(base + c0) * plane_in..(base + c1) * plane_in],
                        c: c1 - c0,
                        weight: &d.weight[c0 * self.kh * self.kw..c1 * self.kh * self.kw],
                        bias: &d.bias[c0..c1],
                        ..d
                    };
                    work.push((part, mine));
                }
            }
            par_for_each(pool, work, |(part, yp)| {
                with_thread_scratch(ph.plane(), |buf| depthwise::depthwise(&part, yp, buf, isa));
            });
            // SAFETY: `depthwise` writes every output of every plane, and the
            // channel ranges above cover every plane of every image.
            unsafe { y.set_len(out.len()) };
            return Tensor::from_vec(out, y);
        }
        let mut y = Tensor::zeros(out);
        self.forward_portable(
            x.as_slice(),
            s,
            ph,
            y.as_mut_slice(),
            (oh, ow),
            (side, act),
            ws,
        );
        y
    }

    #[cfg(target_arch = "x86_64")]
    fn forward_winograd(
        &self,
        x: &[f32],
        s: Shape,
        y: &mut [std::mem::MaybeUninit<f32>],
        (oh, ow): (usize, usize),
        (side, act): (Option<&[f32]>, Activation),
        ws: &mut Workspace,
    ) {
        let wg = self
            .winograd
            .get_or_init(|| winograd::WinogradWeights::new(&self.weight, self.cout, self.cin));
        let t = winograd::Tiling {
            cin: self.cin,
            cout: self.cout,
            h: s.h,
            w: s.w,
            pad: self.cfg.padding,
            oh,
            ow,
        };
        let (scratch, pool) = ws.scratch_and_pool(t.scratch_len());
        let per_out = self.cout * oh * ow;
        for (i, (xi, yi)) in x
            .chunks_exact(s.per_image())
            .zip(y.chunks_exact_mut(per_out))
            .enumerate()
        {
            let si = side.map(|sd| &sd[i * per_out..(i + 1) * per_out]);
            // SAFETY: Winograd is used only when `avx512` is set, which
            // needs AVX-512F.
            unsafe { winograd::forward(wg, &t, xi, &self.bias, act, si, yi, scratch, pool) };
        }
    }

    #[cfg(target_arch = "x86_64")]
    #[allow(clippy::too_many_arguments)]
    fn forward_packed(
        &self,
        x: &[f32],
        s: Shape,
        ph: Phases,
        y: &mut [std::mem::MaybeUninit<f32>],
        (oh, ow): (usize, usize),
        (side, act): (Option<&[f32]>, Activation),
        ws: &mut Workspace,
    ) {
        let g = self.cfg.groups;
        let (cin_g, cout_g) = (self.cin / g, self.cout / g);
        let n = oh * ow;
        let xp_len = self.prepared_len(s, ph, oh, ow);
        let bf16 = self.bf16.as_ref();
        let small_n = bf16.is_none() && gemm::prefer_small_n(cout_g, n);
        let ct_len = if small_n { cout_g * n } else { 0 };
        let (buf, pool) = ws.scratch_and_pool(xp_len);
        let threads = pool.map_or(1, |p| p.current_num_threads());
        let k = cin_g * self.kh * self.kw;
        let packed_t = small_n.then(|| {
            self.packed_t
                .get_or_init(|| gemm::PackedWeightsT::new(&self.weight, g, cout_g, k))
        });
        let packed = (!small_n && bf16.is_none()).then(|| {
            self.packed
                .get_or_init(|| gemm::PackedWeights::new(&self.weight, g, cout_g, k))
        });
        let panels = match (packed_t, packed, bf16) {
            (Some(p), _, _) => p.panels(),
            (_, Some(p), _) => p.panels(),
            (_, _, Some(p)) => p.panels(),
            _ => 0,
        };
        let pairs_len = if bf16.is_some() {
            gemm_bf16::PAIRS_LEN + 16
        } else {
            0
        };
        for (i, (xi, yi)) in x
            .chunks_exact(s.per_image())
            .zip(y.chunks_exact_mut(self.cout * n))
            .enumerate()
        {
            let (xp, v) = self.prepare(xi, s, ph, (oh, ow), buf);
            for gi in 0..g {
                let (kh, kw) = if v.matrix { (1, 1) } else { (self.kh, self.kw) };
                let cols = gemm::Cols {
                    x: &xp[gi * cin_g * v.plane..(gi + 1) * cin_g * v.plane],
                    plane: v.plane,
                    kh,
                    kw,
                    s: v.s,
                    l: v.l,
                    ow,
                    row_stride: v.row_stride,
                };
                let bias = &self.bias[gi * cout_g..(gi + 1) * cout_g];
                let yg = gemm::Out::new(&mut yi[gi * cout_g * n..(gi + 1) * cout_g * n]);
                // The side operand's rows, as `y`'s.
                let at = (i * self.cout + gi * cout_g) * n;
                let sg = side.map(|sd| &sd[at..at + cout_g * n]);
                // One block per thread: channel panels by output columns.
                let work: Vec<(std::ops::Range<usize>, std::ops::Range<usize>)> = if small_n {
                    let parts = threads.min(panels).max(1);
                    (0..parts)
                        .map(|t| (t * panels / parts..(t + 1) * panels / parts, 0..n))
                        .collect()
                } else {
                    let packs = !(kh == 1 && kw == 1 && v.row_stride == ow);
                    gemm::split_rows(cout_g, n, threads, packs)
                };
                par_for_each(pool, work, |block| {
                    with_thread_scratch(gemm::PACK_LEN + 16 + ct_len + pairs_len, |tb| {
                        let align = tb.as_ptr().align_offset(64).min(16);
                        let (head, rest) = tb.split_at_mut(gemm::PACK_LEN + 16);
                        let (ct, pairs) = rest.split_at_mut(ct_len);
                        let pack = &mut head[align..align + gemm::PACK_LEN];
                        if let Some(pb) = bf16 {
                            let align = pairs.as_ptr().align_offset(64).min(16);
                            let pairs = &mut pairs[align..align + gemm_bf16::PAIRS_LEN];
                            // SAFETY: f32 and u32 have one size and alignment,
                            // and every bit pattern is valid for both.
                            let pairs: &mut [u32] = unsafe {
                                std::slice::from_raw_parts_mut(
                                    pairs.as_mut_ptr().cast(),
                                    pairs.len(),
                                )
                            };
                            // SAFETY: `bf16` is set only when the CPU has
                            // AVX-512F/BW and AVX512-BF16 (`set_precision`).
                            unsafe {
                                gemm_bf16::gemm_rows_bf16(
                                    pb,
                                    pb.group(gi),
                                    &cols,
                                    n,
                                    bias,
                                    act,
                                    sg,
                                    block,
                                    yg,
                                    pack,
                                    pairs,
                                );
                            }
                        } else if let Some(pt) = packed_t {
                            // SAFETY: this path runs only when `avx512` is set.
                            unsafe {
                                gemm::gemm_small_n(
                                    pt,
                                    pt.group(gi),
                                    &cols,
                                    n,
                                    bias,
                                    act,
                                    sg,
                                    block.0,
                                    yg,
                                    pack,
                                    ct,
                                );
                            }
                        } else if let Some(packed) = packed {
                            // SAFETY: this path runs only when `avx512` is set.
                            unsafe {
                                gemm::gemm_rows(
                                    packed,
                                    packed.group(gi),
                                    &cols,
                                    n,
                                    bias,
                                    act,
                                    sg,
                                    block,
                                    yg,
                                    pack,
                                );
                            }
                        }
                    });
                });
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn forward_portable(
        &self,
        x: &[f32],
        s: Shape,
        ph: Phases,
        y: &mut [f32],
        (oh, ow): (usize, usize),
        (side, act): (Option<&[f32]>, Activation),
        ws: &mut Workspace,
    ) {
        let g = self.cfg.groups;
        let (cin_g, cout_g) = (self.cin / g, self.cout / g);
        let k = cin_g * self.kh * self.kw;
        let n = oh * ow;
        let xp_len = self.prepared_len(s, ph, oh, ow);
        let buf = ws.scratch(xp_len + k * n);
        let (xp_buf, cols_buf) = buf.split_at_mut(xp_len);
        for (i, (xi, yi)) in x
            .chunks_exact(s.per_image())
            .zip(y.chunks_exact_mut(self.cout * n))
            .enumerate()
        {
            let (xp, v) = self.prepare(xi, s, ph, (oh, ow), xp_buf);
            for gi in 0..g {
                let yg = &mut yi[gi * cout_g * n..(gi + 1) * cout_g * n];
                let wg = &self.weight[gi * cout_g * k..(gi + 1) * cout_g * k];
                let xg = &xp[gi * cin_g * v.plane..(gi + 1) * cin_g * v.plane];
                let cols: &[f32] = if v.matrix {
                    xg
                } else {
                    im2col::im2col(xg, ph, cin_g, self.kh, self.kw, oh, ow, cols_buf);
                    cols_buf
                };
                im2col::gemm_f32(cout_g, n, k, wg, cols, yg);
                for (o, row) in yg.chunks_exact_mut(n).enumerate() {
                    let c = gi * cout_g + o;
                    let b = self.bias[c];
                    if let Some(sd) = side {
                        let sr = &sd[(i * self.cout + c) * n..(i * self.cout + c + 1) * n];
                        row.iter_mut()
                            .zip(sr)
                            .for_each(|(v, &s)| *v = act.apply_one((*v + b) + s));
                    } else {
                        row.iter_mut().for_each(|v| *v = act.apply_one(*v + b));
                    }
                }
            }
        }
    }
}

/// How one image's input is presented to the kernels.
#[derive(Clone, Copy, Debug)]
struct View {
    /// Elements per input channel.
    plane: usize,
    /// Phases (stride) of the layout, 1 for a plain matrix.
    s: usize,
    /// Elements per phase row.
    l: usize,
    /// Distance between output rows.
    row_stride: usize,
    /// True when the view is a plain `[c][oh * ow]` matrix.
    matrix: bool,
}

impl Conv2d {
    /// Scratch elements [`Conv2d::prepare`] needs for one image.
    fn prepared_len(&self, s: Shape, ph: Phases, oh: usize, ow: usize) -> usize {
        if self.is_pointwise() {
            0
        } else if self.is_strided_pointwise() {
            s.c * oh * ow
        } else {
            s.c * ph.plane()
        }
    }

    /// One image's input as the kernels read it: as is (1x1 stride 1),
    /// subsampled (1x1 strided) or padded and phase-split into `buf`.
    fn prepare<'a>(
        &self,
        xi: &'a [f32],
        s: Shape,
        ph: Phases,
        (oh, ow): (usize, usize),
        buf: &'a mut [f32],
    ) -> (&'a [f32], View) {
        let matrix = View {
            plane: oh * ow,
            s: 1,
            l: ow,
            row_stride: ow,
            matrix: true,
        };
        if self.is_pointwise() {
            (xi, matrix)
        } else if self.is_strided_pointwise() {
            im2col::subsample(xi, s.h, s.w, self.cfg.stride, oh, ow, buf);
            (buf, matrix)
        } else {
            im2col::phase_split(xi, s.h, s.w, self.cfg.padding, ph, buf);
            let view = View {
                plane: ph.plane(),
                s: ph.s,
                l: ph.l,
                row_stride: ph.s * ph.s * ph.l,
                matrix: false,
            };
            (buf, view)
        }
    }
}

/// Off x86-64 there is no fused pointwise + depthwise path.
#[cfg(not(target_arch = "x86_64"))]
impl Conv2d {
    pub(crate) fn fuses_with(&self, _dw: &Conv2d, _input: Shape) -> bool {
        false
    }

    pub(crate) fn forward_fused(&self, _dw: &Conv2d, _x: &Tensor, _ws: &mut Workspace) -> Tensor {
        unreachable!("fuses_with is false off x86-64")
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
        self.forward_with(x, ws, Path::Fast, None)
    }

    fn as_conv(&self) -> Option<&Conv2d> {
        Some(self)
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

    fn set_precision(&mut self, precision: Precision) -> usize {
        #[cfg(target_arch = "x86_64")]
        if precision == Precision::Bf16 && self.avx512 && Isa::bf16() && self.bf16.is_none() {
            let g = self.cfg.groups;
            let k = self.cin / g * self.kh * self.kw;
            self.bf16 = Some(gemm_bf16::PackedWeightsBf16::new(
                &self.weight,
                g,
                self.cout / g,
                k,
            ));
            // The f32 packings are no longer used.
            self.packed = std::sync::OnceLock::new();
            self.packed_t = std::sync::OnceLock::new();
            self.winograd = std::sync::OnceLock::new();
            return self.weight.len();
        }
        let _ = precision;
        0
    }
}

#[cfg(test)]
mod tests;
#[cfg(test)]
#[cfg(target_arch = "x86_64")]
mod tests_bf16;
