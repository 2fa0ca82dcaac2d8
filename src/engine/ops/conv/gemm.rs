//! AVX-512 GEMM for convolutions: weights packed once, im2col fused into the
//! packing of the input, bias and activation fused into the final store.
//! Plus a small-N variant ([`gemm_small_n`]) for 7x7 outputs, which puts
//! output channels rather than positions along the vectors.
//!
//! Problem: `C[m][n] = act(bias[m] + sum_k A[m][k] * B[k][n])` for one group
//! of a convolution, with A its weights (M = out channels, K = in * kh * kw),
//! B its receptive fields (N = oh * ow) and C its output planes (NCHW).
//!
//! Approach (Goto blocking, one core):
//!
//! ```text
//! for each NC block of columns          B block (KC x NC) lives in L2
//!   for each KC block of depth            packed from the input on the fly
//!     pack B[k0..k0+KC][n0..n0+NC] into NR-column panels
//!     for each MR-row panel of A          A panel (MR x KC) lives in L1
//!       for each NR-column panel of B
//!         micro-kernel: MR x NR tile of C in up to 28 zmm accumulators
//! ```
//!
//! Invariants: A is pre-packed as `[panel][k][MR]` (rows past a panel's
//! rows are zero; panels split M evenly);
//! packed B is `[panel][k][NR]`; a 1x1 convolution's B (its input, `[k][n]`)
//! is read in place, no packing. Every element of C in the computed rows is
//! written by the first KC block and read back only by later ones, so C
//! need not be initialised. Edge tiles use fewer rows (a kernel per row
//! count) and masked loads and stores for the last columns.
//!
//! The row loop takes any range of panels, so a later intra-op split can
//! hand each thread a block of output channels ([`gemm_rows`]).

use std::arch::x86_64::{
    __m512, _MM_HINT_ET0, _MM_HINT_T0, _MM_HINT_T1, _mm_prefetch, _mm512_add_ps, _mm512_fmadd_ps,
    _mm512_loadu_ps, _mm512_mask_storeu_ps, _mm512_maskz_loadu_ps, _mm512_max_ps, _mm512_min_ps,
    _mm512_set1_ps, _mm512_setzero_ps, _mm512_shuffle_f32x4, _mm512_shuffle_ps, _mm512_storeu_ps,
    _mm512_unpackhi_ps, _mm512_unpacklo_ps,
};
use std::mem::MaybeUninit;
use std::ops::Range;

use super::super::activation::Activation;

/// Rows (output channels) of a micro-kernel tile.
pub(super) const MR: usize = 14;
/// Columns (output positions) of a micro-kernel tile: two zmm registers.
pub(super) const NR: usize = 32;
/// Prefetch distances, in depth steps, of the A and B panels.
pub(super) const PF_A: usize = 24;
pub(super) const PF_B: usize = 8;
/// Largest depth block.
pub(super) const KC: usize = 256;
/// Largest column block (a multiple of NR).
pub(super) const NC: usize = 512;
/// f32 elements of the B packing buffer [`gemm_rows`] needs.
pub(super) const PACK_LEN: usize = KC * NC;

/// Weights of every group packed into row panels of at most `MR` rows,
/// `[group][panel][k][MR]`. The panels split M evenly (64 rows are 13, 13,
/// 13, 13, 12 rather than 14 x 4 + 8), so no tile runs with few rows.
#[derive(Clone, Debug)]
pub(super) struct PackedWeights {
    m: usize,
    k: usize,
    data: Vec<f32>,
}

