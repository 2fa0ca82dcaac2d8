//! Residual blocks: `act(body(x) + shortcut(x))`, with the identity as the
//! default shortcut. ResNet's basic and bottleneck blocks and MobileNetV2's
//! inverted residuals are all this shape.

use super::activation::Activation;
use crate::engine::{Cost, Layer, Sequential, Shape, ShapeError, Tensor, Workspace, f32_bytes};

/// A residual block, one unit of partitioning.
#[derive(Debug)]
pub struct Residual {
    kind: &'static str,
    body: Sequential,
    shortcut: Option<Box<dyn Layer>>,
    act: Activation,
}

impl Residual {
    /// `act(body(x) + shortcut(x))`; `shortcut: None` is the identity.
    pub fn new(
        kind: &'static str,
        body: Vec<Box<dyn Layer>>,
        shortcut: Option<Box<dyn Layer>>,
        act: Activation,
    ) -> Self {
        Self {
            kind,
            body: Sequential::new(kind, body),
            shortcut,
            act,
        }
    }
}

impl Layer for Residual {
    fn kind(&self) -> &'static str {
        self.kind
    }

    fn output_shape(&self, input: Shape) -> Result<Shape, ShapeError> {
        let main = self.body.output_shape(input)?;
        let side = match &self.shortcut {
            Some(s) => s.output_shape(input)?,
            None => input,
        };
        if main != side {
            return Err(ShapeError::new(
                self.kind,
                input,
                format!("body gives {main} but shortcut gives {side}"),
            ));
        }
        Ok(main)
    }

    fn forward(&self, x: &Tensor, ws: &mut Workspace) -> Tensor {
        let mut y = self.body.forward(x, ws);
        let side = self.shortcut.as_ref().map(|s| s.forward(x, ws));
        let side = side.as_ref().unwrap_or(x);
        let act = self.act;
        y.as_mut_slice()
            .iter_mut()
            .zip(side.as_slice())
            .for_each(|(a, b)| *a = act.apply_one(*a + b));
        y
    }

    fn cost(&self, input: Shape) -> Cost {
        let out = self.output_shape(input).map(|s| s.len()).unwrap_or(0);
        let side = self
            .shortcut
            .as_ref()
            .map(|s| s.cost(input))
            .unwrap_or_default();
        self.body.cost(input)
            + side
            + Cost {
                macs: 0,
                flops: out as u64 * (1 + self.act.flops_per_element()),
                weight_bytes: 0,
                activation_bytes: 3 * f32_bytes(out),
            }
    }

    fn params(&self) -> usize {
        self.body.params() + self.shortcut.as_ref().map_or(0, |s| s.params())
    }
}
