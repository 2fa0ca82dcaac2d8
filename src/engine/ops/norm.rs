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

#[cfg(test)]
mod tests {
    use super::*;

    fn bn(c: usize, seed: u64) -> BatchNorm2d {
        let r = |k: u64| Tensor::random(Shape::new(1, 1, 1, c), seed + k).into_vec();
        BatchNorm2d {
            gamma: r(0),
            beta: r(1),
            mean: r(2).iter().map(|v| 2.0 * v).collect(),
            var: r(3).iter().map(|v| 0.75 + 0.5 * v).collect(),
            eps: 1e-5,
        }
    }

    #[test]
    fn matches_formula() {
        let b = bn(5, 1);
        let s = Shape::new(2, 5, 3, 4);
        let x = Tensor::random(s, 9);
        let y = b.forward(&x, &mut Workspace::new());
        assert_eq!(y.shape(), s);
        let a = x.array();
        for n in 0..s.n {
            for c in 0..s.c {
                let g = |v: &[f32]| f64::from(v[c]);
                let std = (g(&b.var) + f64::from(b.eps)).sqrt();
                for h in 0..s.h {
                    for w in 0..s.w {
                        let v = f64::from(a[[n, c, h, w]]);
                        let want = (v - g(&b.mean)) / std * g(&b.gamma) + g(&b.beta);
                        // The op folds to x * scale + shift: scale has ~3
                        // roundings (add, sqrt, divide), shift 2 more, the
                        // affine map 2; 8 eps relative to the magnitudes
                        // involved bounds it.
                        let scale = g(&b.gamma) / std;
                        let mag = (v * scale).abs() + g(&b.beta).abs() + (g(&b.mean) * scale).abs();
                        let got = f64::from(y.array()[[n, c, h, w]]);
                        assert!(
                            (got - want).abs() <= 8.0 * f64::from(f32::EPSILON) * mag,
                            "n{n} c{c}: {got} vs {want}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn channel_count_is_checked() {
        let b = bn(4, 2);
        assert!(b.output_shape(Shape::new(1, 4, 2, 2)).is_ok());
        let err = b.output_shape(Shape::new(1, 3, 2, 2)).expect_err("3 != 4");
        assert_eq!(err.layer, "batchnorm");
        assert_eq!(b.params(), 8);
    }
}
