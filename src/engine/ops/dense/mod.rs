//! Fully connected layers. The input is flattened per image (NCHW order),
//! as PyTorch's `torch.flatten(x, 1)` followed by `nn.Linear`.
//!
//! Up to `ROW_BY_ROW_MAX_BATCH` images the layer is a matrix-vector
//! product per image (`gemv.rs`: AVX-512, AVX2 or portable kernels, as
//! [`Isa::active`] says), its output rows split over the workspace's
//! threads in contiguous ranges; beyond, the `gemm` crate. Weights may be
//! stored in bfloat16 ([`Layer::set_precision`]), which halves the bytes
//! these memory-bound products read.

mod gemv;

use std::borrow::Cow;

use ndarray::Array2;

use super::activation::Activation;
use crate::engine::bf16::{bf16_to_f32, f32_to_bf16};
use crate::engine::isa::Isa;
use crate::engine::{
    Cost, Layer, Precision, Shape, ShapeError, Tensor, Workspace, f32_bytes, par_for_each,
};
use gemv::{Gemv, Weights};

/// Up to this batch size, dot products row by row beat a GEMM (vgg16's
/// 25088x4096 layer, batch 4: 68 ms against 86 ms), since the GEMM packs
/// the weights it then uses only a few times; beyond it (batch 16: 178 ms
/// against 97 ms) the GEMM's register blocking wins.
const ROW_BY_ROW_MAX_BATCH: usize = 4;

/// Fewest output rows worth a thread of their own: below, the handoff to
/// the pool costs more than the rows' share of the weights takes to read.
const MIN_ROWS_PER_THREAD: usize = 64;

/// How a dense layer holds its weights.
#[derive(Clone, Debug)]
enum Stored {
    /// f32, `[out][in]`.
    F32(Vec<f32>),
    /// bfloat16 bit patterns, `[out][in]`, rounded to nearest (ties to
    /// even) from the f32 weights, which are dropped.
    Bf16(Vec<u16>),
}

/// `y = x W^T + b`, then an activation; output `[N, out, 1, 1]`.
#[derive(Clone, Debug)]
pub struct Dense {
    inputs: usize,
    outputs: usize,
    /// `[out][in]`.
    weight: Stored,
    bias: Vec<f32>,
    act: Activation,
}

/// A dense layer over `weight` (`[out, in]`) and `bias` (`out` values).
pub fn dense(weight: Array2<f32>, bias: Vec<f32>) -> Dense {
    let (outputs, inputs) = weight.dim();
    assert!(inputs > 0, "a dense layer has at least one input");
    assert_eq!(bias.len(), outputs, "one bias per output");
    Dense {
        inputs,
        outputs,
        weight: Stored::F32(weight.as_standard_layout().iter().copied().collect()),
        bias,
        act: Activation::Identity,
    }
}

impl Dense {
    /// The same layer followed by `act`.
    pub fn with_activation(mut self, act: Activation) -> Self {
        self.act = act;
        self
    }

    /// Input features.
    pub fn inputs(&self) -> usize {
        self.inputs
    }

    /// Output features.
    pub fn outputs(&self) -> usize {
        self.outputs
    }

