//! Every convolution path against a nested-loop reference.
//!
//! Tolerance: the reference accumulates in f64 (its own error is negligible)
//! and also returns, per output, `mag = |b| + sum |w * x|` over the window.
//! An f32 dot product of K terms in any order (with or without FMA) is off
//! by at most `gamma_K * mag`, `gamma_K = K u / (1 - K u)`, `u = 2^-24`
//! (Higham, Accuracy and Stability of Numerical Algorithms, 3.1); adding
//! the bias and rounding the result add `2 u mag`; the activations are
//! clamps, which never increase a difference. So every path must satisfy
//! `|y - ref| <= (K + 2) * f32::EPSILON * mag` (EPSILON = 2u: a factor 2 of
//! slack, still far below what a wrong tap, offset or bias produces, which
//! `tolerance_catches_wrong_padding` checks).

use proptest::prelude::*;

use super::*;
use crate::engine::{Layer, Shape, Tensor, Workspace, zoo};

/// One test convolution.
#[derive(Clone, Copy, Debug)]
pub(super) struct Case {
    pub(super) n: usize,
    pub(super) cin: usize,
    pub(super) cout: usize,
    pub(super) h: usize,
    pub(super) w: usize,
    pub(super) k: usize,
    pub(super) stride: usize,
    pub(super) pad: usize,
    pub(super) groups: usize,
    pub(super) bias: bool,
    pub(super) act: Activation,
}

impl Case {
    fn cfg(&self) -> Conv2dConfig {
        Conv2dConfig {
            stride: self.stride,
            padding: self.pad,
            groups: self.groups,
        }
    }

    pub(super) fn build(&self, seed: u64) -> Conv2d {
        let cin_g = self.cin / self.groups;
        let w = Tensor::random(Shape::new(self.cout, cin_g, self.k, self.k), seed);
        let w = w.array().clone();
        let b = self
            .bias
            .then(|| Tensor::random(Shape::new(1, self.cout, 1, 1), seed + 1).into_vec());
        conv2d(w, b, self.cfg()).with_activation(self.act)
    }

    pub(super) fn input(&self, seed: u64) -> Tensor {
        Tensor::random(Shape::new(self.n, self.cin, self.h, self.w), seed)
    }
}

/// Nested-loop convolution in f64: `(output, mag)` with `mag` the sum of
/// `|w * x|` over each window plus `|bias|` (see the module doc).
pub(super) fn reference(conv: &Conv2d, x: &Tensor) -> (Vec<f64>, Vec<f64>) {
    let s = x.shape();
    let cfg = conv.config();
    let (kh, kw) = conv.kernel();
    let out = conv.output_shape(s).unwrap();
    let (cin_g, cout_g) = (
        conv.in_channels() / cfg.groups,
        conv.out_channels() / cfg.groups,
    );
    let (w, b, xs) = (conv.weight(), conv.bias(), x.as_slice());
    let mut y = vec![0.0f64; out.len()];
    let mut mag = vec![0.0f64; out.len()];
    for n in 0..s.n {
        for o in 0..out.c {
            let g = o / cout_g;
            for oy in 0..out.h {
                for ox in 0..out.w {
                    let mut acc = f64::from(b[o]);
                    let mut m = f64::from(b[o]).abs();
                    for ci in 0..cin_g {
                        let c = g * cin_g + ci;
                        for ky in 0..kh {
                            for kx in 0..kw {
                                let iy = (oy * cfg.stride + ky) as isize - cfg.padding as isize;
                                let ix = (ox * cfg.stride + kx) as isize - cfg.padding as isize;
                                if iy < 0 || ix < 0 || iy >= s.h as isize || ix >= s.w as isize {
                                    continue;
                                }
                                let xv =
                                    xs[((n * s.c + c) * s.h + iy as usize) * s.w + ix as usize];
                                let wv = w[((o * cin_g + ci) * kh + ky) * kw + kx];
                                let p = f64::from(wv) * f64::from(xv);
                                acc += p;
                                m += p.abs();
                            }
                        }
                    }
                    let i = ((n * out.c + o) * out.h + oy) * out.w + ox;
                    y[i] = match conv.activation() {
                        Activation::Identity => acc,
                        Activation::Relu => acc.max(0.0),
                        Activation::Relu6 => acc.clamp(0.0, 6.0),
                    };
                    mag[i] = m;
                }
            }
        }
    }
    (y, mag)
}

/// Largest `|y - ref| / (tol * mag)`; at most 1 passes.
pub(super) fn worst_ratio(got: &[f32], want: &[f64], mag: &[f64], k: usize) -> f64 {
    assert_eq!(got.len(), want.len());
    let tol = (k + 2) as f64 * f64::from(f32::EPSILON);
    got.iter()
        .zip(want)
        .zip(mag)
        .map(|((&g, &r), &m)| (f64::from(g) - r).abs() / (tol * m).max(f64::MIN_POSITIVE))
        .fold(0.0, f64::max)
}

