//! bf16 GEMM for convolutions (`model.precision: bf16`): the blocking,
//! tiles and store of [`super::gemm::gemm_rows`], with the products made by
//! `vdpbf16ps` (AVX512-BF16): each 32-bit lane holds two bf16 values of
//! consecutive depths, and one instruction adds both products to an f32
//! accumulator, twice the multiply-adds of an f32 FMA per instruction.
//!
//! Weights are rounded to bf16 once, when the model's precision is set,
//! and packed as `[group][panel][pair][MR]` pairs (`k` padded to even with
//! a zero weight). The input is packed in f32 by the same `pack_b` as the
//! f32 path and then rounded to bf16 pairs, one pass per B block, used by
//! every row panel. Accumulation, bias and activation stay f32.

use std::arch::x86_64::{
    __m512, __m512bh, __m512i, _MM_HINT_T0, _MM_HINT_T1, _mm_prefetch, _mm512_cvtne2ps_pbh,
    _mm512_dpbf16_ps, _mm512_loadu_ps, _mm512_loadu_si512, _mm512_permutexvar_epi16,
    _mm512_set1_epi32, _mm512_setzero_ps, _mm512_storeu_si512,
};
use std::ops::Range;

use super::super::activation::Activation;
use super::gemm::{
    Cols, KC, MR, NC, NR, Out, PACK_LEN, PF_A, PF_B, Tile, clamps, lanes, load_tile, pack_b,
    panel_rows, store_tile,
};
use crate::engine::bf16::f32_to_bf16;

/// u32 elements of the pair buffer [`gemm_rows_bf16`] needs beside the f32
/// packing buffer.
pub(super) const PAIRS_LEN: usize = PACK_LEN / 2;

/// Weights of every group rounded to bf16 and packed into row panels of
/// at most `MR` rows (the panels of [`super::gemm::PackedWeights`]), two
/// depths a lane: `[group][panel][pair][MR]`.
#[derive(Clone, Debug)]
pub(super) struct PackedWeightsBf16 {
    m: usize,
    k: usize,
    data: Vec<u32>,
}

impl PackedWeightsBf16 {
    /// Packs `weight` (`[groups * m][k]`, row-major).
    pub(super) fn new(weight: &[f32], groups: usize, m: usize, k: usize) -> Self {
        assert_eq!(weight.len(), groups * m * k, "weight length");
        let mut packed = Self {
            m,
            k,
            data: Vec::new(),
        };
        let (panels, pairs) = (packed.panels(), k.div_ceil(2));
        packed.data = vec![0; groups * panels * pairs * MR];
        for (g, dst) in packed
            .data
            .chunks_exact_mut(panels * pairs * MR)
            .enumerate()
        {
            let w = &weight[g * m * k..(g + 1) * m * k];
            for p in 0..panels {
                let panel = &mut dst[p * pairs * MR..(p + 1) * pairs * MR];
                for (r, row) in panel_rows(m, p).enumerate() {
                    let wr = &w[row * k..(row + 1) * k];
                    for q in 0..pairs {
                        let lo = f32_to_bf16(wr[2 * q]);
                        let hi = wr.get(2 * q + 1).map_or(0, |&v| f32_to_bf16(v));
                        panel[q * MR + r] = u32::from(lo) | (u32::from(hi) << 16);
                    }
                }
            }
        }
        packed
    }

    /// Row panels per group.
    pub(super) fn panels(&self) -> usize {
        self.m.div_ceil(MR)
    }

    /// The packed panels of group `g`.
    pub(super) fn group(&self, g: usize) -> &[u32] {
        let len = self.panels() * self.k.div_ceil(2) * MR;
        &self.data[g * len..(g + 1) * len]
    }
}