impl PackedWeights {
    /// Packs `weight` (`[groups * m][k]`, row-major).
    pub(super) fn new(weight: &[f32], groups: usize, m: usize, k: usize) -> Self {
        assert_eq!(weight.len(), groups * m * k, "weight length");
        let mut packed = Self {
            m,
            k,
            data: Vec::new(),
        };
        let panels = packed.panels();
        packed.data = vec![0.0; groups * panels * k * MR];
        for (g, dst) in packed.data.chunks_exact_mut(panels * k * MR).enumerate() {
            let w = &weight[g * m * k..(g + 1) * m * k];
            for p in 0..panels {
                let panel = &mut dst[p * k * MR..(p + 1) * k * MR];
                for (r, row) in panel_rows(m, p).enumerate() {
                    for (kk, &v) in w[row * k..(row + 1) * k].iter().enumerate() {
                        panel[kk * MR + r] = v;
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
    pub(super) fn group(&self, g: usize) -> &[f32] {
        let len = self.panels() * self.k * MR;
        &self.data[g * len..(g + 1) * len]
    }
}

/// Rows of panel `p` when `m` rows are split evenly into `ceil(m / MR)`
/// panels of at most `MR`.
pub(super) fn panel_rows(m: usize, p: usize) -> Range<usize> {
    let panels = m.div_ceil(MR);
    let (base, extra) = (m / panels.max(1), m % panels.max(1));
    let start = p * base + p.min(extra);
    start..start + base + usize::from(p < extra)
}

/// One group's output, `m` rows of `n` values, shared by the threads that
/// compute disjoint blocks of it (a range of row panels by a range of
/// columns): a `&mut [MaybeUninit<f32>]` whose writers split it by blocks,
/// which slices cannot express when the blocks are column ranges.
#[derive(Clone, Copy)]
pub(super) struct Out<'a> {
    ptr: *mut f32,
    len: usize,
    _y: std::marker::PhantomData<&'a mut [MaybeUninit<f32>]>,
}

// SAFETY: an `Out` is its slice's unique borrow for `'a`; the GEMM
// functions that write through it require the calls running at one time to
// write disjoint blocks, so sharing it between threads races on nothing.
unsafe impl Send for Out<'_> {}
// SAFETY: as for `Send`.
unsafe impl Sync for Out<'_> {}

impl<'a> Out<'a> {
    pub(super) fn new(y: &'a mut [MaybeUninit<f32>]) -> Self {
        Self {
            ptr: y.as_mut_ptr().cast(),
            len: y.len(),
            _y: std::marker::PhantomData,
        }
    }

    pub(super) fn len(&self) -> usize {
        self.len
    }

    /// Pointer to element `at`.
    pub(super) fn at(&self, at: usize) -> *mut f32 {
        assert!(at < self.len, "output index");
        self.ptr.wrapping_add(at)
    }
}

/// Splits one group's [`gemm_rows`] (`m` rows, `n` columns) over at most
/// `threads` threads as (panel range, column range) blocks of about equal
/// work: by row panels, unless that leaves one thread clearly more work
/// than columns would. Few panels divide badly (64 channels are 5 panels,
/// 3 + 2 on two threads), and with B packed (`packs`) each panel range
/// packs all of B while a column range packs only its own columns. Column
/// ranges start at multiples of 16, one vector.
///
/// Every block computes its outputs exactly as one thread would: the depth
/// blocks, and so the order of the sums, depend on K alone.
pub(super) fn split_rows(
    m: usize,
    n: usize,
    threads: usize,
    packs: bool,
) -> Vec<(Range<usize>, Range<usize>)> {
    let panels = m.div_ceil(MR);
    let parts = threads.min(panels).max(1);
    let by_panels: Vec<_> = (0..parts)
        .map(|t| (t * panels / parts..(t + 1) * panels / parts, 0..n))
        .collect();
    let parts_c = threads.min(n.div_ceil(16));
    if threads <= 1 || parts_c <= 1 {
        return by_panels;
    }
    let bound = |t: usize| {
        if t == parts_c {
            n
        } else {
            ((t * n / parts_c + 8) / 16 * 16).min(n)
        }
    };
    let by_columns: Vec<_> = (0..parts_c)
        .map(|t| (0..panels, bound(t)..bound(t + 1)))
        .filter(|(_, c)| !c.is_empty())
        .collect();
    // Work per depth step in vector operations: a tile of r rows and v
    // vectors costs (r + 1) v (the FMAs and the loads of B), packing a
    // column about 2 / 16 (a load and a store per vector).
    let cost = |(p, c): &(Range<usize>, Range<usize>)| {
        let rows: usize = p.clone().map(|p| panel_rows(m, p).len() + 1).sum();
        let pack = if packs { 2 * c.len() / 16 } else { 0 };
        rows * c.len().div_ceil(16) + pack
    };
    let worst = |b: &[(Range<usize>, Range<usize>)]| b.iter().map(cost).max().unwrap_or(0);
    if 100 * worst(&by_columns) < 97 * worst(&by_panels) {
        by_columns
    } else {
        by_panels
    }
}

/// Weights transposed into `NR`-column panels, `[group][panel][k][NR]`
/// (columns past M are zero), for [`gemm_small_n`].
#[derive(Clone, Debug)]
pub(super) struct PackedWeightsT {
    m: usize,
    k: usize,
    data: Vec<f32>,
}

impl PackedWeightsT {
    /// Packs `weight` (`[groups * m][k]`, row-major).
    pub(super) fn new(weight: &[f32], groups: usize, m: usize, k: usize) -> Self {
        assert_eq!(weight.len(), groups * m * k, "weight length");
        let panels = m.div_ceil(NR);
        let mut data = vec![0.0; groups * panels * k * NR];
        for (g, dst) in data.chunks_exact_mut(panels * k * NR).enumerate() {
            let w = &weight[g * m * k..(g + 1) * m * k];
            for row in 0..m {
                let (p, j) = (row / NR, row % NR);
                for (kk, &v) in w[row * k..(row + 1) * k].iter().enumerate() {
                    dst[(p * k + kk) * NR + j] = v;
                }
            }
        }
        Self { m, k, data }
    }

    /// Column panels (of `NR` output channels) per group.
    pub(super) fn panels(&self) -> usize {
        self.m.div_ceil(NR)
    }

    /// The packed panels of group `g`.
    pub(super) fn group(&self, g: usize) -> &[f32] {
        let len = self.panels() * self.k * NR;
        &self.data[g * len..(g + 1) * len]
    }
}

/// True when a GEMM with `m` rows and `n` columns wastes clearly fewer
/// vector lanes with the output channels, rather than the positions, along
/// the vectors: 7x7 outputs fill 49 of 64 lanes, 512 channels all of them.
pub(super) fn prefer_small_n(m: usize, n: usize) -> bool {
    let fill = |x: usize| x as f64 / (16 * x.div_ceil(16)) as f64;
    n <= SMALL_N && fill(m) > fill(n) + 0.05
}

/// Largest N [`gemm_small_n`] takes.
pub(super) const SMALL_N: usize = 64;

/// Where the columns of B come from: `B[k][n]` with `k = (ci, ky, kx)` and
/// `n = (oy, ox)` is `x[base(k) + oy * row_stride + ox]`.
///
/// `x` is an input laid out `[ci][row][phase][j]` (see `super::phase_split`):
/// padded row `row`, padded column `j * stride + phase`. A 1x1, stride-1,
/// unpadded convolution uses its input as is (one phase, `l = w`).
#[derive(Clone, Copy, Debug)]
pub(super) struct Cols<'a> {
    /// The (phase-split, padded) input of this group's channels.
    pub x: &'a [f32],
    /// Elements per input channel in `x`.
    pub plane: usize,
    /// Kernel height and width.
    pub kh: usize,
    pub kw: usize,
    /// Stride (number of phases).
    pub s: usize,
    /// Elements per phase row.
    pub l: usize,
    /// Output width (contiguous run of `n`).
    pub ow: usize,
    /// Distance in `x` between output rows: `s * s * l`.
    pub row_stride: usize,
}

impl Cols<'_> {
    /// Panics unless every `B[k][n]` of a `k x n` matrix is inside `x`.
    pub(super) fn check(&self, k: usize, n: usize) {
        // The farthest element is a tap of the last input channel (the last
        // tap need not be the farthest at stride 2) at the last output.
        if n > 0 && k > 0 {
            let taps = self.kh * self.kw;
            let far = (k.saturating_sub(taps)..k).map(|kk| self.base(kk)).max();
            let last = far.unwrap_or(0) + self.pos(n - 1);
            assert!(last < self.x.len(), "input covers every window");
        }
    }

    /// Offset of output position `n` from `base(k)`.
    fn pos(&self, n: usize) -> usize {
        (n / self.ow) * self.row_stride + n % self.ow
    }

    fn base(&self, k: usize) -> usize {
        let taps = self.kh * self.kw;
        let (ci, t) = (k / taps, k % taps);
        let (ky, kx) = (t / self.kw, t % self.kw);
        ci * self.plane + (ky * self.s + kx % self.s) * self.l + kx / self.s
    }
}

/// `(fused relu, upper clamp)` of an activation.
pub(super) fn clamps(act: Activation) -> (bool, f32) {
    match act {
        Activation::Identity => (false, f32::INFINITY),
        Activation::Relu => (true, f32::INFINITY),
        Activation::Relu6 => (true, 6.0),
    }
}

/// Computes the block of row panels `panels` (of this group's output
/// channels, see [`PackedWeights`]) by columns `columns` of
/// `y = act(bias + A * B)`, `y` being the group's `m` rows of `n` values,
/// row-major. With `side` (laid out as `y`), it is
/// `y = act((A * B + bias) + side)` instead: a residual join in the store.
/// Every element of the block is written (so `y` may start uninitialised),
/// and read back only after it was; nothing outside it is touched.
///
/// `pack` is scratch of at least [`PACK_LEN`] elements, best 64-byte aligned.
///
/// # Safety
///
/// The CPU must support AVX-512F, and calls running at the same time on
/// one `y` must compute disjoint blocks.
#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "avx512f")]
pub(super) unsafe fn gemm_rows(
    a: &PackedWeights,
    a_group: &[f32],
    cols: &Cols<'_>,
    n: usize,
    bias: &[f32],
    act: Activation,
    side: Option<&[f32]>,
    (panels, columns): (Range<usize>, Range<usize>),
    y: Out<'_>,
    pack: &mut [f32],
) {
    let (m, k) = (a.m, a.k);
    assert!(panels.end <= a.panels() && columns.end <= n, "block");
    assert!(y.len() >= m * n && bias.len() >= m && pack.len() >= PACK_LEN);
    assert!(side.is_none_or(|s| s.len() >= m * n), "side covers y");
    assert_eq!(a_group.len(), a.panels() * k * MR, "packed group length");
    cols.check(k, n);
    let (relu, cap) = clamps(act);
    // A 1x1 view with contiguous positions is B itself, `B[k][j] = x[k *
    // plane + j]`: the kernel reads it in place instead of a packed copy.
    let direct = cols.kh == 1 && cols.kw == 1 && cols.row_stride == cols.ow;
    // Balanced blocks: K = 576 gives 3 x 192 rather than 256 + 256 + 64.
    let kc_max = k.div_ceil(k.div_ceil(KC).max(1));
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
            if !direct {
                // SAFETY: AVX-512F is available (this function's contract);
                // the asserts above bound every index `pack_b` reads in
                // `cols.x`, and it writes `nc.div_ceil(NR) * kc * NR <=
                // PACK_LEN` elements.
                unsafe { pack_b(cols, k0, kc, n0, nc, pack) };
            }
            for p in panels.clone() {
                let rows = panel_rows(m, p);
                let (row, r) = (rows.start, rows.len());
                let ap = a_group[p * k * MR + k0 * MR..].as_ptr();
                let mut c0 = 0;
                while c0 < nc {
                    let cw = NR.min(nc - c0);
                    let v = cw.div_ceil(16);
                    let tail = cw - (v - 1) * 16;
                    let at = row * n + n0 + c0;
                    // The first tile of a panel fetches the next panel's
                    // weights for this depth block.
                    let ahead = c0 == 0 && p + 1 < a.panels();
                    let b = if direct {
                        cols.x[k0 * cols.plane + n0 + c0..].as_ptr()
                    } else {
                        pack[(c0 / NR) * kc * NR..].as_ptr()
                    };
                    let tile = Tile {
                        kc,
                        a: ap,
                        b,
                        pfb: if direct {
                            b.wrapping_add(NR)
                        } else {
                            b.wrapping_add(NR * PF_B)
                        },
                        ldb: if direct { cols.plane } else { NR },
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
                            a_group[(p + 1) * k * MR + k0 * MR..].as_ptr()
                        } else {
                            ap
                        },
                        pf_step: if ahead { MR } else { 0 },
                    };
                    if k0 == 0 && c0 + NR < nc {
                        // The next tile's outputs, for writing: their lines
                        // arrive while this tile computes instead of
                        // stalling its stores. Prefetches do not fault.
                        let next = tile.c.wrapping_add(NR);
                        for i in 0..r {
                            let line = next.wrapping_add(i * n);
                            _mm_prefetch::<_MM_HINT_ET0>(line.cast());
                            _mm_prefetch::<_MM_HINT_ET0>(line.wrapping_add(16).cast());
                        }
                    }
                    // SAFETY: the tile's `r <= MR` rows and `cw` columns lie
                    // inside the block, so inside `y` and `side` when given
                    // (row + r <= m, n0 + c0 + cw <= columns.end <= n), and
                    // no other call writes them (the contract); its A
                    // panel has `kc` steps of MR values from `k0`, its B
                    // panel `kc` steps of `ldb` values (packed, or `cols.x`
                    // in place, whose last row ends inside `cols.x` by
                    // `cols.check`; lanes past `cw` are masked); `bias` has
                    // `r` values from `row`.
                    unsafe { kernel_for(r, v)(&tile) };
                    c0 += NR;
                }
            }
            k0 += kc;
        }
        n0 += nc;
    }
}