/// The error scale of Winograd F(2x2, 3x3) per output, for `conv` with
/// groups 1, a 3x3 kernel and stride 1.
///
/// Each stage of the algorithm is a short signed sum, so its rounding error
/// is bounded by the same sum over absolute values (Higham 3.5): computing
/// `|At| (sum_ci (|G| |g| |Gt|) . (|Bt| |d| |B|)) |A| + |bias|` bounds
/// every intermediate. Rounding U once (u), V's 4-term sums (3u), the
/// cin-term GEMM (cin u) and the 9-term output sum plus bias (10u) give
/// `|y - ref| <= (cin + 14) u * mag`; the tests allow `(cin + 16) EPSILON`.
fn winograd_mag(conv: &Conv2d, x: &Tensor) -> Vec<f64> {
    const BT: [[f64; 4]; 4] = [
        [1.0, 0.0, 1.0, 0.0],
        [0.0, 1.0, 1.0, 0.0],
        [0.0, 1.0, 1.0, 0.0],
        [0.0, 1.0, 0.0, 1.0],
    ];
    const G: [[f64; 3]; 4] = [
        [1.0, 0.0, 0.0],
        [0.5, 0.5, 0.5],
        [0.5, 0.5, 0.5],
        [0.0, 0.0, 1.0],
    ];
    const AT: [[f64; 4]; 2] = [[1.0, 1.0, 1.0, 0.0], [0.0, 1.0, 1.0, 1.0]];
    let s = x.shape();
    let out = conv.output_shape(s).unwrap();
    let (cin, pad) = (conv.in_channels(), conv.config().padding as isize);
    let (w, b, xs) = (conv.weight(), conv.bias(), x.as_slice());
    let mut mag = vec![0.0f64; out.len()];
    for n in 0..s.n {
        for o in 0..out.c {
            for ty in 0..out.h.div_ceil(2) {
                for tx in 0..out.w.div_ceil(2) {
                    let mut m = [[0.0f64; 4]; 4];
                    for ci in 0..cin {
                        let g =
                            |i: usize, j: usize| f64::from(w[(o * cin + ci) * 9 + i * 3 + j]).abs();
                        let d = |i: usize, j: usize| {
                            let iy = (2 * ty + i) as isize - pad;
                            let ix = (2 * tx + j) as isize - pad;
                            if iy < 0 || ix < 0 || iy >= s.h as isize || ix >= s.w as isize {
                                0.0
                            } else {
                                let at = ((n * s.c + ci) * s.h + iy as usize) * s.w + ix as usize;
                                f64::from(xs[at]).abs()
                            }
                        };
                        for (a, ma) in m.iter_mut().enumerate() {
                            for (bb, mab) in ma.iter_mut().enumerate() {
                                let mut u = 0.0;
                                let mut v = 0.0;
                                for i in 0..4 {
                                    for j in 0..4 {
                                        if i < 3 && j < 3 {
                                            u += G[a][i] * g(i, j) * G[bb][j];
                                        }
                                        v += BT[a][i] * d(i, j) * BT[bb][j];
                                    }
                                }
                                *mab += u * v;
                            }
                        }
                    }
                    for (a, at_a) in AT.iter().enumerate() {
                        for (c, at_c) in AT.iter().enumerate() {
                            let (oy, ox) = (2 * ty + a, 2 * tx + c);
                            if oy >= out.h || ox >= out.w {
                                continue;
                            }
                            let mut y = f64::from(b[o]).abs();
                            for i in 0..4 {
                                for j in 0..4 {
                                    y += at_a[i] * m[i][j] * at_c[j];
                                }
                            }
                            mag[((n * out.c + o) * out.h + oy) * out.w + ox] = y;
                        }
                    }
                }
            }
        }
    }
    mag
}

fn check(case: &Case, seed: u64) -> Result<(), String> {
    let conv = case.build(seed);
    let x = case.input(seed + 7);
    let (want, mag) = reference(&conv, &x);
    let k = case.cin / case.groups * case.k * case.k;
    let mut ws = Workspace::new();
    for path in [Path::Fast, Path::Avx2, Path::Portable] {
        let y = conv.forward_with(&x, &mut ws, path, None);
        assert_eq!(y.shape(), conv.output_shape(x.shape()).unwrap());
        #[cfg(target_arch = "x86_64")]
        let r = if path == Path::Fast && conv.uses_winograd(x.shape()) {
            // worst_ratio's tolerance is (k + 2) EPSILON; Winograd's is
            // (cin + 16) EPSILON times its own scale.
            let wmag = winograd_mag(&conv, &x);
            worst_ratio(y.as_slice(), &want, &wmag, case.cin + 14)
        } else {
            worst_ratio(y.as_slice(), &want, &mag, k)
        };
        #[cfg(not(target_arch = "x86_64"))]
        let r = worst_ratio(y.as_slice(), &want, &mag, k);
        if r > 1.0 {
            return Err(format!("{case:?} {path:?}: error {r:.2}x the tolerance"));
        }
    }
    Ok(())
}

