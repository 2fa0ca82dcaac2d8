//! VGG-16 (configuration "D", no batch norm) as in torchvision.

use super::{CLASSES, INPUT, Init};
use crate::engine::ops::{Activation, AdaptiveAvgPool2d, Conv2dConfig, MaxPool2d, PoolConfig};
use crate::engine::{Model, ModelError};

/// Output channels of each 3x3 convolution; `None` is a 2x2 max pool.
const VGG16: &[Option<usize>] = &[
    Some(64),
    Some(64),
    None,
    Some(128),
    Some(128),
    None,
    Some(256),
    Some(256),
    Some(256),
    None,
    Some(512),
    Some(512),
    Some(512),
    None,
    Some(512),
    Some(512),
    Some(512),
    None,
];

pub(super) fn vgg16(init: &mut Init) -> Result<Model, ModelError> {
    let mut m = Model::new("vgg16", INPUT);
    let mut cin = 3;
    // torchvision indexes conv and ReLU separately: conv i is followed by ReLU i+1.
    let mut index = 0;
    for layer in VGG16 {
        match *layer {
            Some(cout) => {
                let cfg = Conv2dConfig {
                    stride: 1,
                    padding: 1,
                    groups: 1,
                };
                let conv = init
                    .conv(cin, cout, 3, cfg, true)
                    .with_activation(Activation::Relu);
                m.push(format!("features.{index}"), conv)?;
                cin = cout;
                index += 2;
            }
            None => {
                m.push(
                    format!("features.{index}"),
                    MaxPool2d(PoolConfig::new(2, 2)),
                )?;
                index += 1;
            }
        }
    }
    m.push("avgpool", AdaptiveAvgPool2d { out_h: 7, out_w: 7 })?;
    m.push(
        "classifier.0",
        init.dense(512 * 7 * 7, 4096, Activation::Relu),
    )?;
    m.push("classifier.3", init.dense(4096, 4096, Activation::Relu))?;
    m.push(
        "classifier.6",
        init.dense(4096, CLASSES, Activation::Identity),
    )?;
    Ok(m)
}