/// [`super::gemm::gemm_rows`] in bf16: computes the block of row panels
/// `panels` by columns `columns` of `y = act(bias + A * B)` (`y` the
/// group's `m` rows of `n`) with A and B rounded to bf16 and the sums in
/// f32; with `side` (laid out as `y`) `act((A * B + bias) + side)`, the
/// residual join. Every element of the block is written, nothing else.
///
/// `pack` is scratch of at least [`PACK_LEN`] f32 and `pairs` of at least
/// [`PAIRS_LEN`] u32, both best 64-byte aligned.
///
/// # Safety
///
/// The CPU must support AVX-512F, AVX-512BW and AVX512-BF16, and calls
/// running at the same time on one `y` must compute disjoint blocks.
#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
pub(super) unsafe fn gemm_rows_bf16(
    a: &PackedWeightsBf16,
    a_group: &[u32],
    cols: &Cols<'_>,
    n: usize,
    bias: &[f32],
    act: Activation,
    side: Option<&[f32]>,
    (panels, columns): (Range<usize>, Range<usize>),
    y: Out<'_>,
    pack: &mut [f32],
    pairs: &mut [u32],
) {
    let (m, k) = (a.m, a.k);
    let kp = k.div_ceil(2);
    assert!(panels.end <= a.panels() && columns.end <= n, "block");
    assert!(y.len() >= m * n && bias.len() >= m);
    assert!(side.is_none_or(|s| s.len() >= m * n), "side covers y");
    assert!(pack.len() >= PACK_LEN && pairs.len() >= PAIRS_LEN);
    assert_eq!(a_group.len(), a.panels() * kp * MR, "packed group length");
    cols.check(k, n);
    let (relu, cap) = clamps(act);
    // Depth blocks of an even length, so every block starts on a pair.
    let kc_max = k.div_ceil(k.div_ceil(KC).max(1)).next_multiple_of(2);
    let width = columns.len();
    let nc_max = width
        .div_ceil(width.div_ceil(NC).max(1))
        .next_multiple_of(NR)
        .min(NC);
    let mut n0 = columns.start;
    while n0 < columns.end {
        let nc = nc_max.min(columns.end - n0);
        let mut k0 = 0;
        while k0 < k {
            let kc = kc_max.min(k - k0);
            let kcp = kc.div_ceil(2);
            // SAFETY: AVX-512F is available; `cols.check` bounds every index
            // `pack_b` reads, and it writes `nc.div_ceil(NR) * kc * NR <=
            // PACK_LEN` elements (rounding a block of at most KC up to even
            // keeps it at most KC, KC being even).
            unsafe { pack_b(cols, k0, kc, n0, nc, pack) };
            // SAFETY: AVX-512F/BW/BF16 (this function's contract); the
            // pair buffer holds `nc.div_ceil(NR) * kcp * NR <= PAIRS_LEN`.
            unsafe { to_pairs(pack, kc, nc.div_ceil(NR), pairs) };
            for p in panels.clone() {
                let rows = panel_rows(m, p);
                let (row, r) = (rows.start, rows.len());
                let ap = a_group[(p * kp + k0 / 2) * MR..].as_ptr();
                let mut c0 = 0;
                while c0 < nc {
                    let cw = NR.min(nc - c0);
                    let v = cw.div_ceil(16);
                    let tail = cw - (v - 1) * 16;
                    let at = row * n + n0 + c0;
                    // As in `gemm_rows`: fetch the next panel's weights.
                    let ahead = c0 == 0 && p + 1 < a.panels();
                    let tile = Tile {
                        kc: kcp,
                        a: ap.cast(),
                        b: pairs[(c0 / NR) * kcp * NR..].as_ptr().cast(),
                        pfb: std::ptr::null(),
                        ldb: NR,
                        c: y.at(at),
                        side: side.map_or(std::ptr::null(), |s| s[at..].as_ptr()),
                        ldc: n,
                        mask: lanes(tail),
                        first: k0 == 0,
                        last: k0 + kc == k,
                        bias: bias[row..].as_ptr(),
                        relu,
                        cap,
                        pf: if ahead {
                            a_group[((p + 1) * kp + k0 / 2) * MR..].as_ptr().cast()
                        } else {
                            ap.cast()
                        },
                        pf_step: if ahead { MR } else { 0 },
                    };
                    // SAFETY: as in `gemm_rows`: the tile's `r <= MR` rows
                    // and `cw` columns lie inside the block, so inside `y`
                    // (and `side`), which no other call writes; its A panel has `kcp`
                    // pairs of MR values from pair `k0 / 2`, its B panel
                    // `kcp` pairs of NR values; `bias` has `r` values from
                    // `row`.
                    unsafe { kernel_for(r, v)(&tile) };
                    c0 += NR;
                }
            }
            k0 += kc;
        }
        n0 += nc;
    }
}