pub(super) fn case(
    (n, cin, cout, h, w): (usize, usize, usize, usize, usize),
    (k, stride, pad, groups): (usize, usize, usize, usize),
    bias: bool,
    act: Activation,
) -> Case {
    Case {
        n,
        cin,
        cout,
        h,
        w,
        k,
        stride,
        pad,
        groups,
        bias,
        act,
    }
}

use Activation::{Identity, Relu, Relu6};

/// Hand-picked cases: every kernel size, stride, padding and group kind,
/// odd sizes, batch 2, and shapes that cross the GEMM's row, column and
/// depth blocks (M = 37 leaves a 1-row tile, K = 630 three depth blocks,
/// N = 720 two column blocks, 49 and 13 columns masked tiles).
pub(super) fn cases() -> Vec<Case> {
    vec![
        case((1, 3, 64, 23, 19), (7, 2, 3, 1), false, Relu),
        case((2, 8, 16, 9, 11), (3, 1, 1, 1), true, Relu6),
        case((1, 16, 24, 13, 13), (1, 1, 0, 1), true, Identity),
        case((2, 16, 32, 15, 9), (1, 2, 0, 1), false, Identity),
        case((1, 5, 7, 17, 21), (5, 2, 0, 1), true, Relu),
        case((1, 5, 7, 17, 21), (5, 1, 3, 1), true, Identity),
        case((1, 3, 13, 31, 29), (11, 2, 3, 1), true, Relu),
        case((2, 3, 16, 35, 39), (11, 4, 2, 1), true, Relu),
        case((2, 8, 12, 10, 11), (3, 1, 1, 2), true, Relu),
        case((1, 6, 9, 11, 7), (1, 1, 0, 3), false, Relu6),
        case((1, 70, 37, 24, 30), (3, 1, 1, 1), true, Relu),
        case((1, 64, 50, 7, 7), (3, 1, 1, 1), false, Identity),
        case((1, 520, 20, 7, 7), (1, 1, 0, 1), true, Relu6),
        case((1, 24, 30, 9, 13), (1, 2, 1, 1), true, Relu),
        case((2, 12, 12, 15, 17), (3, 1, 1, 12), true, Relu6),
        case((1, 24, 24, 16, 16), (3, 2, 1, 24), false, Relu),
        case((1, 8, 8, 19, 19), (5, 2, 3, 8), true, Identity),
        case((1, 4, 4, 20, 29), (3, 1, 1, 4), true, Relu6),
        case((2, 5, 5, 9, 40), (7, 1, 3, 5), false, Identity),
        case((1, 3, 3, 13, 15), (11, 1, 0, 3), true, Relu),
        case((1, 4, 20, 9, 45), (3, 2, 1, 1), true, Relu),
        case((1, 6, 6, 9, 46), (3, 2, 2, 6), true, Relu6),
        case((1, 9, 17, 5, 37), (1, 2, 0, 1), true, Identity),
        case((2, 9, 17, 6, 38), (1, 3, 0, 1), false, Relu),
        // Small N (transposed GEMM): 49 and 45 positions, 2 depth blocks.
        case((1, 40, 64, 7, 7), (3, 1, 1, 1), true, Relu),
        case((2, 300, 48, 5, 9), (1, 1, 0, 1), true, Relu6),
        case((1, 16, 64, 12, 12), (3, 2, 1, 2), false, Identity),
        case((1, 24, 100, 14, 14), (1, 2, 0, 1), true, Relu),
        // Winograd: >= 32 channels and > 64 outputs; odd sizes clip tiles;
        // 300 input channels give two GEMM depth blocks.
        case((1, 32, 40, 11, 13), (3, 1, 1, 1), true, Relu),
        case((2, 48, 32, 12, 9), (3, 1, 0, 1), false, Relu6),
        case((1, 33, 35, 9, 10), (3, 1, 2, 1), true, Identity),
        case((1, 300, 64, 16, 16), (3, 1, 1, 1), true, Relu),
    ]
}

#[test]
fn every_path_matches_the_reference() {
    for (i, c) in cases().iter().enumerate() {
        check(c, 100 + i as u64).unwrap();
    }
}

