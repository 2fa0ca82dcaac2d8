//! AlexNet as in torchvision (`features`, `avgpool`, `classifier`; dropout
//! is the identity at inference and is left out).

use super::{CLASSES, INPUT, Init};
use crate::engine::ops::{Activation, AdaptiveAvgPool2d, Conv2dConfig, MaxPool2d, PoolConfig};
use crate::engine::{Model, ModelError};

pub(super) fn alexnet(init: &mut Init) -> Result<Model, ModelError> {
    let mut m = Model::new("alexnet", INPUT);
    let conv = |init: &mut Init, cin, cout, k, stride, padding| {
        init.conv(
            cin,
            cout,
            k,
            Conv2dConfig {
                stride,
                padding,
                groups: 1,
            },
            true,
        )
        .with_activation(Activation::Relu)
    };
    let pool = || MaxPool2d(PoolConfig::new(3, 2));
    m.push("features.0", conv(init, 3, 64, 11, 4, 2))?;
    m.push("features.2", pool())?;
    m.push("features.3", conv(init, 64, 192, 5, 1, 2))?;
    m.push("features.5", pool())?;
    m.push("features.6", conv(init, 192, 384, 3, 1, 1))?;
    m.push("features.8", conv(init, 384, 256, 3, 1, 1))?;
    m.push("features.10", conv(init, 256, 256, 3, 1, 1))?;
    m.push("features.12", pool())?;
    m.push("avgpool", AdaptiveAvgPool2d { out_h: 6, out_w: 6 })?;
    m.push(
        "classifier.1",
        init.dense(256 * 6 * 6, 4096, Activation::Relu),
    )?;
    m.push("classifier.4", init.dense(4096, 4096, Activation::Relu))?;
    m.push(
        "classifier.6",
        init.dense(4096, CLASSES, Activation::Identity),
    )?;
    Ok(m)
}