    /// Weights, `[out][in]`: borrowed when stored in f32; widened (exactly)
    /// from the stored bfloat16 values into a new vector after
    /// [`Layer::set_precision`] converted them.
    pub fn weight(&self) -> Cow<'_, [f32]> {
        match &self.weight {
            Stored::F32(w) => Cow::Borrowed(w),
            Stored::Bf16(w) => Cow::Owned(w.iter().map(|&b| bf16_to_f32(b)).collect()),
        }
    }

    /// The precision the weights are stored in.
    pub fn precision(&self) -> Precision {
        match self.weight {
            Stored::F32(_) => Precision::F32,
            Stored::Bf16(_) => Precision::Bf16,
        }
    }

    fn weights(&self) -> Weights<'_> {
        match &self.weight {
            Stored::F32(w) => Weights::F32(w),
            Stored::Bf16(w) => Weights::Bf16(w),
        }
    }

    fn weight_len(&self) -> usize {
        self.inputs * self.outputs
    }

    /// The matrix-vector products of `x` (`[batch][inputs]`) into `ys`
    /// (`[batch][outputs]`), bias and activation included, output rows
    /// split over `pool` in contiguous ranges (whole blocks of
    /// [`gemv::ROWS`] but the last), with the kernels of `isa`.
    fn gemv(&self, isa: Isa, x: &[f32], ys: &mut [f32], pool: Option<&rayon::ThreadPool>) {
        let threads = pool.map_or(1, |p| p.current_num_threads());
        let parts = threads.min(self.outputs / MIN_ROWS_PER_THREAD).max(1);
        let bound = |t: usize| match t {
            t if t == parts => self.outputs,
            t => t * self.outputs / parts / gemv::ROWS * gemv::ROWS,
        };
        let mut work: Vec<(std::ops::Range<usize>, Vec<&mut [f32]>)> = (0..parts)
            .map(|t| (bound(t)..bound(t + 1), Vec::new()))
            .collect();
        for image in ys.chunks_exact_mut(self.outputs) {
            let mut rest = image;
            for (range, mine) in &mut work {
                let (part, tail) = std::mem::take(&mut rest).split_at_mut(range.len());
                mine.push(part);
                rest = tail;
            }
        }
        let g = Gemv {
            w: self.weights(),
            inputs: self.inputs,
            x,
            bias: &self.bias,
            act: self.act,
        };
        par_for_each(pool, work, |(range, mut mine)| {
            gemv::gemv(isa, &g, range, &mut mine);
        });
    }

    /// Bias.
    pub fn bias(&self) -> &[f32] {
        &self.bias
    }
}

impl Layer for Dense {
    fn kind(&self) -> &'static str {
        "dense"
    }

    fn output_shape(&self, input: Shape) -> Result<Shape, ShapeError> {
        if input.per_image() != self.inputs {
            return Err(ShapeError::new(
                self.kind(),
                input,
                format!("expected {} features per image", self.inputs),
            ));
        }
        Ok(Shape::new(input.n, self.outputs, 1, 1))
    }

    fn forward(&self, x: &Tensor, ws: &mut Workspace) -> Tensor {
        let out = self.output_shape(x.shape()).expect("dense input shape");
        let mut y = Tensor::zeros(out);
        let (xs, ys) = (x.as_slice(), y.as_mut_slice());
        match &self.weight {
            // bf16 weights have no GEMM: larger batches run the
            // matrix-vector kernels four images at a time.
            Stored::F32(w) if out.n > ROW_BY_ROW_MAX_BATCH => {
                gemm_xwt(out.n, self.inputs, self.outputs, xs, w, ys);
                for yi in ys.chunks_exact_mut(self.outputs) {
                    for (v, b) in yi.iter_mut().zip(&self.bias) {
                        *v = self.act.apply_one(*v + b);
                    }
                }
            }
            // A (few) matrix-vector product(s): every weight is used once
            // per image, so this is bound by memory bandwidth.
            _ => self.gemv(Isa::active(), xs, ys, ws.pool()),
        }
        y
    }

    fn cost(&self, input: Shape) -> Cost {
        let out = input.n * self.outputs;
        Cost {
            macs: (input.n * self.inputs * self.outputs) as u64,
            flops: 2 * (input.n * self.inputs * self.outputs) as u64
                + out as u64 * (1 + self.act.flops_per_element()),
            weight_bytes: match self.weight {
                Stored::F32(_) => f32_bytes(self.weight_len()),
                Stored::Bf16(_) => (self.weight_len() * std::mem::size_of::<u16>()) as u64,
            } + f32_bytes(self.bias.len()),
            activation_bytes: f32_bytes(input.len() + out),
        }
    }

    fn params(&self) -> usize {
        self.weight_len() + self.bias.len()
    }

    /// With [`Precision::Bf16`] on a CPU where [`Isa::bf16`] holds, rounds
    /// the weights to bfloat16 (to nearest, ties to even), drops the f32
    /// copy and returns the number of weights converted; otherwise, or when
    /// they already are bfloat16, changes nothing and returns 0 (asking
    /// for f32 does not widen bfloat16 weights back).
    ///
    /// The bfloat16 kernels widen each weight to f32 (a 16-bit shift) and
    /// multiply-add it with the f32 input, so every product is of the
    /// rounded weight with the exact input: the only error bf16 adds is the
    /// weight rounding, at most 2^-9 relative per weight, hence at most
    /// 2^-9 * sum |w x| per output. `vdpbf16ps` would halve the
    /// multiply-adds but also round the inputs to bfloat16; these products
    /// are bound by reading the weights, so the widening kernels keep the
    /// inputs exact instead.
    fn set_precision(&mut self, precision: Precision) -> usize {
        match (&self.weight, precision) {
            (Stored::F32(w), Precision::Bf16) if Isa::bf16() => {
                let converted: Vec<u16> = w.iter().map(|&v| f32_to_bf16(v)).collect();
                self.weight = Stored::Bf16(converted);
                self.weight_len()
            }
            _ => 0,
        }
    }
}

