//! Fully connected layers. The input is flattened per image (NCHW order),
//! as PyTorch's `torch.flatten(x, 1)` followed by `nn.Linear`.

use ndarray::Array2;

use super::activation::Activation;
use crate::engine::{Cost, Layer, Shape, ShapeError, Tensor, Workspace, f32_bytes};

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
        let xs = x.as_slice();
        for (xi, yi) in xs
            .chunks_exact(self.inputs)
            .zip(y.as_mut_slice().chunks_exact_mut(self.outputs))
        {
            for (o, (yo, row)) in yi
                .iter_mut()
                .zip(self.weight.chunks_exact(self.inputs))
                .enumerate()
            {
                let dot: f32 = row.iter().zip(xi).map(|(w, v)| w * v).sum();
                *yo = self.act.apply_one(dot + self.bias[o]);
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
