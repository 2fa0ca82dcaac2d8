//! ResNet-18/50/152 as in torchvision (v1.5: the stride of a bottleneck
//! sits on its 3x3 convolution). One unit per residual block.

use super::{CLASSES, INPUT, Init};
use crate::engine::ops::{Activation, AdaptiveAvgPool2d, MaxPool2d, PoolConfig, Residual};
use crate::engine::{Layer, Model, ModelError};

/// Gain of the last batch norm in each residual body: small, so the
/// identity path dominates and activations stay bounded over 50 blocks.
const LAST_BN_GAIN: f32 = 0.2;

/// Residual block family.
#[derive(Clone, Copy, Debug)]
pub(super) enum Block {
    /// Two 3x3 convolutions (ResNet-18/34).
    Basic,
    /// 1x1, 3x3, 1x1 with 4x expansion (ResNet-50/101/152).
    Bottleneck,
}

impl Block {
    fn expansion(self) -> usize {
        match self {
            Block::Basic => 1,
            Block::Bottleneck => 4,
        }
    }

    fn build(self, init: &mut Init, cin: usize, planes: usize, stride: usize) -> Residual {
        let relu = Activation::Relu;
        let id = Activation::Identity;
        let cout = planes * self.expansion();
        let body: Vec<Box<dyn Layer>> = match self {
            Block::Basic => vec![
                Box::new(init.conv_bn(cin, planes, 3, stride, 1, 1, relu, 1.0)),
                Box::new(init.conv_bn(planes, planes, 3, 1, 1, 1, id, LAST_BN_GAIN)),
            ],
            Block::Bottleneck => vec![
                Box::new(init.conv_bn(cin, planes, 1, 1, 0, 1, relu, 1.0)),
                Box::new(init.conv_bn(planes, planes, 3, stride, 1, 1, relu, 1.0)),
                Box::new(init.conv_bn(planes, cout, 1, 1, 0, 1, id, LAST_BN_GAIN)),
            ],
        };
        let shortcut: Option<Box<dyn Layer>> = (stride != 1 || cin != cout)
            .then(|| Box::new(init.conv_bn(cin, cout, 1, stride, 0, 1, id, 1.0)) as Box<dyn Layer>);
        let kind = match self {
            Block::Basic => "basic",
            Block::Bottleneck => "bottleneck",
        };
        Residual::new(kind, body, shortcut, relu)
    }
}

pub(super) fn resnet(
    init: &mut Init,
    name: &str,
    block: Block,
    layers: [usize; 4],
) -> Result<Model, ModelError> {
    let mut m = Model::new(name, INPUT);
    m.push(
        "conv1",
        init.conv_bn(3, 64, 7, 2, 3, 1, Activation::Relu, 1.0),
    )?;
    m.push(
        "maxpool",
        MaxPool2d(PoolConfig {
            kernel: 3,
            stride: 2,
            padding: 1,
            ceil: false,
        }),
    )?;
    let mut cin = 64;
    for (stage, &blocks) in layers.iter().enumerate() {
        let planes = 64 << stage;
        for b in 0..blocks {
            let stride = if stage > 0 && b == 0 { 2 } else { 1 };
            m.push(
                format!("layer{}.{b}", stage + 1),
                block.build(init, cin, planes, stride),
            )?;
            cin = planes * block.expansion();
        }
    }
    m.push("avgpool", AdaptiveAvgPool2d::global())?;
    m.push("fc", init.dense(cin, CLASSES, Activation::Identity))?;
    Ok(m)
}
