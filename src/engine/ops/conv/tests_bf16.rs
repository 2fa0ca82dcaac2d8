//! The bf16 GEMM against the nested-loop reference run on bf16-rounded
//! weights and inputs.
//!
//! Tolerance: a product of two bf16 values is exact in f32 (8 + 8
//! significant bits), so the kernel differs from the reference of the
//! rounded operands only by its f32 sums, the bound of the f32 paths:
//! `(K + 2) EPSILON` times `|b| + sum |w x|` (see `tests.rs`).

use proptest::prelude::*;

use super::tests::{Case, case, cases, reference, worst_ratio};
use super::*;
use crate::engine::bf16::{f32_to_bf16 as bf16_bits, round_bf16};
use crate::engine::{Layer, Tensor, Workspace};

/// The convolution of `c` with bf16 weights, and the same convolution
/// with its f32 weights rounded to bf16 (the reference's operands).
fn pair(c: &Case, seed: u64) -> (Conv2d, Conv2d, usize) {
    let f32_conv = c.build(seed);
    let mut bf = f32_conv.clone();
    let converted = bf.set_precision(Precision::Bf16);
    let mut rounded = f32_conv.clone();
    rounded.weight.iter_mut().for_each(|w| *w = round_bf16(*w));
    (bf, rounded, converted)
}

fn check_bf16(c: &Case, seed: u64) -> Result<(), String> {
    let (bf, rounded, converted) = pair(c, seed);
    let x = c.input(seed + 7);
    if !(bf.avx512 && Isa::bf16()) {
        // Without the kernels nothing changes.
        return if converted == 0 && bf.bf16.is_none() {
            Ok(())
        } else {
            Err(format!("{converted} weights converted without AVX512-BF16"))
        };
    }
    if converted != bf.weight().len() || bf.bf16.is_none() {
        return Err(format!(
            "{converted} of {} weights converted",
            bf.weight().len()
        ));
    }
    let xr = Tensor::from_vec(
        x.shape(),
        x.as_slice().iter().map(|&v| round_bf16(v)).collect(),
    );
    let (want, mag) = reference(&rounded, &xr);
    let y = bf.forward(&x, &mut Workspace::new());
    let k = c.cin / c.groups * c.k * c.k;
    let r = worst_ratio(y.as_slice(), &want, &mag, k);
    if r > 1.0 {
        return Err(format!("{c:?}: error {r:.2} x the bound"));
    }
    Ok(())
}

#[test]
fn rounding_is_to_nearest_even() {
    assert_eq!(bf16_bits(1.0), 0x3f80);
    // 1 + 2^-8 is halfway between 1 and 1 + 2^-7: to even (1).
    assert_eq!(bf16_bits(1.0 + 1.0 / 256.0), 0x3f80);
    // 1 + 3 * 2^-8 is halfway between 1 + 2^-7 and 1 + 2^-6: to even.
    assert_eq!(bf16_bits(1.0 + 3.0 / 256.0), 0x3f82);
    assert_eq!(bf16_bits(-2.0), 0xc000);
    assert_eq!(bf16_bits(f32::MAX), 0x7f80, "overflows to infinity");
    assert!(f32::from_bits(u32::from(bf16_bits(f32::NAN)) << 16).is_nan());
    assert!((round_bf16(0.1) - 0.1).abs() <= 0.1 / 256.0);
}

#[test]
fn every_case_matches_the_rounded_reference() {
    for (i, c) in cases().iter().enumerate() {
        if c.groups == c.cin && c.groups == c.cout && c.groups > 1 {
            continue; // depthwise convolutions stay f32
        }
        check_bf16(c, 300 + i as u64).unwrap();
    }
}

#[test]
fn bf16_is_close_to_f32_and_not_equal() {
    let c = case((1, 64, 64, 28, 28), (3, 1, 1, 1), true, Activation::Relu);
    let (bf, _, _) = pair(&c, 5);
    if bf.bf16.is_none() {
        return;
    }
    let x = c.input(9);
    let f = c.build(5).forward(&x, &mut Workspace::new());
    let b = bf.forward(&x, &mut Workspace::new());
    let scale = f.as_slice().iter().fold(0f32, |m, v| m.max(v.abs()));
    let err = f
        .as_slice()
        .iter()
        .zip(b.as_slice())
        .fold(0f32, |m, (p, q)| m.max((p - q).abs()));
    // Different (the bf16 path really ran), within bf16's precision.
    assert!(err > 0.0 && err < 0.05 * scale, "err {err}, scale {scale}");
}

#[test]
fn bf16_outputs_are_bit_identical_across_thread_counts() {
    let c = case((1, 32, 70, 17, 13), (3, 2, 1, 1), true, Activation::Relu6);
    let (bf, _, _) = pair(&c, 11);
    let x = c.input(12);
    let alone = bf.forward(&x, &mut Workspace::new());
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(3)
        .build()
        .unwrap();
    let shared = bf.forward(&x, &mut Workspace::with_pool(std::sync::Arc::new(pool)));
    assert!(alone == shared);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn random_convs_match_the_rounded_reference(
        n in 1usize..3, cin_g in 1usize..19, cout_g in 1usize..40,
        groups in 1usize..3, h in 1usize..20, w in 1usize..20,
        k in prop_oneof![Just(1usize), Just(3), Just(5)],
        stride in 1usize..3, pad in 0usize..3, bias in any::<bool>(),
        seed in 0u64..1000,
    ) {
        prop_assume!(h + 2 * pad >= k && w + 2 * pad >= k);
        let c = case(
            (n, groups * cin_g, groups * cout_g, h, w),
            (k, stride, pad, groups),
            bias,
            Activation::Relu,
        );
        prop_assert_eq!(check_bf16(&c, seed), Ok(()));
    }
}
