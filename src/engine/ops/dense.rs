//! Fully connected layers. The input is flattened per image (NCHW order),
//! as PyTorch's `torch.flatten(x, 1)` followed by `nn.Linear`.

use ndarray::Array2;

use super::activation::Activation;
use crate::engine::{Cost, Layer, Shape, ShapeError, Tensor, Workspace, f32_bytes};

/// Up to this batch size, dot products row by row beat a GEMM (vgg16's
/// 25088x4096 layer, batch 4: 68 ms against 86 ms), since the GEMM packs
/// the weights it then uses only a few times; beyond it (batch 16: 178 ms
/// against 97 ms) the GEMM's register blocking wins.
const ROW_BY_ROW_MAX_BATCH: usize = 4;

/// `y = x W^T + b`, then an activation; output `[N, out, 1, 1]`.
#[derive(Clone, Debug)]
pub struct Dense {
    inputs: usize,
    outputs: usize,
    /// `[out][in]`.
    weight: Vec<f32>,
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
        weight: weight.as_standard_layout().iter().copied().collect(),
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

    /// Weights, `[out][in]`.
    pub fn weight(&self) -> &[f32] {
        &self.weight
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

    fn forward(&self, x: &Tensor, _ws: &mut Workspace) -> Tensor {
        let out = self.output_shape(x.shape()).expect("dense input shape");
        let mut y = Tensor::zeros(out);
        let (xs, ys) = (x.as_slice(), y.as_mut_slice());
        if out.n <= ROW_BY_ROW_MAX_BATCH {
            // A (few) matrix-vector product(s): every weight is used once per
            // image, so this is bound by memory bandwidth. Each weight row is
            // read from memory once and stays in cache for the other images.
            for (o, row) in self.weight.chunks_exact(self.inputs).enumerate() {
                for (xi, yi) in xs
                    .chunks_exact(self.inputs)
                    .zip(ys.chunks_exact_mut(self.outputs))
                {
                    yi[o] = dot(row, xi);
                }
            }
        } else {
            gemm_xwt(out.n, self.inputs, self.outputs, xs, &self.weight, ys);
        }
        for yi in ys.chunks_exact_mut(self.outputs) {
            for (v, b) in yi.iter_mut().zip(&self.bias) {
                *v = self.act.apply_one(*v + b);
            }
        }
        y
    }

    fn cost(&self, input: Shape) -> Cost {
        let out = input.n * self.outputs;
        Cost {
            macs: (input.n * self.inputs * self.outputs) as u64,
            flops: 2 * (input.n * self.inputs * self.outputs) as u64
                + out as u64 * (1 + self.act.flops_per_element()),
            weight_bytes: f32_bytes(self.weight.len() + self.bias.len()),
            activation_bytes: f32_bytes(input.len() + out),
        }
    }

    fn params(&self) -> usize {
        self.weight.len() + self.bias.len()
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
        for n in 0..s.n {
            for o in 0..d.outputs() {
                let b = f64::from(d.bias()[o]);
                let (mut acc, mut abs) = (b, b.abs());
                for c in 0..s.c {
                    for h in 0..s.h {
                        for w in 0..s.w {
                            let i = (c * s.h + h) * s.w + w;
                            let p = f64::from(d.weight()[o * d.inputs() + i])
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