#[test]
#[cfg(target_arch = "x86_64")]
fn winograd_cases_take_the_winograd_path() {
    if !is_x86_feature_detected!("avx512f") {
        return;
    }
    let wino: Vec<_> = cases()
        .into_iter()
        .filter(|c| c.build(0).uses_winograd(Shape::new(c.n, c.cin, c.h, c.w)))
        .collect();
    assert_eq!(wino.len(), 5, "{wino:?}");
    // The Winograd scale is larger than the direct one, but not so large
    // that a tap error would pass: one output off by |w x| for a typical
    // tap fails.
    let c = wino[0];
    let conv = c.build(5);
    let x = c.input(6);
    let (want, mag) = reference(&conv, &x);
    let wmag = winograd_mag(&conv, &x);
    let tol = (c.cin + 16) as f64 * f64::from(f32::EPSILON);
    let typical = mag.iter().sum::<f64>() / mag.len() as f64 / (9 * c.cin) as f64;
    assert!(wmag.iter().zip(&mag).all(|(w, m)| w >= m));
    assert!(wmag.iter().all(|w| tol * w < typical), "bound too loose");
    assert_eq!(want.len(), wmag.len());
}

#[test]
fn tolerance_catches_wrong_padding() {
    // A convolution with padding 1 compared against the reference of the
    // same weights with the windows shifted by one must fail the bound.
    let c = case((1, 8, 8, 9, 9), (3, 1, 1, 1), true, Identity);
    let conv = c.build(1);
    let x = c.input(2);
    let y = conv.forward(&x, &mut Workspace::new());
    let shifted = Case {
        pad: 0,
        h: 11,
        w: 11,
        ..c
    };
    let mut xs = vec![0.0; 8 * 11 * 11];
    // x placed one pixel right and one down of where padding puts it.
    for ch in 0..8 {
        for r in 0..9 {
            for col in 0..9 {
                xs[(ch * 11 + r + 2) * 11 + col + 2] = x.as_slice()[(ch * 9 + r) * 9 + col];
            }
        }
    }
    let conv_s = shifted.build(1);
    let (want, mag) = reference(&conv_s, &Tensor::from_vec(Shape::new(1, 8, 11, 11), xs));
    assert!(worst_ratio(y.as_slice(), &want, &mag, 72) > 100.0);
}

#[test]
fn folded_batch_norm_matches_conv_then_batch_norm() {
    // Unfolded: f32 conv (error <= (K+1) u sum|w x|), times |scale|, then the
    // BN layer adds ~2u (|scale y| + |shift|). Folded: the rounded w' = w *
    // scale adds u per product. Bound: (K + 4) EPSILON * (|scale| (sum|w x| +
    // |b|) + |shift|), with the sums from the unfolded reference.
    for c in [
        case((2, 6, 10, 11, 9), (3, 2, 1, 1), true, Identity),
        case((1, 8, 8, 12, 12), (3, 1, 1, 8), false, Identity),
        case((1, 16, 20, 7, 9), (1, 1, 0, 1), true, Identity),
    ] {
        for act in [Identity, Relu, Relu6] {
            let conv = c.build(11);
            let x = c.input(12);
            let bn = zoo::Init::new(13).batch_norm(c.cout, 1.0);
            let mut ws = Workspace::new();
            let mut unfolded = bn.forward(&conv.forward(&x, &mut ws), &mut ws);
            act.apply(unfolded.as_mut_slice());
            let folded = conv.clone().fold_batch_norm(&bn).with_activation(act);
            let (_, mag) = reference(&conv, &x);
            let k = c.cin / c.groups * c.k * c.k;
            let tol = (k + 4) as f64 * f64::from(f32::EPSILON);
            let hw = unfolded.shape().h * unfolded.shape().w;
            for path in [Path::Fast, Path::Avx2, Path::Portable] {
                let y = folded.forward_with(&x, &mut ws, path, None);
                for (i, ((&a, &b), &m)) in y
                    .as_slice()
                    .iter()
                    .zip(unfolded.as_slice())
                    .zip(&mag)
                    .enumerate()
                {
                    let (scale, shift) = bn.scale_shift((i / hw) % c.cout);
                    let bound = tol * (f64::from(scale.abs()) * m + f64::from(shift.abs()));
                    let d = (f64::from(a) - f64::from(b)).abs();
                    assert!(d <= bound, "{c:?} {act:?} {path:?} at {i}: {d} > {bound}");
                }
            }
            assert_eq!(folded.params(), conv.params() + 2 * c.cout);
        }
    }
}

