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
