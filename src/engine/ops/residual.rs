//! Residual blocks: `act(body(x) + shortcut(x))`, with the identity as the
//! default shortcut. ResNet's basic and bottleneck blocks and MobileNetV2's
//! inverted residuals are all this shape.

use super::activation::{Activation, add_activate};
use crate::engine::{
    Cost, Layer, Precision, Sequential, Shape, ShapeError, Tensor, Workspace, f32_bytes,
    forward_layers,
};

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
        // A body ending in a convolution takes the join in that
        // convolution's store: the rest of the body, then the shortcut,
        // then the last convolution with the shortcut as its side operand.
        if let Some((last, rest)) = self.body.layers().split_last()
            && let Some(conv) = last.as_conv()
        {
            let h = forward_layers(rest, x, ws);
            let side = self.shortcut.as_ref().map(|s| s.forward(x, ws));
            let y = conv.forward_add(
                h.as_ref().unwrap_or(x),
                side.as_ref().unwrap_or(x).as_slice(),
                self.act,
                ws,
            );
            for done in [h, side].into_iter().flatten() {
                ws.recycle(done);
            }
            return y;
        }
        let mut y = self.body.forward(x, ws);
        let side = self.shortcut.as_ref().map(|s| s.forward(x, ws));
        let side = side.as_ref().unwrap_or(x);
        add_activate(y.as_mut_slice(), side.as_slice(), self.act);
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

    fn set_precision(&mut self, precision: Precision) -> usize {
        self.body.set_precision(precision)
            + self
                .shortcut
                .as_mut()
                .map_or(0, |s| s.set_precision(precision))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::ops::{AvgPool2d, BatchNorm2d, MaxPool2d, PoolConfig};

    fn bn(c: usize, shift: f32) -> Box<dyn Layer> {
        Box::new(BatchNorm2d {
            gamma: (0..c).map(|i| 1.5 - 0.5 * i as f32).collect(),
            beta: vec![shift; c],
            mean: vec![0.25; c],
            var: vec![1.0; c],
            eps: 0.0,
        })
    }

    fn pool(k: usize) -> PoolConfig {
        PoolConfig::new(k, k)
    }

    /// `act(body(x) + side(x))` element by element, from the parts' own
    /// outputs (each op is checked against its reference elsewhere).
    fn reference(body: &Tensor, side: &Tensor, act: Activation) -> Vec<f32> {
        body.as_slice()
            .iter()
            .zip(side.as_slice())
            .map(|(a, b)| {
                let v = a + b;
                match act {
                    Activation::Identity => v,
                    Activation::Relu => v.max(0.0),
                    Activation::Relu6 => v.clamp(0.0, 6.0),
                }
            })
            .collect()
    }

    #[test]
    fn identity_shortcut() {
        let mut ws = Workspace::new();
        let s = Shape::new(2, 3, 5, 5);
        let mut x = Tensor::random(s, 1);
        // Scale to [-4, 4) so ReLU6 clamps some sums.
        x.as_mut_slice().iter_mut().for_each(|v| *v *= 4.0);
        let body = bn(3, 0.5).forward(&x, &mut ws);
        for act in [Activation::Identity, Activation::Relu, Activation::Relu6] {
            let r = Residual::new("basic", vec![bn(3, 0.5)], None, act);
            assert_eq!(r.output_shape(s), Ok(s));
            let y = r.forward(&x, &mut ws);
            // The same f32 add and clamps in the same order: exact.
            assert_eq!(y.as_slice(), &reference(&body, &x, act)[..], "{act:?}");
            if act == Activation::Relu6 {
                assert!(y.as_slice().contains(&6.0) && y.as_slice().contains(&0.0));
            }
        }
    }

    #[test]
    fn projection_shortcut() {
        let mut ws = Workspace::new();
        let s = Shape::new(1, 2, 6, 6);
        let x = Tensor::random(s, 2);
        let (body, side) = (MaxPool2d(pool(2)), AvgPool2d(pool(2)));
        let want_body = body.forward(&x, &mut ws);
        let want_side = side.forward(&x, &mut ws);
        for act in [Activation::Identity, Activation::Relu] {
            let r = Residual::new("down", vec![Box::new(body)], Some(Box::new(side)), act);
            assert_eq!(r.output_shape(s), Ok(Shape::new(1, 2, 3, 3)));
            let y = r.forward(&x, &mut ws);
            assert_eq!(y.shape(), Shape::new(1, 2, 3, 3));
            assert_eq!(y.as_slice(), &reference(&want_body, &want_side, act)[..]);
        }
    }

    #[test]
    fn a_body_ending_in_a_conv_joins_in_its_store() {
        use crate::engine::ops::{Conv2dConfig, conv2d};
        let conv = |cin: usize, cout: usize, k: usize, stride: usize, act, seed| {
            let w = Tensor::random(Shape::new(cout, cin, k, k), seed)
                .array()
                .clone();
            let cfg = Conv2dConfig {
                stride,
                padding: k / 2,
                groups: 1,
            };
            conv2d(w, Some(vec![0.1; cout]), cfg).with_activation(act)
        };
        let mut ws = Workspace::new();
        let x = Tensor::random(Shape::new(1, 32, 12, 12), 3);
        for (stride, cout) in [(1, 32), (2, 48)] {
            let first = conv(32, 16, 1, 1, Activation::Relu, 4);
            let last = conv(16, cout, 3, stride, Activation::Identity, 5);
            let short = (stride != 1).then(|| conv(32, cout, 1, stride, Activation::Identity, 6));
            // The same layers run one by one, joined in a separate pass.
            let mut want = last.forward(&first.forward(&x, &mut ws), &mut ws);
            let side = short.as_ref().map(|s| s.forward(&x, &mut ws));
            let side = side.as_ref().unwrap_or(&x);
            add_activate(want.as_mut_slice(), side.as_slice(), Activation::Relu);
            let r = Residual::new(
                "bottleneck",
                vec![Box::new(first), Box::new(last)],
                short.map(|s| Box::new(s) as Box<dyn Layer>),
                Activation::Relu,
            );
            let got = r.forward(&x, &mut ws);
            let bits = |t: &Tensor| t.as_slice().iter().map(|v| v.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&got), bits(&want), "stride {stride}");
        }
    }

    #[test]
    fn shape_mismatch_is_an_error() {
        let s = Shape::new(1, 2, 6, 6);
        // The body halves the map but the identity shortcut does not.
        let r = Residual::new(
            "bad",
            vec![Box::new(MaxPool2d(pool(2)))],
            None,
            Activation::Relu,
        );
        let err = r.output_shape(s).expect_err("6x6 vs 3x3");
        assert_eq!((err.layer, err.input), ("bad", s));
        assert!(err.reason.contains("shortcut"), "{}", err.reason);
        // The shortcut disagrees with the body.
        let r = Residual::new(
            "bad",
            vec![Box::new(MaxPool2d(pool(2)))],
            Some(Box::new(AvgPool2d(pool(3)))),
            Activation::Identity,
        );
        assert!(r.output_shape(s).is_err());
        // An error inside the body propagates.
        let r = Residual::new("bad", vec![bn(5, 0.0)], None, Activation::Identity);
        assert_eq!(r.output_shape(s).expect_err("channels").layer, "batchnorm");
    }
}
