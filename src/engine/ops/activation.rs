//! Element-wise activations, softmax and flatten.

use crate::engine::{Cost, Layer, Shape, ShapeError, Tensor, Workspace, f32_bytes};

/// An element-wise activation, applied in place (and fused into the
/// convolutions and dense layers that precede it).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Activation {
    /// No activation.
    #[default]
    Identity,
    /// max(x, 0).
    Relu,
    /// min(max(x, 0), 6).
    Relu6,
}

impl Activation {
    /// Applies the activation to one value.
    #[inline(always)]
    pub fn apply_one(self, v: f32) -> f32 {
        match self {
            Activation::Identity => v,
            Activation::Relu => v.max(0.0),
            Activation::Relu6 => v.clamp(0.0, 6.0),
        }
    }

    /// Applies the activation to every value.
    pub fn apply(self, values: &mut [f32]) {
        match self {
            Activation::Identity => {}
            Activation::Relu => values.iter_mut().for_each(|v| *v = v.max(0.0)),
            Activation::Relu6 => values.iter_mut().for_each(|v| *v = v.clamp(0.0, 6.0)),
        }
    }

    /// FLOPs per element (comparisons count as one).
    pub fn flops_per_element(self) -> u64 {
        match self {
            Activation::Identity => 0,
            Activation::Relu => 1,
            Activation::Relu6 => 2,
        }
    }
}

/// `y = act(y + side)` in one pass, with the activation chosen outside the
/// loop so each arm vectorises: the residual join when the convolution
/// before it cannot take the side operand in its store.
pub(crate) fn add_activate(y: &mut [f32], side: &[f32], act: Activation) {
    assert_eq!(y.len(), side.len(), "residual operands of equal length");
    let pairs = y.iter_mut().zip(side);
    match act {
        Activation::Identity => pairs.for_each(|(a, b)| *a += b),
        Activation::Relu => pairs.for_each(|(a, b)| *a = (*a + b).max(0.0)),
        Activation::Relu6 => pairs.for_each(|(a, b)| *a = (*a + b).clamp(0.0, 6.0)),
    }
}

/// A standalone activation layer.
#[derive(Clone, Copy, Debug)]
pub struct Act(pub Activation);

impl Layer for Act {
    fn kind(&self) -> &'static str {
        match self.0 {
            Activation::Identity => "identity",
            Activation::Relu => "relu",
            Activation::Relu6 => "relu6",
        }
    }

    fn output_shape(&self, input: Shape) -> Result<Shape, ShapeError> {
        Ok(input)
    }

    fn forward(&self, x: &Tensor, _ws: &mut Workspace) -> Tensor {
        let mut y = x.clone();
        self.0.apply(y.as_mut_slice());
        y
    }

    fn cost(&self, input: Shape) -> Cost {
        Cost {
            macs: 0,
            flops: self.0.flops_per_element() * input.len() as u64,
            weight_bytes: 0,
            activation_bytes: 2 * f32_bytes(input.len()),
        }
    }

    fn params(&self) -> usize {
        0
    }
}

/// Softmax over the channels at every (n, h, w) position.
#[derive(Clone, Copy, Debug, Default)]
pub struct Softmax;

impl Layer for Softmax {
    fn kind(&self) -> &'static str {
        "softmax"
    }

    fn output_shape(&self, input: Shape) -> Result<Shape, ShapeError> {
        Ok(input)
    }

    fn forward(&self, x: &Tensor, _ws: &mut Workspace) -> Tensor {
        let s = x.shape();
        let plane = s.h * s.w;
        let mut y = x.clone();
        let out = y.as_mut_slice();
        for image in out.chunks_exact_mut(s.per_image()) {
            for p in 0..plane {
                let max = (0..s.c)
                    .map(|c| image[c * plane + p])
                    .fold(f32::NEG_INFINITY, f32::max);
                let mut sum = 0.0;
                for c in 0..s.c {
                    let e = (image[c * plane + p] - max).exp();
                    image[c * plane + p] = e;
                    sum += e;
                }
                let inv = 1.0 / sum;
                for c in 0..s.c {
                    image[c * plane + p] *= inv;
                }
            }
        }
        y
    }

    fn cost(&self, input: Shape) -> Cost {
        Cost {
            macs: 0,
            flops: 4 * input.len() as u64,
            weight_bytes: 0,
            activation_bytes: 2 * f32_bytes(input.len()),
        }
    }

    fn params(&self) -> usize {
        0
    }
}

/// Flattens each image to `[N, C*H*W, 1, 1]`.
#[derive(Clone, Copy, Debug, Default)]
pub struct Flatten;