/// Small-N variant of [`gemm_rows`]: computes `C^T = B^T A^T`, broadcasting
/// output positions (row panels of at most `MR` positions) against vectors
/// of output channels, accumulates in `ct` (`[n][m]`), then writes
/// `y[m][n] = act(ct[n][m] + bias[m])` (with `side`, laid out as `y`:
/// `act((ct[n][m] + bias[m]) + side[m][n])`) for the channels of column panels
/// `panels` (of `NR` channels, see [`PackedWeightsT`]), `y` being the
/// group's `m` rows of `n` values. Every element of those channels' rows is
/// written, nothing else.
///
/// `pack` holds at least [`PACK_LEN`] elements and `ct` `n * m`.
///
/// # Safety
///
/// The CPU must support AVX-512F, and calls running at the same time on
/// one `y` (each with its own `ct`) must take disjoint panel ranges.
#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "avx512f")]
pub(super) unsafe fn gemm_small_n(
    a: &PackedWeightsT,
    a_group: &[f32],
    cols: &Cols<'_>,
    n: usize,
    bias: &[f32],
    act: Activation,
    side: Option<&[f32]>,
    panels: Range<usize>,
    y: Out<'_>,
    pack: &mut [f32],
    ct: &mut [f32],
) {
    let (m, k) = (a.m, a.k);
    assert!(n <= SMALL_N && panels.end <= a.panels(), "panel range");
    let (first, end) = (panels.start * NR, (panels.end * NR).min(m));
    assert!(y.len() >= m * n && bias.len() >= m && pack.len() >= PACK_LEN);
    assert!(side.is_none_or(|s| s.len() >= m * n), "side covers y");
    assert!(ct.len() >= n * m);
    assert_eq!(a_group.len(), a.panels() * k * NR, "packed group length");
    cols.check(k, n);
    let (relu, cap) = clamps(act);
    let row_panels = n.div_ceil(MR);
    let kc_max = k.div_ceil(k.div_ceil(KC).max(1));
    let mut k0 = 0;
    while k0 < k {
        let kc = kc_max.min(k - k0);
        assert!(row_panels * kc * MR <= pack.len());
        // SAFETY: AVX-512F (this function's contract); `cols.check` bounds
        // the reads, the assert above the writes.
        unsafe { pack_bt(cols, k0, kc, n, pack) };
        for j in panels.clone() {
            let cw = NR.min(m - j * NR);
            let v = cw.div_ceil(16);
            let tail = cw - (v - 1) * 16;
            for p in 0..row_panels {
                let rows = panel_rows(n, p);
                // The weights are B here, `NR` channels (two lines) per depth
                // step: the first two position panels fetch one line each
                // of the next channel panel's block.
                let ahead = p < 2 && j + 1 < a.panels();
                let b = a_group[(j * k + k0) * NR..].as_ptr();
                let tile = Tile {
                    kc,
                    a: pack[p * kc * MR..].as_ptr(),
                    b,
                    pfb: b.wrapping_add(NR * PF_B),
                    ldb: NR,
                    c: ct[rows.start * m + j * NR..].as_mut_ptr(),
                    side: std::ptr::null(),
                    ldc: m,
                    mask: lanes(tail),
                    first: k0 == 0,
                    last: false,
                    bias: bias.as_ptr(),
                    relu,
                    cap,
                    pf: if ahead {
                        a_group[((j + 1) * k + k0) * NR + p * 16..].as_ptr()
                    } else {
                        a_group[(j * k + k0) * NR..].as_ptr()
                    },
                    pf_step: if ahead { NR } else { 0 },
                };
                // SAFETY: the tile's rows (positions `rows`) and `cw`
                // channel columns from `j * NR` lie inside `ct` (n x m);
                // the packed panels hold `kc` steps; with `last` false the
                // kernel does not read `bias`.
                unsafe { kernel_for(rows.len(), v)(&tile) };
            }
        }
        k0 += kc;
    }
    // Blocks of 16 channels by 16 positions: 16 contiguous loads from
    // `ct`, a transpose in registers, then per channel the bias, the side
    // operand's row, the activation and a store down its output row.
    let (zero, capv) = (_mm512_setzero_ps(), _mm512_set1_ps(cap));
    let mut ch = first;
    while ch < end {
        let chans = (end - ch).min(16);
        let cmask = lanes(chans);
        let mut pos0 = 0;
        while pos0 < n {
            let count = (n - pos0).min(16);
            let pmask = lanes(count);
            let mut rows = [zero; 16];
            for (i, r) in rows.iter_mut().enumerate().take(count) {
                // SAFETY: lanes of `cmask` read `ct[(pos0 + i) * m + ch ..
                // end]`, inside `ct` (n x m) as `pos0 + i < n`.
                *r = unsafe { _mm512_maskz_loadu_ps(cmask, ct.as_ptr().add((pos0 + i) * m + ch)) };
            }
            let cols = transpose16(rows);
            for (l, &c) in cols.iter().enumerate().take(chans) {
                let at = (ch + l) * n + pos0;
                // SAFETY: `bias` holds `end > ch + l` values; lanes of
                // `pmask` are positions `pos0 .. pos0 + count <= n` of
                // output row `ch + l < end <= m`, inside `side` and `y`
                // (`m * n` each), rows of this call's panels that no other
                // call writes (the contract).
                unsafe {
                    let mut v = _mm512_add_ps(c, _mm512_set1_ps(*bias.get_unchecked(ch + l)));
                    if let Some(s) = side {
                        v = _mm512_add_ps(v, _mm512_maskz_loadu_ps(pmask, s.as_ptr().add(at)));
                    }
                    if relu {
                        v = _mm512_min_ps(_mm512_max_ps(v, zero), capv);
                    }
                    _mm512_mask_storeu_ps(y.at(at), pmask, v);
                }
            }
            pos0 += 16;
        }
        ch += 16;
    }
}