#[test]
fn folding_after_a_forward_repacks() {
    // Packings are made on first use; folding must drop them. One case per
    // packing: plain GEMM, small-N GEMM, Winograd.
    for c in [
        case((1, 8, 16, 12, 12), (3, 1, 1, 1), true, Relu),
        case((1, 40, 64, 7, 7), (3, 1, 1, 1), true, Relu),
        case((1, 32, 40, 11, 13), (3, 1, 1, 1), true, Relu),
    ] {
        let conv = c.build(21);
        let x = c.input(22);
        let mut ws = Workspace::new();
        let before = conv.forward(&x, &mut ws);
        let bn = zoo::Init::new(23).batch_norm(c.cout, 1.0);
        let folded = conv.fold_batch_norm(&bn);
        let after = folded.forward(&x, &mut ws);
        assert_ne!(before, after);
        let (want, _) = reference(&folded, &x);
        let mag = if cfg!(target_arch = "x86_64") && c.cin >= 32 {
            winograd_mag(&folded, &x)
        } else {
            reference(&folded, &x).1
        };
        let k = c.cin * c.k * c.k;
        assert!(
            worst_ratio(after.as_slice(), &want, &mag, k) <= 1.0,
            "{c:?}"
        );
    }
}

#[test]
fn kernels_ignore_stale_workspace() {
    // A workspace full of NaN from an earlier layer must not leak into
    // padding or packed tiles.
    let mut ws = Workspace::new();
    ws.scratch(1 << 20).fill(f32::NAN);
    for (i, c) in cases().iter().enumerate() {
        let conv = c.build(200 + i as u64);
        let x = c.input(300 + i as u64);
        let y = conv.forward(&x, &mut ws);
        assert!(y.as_slice().iter().all(|v| v.is_finite()), "{c:?}");
        ws.scratch(1 << 20).fill(f32::NAN);
    }
}

