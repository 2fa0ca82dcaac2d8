//! Matrix-vector products of a dense layer at small batches: every weight
//! is read once per call and used by every image of the batch, so these
//! kernels are bound by memory bandwidth. They stream [`ROWS`] weight rows
//! at once (eight with AVX-512 at batch 1, which measured a little faster
//! on Zen 4; software prefetching 1 KiB ahead measured slower and is not
//! done), each weight loaded once into a register and multiplied into one
//! accumulator vector per (row, image).
//!
//! Every output is computed by the same sequence of operations wherever
//! its row falls (in a block of [`ROWS`] or a leftover single row) and
//! whatever range of rows a call covers: one vector accumulator per
//! (row, image) runs over the input in order, the tail is a masked load,
//! then a fixed horizontal sum, the bias and the activation. Splitting the
//! rows over threads, or the images over calls, therefore changes no bit.

use std::ops::Range;

use super::super::activation::Activation;
use crate::engine::bf16::bf16_to_f32;
use crate::engine::isa::Isa;

/// Weight rows one kernel step streams at once.
pub(super) const ROWS: usize = 4;

/// Images one kernel call multiplies with each loaded weight; larger
/// batches run in groups of this many.
const IMAGES: usize = 4;

/// A dense layer's weights, `[out][in]`, in the precision they are stored.
#[derive(Clone, Copy, Debug)]
pub(super) enum Weights<'a> {
    /// 32-bit floats.
    F32(&'a [f32]),
    /// bfloat16 bit patterns (the upper half of an f32).
    Bf16(&'a [u16]),
}

impl Weights<'_> {
    fn len(self) -> usize {
        match self {
            Weights::F32(w) => w.len(),
            Weights::Bf16(w) => w.len(),
        }
    }
}

/// One call's operands: `x` is `[batch][inputs]`, `bias` has one value per
/// output of the whole layer.
#[derive(Clone, Copy, Debug)]
pub(super) struct Gemv<'a> {
    /// The layer's weights.
    pub w: Weights<'a>,
    /// Input features.
    pub inputs: usize,
    /// The images, `[batch][inputs]`.
    pub x: &'a [f32],
    /// The layer's bias.
    pub bias: &'a [f32],
    /// Applied after the bias.
    pub act: Activation,
}

/// `ys[b][o - rows.start] = act(bias[o] + sum_i w[o][i] * x[b][i])` for
/// every image `b` and output `o` in `rows`, with the kernels of `isa`
/// (which the CPU must support).
pub(super) fn gemv(isa: Isa, g: &Gemv<'_>, rows: Range<usize>, ys: &mut [&mut [f32]]) {
    let inputs = g.inputs;
    assert!(
        inputs > 0 && g.x.len() == ys.len() * inputs,
        "one input row per image"
    );
    assert!(rows.end <= g.bias.len() && g.w.len() == g.bias.len() * inputs);
    assert!(
        ys.iter().all(|y| y.len() == rows.len()),
        "one output per row"
    );
    assert!(isa.supported(), "{isa} kernels on a CPU without {isa}");
    for (xs, yg) in g.x.chunks(IMAGES * inputs).zip(ys.chunks_mut(IMAGES)) {
        let part = Gemv { x: xs, ..*g };
        match isa {
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => {
                // SAFETY: the CPU supports AVX-512 (asserted above), and the
                // lengths asserted above are what the kernel reads and writes.
                unsafe { x86::gemv_avx512(&part, rows.clone(), yg) }
            }
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => {
                // SAFETY: the CPU supports AVX2 and FMA (asserted above), and
                // the lengths asserted above are what the kernel reads and
                // writes.
                unsafe { x86::gemv_avx2(&part, rows.clone(), yg) }
            }
            _ => gemv_portable(&part, rows.clone(), yg),
        }
    }
}