/// Dot product with sixteen independent accumulators, so the loop
/// vectorises (one running sum is a dependency chain the compiler may not
/// reorder) and keeps enough loads in flight to saturate memory.
pub(crate) fn dot(a: &[f32], b: &[f32]) -> f32 {
    const LANES: usize = 16;
    assert_eq!(a.len(), b.len(), "dot of equal lengths");
    let (ac, bc) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
    let tail: f32 = ac
        .remainder()
        .iter()
        .zip(bc.remainder())
        .map(|(x, y)| x * y)
        .sum();
    let mut acc = [0.0f32; LANES];
    for (x, y) in ac.zip(bc) {
        for i in 0..LANES {
            acc[i] += x[i] * y[i];
        }
    }
    acc.iter().sum::<f32>() + tail
}

/// `y[b][o] = sum_i x[b][i] * w[o][i]` for `batch` rows: `x` is
/// `[batch][inputs]`, `w` is `[outputs][inputs]` (read as its transpose, no
/// copy), `y` is `[batch][outputs]`, all row-major.
fn gemm_xwt(batch: usize, inputs: usize, outputs: usize, x: &[f32], w: &[f32], y: &mut [f32]) {
    assert!(x.len() == batch * inputs && w.len() == outputs * inputs && y.len() == batch * outputs);
    // SAFETY: with the lengths asserted above, every element gemm addresses
    // (row r, column c at base + r * row_stride + c * col_stride) lies inside
    // its slice: dst (batch x outputs, strides outputs/1), lhs (batch x
    // inputs, strides inputs/1), rhs = w^T (inputs x outputs, strides
    // 1/inputs). `y` is a unique borrow, so it aliases neither input.
    unsafe {
        gemm::gemm(
            batch,
            outputs,
            inputs,
            y.as_mut_ptr(),
            1,
            outputs as isize,
            false,
            x.as_ptr(),
            1,
            inputs as isize,
            w.as_ptr(),
            inputs as isize,
            1,
            0.0,
            1.0,
            false,
            false,
            false,
            gemm::Parallelism::None,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layer(inputs: usize, outputs: usize, act: Activation, seed: u64) -> Dense {
        let w = Tensor::random(Shape::new(1, 1, outputs, inputs), seed).into_vec();
        let b = Tensor::random(Shape::new(1, 1, 1, outputs), seed + 1).into_vec();
        dense(Array2::from_shape_vec((outputs, inputs), w).unwrap(), b).with_activation(act)
    }

    /// Naive `act(b + sum_i w[o][i] * x[n][c][h][w])` in f64 with `i` the
    /// NCHW flat index, plus `|b| + sum |w * x|`, the scale of f32 error.
    fn reference(d: &Dense, x: &Tensor) -> (Vec<f64>, Vec<f64>) {
        let s = x.shape();
        let (mut y, mut scale) = (Vec::new(), Vec::new());
        let weight = d.weight();
        for n in 0..s.n {
            for o in 0..d.outputs() {
                let b = f64::from(d.bias()[o]);
                let (mut acc, mut abs) = (b, b.abs());
                for c in 0..s.c {
                    for h in 0..s.h {
                        for w in 0..s.w {
                            let i = (c * s.h + h) * s.w + w;
                            let p = f64::from(weight[o * d.inputs() + i])
                                * f64::from(x.array()[[n, c, h, w]]);
                            acc += p;
                            abs += p.abs();
                        }
                    }
                }
                y.push(match d.act {
                    Activation::Identity => acc,
                    Activation::Relu => acc.max(0.0),
                    Activation::Relu6 => acc.clamp(0.0, 6.0),
                });
                scale.push(abs);
            }
        }
        (y, scale)
    }

    #[test]
    fn matches_reference() {
        let mut ws = Workspace::new();
        let mut clamped = [0; 2];
        // 4x5x5 = 100 inputs (a 16-lane tail of 4); batch 1 and 3 take the
        // row-by-row path, batch 6 the GEMM.
        for act in [Activation::Identity, Activation::Relu, Activation::Relu6] {
            for n in [1, 3, 6] {
                let d = layer(100, 13, act, n as u64);
                let x = Tensor::random(Shape::new(n, 4, 5, 5), 7 + n as u64);
                assert_eq!(d.output_shape(x.shape()), Ok(Shape::new(n, 13, 1, 1)));
                let y = d.forward(&x, &mut ws);
                assert_eq!(y.shape(), Shape::new(n, 13, 1, 1));
                let (want, scale) = reference(&d, &x);
                // An f32 sum of n terms in any order is within (n - 1) * eps
                // * sum |terms| of the exact sum (each product adds eps/2 *
                // |term|); 101 terms here. ReLU and ReLU6 are 1-Lipschitz, so
                // they do not grow the error.
                for ((g, w), s) in y.as_slice().iter().zip(&want).zip(&scale) {
                    let tol = 101.0 * f64::from(f32::EPSILON) * s;
                    assert!(
                        (f64::from(*g) - w).abs() <= tol,
                        "{act:?} batch {n}: {g} vs {w}"
                    );
                }
                clamped[0] += y.as_slice().iter().filter(|&&v| v == 0.0).count();
                clamped[1] += y.as_slice().iter().filter(|&&v| v == 6.0).count();
            }
        }
        // The activations were exercised: some outputs hit each clamp.
        assert!(clamped[0] > 0 && clamped[1] > 0, "{clamped:?}");
    }

    #[test]
    fn small_batches_equal_single_images() {
        // Row by row, each image's dot products are the batch-1 ones, bit
        // for bit.
        let d = layer(37, 5, Activation::Relu, 3);
        let x = Tensor::random(Shape::new(3, 37, 1, 1), 4);
        let mut ws = Workspace::new();
        let batch = d.forward(&x, &mut ws);
        for (i, image) in x.as_slice().chunks_exact(37).enumerate() {
            let one = Tensor::from_vec(Shape::new(1, 37, 1, 1), image.to_vec());
            assert_eq!(
                d.forward(&one, &mut ws).as_slice(),
                &batch.as_slice()[i * 5..][..5]
            );
        }
    }

    #[test]
    fn dot_handles_every_tail_length() {
        for len in 0..40 {
            let a: Vec<f32> = (0..len).map(|i| i as f32).collect();
            let b: Vec<f32> = (0..len).map(|i| (i % 3) as f32).collect();
            // Small integers: every partial sum is exact in f32.
            let want: f32 = a.iter().zip(&b).map(|(x, y)| x * y).sum();
            assert_eq!(dot(&a, &b), want, "length {len}");
        }
    }

    #[test]
    fn thread_pools_split_rows_bit_identically() {
        // 300 outputs: a split into ranges of 148 and 152 rows, or 100, 100
        // and 100 (not whole blocks of four).
        let mut d = layer(203, 300, Activation::Relu, 9);
        for bf16 in [false, true] {
            if bf16 && d.set_precision(Precision::Bf16) == 0 {
                continue;
            }
            for n in [1, 2, 4, 5] {
                let x = Tensor::random(Shape::new(n, 203, 1, 1), 10 + n as u64);
                let alone = d.forward(&x, &mut Workspace::new());
                for threads in [2, 3] {
                    let pool = rayon::ThreadPoolBuilder::new()
                        .num_threads(threads)
                        .build()
                        .unwrap();
                    let mut ws = Workspace::with_pool(std::sync::Arc::new(pool));
                    let shared = d.forward(&x, &mut ws);
                    assert!(shared == alone, "bf16 {bf16} batch {n} threads {threads}");
                }
            }
        }
    }

    #[test]
    fn bf16_weights_round_and_stay_close() {
        let f32_layer = layer(300, 29, Activation::Identity, 5);
        let mut d = f32_layer.clone();
        let converted = d.set_precision(Precision::Bf16);
        let mut ws = Workspace::new();
        if !Isa::bf16() {
            // Nothing to run bf16 on: the layer stays as it was.
            assert_eq!(converted, 0);
            assert_eq!(d.precision(), Precision::F32);
            assert_eq!(&*d.weight(), &*f32_layer.weight());
            return;
        }
        assert_eq!(converted, 300 * 29);
        assert_eq!(d.precision(), Precision::Bf16);
        assert_eq!(d.set_precision(Precision::Bf16), 0, "already bf16");
        assert_eq!(d.set_precision(Precision::F32), 0, "not widened back");
        assert_eq!(
            d.cost(Shape::new(1, 300, 1, 1)).weight_bytes,
            2 * 300 * 29 + 4 * 29
        );
        for (w16, w32) in d.weight().iter().zip(f32_layer.weight().iter()) {
            assert_eq!(
                *w16,
                f32::from_bits(
                    (w32.to_bits() + 0x7fff + ((w32.to_bits() >> 16) & 1)) & 0xffff_0000
                )
            );
        }
        // Batch 6 runs the matrix-vector kernels too (no bf16 GEMM).
        for n in [1, 3, 6] {
            let x = Tensor::random(Shape::new(n, 300, 1, 1), 20 + n as u64);
            let y = d.forward(&x, &mut ws);
            // Tight: the f32 error bound against the rounded weights.
            let (want, scale) = reference(&d, &x);
            // Loose: each rounded weight is within 2^-9 of the f32 one
            // (relative), so the output within 2^-9 * sum |w x| more.
            let (want32, scale32) = reference(&f32_layer, &x);
            let eps = f64::from(f32::EPSILON);
            for (i, g) in y.as_slice().iter().enumerate() {
                let g = f64::from(*g);
                assert!(
                    (g - want[i]).abs() <= 302.0 * eps * scale[i],
                    "{n}: {g} vs {}",
                    want[i]
                );
                let loose = (2f64.powi(-9) + 302.0 * eps) * scale32[i];
                assert!(
                    (g - want32[i]).abs() <= loose,
                    "{n}: {g} vs f32 {}",
                    want32[i]
                );
            }
        }
    }

    #[test]
    fn wrong_feature_count_is_a_shape_error() {
        let d = layer(12, 4, Activation::Identity, 1);
        let err = d
            .output_shape(Shape::new(1, 3, 2, 3))
            .expect_err("18 != 12");
        assert_eq!(err.layer, "dense");
        assert_eq!(
            d.output_shape(Shape::new(2, 3, 2, 2)),
            Ok(Shape::new(2, 4, 1, 1))
        );
    }
}
