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

/// Output length of a sliding window over `input` cells padded by `padding`
/// on both sides, or `None` when no window fits (or the input is empty, or
/// `kernel` or `stride` is zero, or the arithmetic would overflow).
///
/// This is PyTorch's `pooling_output_shape` (dilation 1):
/// `(input + 2 * padding - kernel + (ceil ? stride - 1 : 0)) / stride + 1`,
/// rounded toward -inf; then with `ceil` the last window is dropped if it
/// would start in the right padding. With `padding <= kernel / 2`, as
/// pooling requires, every window then starts inside the input or the left
/// padding. In ceil mode a window may overhang the right edge, so even an
/// input shorter than the window can give one output.
pub fn window_out(
    input: usize,
    kernel: usize,
    stride: usize,
    padding: usize,
    ceil: bool,
) -> Option<usize> {
    if input == 0 || kernel == 0 || stride == 0 {
        return None;
    }
    let round_up = if ceil { stride - 1 } else { 0 };
    let span = padding
        .checked_mul(2)?
        .checked_add(input)?
        .checked_add(round_up)?
        .checked_sub(kernel)?;
    let out = span / stride + 1;
    if ceil && (out - 1) * stride >= input + padding {
        return Some(out - 1);
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::window_out;

    /// PyTorch's `pooling_output_shape` (dilation 1) in wide signed
    /// arithmetic, with `div_rtn` as floor division, and its checks that
    /// the kernel, stride and input are non-empty and the output is >= 1.
    fn torch_out(input: usize, k: usize, s: usize, p: usize, ceil: bool) -> Option<usize> {
        if input == 0 || k == 0 || s == 0 {
            return None;
        }
        let (i, k, s, p) = (input as i128, k as i128, s as i128, p as i128);
        let num = i + 2 * p - (k - 1) - 1 + if ceil { s - 1 } else { 0 };
        let mut out = num.div_euclid(s) + 1;
        if ceil && (out - 1) * s >= i + p {
            out -= 1;
        }
        (out >= 1).then_some(out as usize)
    }

    #[test]
    fn known_sizes() {
        // resnet stem pool, vgg pool, alexnet pool.
        assert_eq!(window_out(112, 3, 2, 1, false), Some(56));
        assert_eq!(window_out(224, 2, 2, 0, false), Some(112));
        assert_eq!(window_out(55, 3, 2, 0, false), Some(27));
        // ceil adds the partial window...
        assert_eq!(window_out(6, 3, 2, 0, false), Some(2));
        assert_eq!(window_out(6, 3, 2, 0, true), Some(3));
        // ...unless it would start in the right padding: (5 + 2 - 2 + 1) / 2
        // + 1 = 4, but window 3 starts at 6 - 1 = 5, past the input.
        assert_eq!(window_out(5, 2, 2, 1, false), Some(3));
        assert_eq!(window_out(5, 2, 2, 1, true), Some(3));
        // In ceil mode a window may overhang an input shorter than itself.
        assert_eq!(window_out(2, 3, 2, 0, true), Some(1));
        assert_eq!(window_out(2, 3, 2, 0, false), None);
        assert_eq!(window_out(2, 3, 1, 0, true), None);
        // Degenerate arguments and overflow give None, not a panic.
        assert_eq!(window_out(0, 1, 1, 1, false), None);
        assert_eq!(window_out(4, 0, 1, 0, false), None);
        assert_eq!(window_out(4, 2, 0, 0, true), None);
        assert_eq!(window_out(usize::MAX, 1, 1, 1, false), None);
        assert_eq!(window_out(1, 2, 1, usize::MAX / 2 + 1, true), None);
    }

    proptest! {
        #[test]
        fn matches_pytorch(
            input in 0usize..300,
            k in 0usize..16,
            s in 0usize..8,
            p in 0usize..9,
            ceil: bool,
        ) {
            let out = window_out(input, k, s, p, ceil);
            prop_assert_eq!(out, torch_out(input, k, s, p, ceil));
            if let Some(out) = out {
                prop_assert!(out >= 1);
                // Every window starts inside the input or the left padding,
                // unless the padding is wider than half the window (convs
                // allow that; their outer windows can be all padding).
                if 2 * p <= k {
                    prop_assert!((out - 1) * s < input + p);
                }
                if !ceil {
                    // Floor mode: the last window fits, one more would not.
                    prop_assert!((out - 1) * s + k <= input + 2 * p);
                    prop_assert!(out * s + k > input + 2 * p);
                } else if 2 * p <= k {
                    // Ceil mode adds at most the one partial window (with
                    // wider padding it can also drop all-padding windows).
                    let floor = window_out(input, k, s, p, false).unwrap_or(0);
                    prop_assert!(out == floor || out == floor + 1);
                }
            }
        }
    }
}
