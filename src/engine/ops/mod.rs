//! Layer implementations, one file per op family.

pub mod activation;
pub mod conv;
pub mod dense;
pub mod norm;
pub mod pool;
pub mod residual;

pub use activation::{Act, Activation, Flatten, Softmax};
pub use conv::{Conv2d, Conv2dConfig, conv2d};
pub use dense::{Dense, dense};
pub use norm::BatchNorm2d;
pub use pool::{AdaptiveAvgPool2d, AvgPool2d, MaxPool2d, PoolConfig};
pub use residual::Residual;

/// Output length of a sliding window: `(input + 2 * padding - kernel) / stride + 1`,
/// rounded down (or up with `ceil`), or `None` when the window does not fit.
pub fn window_out(
    input: usize,
    kernel: usize,
    stride: usize,
    padding: usize,
    ceil: bool,
) -> Option<usize> {
    let padded = input + 2 * padding;
    if stride == 0 || kernel == 0 || padded < kernel {
        return None;
    }
    let span = padded - kernel;
    let mut out = if ceil {
        span.div_ceil(stride)
    } else {
        span / stride
    } + 1;
    // PyTorch: with ceil_mode the last window must start inside the input or left padding.
    if ceil && (out - 1) * stride >= input + padding {
        out -= 1;
    }
    Some(out)
}