/// The mask of the first `count` lanes (all 16 from 16 on).
pub(super) fn lanes(count: usize) -> u16 {
    if count >= 16 {
        u16::MAX
    } else {
        (1u16 << count) - 1
    }
}

/// The 16 x 16 transpose of `r`: lane `i` of output `c` is lane `c` of
/// `r[i]`. Unpacks pair rows within 128-bit blocks, 64-bit shuffles make
/// 4 x 4 blocks, two block shuffles put the blocks in place.
#[inline]
#[target_feature(enable = "avx512f")]
pub(super) fn transpose16(r: [__m512; 16]) -> [__m512; 16] {
    let mut b = [_mm512_setzero_ps(); 16];
    for g in 0..4 {
        let lo01 = _mm512_unpacklo_ps(r[4 * g], r[4 * g + 1]);
        let hi01 = _mm512_unpackhi_ps(r[4 * g], r[4 * g + 1]);
        let lo23 = _mm512_unpacklo_ps(r[4 * g + 2], r[4 * g + 3]);
        let hi23 = _mm512_unpackhi_ps(r[4 * g + 2], r[4 * g + 3]);
        // Block `q` of `b[4 g + e]`: lane `4 q + e` of rows `4 g .. 4 g + 4`.
        b[4 * g] = _mm512_shuffle_ps::<0x44>(lo01, lo23);
        b[4 * g + 1] = _mm512_shuffle_ps::<0xEE>(lo01, lo23);
        b[4 * g + 2] = _mm512_shuffle_ps::<0x44>(hi01, hi23);
        b[4 * g + 3] = _mm512_shuffle_ps::<0xEE>(hi01, hi23);
    }
    let mut out = [_mm512_setzero_ps(); 16];
    for e in 0..4 {
        let c0 = _mm512_shuffle_f32x4::<0x88>(b[e], b[4 + e]);
        let c1 = _mm512_shuffle_f32x4::<0xDD>(b[e], b[4 + e]);
        let c2 = _mm512_shuffle_f32x4::<0x88>(b[8 + e], b[12 + e]);
        let c3 = _mm512_shuffle_f32x4::<0xDD>(b[8 + e], b[12 + e]);
        out[e] = _mm512_shuffle_f32x4::<0x88>(c0, c2);
        out[4 + e] = _mm512_shuffle_f32x4::<0x88>(c1, c3);
        out[8 + e] = _mm512_shuffle_f32x4::<0xDD>(c0, c2);
        out[12 + e] = _mm512_shuffle_f32x4::<0xDD>(c1, c3);
    }
    out
}