impl Layer for Flatten {
    fn kind(&self) -> &'static str {
        "flatten"
    }

    fn output_shape(&self, input: Shape) -> Result<Shape, ShapeError> {
        Ok(Shape::new(input.n, input.per_image(), 1, 1))
    }

    fn forward(&self, x: &Tensor, _ws: &mut Workspace) -> Tensor {
        let s = x.shape();
        x.clone().reshape(Shape::new(s.n, s.per_image(), 1, 1))
    }

    fn cost(&self, _input: Shape) -> Cost {
        Cost::default()
    }

    fn params(&self) -> usize {
        0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Uniform in [-8, 8): enough values above 6 to exercise ReLU6.
    fn wide(shape: Shape, seed: u64) -> Tensor {
        let mut x = Tensor::random(shape, seed);
        x.as_mut_slice().iter_mut().for_each(|v| *v *= 8.0);
        x
    }

    #[test]
    // The reference spells out the branches rather than reuse `clamp`.
    #[allow(clippy::manual_clamp)]
    fn relu_and_relu6_are_exact() {
        let x = wide(Shape::new(2, 3, 5, 7), 1);
        let mut ws = Workspace::new();
        for (act, f) in [
            (Activation::Identity, (|v| v) as fn(f32) -> f32),
            (Activation::Relu, |v| if v > 0.0 { v } else { 0.0 }),
            (Activation::Relu6, |v| {
                if v < 0.0 {
                    0.0
                } else if v > 6.0 {
                    6.0
                } else {
                    v
                }
            }),
        ] {
            let want: Vec<f32> = x.as_slice().iter().map(|&v| f(v)).collect();
            // Comparisons and selects round nothing: exact.
            let y = Act(act).forward(&x, &mut ws);
            assert_eq!(y.shape(), x.shape());
            assert_eq!(y.as_slice(), &want[..], "{act:?}");
            let one: Vec<f32> = x.as_slice().iter().map(|&v| act.apply_one(v)).collect();
            assert_eq!(one, want, "{act:?} apply_one");
        }
        let y = Act(Activation::Relu6).forward(&x, &mut ws);
        assert!(y.as_slice().contains(&6.0) && y.as_slice().contains(&0.0));
    }

    /// Softmax over channels in f64 by the definition, shifted by the max.
    fn softmax_reference(x: &Tensor) -> Vec<f64> {
        let s = x.shape();
        let a = x.array();
        let mut y = vec![0.0; s.len()];
        for n in 0..s.n {
            for h in 0..s.h {
                for w in 0..s.w {
                    let at = |c: usize| f64::from(a[[n, c, h, w]]);
                    let max = (0..s.c).map(at).fold(f64::NEG_INFINITY, f64::max);
                    let sum: f64 = (0..s.c).map(|c| (at(c) - max).exp()).sum();
                    for c in 0..s.c {
                        y[((n * s.c + c) * s.h + h) * s.w + w] = (at(c) - max).exp() / sum;
                    }
                }
            }
        }
        y
    }

    #[test]
    fn softmax_matches_reference() {
        let mut ws = Workspace::new();
        for shape in [Shape::new(2, 10, 3, 2), Shape::new(1, 1000, 1, 1)] {
            let x = wide(shape, 2);
            let y = Softmax.forward(&x, &mut ws);
            let want = softmax_reference(&x);
            // Each output is exp(x - max) (a few ulp from f32 exp and the
            // subtraction) times 1/sum (sum of c terms in (0, 1]: relative
            // error <= c * eps); relative error <= (c + 4) * eps.
            let tol = (shape.c + 4) as f64 * f64::from(f32::EPSILON);
            for (g, w) in y.as_slice().iter().zip(&want) {
                assert!((f64::from(*g) - w).abs() <= tol * w, "{g} vs {w}");
            }
            // Each (n, h, w) position sums to one, within the same bound.
            let plane = shape.h * shape.w;
            for image in y.as_slice().chunks_exact(shape.per_image()) {
                for p in 0..plane {
                    let sum: f64 = (0..shape.c).map(|c| f64::from(image[c * plane + p])).sum();
                    assert!((sum - 1.0).abs() <= tol, "sum {sum}");
                }
            }
        }
    }

    #[test]
    fn softmax_is_stable_for_large_inputs() {
        let mut ws = Workspace::new();
        let s = Shape::new(1, 4, 1, 1);
        let y = Softmax.forward(&Tensor::from_vec(s, vec![1000.0; 4]), &mut ws);
        assert_eq!(y.as_slice(), &[0.25; 4]);
        let y = Softmax.forward(
            &Tensor::from_vec(s, vec![1000.0, 0.0, -1000.0, 999.0]),
            &mut ws,
        );
        let e = (-1.0f32).exp();
        let want = [1.0 / (1.0 + e), 0.0, 0.0, e / (1.0 + e)];
        for (g, w) in y.as_slice().iter().zip(want) {
            assert!(
                g.is_finite() && (g - w).abs() <= 4.0 * f32::EPSILON,
                "{g} vs {w}"
            );
        }
        // Shifting every logit by 1000 changes nothing but rounding.
        let x = Tensor::random(Shape::new(1, 50, 1, 1), 3);
        let mut shifted = x.clone();
        shifted.as_mut_slice().iter_mut().for_each(|v| *v += 1000.0);
        // 1000 + v keeps ~2^-14 absolute precision, which exp turns into a
        // relative error of the same size.
        let (a, b) = (
            Softmax.forward(&x, &mut ws),
            Softmax.forward(&shifted, &mut ws),
        );
        for (p, q) in a.as_slice().iter().zip(b.as_slice()) {
            assert!((p - q).abs() <= 2f32.powi(-12) * p, "{p} vs {q}");
        }
    }

    #[test]
    fn flatten_keeps_nchw_order() {
        let s = Shape::new(2, 3, 4, 5);
        let x = Tensor::random(s, 4);
        let y = Flatten.forward(&x, &mut Workspace::new());
        assert_eq!(Flatten.output_shape(s), Ok(Shape::new(2, 60, 1, 1)));
        assert_eq!(y.shape(), Shape::new(2, 60, 1, 1));
        for n in 0..2 {
            for c in 0..3 {
                for h in 0..4 {
                    for w in 0..5 {
                        let i = (c * 4 + h) * 5 + w;
                        assert_eq!(y.array()[[n, i, 0, 0]], x.array()[[n, c, h, w]]);
                    }
                }
            }
        }
    }
}
