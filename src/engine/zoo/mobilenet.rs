//! MobileNetV2 (width 1.0) as in torchvision. One unit per inverted
//! residual block, whether or not it has the skip connection.

use super::{CLASSES, INPUT, Init};
use crate::engine::ops::{Activation, AdaptiveAvgPool2d, Residual};
use crate::engine::{Layer, Model, ModelError, Sequential};

/// (expansion t, output channels c, repeats n, first stride s).
const SETTINGS: [(usize, usize, usize, usize); 7] = [
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
];

/// Gain of the projection's batch norm in blocks with a skip connection.
const SKIP_BN_GAIN: f32 = 0.2;

pub(super) fn mobilenet_v2(init: &mut Init) -> Result<Model, ModelError> {
    let relu6 = Activation::Relu6;
    let id = Activation::Identity;
    let mut m = Model::new("mobilenet_v2", INPUT);
    m.push("features.0", init.conv_bn(3, 32, 3, 2, 1, 1, relu6, 1.0))?;
    let mut cin = 32;
    let mut index = 1;
    for (t, c, n, s) in SETTINGS {
        for i in 0..n {
            let stride = if i == 0 { s } else { 1 };
            let hidden = cin * t;
            let skip = stride == 1 && cin == c;
            let mut body: Vec<Box<dyn Layer>> = Vec::new();
            if t != 1 {
                body.push(Box::new(init.conv_bn(cin, hidden, 1, 1, 0, 1, relu6, 1.0)));
            }
            body.push(Box::new(
                init.conv_bn(hidden, hidden, 3, stride, 1, hidden, relu6, 1.0),
            ));
            let gain = if skip { SKIP_BN_GAIN } else { 1.0 };
            body.push(Box::new(init.conv_bn(hidden, c, 1, 1, 0, 1, id, gain)));
            let name = format!("features.{index}");
            if skip {
                m.push(name, Residual::new("invres", body, None, id))?;
            } else {
                m.push(name, Sequential::new("invres", body))?;
            }
            cin = c;
            index += 1;
        }
    }
    m.push(
        format!("features.{index}"),
        init.conv_bn(cin, 1280, 1, 1, 0, 1, relu6, 1.0),
    )?;
    m.push("avgpool", AdaptiveAvgPool2d::global())?;
    m.push("classifier.1", init.dense(1280, CLASSES, id))?;
    Ok(m)
}