/// Packs `B^T[0..n][k0..k0+kc]` into `dst` as `[panel][kk][MR]`, the panels
/// being the balanced position panels of [`panel_rows`].
///
/// # Safety
///
/// AVX-512F; `cols.check(k0 + kc, n)` passed and `dst` holds
/// `n.div_ceil(MR) * kc * MR` elements.
#[target_feature(enable = "avx512f")]
unsafe fn pack_bt(cols: &Cols<'_>, k0: usize, kc: usize, n: usize, dst: &mut [f32]) {
    let panels = n.div_ceil(MR);
    assert!(dst.len() >= panels * kc * MR && n <= SMALL_N);
    let mut row = [0.0f32; SMALL_N];
    let x = cols.x.as_ptr();
    for kk in 0..kc {
        let base = cols.base(k0 + kk);
        let mut at = 0;
        while at < n {
            let run = (cols.ow - at % cols.ow).min(n - at);
            let take = run.min(NR);
            // SAFETY: `base + pos(at) .. + take` stays inside `cols.x`
            // (checked by the caller) and `at + take <= n <= SMALL_N`.
            unsafe { copy_short(x.add(base + cols.pos(at)), row.as_mut_ptr().add(at), take) };
            at += take;
        }
        for p in 0..panels {
            let rows = panel_rows(n, p);
            // SAFETY: `rows` lies inside `row[..n]`; the destination is
            // panel `p`, step `kk`, `rows.len() <= MR` values.
            unsafe {
                copy_short(
                    row.as_ptr().add(rows.start),
                    dst.as_mut_ptr().add((p * kc + kk) * MR),
                    rows.len(),
                );
            }
        }
    }
}