#[test]
fn deinterleave_splits_even_and_odd() {
    for len in 0usize..80 {
        let src: Vec<f32> = (0..len).map(|v| v as f32).collect();
        for (ne, no) in [
            (len.div_ceil(2), len / 2),
            (len / 2, len / 2),
            (len.div_ceil(2), 0),
        ] {
            let (mut e, mut o) = (vec![-1.0; ne + 3], vec![-1.0; no + 3]);
            im2col::deinterleave2(&src, &mut e[..ne], &mut o[..no]);
            for (i, v) in e.iter().enumerate() {
                assert_eq!(*v, if i < ne { (2 * i) as f32 } else { -1.0 }, "len {len}");
            }
            for (i, v) in o.iter().enumerate() {
                assert_eq!(
                    *v,
                    if i < no { (2 * i + 1) as f32 } else { -1.0 },
                    "len {len}"
                );
            }
            if is_x86_feature_detected!("avx512f") {
                let (mut e2, mut o2) = (vec![-1.0; ne + 3], vec![-1.0; no + 3]);
                // SAFETY: AVX-512F checked; lengths within the source.
                unsafe { im2col::avx512::deinterleave2(&src, &mut e2[..ne], &mut o2[..no]) };
                assert_eq!((e2, o2), (e, o), "len {len}");
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[test]
fn transpose16_swaps_rows_and_lanes() {
    use std::arch::x86_64::{_mm512_loadu_ps, _mm512_storeu_ps};
    if !is_x86_feature_detected!("avx512f") {
        return;
    }
    let m: Vec<f32> = (0..256).map(|v| v as f32).collect();
    let mut t = vec![0.0f32; 256];
    // SAFETY: AVX-512F checked; 16 rows of 16 values in `m` and `t`.
    unsafe {
        let rows = std::array::from_fn(|i| _mm512_loadu_ps(m[16 * i..].as_ptr()));
        for (c, v) in gemm::transpose16(rows).into_iter().enumerate() {
            _mm512_storeu_ps(t[16 * c..].as_mut_ptr(), v);
        }
    }
    for (i, c) in (0..16).flat_map(|i| (0..16).map(move |c| (i, c))) {
        assert_eq!(t[16 * c + i], m[16 * i + c], "row {i} lane {c}");
    }
}

#[test]
fn rejects_inputs_that_do_not_fit() {
    let conv = case((1, 4, 4, 5, 5), (7, 1, 0, 1), true, Identity).build(1);
    assert!(conv.output_shape(Shape::new(1, 4, 5, 5)).is_err());
    assert!(conv.output_shape(Shape::new(1, 3, 9, 9)).is_err());
    assert_eq!(
        conv.output_shape(Shape::new(2, 4, 9, 8)).unwrap(),
        Shape::new(2, 4, 3, 2)
    );
}

/// The join in the store against the convolution then a separate
/// `act(y + side)` pass, bit for bit, on every path, alone and split over
/// 3 threads (the convolution's own activation set to the identity; with
/// another one, or depthwise, `forward_add` is the two passes itself).
fn check_join(case: &Case, seed: u64) -> Result<(), String> {
    let conv = Case {
        act: Identity,
        ..*case
    }
    .build(seed);
    let x = case.input(seed + 7);
    let out = conv.output_shape(x.shape()).unwrap();
    // Side values about the conv's scale, so the clamps cut some sums.
    let mut side = Tensor::random(out, seed + 11);
    side.as_mut_slice().iter_mut().for_each(|v| *v *= 4.0);
    let pool = std::sync::Arc::new(
        rayon::ThreadPoolBuilder::new()
            .num_threads(3)
            .build()
            .unwrap(),
    );
    let bits = |t: &Tensor| t.as_slice().iter().map(|v| v.to_bits()).collect::<Vec<_>>();
    for mut ws in [Workspace::new(), Workspace::with_pool(pool)] {
        for path in [Path::Fast, Path::Avx2, Path::Portable] {
            for act in [Identity, Relu, Relu6] {
                let mut want = conv.forward_with(&x, &mut ws, path, None);
                add_activate(want.as_mut_slice(), side.as_slice(), act);
                let got = conv.forward_add_with(&x, side.as_slice(), act, &mut ws, path);
                if got.shape() != out || bits(&got) != bits(&want) {
                    return Err(format!("{case:?} {path:?} {act:?}: fused differs"));
                }
            }
        }
    }
    Ok(())
}

#[test]
fn join_in_the_store_is_bit_identical() {
    for (i, c) in cases().iter().enumerate() {
        check_join(c, 300 + i as u64).unwrap();
    }
}

#[test]
fn join_after_an_activation_is_two_passes() {
    let c = case((1, 8, 16, 9, 11), (3, 1, 1, 1), true, Relu);
    let conv = c.build(3);
    let x = c.input(4);
    let side = Tensor::random(conv.output_shape(x.shape()).unwrap(), 5);
    let mut ws = Workspace::new();
    let mut want = conv.forward(&x, &mut ws);
    add_activate(want.as_mut_slice(), side.as_slice(), Relu6);
    let got = conv.forward_add(&x, side.as_slice(), Relu6, &mut ws);
    assert_eq!(got.as_slice(), want.as_slice());
}

/// The same convolution alone and over pools of 2 and 3 threads, with and
/// without a join, bit for bit: the split into blocks of channels or of
/// columns (`gemm::split_rows`) never changes a sum.
fn check_threads(case: &Case, seed: u64) -> Result<(), String> {
    let conv = case.build(seed);
    let x = case.input(seed + 1);
    let side = Tensor::random(conv.output_shape(x.shape()).unwrap(), seed + 2);
    let alone = |ws: &mut Workspace| {
        let plain = conv.forward(&x, ws);
        let joined = (case.act == Identity && !conv.is_depthwise())
            .then(|| conv.forward_add(&x, side.as_slice(), Relu, ws));
        (plain, joined)
    };
    let want = alone(&mut Workspace::new());
    for threads in [2, 3] {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        let got = alone(&mut Workspace::with_pool(std::sync::Arc::new(pool)));
        if got != want {
            return Err(format!("{case:?}: {threads} threads differ from one"));
        }
    }
    Ok(())
}

#[test]
fn split_rows_covers_every_output_once() {
    for m in [1, 5, 13, 14, 15, 64, 70, 256] {
        for n in [1, 15, 16, 17, 49, 100, 196, 784, 3136] {
            for threads in 1..=4 {
                for packs in [false, true] {
                    let blocks = gemm::split_rows(m, n, threads, packs);
                    assert!(!blocks.is_empty() && blocks.len() <= threads);
                    let mut hits = vec![0u8; m * n];
                    for (panels, cols) in &blocks {
                        assert!(cols.start % 16 == 0, "{m}x{n}/{threads}: {cols:?}");
                        for p in panels.clone() {
                            for r in gemm::panel_rows(m, p) {
                                for c in cols.clone() {
                                    hits[r * n + c] += 1;
                                }
                            }
                        }
                    }
                    assert!(
                        hits.iter().all(|&h| h == 1),
                        "{m}x{n}/{threads}: {blocks:?}"
                    );
                }
            }
        }
    }
    // 64 channels are 5 panels: 3 + 2 on two threads, so columns instead.
    let blocks = gemm::split_rows(64, 3136, 2, false);
    assert_eq!(blocks.len(), 2);
    assert!(blocks.iter().all(|(p, c)| p.len() == 5 && c.len() == 1568));
    // 256 channels (19 panels) of 196 positions: channels.
    assert!(
        gemm::split_rows(256, 196, 2, true)
            .iter()
            .all(|(_, c)| c.len() == 196)
    );
}

fn activation() -> impl Strategy<Value = Activation> {
    prop_oneof![Just(Identity), Just(Relu), Just(Relu6)]
}

/// `dw(pw(x))` fused in bands of `band` rows against the two layers run
/// one after the other, on one thread and on two.
#[cfg(target_arch = "x86_64")]
fn check_fused(pw: &Case, dw: &Case, band: usize, seed: u64) -> Result<(), String> {
    let (a, b) = (pw.build(seed), dw.build(seed + 1));
    let x = pw.input(seed + 2);
    if !a.pair_fits(&b, x.shape()) {
        // Only AVX-512 fuses; elsewhere the layers run one by one.
        return if Isa::active() == Isa::Avx512 {
            Err(format!("{pw:?} + {dw:?} should fuse"))
        } else {
            Ok(())
        };
    }
    let mut ws = Workspace::new();
    let want = b.forward(&a.forward(&x, &mut ws), &mut ws);
    let got = a.forward_fused_in(&b, &x, &mut ws, band);
    if got != want {
        return Err(format!("{pw:?} + {dw:?}, bands of {band}: fused differs"));
    }
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(2)
        .build()
        .unwrap();
    let mut ws = Workspace::with_pool(std::sync::Arc::new(pool));
    let band = a.band_rows(&b, x.shape(), 2).min(band);
    if a.forward_fused_in(&b, &x, &mut ws, band) != want {
        return Err(format!(
            "{pw:?} + {dw:?}, bands of {band}: two threads differ"
        ));
    }
    Ok(())
}

/// A MobileNetV2 expansion at 56x56 is large enough to fuse, and a
/// `Sequential` of the pair gives exactly the unfused values.
#[test]
#[cfg(target_arch = "x86_64")]
fn sequential_fuses_a_large_expansion_bit_identically() {
    let pw = case((1, 24, 144, 56, 56), (1, 1, 0, 1), true, Relu6);
    let dw = case((1, 144, 144, 56, 56), (3, 2, 1, 144), true, Relu6);
    let (a, b) = (pw.build(3), dw.build(4));
    let x = pw.input(5);
    let mut ws = Workspace::new();
    let want = b.forward(&a.forward(&x, &mut ws), &mut ws);
    assert_eq!(
        a.fuses_with(&b, x.shape()),
        Isa::active() == Isa::Avx512,
        "an expansion of 1.8 MB fuses exactly where the AVX-512 kernels run"
    );
    let seq = crate::engine::Sequential::new("invres", vec![Box::new(a), Box::new(b)]);
    assert!(seq.forward(&x, &mut ws) == want);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    /// Fused pointwise + depthwise on random shapes, bands of any size
    /// (one row, halo rows shared by neighbours, a short last band),
    /// stride 1 and 2, kernels 3x3 and 5x5 with every padding that fits.
    #[test]
    #[cfg(target_arch = "x86_64")]
    fn random_fused_pointwise_depthwise_are_bit_identical(
        n in 1usize..3, cin in 1usize..20, hidden in 2usize..40, h in 1usize..30,
        w in 1usize..40, k in prop_oneof![Just(3usize), Just(5)], stride in 1usize..3,
        pad in 0usize..3, band in 1usize..7, act in activation(), bias in any::<bool>(),
        seed in 0u64..1000,
    ) {
        prop_assume!(h + 2 * pad >= k && w + 2 * pad >= k);
        let pw = case((n, cin, hidden, h, w), (1, 1, 0, 1), bias, act);
        let dw = case((n, hidden, hidden, h, w), (k, stride, pad, hidden), bias, act);
        prop_assert_eq!(check_fused(&pw, &dw, band, seed), Ok(()));
    }

    #[test]
    fn shape_arithmetic(
        h in 1usize..40, w in 1usize..40, k in 1usize..8,
        stride in 1usize..4, pad in 0usize..4, cin in 1usize..5, n in 1usize..3,
    ) {
        let conv = case((n, cin, 3, h, w), (k, stride, pad, 1), false, Identity).build(0);
        let got = conv.output_shape(Shape::new(n, cin, h, w));
        let fits = h + 2 * pad >= k && w + 2 * pad >= k;
        prop_assert_eq!(got.is_ok(), fits);
        if let Ok(out) = got {
            prop_assert_eq!(out.h, (h + 2 * pad - k) / stride + 1);
            prop_assert_eq!(out.w, (w + 2 * pad - k) / stride + 1);
            // Every output window starts inside the padded input...
            prop_assert!((out.h - 1) * stride + k <= h + 2 * pad);
            // ...and one more would not fit.
            prop_assert!(out.h * stride + k > h + 2 * pad);
            let cost = conv.cost(Shape::new(n, cin, h, w));
            prop_assert_eq!(cost.macs as usize, out.len() * cin * k * k);
        }
    }

    #[test]
    fn random_small_convs_match_the_reference(
        n in 1usize..3, cin_g in 1usize..5, cout_g in 1usize..15,
        groups in 1usize..4, depthwise in any::<bool>(),
        h in 1usize..14, w in 1usize..14, k in prop_oneof![Just(1usize), Just(3), Just(5)],
        stride in 1usize..3, pad in 0usize..4, bias in any::<bool>(),
        act in activation(), seed in 0u64..1000,
    ) {
        let (cin, cout) = if depthwise {
            (groups * cin_g, groups * cin_g)
        } else {
            (groups * cin_g, groups * cout_g)
        };
        let groups = if depthwise { cin } else { groups };
        prop_assume!(h + 2 * pad >= k && w + 2 * pad >= k);
        let c = case((n, cin, cout, h, w), (k, stride, pad, groups), bias, act);
        prop_assert_eq!(check(&c, seed), Ok(()));
    }

    #[test]
    fn random_joins_are_bit_identical(
        n in 1usize..3, cin in 1usize..40, cout in 1usize..40,
        h in 1usize..20, w in 1usize..20, k in prop_oneof![Just(1usize), Just(3)],
        stride in 1usize..3, pad in 0usize..2, bias in any::<bool>(), seed in 0u64..1000,
    ) {
        prop_assume!(h + 2 * pad >= k && w + 2 * pad >= k);
        let c = case((n, cin, cout, h, w), (k, stride, pad, 1), bias, Identity);
        prop_assert_eq!(check_join(&c, seed), Ok(()));
    }

    /// Few channels and many positions, where two threads split columns.
    #[test]
    fn random_splits_over_threads_are_bit_identical(
        cin in 1usize..24, cout in 1usize..72, h in 4usize..48, w in 4usize..48,
        k in prop_oneof![Just(1usize), Just(3), Just(5)], stride in 1usize..3,
        pad in 0usize..3, bias in any::<bool>(), act in activation(), seed in 0u64..1000,
    ) {
        prop_assume!(h + 2 * pad >= k && w + 2 * pad >= k);
        let c = case((1, cin, cout, h, w), (k, stride, pad, 1), bias, act);
        prop_assert_eq!(check_threads(&c, seed), Ok(()));
    }

    /// 1x1 convolutions, whose B the AVX-512 GEMM reads in place: edge
    /// tiles in rows and columns, N past one column block (512), K past one
    /// depth block (256).
    #[test]
    fn random_pointwise_convs_match_the_reference(
        cin in 1usize..300, cout in 1usize..40, h in 1usize..30, w in 1usize..31,
        bias in any::<bool>(), act in activation(), seed in 0u64..1000,
    ) {
        let c = case((1, cin, cout, h, w), (1, 1, 0, 1), bias, act);
        prop_assert_eq!(check(&c, seed), Ok(()));
    }

    /// Depthwise convolutions wide enough for several 16-lane chunks per
    /// row (and a masked last one), every border case of the direct
    /// AVX-512 kernel (stride 1 and 2, padding up to 3, kernels up to
    /// 7x7), stride 3 for the phase-split fallback; `check` runs the
    /// fast (AVX-512), AVX2 and portable paths.
    /// "Same" stride-1 depthwise convolutions on small planes, which the
    /// direct AVX-512 kernel runs as one flat run of outputs per plane
    /// (7x7 and the like), every tap's row-edge and top and bottom masks.
    #[test]
    fn random_same_depthwise_convs_on_small_planes_match_the_reference(
        n in 1usize..3, c in 2usize..6, h in 1usize..16, w in 1usize..16,
        k in prop_oneof![Just(1usize), Just(3), Just(5), Just(7)],
        bias in any::<bool>(), act in activation(), seed in 0u64..1000,
    ) {
        let c = case((n, c, c, h, w), (k, 1, (k - 1) / 2, c), bias, act);
        prop_assert_eq!(check(&c, seed), Ok(()));
    }

    /// MobileNet's depthwise shape, 3x3 with padding 1 at stride 1 and 2,
    /// on rows of one to five 16-lane chunks: the kernels that load each
    /// input once and shift it (stride 1) or split its even and odd
    /// columns (stride 2) for the three taps.
    #[test]
    fn random_3x3_depthwise_convs_match_the_reference(
        n in 1usize..3, c in 2usize..6, h in 1usize..20, w in 1usize..160,
        stride in 1usize..3, bias in any::<bool>(), act in activation(), seed in 0u64..1000,
    ) {
        let c = case((n, c, c, h, w), (3, stride, 1, c), bias, act);
        prop_assert_eq!(check(&c, seed), Ok(()));
    }

    #[test]
    fn random_depthwise_convs_match_the_reference(
        n in 1usize..3, c in 2usize..6, h in 1usize..20, w in 1usize..70,
        k in prop_oneof![Just(1usize), Just(3), Just(5), Just(7)],
        stride in 1usize..4, pad in 0usize..4, bias in any::<bool>(),
        act in activation(), seed in 0u64..1000,
    ) {
        prop_assume!(h + 2 * pad >= k && w + 2 * pad >= k);
        let c = case((n, c, c, h, w), (k, stride, pad, c), bias, act);
        prop_assert_eq!(check(&c, seed), Ok(()));
    }
}