/// Row by row, image by image, with the sixteen-accumulator dot products.
fn gemv_portable(g: &Gemv<'_>, rows: Range<usize>, ys: &mut [&mut [f32]]) {
    let inputs = g.inputs;
    for (j, o) in rows.enumerate() {
        for (xi, y) in g.x.chunks_exact(inputs).zip(ys.iter_mut()) {
            let s = match g.w {
                Weights::F32(w) => super::dot(&w[o * inputs..][..inputs], xi),
                Weights::Bf16(w) => dot_bf16(&w[o * inputs..][..inputs], xi),
            };
            y[j] = g.act.apply_one(s + g.bias[o]);
        }
    }
}

/// [`super::dot`] of bfloat16 weights with f32 inputs, widening each weight.
fn dot_bf16(a: &[u16], b: &[f32]) -> f32 {
    const LANES: usize = 16;
    assert_eq!(a.len(), b.len(), "dot of equal lengths");
    let (ac, bc) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
    let tail: f32 = ac
        .remainder()
        .iter()
        .zip(bc.remainder())
        .map(|(x, y)| bf16_to_f32(*x) * y)
        .sum();
    let mut acc = [0.0f32; LANES];
    for (x, y) in ac.zip(bc) {
        for i in 0..LANES {
            acc[i] += bf16_to_f32(x[i]) * y[i];
        }
    }
    acc.iter().sum::<f32>() + tail
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;
    use std::ops::Range;

    use super::{Gemv, IMAGES, ROWS, Weights};
    use crate::engine::ops::activation::Activation;

    /// A kernel for one batch size and weight precision.
    type Kernel = unsafe fn(&Gemv<'_>, Range<usize>, &mut [&mut [f32]]);

    /// Weights as a raw base pointer and element size, so one kernel body
    /// serves both precisions (`BF16` picks the load at compile time).
    #[derive(Clone, Copy)]
    struct Base {
        ptr: *const u8,
    }

    impl Base {
        fn of(w: Weights<'_>) -> Self {
            match w {
                Weights::F32(w) => Base {
                    ptr: w.as_ptr().cast(),
                },
                Weights::Bf16(w) => Base {
                    ptr: w.as_ptr().cast(),
                },
            }
        }
    }

    /// Sixteen weights from element `i` (the first `m` lanes when `m` is
    /// not all ones; the others are zero) as f32.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl")]
    unsafe fn load16<const BF16: bool>(w: Base, i: usize, m: __mmask16) -> __m512 {
        if BF16 {
            // SAFETY: the caller has `i + popcount(m)` weights; masked-off
            // lanes are not read.
            let h = unsafe { _mm256_maskz_loadu_epi16(m, w.ptr.cast::<i16>().add(i)) };
            _mm512_castsi512_ps(_mm512_slli_epi32::<16>(_mm512_cvtepu16_epi32(h)))
        } else {
            // SAFETY: as above.
            unsafe { _mm512_maskz_loadu_ps(m, w.ptr.cast::<f32>().add(i)) }
        }
    }

    /// Output `(r, b)` of a block: `act(bias + sum)`.
    #[inline(always)]
    fn finish(act: Activation, sum: f32, bias: f32) -> f32 {
        act.apply_one(sum + bias)
    }

    /// The sums of `R` rows starting at `o` with `NB` images.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl")]
    unsafe fn block_avx512<const R: usize, const NB: usize, const BF16: bool>(
        w: Base,
        o: usize,
        inputs: usize,
        x: *const f32,
    ) -> [[f32; NB]; R] {
        let mut acc = [[_mm512_setzero_ps(); NB]; R];
        let full = inputs / 16 * 16;
        let rem = inputs - full;
        let mut i = 0;
        while i < full {
            let mut xv = [_mm512_setzero_ps(); NB];
            for (b, v) in xv.iter_mut().enumerate() {
                // SAFETY: image `b` has `inputs` values, `i + 16 <= inputs`.
                *v = unsafe { _mm512_loadu_ps(x.add(b * inputs + i)) };
            }
            for (r, a) in acc.iter_mut().enumerate() {
                // SAFETY: row `o + r` has `inputs` weights.
                let wv = unsafe { load16::<BF16>(w, (o + r) * inputs + i, u16::MAX) };
                for (ab, xb) in a.iter_mut().zip(&xv) {
                    *ab = _mm512_fmadd_ps(wv, *xb, *ab);
                }
            }
            i += 16;
        }
        if rem > 0 {
            let m: __mmask16 = u16::MAX >> (16 - rem);
            let mut xv = [_mm512_setzero_ps(); NB];
            for (b, v) in xv.iter_mut().enumerate() {
                // SAFETY: the mask covers the `rem` values left of image `b`.
                *v = unsafe { _mm512_maskz_loadu_ps(m, x.add(b * inputs + i)) };
            }
            for (r, a) in acc.iter_mut().enumerate() {
                // SAFETY: the mask covers the `rem` weights left of the row.
                let wv = unsafe { load16::<BF16>(w, (o + r) * inputs + i, m) };
                for (ab, xb) in a.iter_mut().zip(&xv) {
                    *ab = _mm512_fmadd_ps(wv, *xb, *ab);
                }
            }
        }
        let mut out = [[0.0; NB]; R];
        for (or, ar) in out.iter_mut().zip(&acc) {
            for (v, a) in or.iter_mut().zip(ar) {
                *v = _mm512_reduce_add_ps(*a);
            }
        }
        out
    }

    /// [`super::gemv`] for up to [`IMAGES`] images with AVX-512.
    ///
    /// # Safety
    ///
    /// The CPU supports AVX-512F/BW/VL, and the operands have the lengths
    /// [`super::gemv`] asserts.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl")]
    pub(super) unsafe fn gemv_avx512(g: &Gemv<'_>, rows: Range<usize>, ys: &mut [&mut [f32]]) {
        let run: Kernel = match (ys.len(), g.w) {
            (1, Weights::F32(_)) => run_avx512::<8, 1, false>,
            (2, Weights::F32(_)) => run_avx512::<ROWS, 2, false>,
            (3, Weights::F32(_)) => run_avx512::<ROWS, 3, false>,
            (_, Weights::F32(_)) => run_avx512::<ROWS, IMAGES, false>,
            (1, Weights::Bf16(_)) => run_avx512::<8, 1, true>,
            (2, Weights::Bf16(_)) => run_avx512::<ROWS, 2, true>,
            (3, Weights::Bf16(_)) => run_avx512::<ROWS, 3, true>,
            (_, Weights::Bf16(_)) => run_avx512::<ROWS, IMAGES, true>,
        };
        // SAFETY: forwarded from the caller.
        unsafe { run(g, rows, ys) }
    }

    #[target_feature(enable = "avx512f,avx512bw,avx512vl")]
    unsafe fn run_avx512<const R: usize, const NB: usize, const BF16: bool>(
        g: &Gemv<'_>,
        rows: Range<usize>,
        ys: &mut [&mut [f32]],
    ) {
        assert_eq!(ys.len(), NB, "one output slice per image");
        let (w, x, inputs) = (Base::of(g.w), g.x.as_ptr(), g.inputs);
        let mut o = rows.start;
        while o + R <= rows.end {
            // SAFETY: rows `o..o + R` exist (`rows.end` <= outputs) and
            // `x` has `NB` images of `inputs` values.
            let s = unsafe { block_avx512::<R, NB, BF16>(w, o, inputs, x) };
            for (r, sr) in s.iter().enumerate() {
                for (y, v) in ys.iter_mut().zip(sr) {
                    y[o + r - rows.start] = finish(g.act, *v, g.bias[o + r]);
                }
            }
            o += R;
        }
        while o < rows.end {
            // SAFETY: as above, for row `o`.
            let s = unsafe { block_avx512::<1, NB, BF16>(w, o, inputs, x) };
            for (y, v) in ys.iter_mut().zip(&s[0]) {
                y[o - rows.start] = finish(g.act, *v, g.bias[o]);
            }
            o += 1;
        }
    }

    /// Eight weights from element `i`, the first `rem` of them when `rem`
    /// is below 8 (the others zero), as f32.
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn load8<const BF16: bool>(w: Base, i: usize, rem: usize) -> __m256 {
        if BF16 {
            let mut h = [0u16; 8];
            if rem >= 8 {
                // SAFETY: eight weights remain from `i`.
                let v = unsafe { _mm_loadu_si128(w.ptr.cast::<u16>().add(i).cast()) };
                return _mm256_castsi256_ps(_mm256_slli_epi32::<16>(_mm256_cvtepu16_epi32(v)));
            }
            // SAFETY: `rem` weights remain from `i`.
            unsafe {
                std::ptr::copy_nonoverlapping(w.ptr.cast::<u16>().add(i), h.as_mut_ptr(), rem)
            };
            // SAFETY: `h` holds eight values.
            let v = unsafe { _mm_loadu_si128(h.as_ptr().cast()) };
            _mm256_castsi256_ps(_mm256_slli_epi32::<16>(_mm256_cvtepu16_epi32(v)))
        } else {
            // SAFETY: `rem` weights remain from `i`; the mask reads no others.
            unsafe { load8_f32(w.ptr.cast::<f32>().add(i), rem) }
        }
    }

    /// Lane masks: 8 set lanes then 8 clear ones; from offset `8 - rem`,
    /// the first `rem` lanes are set.
    static MASKS: [i32; 16] = [-1, -1, -1, -1, -1, -1, -1, -1, 0, 0, 0, 0, 0, 0, 0, 0];

    /// Eight f32 from `p`, or the first `rem` (the others zero).
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn load8_f32(p: *const f32, rem: usize) -> __m256 {
        if rem >= 8 {
            // SAFETY: the caller has eight values at `p`.
            unsafe { _mm256_loadu_ps(p) }
        } else {
            // SAFETY: `8 - rem` is in 1..=8, so the 8 masks read lie in
            // `MASKS`; the masked load reads only the `rem` values at `p`.
            unsafe {
                let m = _mm256_loadu_si256(MASKS.as_ptr().add(8 - rem).cast());
                _mm256_maskload_ps(p, m)
            }
        }
    }

    /// Sum of the eight lanes, in a fixed order.
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    fn hsum256(v: __m256) -> f32 {
        let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
        let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        let s = _mm_add_ss(s, _mm_shuffle_ps::<0b01>(s, s));
        _mm_cvtss_f32(s)
    }

    /// The sums of `R` rows starting at `o` with `NB` images, AVX2.
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn block_avx2<const R: usize, const NB: usize, const BF16: bool>(
        w: Base,
        o: usize,
        inputs: usize,
        x: *const f32,
    ) -> [[f32; NB]; R] {
        let mut acc = [[_mm256_setzero_ps(); NB]; R];
        let mut i = 0;
        while i < inputs {
            let n = (inputs - i).min(8);
            let mut xv = [_mm256_setzero_ps(); NB];
            for (b, v) in xv.iter_mut().enumerate() {
                // SAFETY: image `b` has `n` values left from `i`.
                *v = unsafe { load8_f32(x.add(b * inputs + i), n) };
            }
            for (r, a) in acc.iter_mut().enumerate() {
                // SAFETY: row `o + r` has `n` weights left from `i`.
                let wv = unsafe { load8::<BF16>(w, (o + r) * inputs + i, n) };
                for (ab, xb) in a.iter_mut().zip(&xv) {
                    *ab = _mm256_fmadd_ps(wv, *xb, *ab);
                }
            }
            i += 8;
        }
        let mut out = [[0.0; NB]; R];
        for (or, ar) in out.iter_mut().zip(&acc) {
            for (v, a) in or.iter_mut().zip(ar) {
                *v = hsum256(*a);
            }
        }
        out
    }

    /// [`super::gemv`] for up to [`IMAGES`] images with AVX2 and FMA.
    ///
    /// # Safety
    ///
    /// The CPU supports AVX2 and FMA, and the operands have the lengths
    /// [`super::gemv`] asserts.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn gemv_avx2(g: &Gemv<'_>, rows: Range<usize>, ys: &mut [&mut [f32]]) {
        let run: Kernel = match (ys.len(), g.w) {
            (1, Weights::F32(_)) => run_avx2::<1, false>,
            (2, Weights::F32(_)) => run_avx2::<2, false>,
            (3, Weights::F32(_)) => run_avx2::<3, false>,
            (_, Weights::F32(_)) => run_avx2::<IMAGES, false>,
            (1, Weights::Bf16(_)) => run_avx2::<1, true>,
            (2, Weights::Bf16(_)) => run_avx2::<2, true>,
            (3, Weights::Bf16(_)) => run_avx2::<3, true>,
            (_, Weights::Bf16(_)) => run_avx2::<IMAGES, true>,
        };
        // SAFETY: forwarded from the caller.
        unsafe { run(g, rows, ys) }
    }

    #[target_feature(enable = "avx2,fma")]
    unsafe fn run_avx2<const NB: usize, const BF16: bool>(
        g: &Gemv<'_>,
        rows: Range<usize>,
        ys: &mut [&mut [f32]],
    ) {
        assert_eq!(ys.len(), NB, "one output slice per image");
        let (w, x, inputs) = (Base::of(g.w), g.x.as_ptr(), g.inputs);
        let mut o = rows.start;
        while o + ROWS <= rows.end {
            // SAFETY: rows `o..o + ROWS` exist and `x` has `NB` images.
            let s = unsafe { block_avx2::<ROWS, NB, BF16>(w, o, inputs, x) };
            for (r, sr) in s.iter().enumerate() {
                for (y, v) in ys.iter_mut().zip(sr) {
                    y[o + r - rows.start] = finish(g.act, *v, g.bias[o + r]);
                }
            }
            o += ROWS;
        }
        while o < rows.end {
            // SAFETY: as above, for row `o`.
            let s = unsafe { block_avx2::<1, NB, BF16>(w, o, inputs, x) };
            for (y, v) in ys.iter_mut().zip(&s[0]) {
                y[o - rows.start] = finish(g.act, *v, g.bias[o]);
            }
            o += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::engine::bf16::f32_to_bf16;

    /// Nested-loop f64 `act(b + sum w x)` per (image, row) of `rows`, and
    /// `|b| + sum |w x|`, the scale of the f32 rounding error.
    fn reference(w: &[f64], g: &Gemv<'_>, rows: Range<usize>) -> (Vec<Vec<f64>>, Vec<Vec<f64>>) {
        let n = g.inputs;
        let (mut y, mut scale) = (Vec::new(), Vec::new());
        for xi in g.x.chunks_exact(n) {
            let (mut yi, mut si) = (Vec::new(), Vec::new());
            for o in rows.clone() {
                let b = f64::from(g.bias[o]);
                let (mut acc, mut abs) = (b, b.abs());
                for i in 0..n {
                    let p = w[o * n + i] * f64::from(xi[i]);
                    acc += p;
                    abs += p.abs();
                }
                yi.push(match g.act {
                    Activation::Identity => acc,
                    Activation::Relu => acc.max(0.0),
                    Activation::Relu6 => acc.clamp(0.0, 6.0),
                });
                si.push(abs);
            }
            y.push(yi);
            scale.push(si);
        }
        (y, scale)
    }

    fn run(isa: Isa, g: &Gemv<'_>, rows: Range<usize>, batch: usize) -> Vec<Vec<f32>> {
        let mut ys = vec![vec![f32::NAN; rows.len()]; batch];
        let mut refs: Vec<&mut [f32]> = ys.iter_mut().map(Vec::as_mut_slice).collect();
        gemv(isa, g, rows, &mut refs);
        ys
    }

    fn values(len: usize, scale: f32) -> impl Strategy<Value = Vec<f32>> {
        proptest::collection::vec(-scale..scale, len)
    }

    /// A layer's operands: inputs, outputs, batch, weights, images, bias,
    /// activation.
    fn case() -> impl Strategy<Value = (usize, usize, Vec<f32>, Vec<f32>, Vec<f32>, Activation)> {
        (1usize..300, 1usize..24, 1usize..=5).prop_flat_map(|(inputs, outputs, batch)| {
            (
                Just(inputs),
                Just(outputs),
                values(inputs * outputs, 1.0),
                values(batch * inputs, 2.0),
                values(outputs, 0.5),
                prop_oneof![
                    Just(Activation::Identity),
                    Just(Activation::Relu),
                    Just(Activation::Relu6)
                ],
            )
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(96))]

        /// Every kernel the CPU supports, f32 and bf16 weights, matches the
        /// f64 reference (of the weights as stored) within the bound of an
        /// f32 sum in any order, `(n + 1) * eps * sum |terms|`; a range of
        /// rows gives the whole call's outputs bit for bit.
        #[test]
        fn kernels_match_the_reference(
            (inputs, outputs, w, x, bias, act) in case(),
            split in 0usize..24,
        ) {
            let batch = x.len() / inputs;
            let w16: Vec<u16> = w.iter().map(|&v| f32_to_bf16(v)).collect();
            let stored = [
                (Weights::F32(&w), w.iter().map(|&v| f64::from(v)).collect::<Vec<_>>()),
                (Weights::Bf16(&w16), w16.iter().map(|&v| f64::from(bf16_to_f32(v))).collect()),
            ];
            let tol = (inputs + 2) as f64 * f64::from(f32::EPSILON);
            for (weights, wide) in &stored {
                let g = Gemv { w: *weights, inputs, x: &x, bias: &bias, act };
                let (want, scale) = reference(wide, &g, 0..outputs);
                for isa in Isa::ALL.into_iter().filter(|i| i.supported()) {
                    let got = run(isa, &g, 0..outputs, batch);
                    for b in 0..batch {
                        for o in 0..outputs {
                            let (gv, wv) = (f64::from(got[b][o]), want[b][o]);
                            prop_assert!(
                                (gv - wv).abs() <= tol * scale[b][o],
                                "{isa} {weights:?}: image {b} row {o}: {gv} vs {wv}"
                            );
                        }
                    }
                    let cut = split.min(outputs);
                    let head = run(isa, &g, 0..cut, batch);
                    let tail = run(isa, &g, cut..outputs, batch);
                    for b in 0..batch {
                        prop_assert_eq!(&[&head[b][..], &tail[b][..]].concat(), &got[b]);
                    }
                }
            }
        }
    }

    #[test]
    fn bf16_rounds_to_nearest_even() {
        assert_eq!(f32_to_bf16(1.0), 0x3f80);
        // Halfway between 0x3f80 and 0x3f81: to the even 0x3f80.
        assert_eq!(f32_to_bf16(f32::from_bits(0x3f80_8000)), 0x3f80);
        // Halfway between 0x3f81 and 0x3f82: to the even 0x3f82.
        assert_eq!(f32_to_bf16(f32::from_bits(0x3f81_8000)), 0x3f82);
        // Just above halfway: up.
        assert_eq!(f32_to_bf16(f32::from_bits(0x3f80_8001)), 0x3f81);
        assert_eq!(f32_to_bf16(f32::from_bits(0xbf80_7fff)), 0xbf80);
        assert_eq!(f32_to_bf16(f32::INFINITY), 0x7f80);
        assert_eq!(f32_to_bf16(f32::NEG_INFINITY), 0xff80);
        assert_eq!(f32_to_bf16(f32::MAX), 0x7f80, "beyond the largest bf16");
        assert!(bf16_to_f32(f32_to_bf16(f32::NAN)).is_nan());
        assert_eq!(f32_to_bf16(-0.0), 0x8000);
        for b in [0u16, 1, 0x3f80, 0x4049, 0x807f, 0xc2f7] {
            assert_eq!(f32_to_bf16(bf16_to_f32(b)), b, "bf16 values are exact");
        }
    }
}