/// One micro-kernel call (the bf16 kernel reads `kc` as pairs of depth
/// and `a`, `b` as bf16 pairs, always packed).
pub(super) struct Tile {
    pub(super) kc: usize,
    pub(super) a: *const f32,
    pub(super) b: *const f32,
    /// Distance between the depth steps of B: `NR` when packed.
    pub(super) ldb: usize,
    pub(super) c: *mut f32,
    /// Null, or the side operand laid out as C, added after the bias.
    pub(super) side: *const f32,
    pub(super) ldc: usize,
    /// Lanes of the last vector of each row that are inside C.
    pub(super) mask: u16,
    pub(super) first: bool,
    pub(super) last: bool,
    pub(super) bias: *const f32,
    pub(super) relu: bool,
    pub(super) cap: f32,
    /// Far prefetch into L2: depth step `kk` touches `pf + kk * pf_step`
    /// (`pf_step` 0 re-touches one line the tile reads anyway). The weights
    /// of the next panel stream from memory while this tile computes, so
    /// the next tile finds them in L2 instead of waiting on DRAM.
    pub(super) pf: *const f32,
    pub(super) pf_step: usize,
    /// Near prefetch into L1 of B: depth step `kk` touches the 32 values
    /// at `pfb + kk * ldb`. Packed B looks [`PF_B`] steps ahead; B read in
    /// place (a 1x1 convolution's input, one row per depth step, rows a
    /// plane apart, which no hardware prefetcher follows) fetches the next
    /// tile's columns while this tile computes.
    pub(super) pfb: *const f32,
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

/// `R x (16 V)` tile: accumulates `kc` rank-1 updates in registers, then
/// adds bias, then the side operand if any, and applies the activation on
/// the last depth block.
///
/// # Safety
///
/// AVX-512F; `t` describes memory as [`gemm_rows`] sets it up.
#[target_feature(enable = "avx512f")]
unsafe fn kernel<const R: usize, const V: usize>(t: &Tile) {
    // SAFETY: pointers and extents come from `gemm_rows`, which
    // checks that R rows of `ldc` stride and V vectors (the last one masked)
    // are inside C, and that A and B hold `kc` steps.
    unsafe {
        let mut acc = load_tile::<R, V>(t);
        let (mut a, mut b, mut pf, mut pfb) = (t.a, t.b, t.pf, t.pfb);
        for _ in 0..t.kc {
            _mm_prefetch::<_MM_HINT_T1>(pf.cast());
            pf = pf.wrapping_add(t.pf_step);
            // Weights stream from memory once per use: fetch them (and the
            // packed B panel) a few hundred cycles ahead. Prefetches do not
            // fault, and `wrapping_add` keeps the address arithmetic defined.
            _mm_prefetch::<_MM_HINT_T0>(a.wrapping_add(MR * PF_A).cast());
            _mm_prefetch::<_MM_HINT_T0>(pfb.cast());
            _mm_prefetch::<_MM_HINT_T0>(pfb.wrapping_add(16).cast());
            pfb = pfb.wrapping_add(t.ldb);
            let mut bv = [_mm512_setzero_ps(); V];
            for (j, bj) in bv.iter_mut().enumerate() {
                // The last vector is masked to the tile's columns (packed
                // panels hold zeros there, in-place B the next row).
                *bj = if j + 1 == V {
                    _mm512_maskz_loadu_ps(t.mask, b.add(j * 16))
                } else {
                    _mm512_loadu_ps(b.add(j * 16))
                };
            }
            for (i, row) in acc.iter_mut().enumerate() {
                let ai = _mm512_set1_ps(*a.add(i));
                for (acc_ij, bj) in row.iter_mut().zip(bv) {
                    *acc_ij = _mm512_fmadd_ps(ai, bj, *acc_ij);
                }
            }
            a = a.add(MR);
            b = b.wrapping_add(t.ldb);
        }
        store_tile::<R, V>(t, acc);
    }
}

/// The accumulators a tile starts from: zero on the first depth block,
/// else the partial sums the previous block stored in C.
///
/// # Safety
///
/// AVX-512F, and inlined into a function compiled for it (the kernels);
/// R rows of `t.ldc` stride and V vectors (the last masked by `t.mask`)
/// from `t.c` are readable.
#[inline(always)]
pub(super) unsafe fn load_tile<const R: usize, const V: usize>(t: &Tile) -> [[__m512; V]; R] {
    // SAFETY: AVX-512F and the extents are the caller's contract.
    unsafe {
        let mut acc = [[_mm512_setzero_ps(); V]; R];
        if !t.first {
            for (i, row) in acc.iter_mut().enumerate() {
                for (j, a) in row.iter_mut().enumerate() {
                    let p = t.c.add(i * t.ldc + j * 16);
                    *a = if j + 1 == V {
                        _mm512_maskz_loadu_ps(t.mask, p)
                    } else {
                        _mm512_loadu_ps(p)
                    };
                }
            }
        }
        acc
    }
}

/// Stores a tile's accumulators to C; on the last depth block first adds
/// the bias, then the side operand if any, then applies the activation.
///
/// # Safety
///
/// AVX-512F, and inlined into a function compiled for it (the kernels);
/// R rows of `t.ldc` stride and V vectors (the last masked) from `t.c`
/// (and from `t.side` when not null) are inside their buffers, and
/// `t.bias` has R values when `t.last`.
#[inline(always)]
pub(super) unsafe fn store_tile<const R: usize, const V: usize>(
    t: &Tile,
    mut acc: [[__m512; V]; R],
) {
    // SAFETY: the extents are the caller's contract.
    unsafe {
        if t.last {
            let zero = _mm512_setzero_ps();
            let cap = _mm512_set1_ps(t.cap);
            for (i, row) in acc.iter_mut().enumerate() {
                let bi = _mm512_set1_ps(*t.bias.add(i));
                for (j, a) in row.iter_mut().enumerate() {
                    let mut v: __m512 = _mm512_add_ps(*a, bi);
                    if !t.side.is_null() {
                        let p = t.side.add(i * t.ldc + j * 16);
                        let s = if j + 1 == V {
                            _mm512_maskz_loadu_ps(t.mask, p)
                        } else {
                            _mm512_loadu_ps(p)
                        };
                        v = _mm512_add_ps(v, s);
                    }
                    if t.relu {
                        v = _mm512_min_ps(_mm512_max_ps(v, zero), cap);
                    }
                    *a = v;
                }
            }
        }
        for (i, row) in acc.iter().enumerate() {
            for (j, &a) in row.iter().enumerate() {
                let p = t.c.add(i * t.ldc + j * 16);
                if j + 1 == V {
                    _mm512_mask_storeu_ps(p, t.mask, a);
                } else {
                    _mm512_storeu_ps(p, a);
                }
            }
        }
    }
}

/// Packs `B[k0..k0+kc][n0..n0+nc]` into `dst` as `[panel][kk][NR]`, zeroing
/// the columns of the last panel past `nc`.
///
/// # Safety
///
/// AVX-512F; every `cols.x` index of the block is in bounds and `dst` holds
/// `nc.div_ceil(NR) * kc * NR` elements (both checked by [`gemm_rows`]).
#[target_feature(enable = "avx512f")]
#[allow(
    clippy::cast_possible_truncation,
    reason = "a mask of at most 16 lanes"
)]
pub(super) unsafe fn pack_b(
    cols: &Cols<'_>,
    k0: usize,
    kc: usize,
    n0: usize,
    nc: usize,
    dst: &mut [f32],
) {
    let panels = nc.div_ceil(NR);
    assert!(dst.len() >= panels * kc * NR);
    let x = cols.x.as_ptr();
    let d = dst.as_mut_ptr();
    let contiguous = cols.row_stride == cols.ow;
    for kk in 0..kc {
        let base = cols.base(k0 + kk);
        let (mut oy, mut ox) = (n0 / cols.ow, n0 % cols.ow);
        let mut n = 0;
        while n < nc {
            let run = if contiguous {
                nc - n
            } else {
                (cols.ow - ox).min(nc - n)
            };
            let mut src = base + oy * cols.row_stride + ox;
            let mut left = run;
            let mut at = n;
            while left > 0 {
                let (p, j) = (at / NR, at % NR);
                let take = (NR - j).min(left);
                // SAFETY: `src..src + take` is inside the block, which
                // `gemm_rows` checked against `cols.x`; the destination is
                // inside panel `p < panels` at row `kk < kc`.
                unsafe { copy_short(x.add(src), d.add((p * kc + kk) * NR + j), take) };
                src += take;
                at += take;
                left -= take;
            }
            n += run;
            ox = 0;
            oy += 1;
        }
        let end = nc % NR;
        if end != 0 {
            // SAFETY: the zeroed columns end..NR of the last panel's row kk
            // are inside `dst` (asserted above).
            unsafe {
                let row = d.add(((panels - 1) * kc + kk) * NR);
                for v in 0..NR / 16 {
                    let valid = end.saturating_sub(v * 16).min(16);
                    let keep = ((1u32 << valid) - 1) as u16;
                    _mm512_mask_storeu_ps(row.add(v * 16), !keep, _mm512_setzero_ps());
                }
            }
        }
    }
}

/// Copies `len <= NR` floats with full and masked 16-lane moves (no call).
///
/// # Safety
///
/// AVX-512F; `src..src+len` readable, `dst..dst+len` writable.
#[inline]
#[target_feature(enable = "avx512f")]
unsafe fn copy_short(src: *const f32, dst: *mut f32, len: usize) {
    let mut i = 0;
    // SAFETY: each move touches lanes `i..i + 16` or, masked, `i..len`,
    // which the caller guarantees are valid.
    unsafe {
        while i + 16 <= len {
            _mm512_storeu_ps(dst.add(i), _mm512_loadu_ps(src.add(i)));
            i += 16;
        }
        if i < len {
            let m = (1u16 << (len - i)) - 1;
            _mm512_mask_storeu_ps(dst.add(i), m, _mm512_maskz_loadu_ps(m, src.add(i)));
        }
    }
}
