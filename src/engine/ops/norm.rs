//! Batch normalisation in inference mode. odin folds it into the preceding
//! convolution ([`super::Conv2d::fold_batch_norm`]); the standalone layer
//! exists for models where nothing precedes it and as the folding reference.

use crate::engine::{Cost, Layer, Shape, ShapeError, Tensor, Workspace, f32_bytes};

/// `y = (x - mean) / sqrt(var + eps) * gamma + beta`, per channel.
#[derive(Clone, Debug)]
pub struct BatchNorm2d {
    /// Scale per channel.
    pub gamma: Vec<f32>,
    /// Shift per channel.
    pub beta: Vec<f32>,
    /// Running mean per channel.
    pub mean: Vec<f32>,
    /// Running variance per channel.
    pub var: Vec<f32>,
    /// Added to the variance (PyTorch's default is 1e-5).
    pub eps: f32,
}

impl BatchNorm2d {
    /// Channels normalised.
    pub fn channels(&self) -> usize {
        self.gamma.len()
    }

    /// The affine map `x * scale + shift` that channel `c` reduces to.
    pub fn scale_shift(&self, c: usize) -> (f32, f32) {
        let scale = self.gamma[c] / (self.var[c] + self.eps).sqrt();
        (scale, self.beta[c] - self.mean[c] * scale)
    }
}

impl Layer for BatchNorm2d {
    fn kind(&self) -> &'static str {
        "batchnorm"
    }

    fn output_shape(&self, input: Shape) -> Result<Shape, ShapeError> {
        if input.c != self.channels() {
            return Err(ShapeError::new(
                self.kind(),
                input,
                format!("expected {} channels", self.channels()),
            ));
        }
        Ok(input)
    }

    fn forward(&self, x: &Tensor, _ws: &mut Workspace) -> Tensor {
        let s = x.shape();
        let mut y = x.clone();
        for (i, plane) in y.as_mut_slice().chunks_exact_mut(s.h * s.w).enumerate() {
            let (scale, shift) = self.scale_shift(i % s.c);
            plane.iter_mut().for_each(|v| *v = *v * scale + shift);
        }
        y
    }

    fn cost(&self, input: Shape) -> Cost {
        Cost {
            macs: 0,
            flops: 2 * input.len() as u64,
            weight_bytes: f32_bytes(4 * self.channels()),
            activation_bytes: 2 * f32_bytes(input.len()),
        }
    }

    fn params(&self) -> usize {
        2 * self.channels()
    }
}
