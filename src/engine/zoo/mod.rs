//! Built-in models with the exact torchvision topologies and seeded random
//! weights.
//!
//! Weights are drawn so that activations keep a stable magnitude through
//! the whole network: convolutions use Kaiming-uniform bounds for ReLU
//! (`sqrt(6 / fan_in)`), batch norms get random statistics that are folded
//! into their convolution, and the last batch norm of every residual body is
//! scaled down so the identity path dominates, as trained ResNets do.

mod alexnet;
mod mobilenet;
mod resnet;
mod vgg;

use ndarray::{Array2, Array4};
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::ops::{Activation, BatchNorm2d, Conv2d, Conv2dConfig, Dense, conv2d, dense};
use super::{Model, ModelError, Shape};

/// Names of the built-in models.
pub const NAMES: &[&str] = &[
    "alexnet",
    "vgg16",
    "resnet18",
    "resnet50",
    "resnet152",
    "mobilenet_v2",
];

/// The ImageNet input every built-in model takes: one 3x224x224 image.
pub const INPUT: Shape = Shape::new(1, 3, 224, 224);

/// Classes of the built-in classifiers.
pub const CLASSES: usize = 1000;

/// Builds the model `name` with weights drawn from `seed`.
pub fn build(name: &str, seed: u64) -> Result<Model, ModelError> {
    let mut init = Init::new(seed);
    match name {
        "alexnet" => alexnet::alexnet(&mut init),
        "vgg16" => vgg::vgg16(&mut init),
        "resnet18" => resnet::resnet(&mut init, "resnet18", resnet::Block::Basic, [2, 2, 2, 2]),
        "resnet50" => resnet::resnet(
            &mut init,
            "resnet50",
            resnet::Block::Bottleneck,
            [3, 4, 6, 3],
        ),
        "resnet152" => resnet::resnet(
            &mut init,
            "resnet152",
            resnet::Block::Bottleneck,
            [3, 8, 36, 3],
        ),
        "mobilenet_v2" => mobilenet::mobilenet_v2(&mut init),
        _ => Err(ModelError::Unknown(name.to_string())),
    }
}

/// Seeded weight generator shared by the model builders.
pub(crate) struct Init {
    rng: ChaCha8Rng,
}

impl Init {
    pub(crate) fn new(seed: u64) -> Self {
        Self {
            rng: ChaCha8Rng::seed_from_u64(seed),
        }
    }

    fn uniform(&mut self, len: usize, bound: f32) -> Vec<f32> {
        (0..len)
            .map(|_| self.rng.random_range(-bound..bound))
            .collect()
    }

    fn around(&mut self, len: usize, centre: f32, spread: f32) -> Vec<f32> {
        (0..len)
            .map(|_| centre + self.rng.random_range(-spread..spread))
            .collect()
    }

    /// A convolution with Kaiming-uniform weights, no bias.
    pub(crate) fn conv(
        &mut self,
        cin: usize,
        cout: usize,
        k: usize,
        cfg: Conv2dConfig,
        bias: bool,
    ) -> Conv2d {
        let cin_g = cin / cfg.groups;
        let fan_in = cin_g * k * k;
        let bound = (6.0 / fan_in as f32).sqrt();
        let w = Array4::from_shape_vec((cout, cin_g, k, k), self.uniform(cout * fan_in, bound))
            .expect("weight length");
        let b = bias.then(|| self.uniform(cout, 0.05));
        conv2d(w, b, cfg)
    }

    /// A batch norm with random statistics; `gain` scales gamma.
    pub(crate) fn batch_norm(&mut self, c: usize, gain: f32) -> BatchNorm2d {
        BatchNorm2d {
            gamma: self.around(c, gain, 0.2 * gain),
            beta: self.around(c, 0.0, 0.1),
            mean: self.around(c, 0.0, 0.1),
            var: self.around(c, 1.0, 0.2),
            eps: 1e-5,
        }
    }

    /// Convolution (no bias) + batch norm (folded) + activation, as
    /// torchvision's `conv -> bn -> act`.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn conv_bn(
        &mut self,
        cin: usize,
        cout: usize,
        k: usize,
        stride: usize,
        padding: usize,
        groups: usize,
        act: Activation,
        gain: f32,
    ) -> Conv2d {
        let cfg = Conv2dConfig {
            stride,
            padding,
            groups,
        };
        let conv = self.conv(cin, cout, k, cfg, false);
        let bn = self.batch_norm(cout, gain);
        conv.fold_batch_norm(&bn).with_activation(act)
    }

    /// A dense layer with Kaiming-uniform weights and a small bias.
    pub(crate) fn dense(&mut self, inputs: usize, outputs: usize, act: Activation) -> Dense {
        let bound = (6.0 / inputs as f32).sqrt();
        let w = Array2::from_shape_vec((outputs, inputs), self.uniform(outputs * inputs, bound))
            .expect("weight length");
        let b = self.uniform(outputs, 0.05);
        dense(w, b).with_activation(act)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::{Tensor, Workspace};

    /// Published parameter counts (torchvision model docs).
    const PARAMS: &[(&str, usize)] = &[
        ("alexnet", 61_100_840),
        ("vgg16", 138_357_544),
        ("resnet18", 11_689_512),
        ("resnet50", 25_557_032),
        ("resnet152", 60_192_808),
        ("mobilenet_v2", 3_504_872),
    ];

    /// Published multiply-accumulates in GMAC (torchvision's "GFLOPS" column,
    /// two decimals).
    const GMACS: &[(&str, f64)] = &[
        ("alexnet", 0.71),
        ("vgg16", 15.47),
        ("resnet18", 1.81),
        ("resnet50", 4.09),
        ("resnet152", 11.51),
        ("mobilenet_v2", 0.30),
    ];

    #[test]
    fn parameter_counts_match_torchvision() {
        for &(name, params) in PARAMS {
            let m = build(name, 1).unwrap();
            assert_eq!(m.params(), params, "{name}");
            assert_eq!(m.input(), INPUT, "{name}");
            assert_eq!(m.output(), Shape::new(1, CLASSES, 1, 1), "{name}");
        }
    }

    #[test]
    fn flops_match_torchvision() {
        for &(name, gmacs) in GMACS {
            let m = build(name, 1).unwrap();
            // Our FLOPs count a multiply-add as two and add bias, activation
            // and pooling work, which the published figure leaves out: the
            // conv and dense MACs alone must round to the published value,
            // and the extras stay within 5%.
            let macs = m.cost().macs;
            let g = macs as f64 / 1e9;
            assert!(
                (g - gmacs).abs() <= 0.005 + 1e-9,
                "{name}: {g:.4} GMAC vs published {gmacs}"
            );
            let total = m.cost().flops as f64 / 2e9;
            assert!(
                total >= g && total < g * 1.05,
                "{name}: {total:.4} vs {g:.4}"
            );
        }
    }

    #[test]
    fn unknown_model_names_the_valid_ones() {
        let err = build("resnet51", 0).unwrap_err().to_string();
        assert!(
            err.contains("resnet51") && err.contains("mobilenet_v2"),
            "{err}"
        );
    }

    #[test]
    fn seeds_make_weights() {
        let a = build("resnet18", 1).unwrap();
        let b = build("resnet18", 1).unwrap();
        let c = build("resnet18", 2).unwrap();
        let x = Tensor::random(INPUT, 3);
        let mut ws = Workspace::new();
        let (ya, yb, yc) = (
            a.forward(&x, &mut ws),
            b.forward(&x, &mut ws),
            c.forward(&x, &mut ws),
        );
        assert_eq!(ya, yb);
        assert_ne!(ya, yc);
    }
}