/// Rounds a packed f32 block (`[panel][kk][NR]`, `kc` rows) to bf16 pairs
/// `[panel][pair][NR]`: lane `j` of pair `q` holds rows `2q` (low half)
/// and `2q + 1` (high half, zero past `kc`) of column `j`.
///
/// # Safety
///
/// AVX-512F/BW/BF16; `pack` holds `panels * kc * NR` and `pairs` `panels
/// * kc.div_ceil(2) * NR` elements.
#[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
unsafe fn to_pairs(pack: &[f32], kc: usize, panels: usize, pairs: &mut [u32]) {
    let kcp = kc.div_ceil(2);
    assert!(pack.len() >= panels * kc * NR && pairs.len() >= panels * kcp * NR);
    // Lane 2j takes element j (the low row), lane 2j + 1 element 16 + j.
    let idx: [i16; 32] = std::array::from_fn(|l| {
        #[allow(clippy::cast_possible_truncation, reason = "lanes below 32")]
        let v = (l / 2 + 16 * (l % 2)) as i16;
        v
    });
    // SAFETY: 64 bytes read from a 32-value array.
    let idx: __m512i = unsafe { _mm512_loadu_si512(idx.as_ptr().cast()) };
    for p in 0..panels {
        for q in 0..kcp {
            for v in 0..NR / 16 {
                let at = (p * kc + 2 * q) * NR + v * 16;
                // SAFETY: rows `2q` and (when below kc) `2q + 1` of panel
                // `p` are inside `pack`; the store is inside `pairs`.
                unsafe {
                    let lo = _mm512_loadu_ps(pack.as_ptr().add(at));
                    let hi = if 2 * q + 1 < kc {
                        _mm512_loadu_ps(pack.as_ptr().add(at + NR))
                    } else {
                        _mm512_setzero_ps()
                    };
                    let bh = std::mem::transmute::<__m512bh, __m512i>(_mm512_cvtne2ps_pbh(hi, lo));
                    let out = _mm512_permutexvar_epi16(idx, bh);
                    let dst = pairs.as_mut_ptr().add((p * kcp + q) * NR + v * 16);
                    _mm512_storeu_si512(dst.cast(), out);
                }
            }
        }
    }
}

type Kernel = unsafe fn(&Tile);

/// The kernel for `r` rows (1..=MR) and `v` vectors (1..=2) per row.
fn kernel_for(r: usize, v: usize) -> Kernel {
    macro_rules! table {
        ($($r:literal)*) => {
            match (r, v) {
                $(($r, 1) => kernel::<$r, 1>, ($r, _) => kernel::<$r, 2>,)*
                _ => unreachable!("tile rows in 1..=MR"),
            }
        };
    }
    table!(1 2 3 4 5 6 7 8 9 10 11 12 13 14)
}

/// `R x (16 V)` tile of bf16 pair products accumulated in f32 (`t.kc`
/// pairs; `t.a` and `t.b` point at pairs); the store is the f32 kernel's.
///
/// # Safety
///
/// AVX-512F/BF16; `t` describes memory as [`gemm_rows_bf16`] sets it up.
#[target_feature(enable = "avx512f,avx512bf16")]
unsafe fn kernel<const R: usize, const V: usize>(t: &Tile) {
    // SAFETY: pointers and extents come from `gemm_rows_bf16`, which checks
    // that R rows of `ldc` stride and V vectors (the last one masked) are
    // inside C (and the side operand), and that A and B hold `kc` pairs.
    unsafe {
        let mut acc = load_tile::<R, V>(t);
        let (mut a, mut b, mut pf) = (t.a.cast::<u32>(), t.b.cast::<u32>(), t.pf);
        for _ in 0..t.kc {
            _mm_prefetch::<_MM_HINT_T1>(pf.cast());
            pf = pf.wrapping_add(t.pf_step);
            _mm_prefetch::<_MM_HINT_T0>(a.wrapping_add(MR * PF_A).cast());
            _mm_prefetch::<_MM_HINT_T0>(b.wrapping_add(NR * PF_B).cast());
            let mut bv: [__m512bh; V] =
                [std::mem::transmute::<__m512, __m512bh>(_mm512_setzero_ps()); V];
            for (j, bj) in bv.iter_mut().enumerate() {
                *bj = std::mem::transmute::<__m512i, __m512bh>(_mm512_loadu_si512(
                    b.add(j * 16).cast(),
                ));
            }
            for (i, row) in acc.iter_mut().enumerate() {
                #[allow(clippy::cast_possible_wrap, reason = "the pair's bits, not a number")]
                let ai =
                    std::mem::transmute::<__m512i, __m512bh>(_mm512_set1_epi32(*a.add(i) as i32));
                for (acc_ij, bj) in row.iter_mut().zip(bv) {
                    *acc_ij = _mm512_dpbf16_ps(*acc_ij, ai, bj);
                }
            }
            a = a.add(MR);
            b = b.add(NR);
        }
        store_tile::<R, V>(t, acc);
    }
}
