//! Input layouts for the convolution kernels, and the portable GEMM path
//! (im2col + the `gemm` crate) used where AVX-512 is missing.

/// Geometry of a phase-split input (see [`phase_split`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Phases {
    /// Padded rows.
    pub hp: usize,
    /// Stride = number of phases.
    pub s: usize,
    /// Elements per phase row: `ceil((w + 2 pad) / s)`.
    pub l: usize,
}

impl Phases {
    pub(super) fn new(h: usize, w: usize, pad: usize, s: usize) -> Self {
        Self {
            hp: h + 2 * pad,
            s,
            l: (w + 2 * pad).div_ceil(s),
        }
    }

    /// A layout with `hp` rows (at least `h + 2 pad`) and phase rows of
    /// `l` (at least `ceil((w + 2 pad) / s)`); the extra rows and columns
    /// are zeros.
    pub(super) fn with(hp: usize, s: usize, l: usize) -> Self {
        Self { hp, s, l }
    }

    /// Elements per channel.
    pub(super) fn plane(&self) -> usize {
        self.hp * self.s * self.l
    }
}

/// Pads every plane of `x` (`[planes][h][w]`) with `pad` zeros and splits
/// each padded row into its `s` phases: `out[plane][row][r][j]` is padded
/// column `j * s + r` of padded row `row` (zero past the padded width).
/// A window's taps at stride `s` then read contiguous runs of `out`.
pub(super) fn phase_split(x: &[f32], h: usize, w: usize, pad: usize, ph: Phases, out: &mut [f32]) {
    let planes = x.len() / (h * w).max(1);
    assert_eq!(x.len(), planes * h * w);
    assert!(out.len() >= planes * ph.plane());
    let (s, l) = (ph.s, ph.l);
    for (xc, oc) in x.chunks_exact(h * w).zip(out.chunks_exact_mut(ph.plane())) {
        for (row, orow) in oc.chunks_exact_mut(s * l).enumerate() {
            if row < pad || row >= h + pad {
                orow.fill(0.0);
                continue;
            }
            let src = &xc[(row - pad) * w..][..w];
            if s == 1 {
                orow[..pad].fill(0.0);
                orow[pad..pad + w].copy_from_slice(src);
                orow[pad + w..].fill(0.0);
            } else if s == 2 {
                // Padded column 2j + r is source column 2j + r - pad: the
                // even source columns fill one phase, the odd ones the
                // other, each shifted by about pad / 2.
                orow.fill(0.0);
                let t = pad / 2;
                let (phase_e, at_e, phase_o, at_o) = if pad.is_multiple_of(2) {
                    (0, t, 1, t)
                } else {
                    (1, t, 0, t + 1)
                };
                let (ne, no) = (w.div_ceil(2), w / 2);
                let (p0, p1) = orow.split_at_mut(l);
                let (even, odd) = if phase_e == 0 { (p0, p1) } else { (p1, p0) };
                debug_assert_eq!(phase_o, 1 - phase_e);
                deinterleave2(src, &mut even[at_e..at_e + ne], &mut odd[at_o..at_o + no]);
            } else {
                for (r, dst) in orow.chunks_exact_mut(l).enumerate() {
                    for (j, d) in dst.iter_mut().enumerate() {
                        let col = j * s + r;
                        *d = if col >= pad && col < pad + w {
                            src[col - pad]
                        } else {
                            0.0
                        };
                    }
                }
            }
        }
    }
}

/// `out[c][oy][ox] = x[c][oy * s][ox * s]`: the input a 1x1 unpadded
/// convolution at stride `s` reads, as a plain `[c][oh * ow]` matrix.
pub(super) fn subsample(
    x: &[f32],
    h: usize,
    w: usize,
    s: usize,
    oh: usize,
    ow: usize,
    out: &mut [f32],
) {
    let planes = x.len() / (h * w).max(1);
    assert!(out.len() >= planes * oh * ow && (oh - 1) * s < h && (ow - 1) * s < w);
    for (xc, oc) in x.chunks_exact(h * w).zip(out.chunks_exact_mut(oh * ow)) {
        for (oy, dst) in oc.chunks_exact_mut(ow).enumerate() {
            let src = &xc[oy * s * w..][..w];
            if s == 2 {
                deinterleave2(src, dst, &mut []);
            } else {
                for (ox, d) in dst.iter_mut().enumerate() {
                    *d = src[ox * s];
                }
            }
        }
    }
}

/// `even[i] = src[2 i]` and `odd[i] = src[2 i + 1]` for the first
/// `even.len()` and `odd.len()` pairs.
pub(super) fn deinterleave2(src: &[f32], even: &mut [f32], odd: &mut [f32]) {
    assert!(even.len() <= src.len().div_ceil(2) && odd.len() <= src.len() / 2);
    #[cfg(target_arch = "x86_64")]
    if crate::engine::isa::Isa::active() == crate::engine::isa::Isa::Avx512 {
        // SAFETY: AVX-512F is available; lengths checked above.
        return unsafe { avx512::deinterleave2(src, even, odd) };
    }
    for (i, e) in even.iter_mut().enumerate() {
        *e = src[2 * i];
    }
    for (i, o) in odd.iter_mut().enumerate() {
        *o = src[2 * i + 1];
    }
}

#[cfg(target_arch = "x86_64")]
pub(super) mod avx512 {
    use std::arch::x86_64::{
        _mm512_mask_storeu_ps, _mm512_maskz_loadu_ps, _mm512_permutex2var_ps, _mm512_set_epi32,
    };

    /// # Safety
    ///
    /// AVX-512F; `even.len() <= ceil(src.len() / 2)`, `odd.len() <=
    /// src.len() / 2`.
    #[target_feature(enable = "avx512f")]
    #[allow(
        clippy::cast_possible_truncation,
        reason = "a mask of at most 16 lanes"
    )]
    pub(in super::super) unsafe fn deinterleave2(src: &[f32], even: &mut [f32], odd: &mut [f32]) {
        let ie = _mm512_set_epi32(30, 28, 26, 24, 22, 20, 18, 16, 14, 12, 10, 8, 6, 4, 2, 0);
        let io = _mm512_set_epi32(31, 29, 27, 25, 23, 21, 19, 17, 15, 13, 11, 9, 7, 5, 3, 1);
        let lanes = |len: usize| -> u16 {
            if len >= 16 {
                u16::MAX
            } else {
                ((1u32 << len) - 1) as u16
            }
        };
        let mut i = 0;
        while i < even.len().max(odd.len()) {
            let left = src.len() - 2 * i;
            // SAFETY: loads are masked to `src[2i..]`, stores to the
            // remaining lanes of `even` and `odd` from `i`.
            unsafe {
                let a = _mm512_maskz_loadu_ps(lanes(left), src.as_ptr().add(2 * i));
                let b = _mm512_maskz_loadu_ps(
                    lanes(left.saturating_sub(16)),
                    src.as_ptr().add(2 * i + 16.min(left)),
                );
                let ne = even.len().saturating_sub(i);
                let no = odd.len().saturating_sub(i);
                if ne > 0 {
                    let e = _mm512_permutex2var_ps(a, ie, b);
                    _mm512_mask_storeu_ps(even.as_mut_ptr().add(i), lanes(ne), e);
                }
                if no > 0 {
                    let o = _mm512_permutex2var_ps(a, io, b);
                    _mm512_mask_storeu_ps(odd.as_mut_ptr().add(i), lanes(no), o);
                }
            }
            i += 16;
        }
    }
}

/// Lays out the receptive fields of a phase-split input (`c` channels) as
/// the rows of a `[c * kh * kw][oh * ow]` matrix.
#[allow(clippy::too_many_arguments)]
pub(super) fn im2col(
    xp: &[f32],
    ph: Phases,
    c: usize,
    kh: usize,
    kw: usize,
    oh: usize,
    ow: usize,
    out: &mut [f32],
) {
    let (s, l, n) = (ph.s, ph.l, oh * ow);
    for ci in 0..c {
        let xc = &xp[ci * ph.plane()..(ci + 1) * ph.plane()];
        for ky in 0..kh {
            for kx in 0..kw {
                let row = &mut out[((ci * kh + ky) * kw + kx) * n..][..n];
                for (oy, dst) in row.chunks_exact_mut(ow).enumerate() {
                    let off = ((oy * s + ky) * s + kx % s) * l + kx / s;
                    dst.copy_from_slice(&xc[off..off + ow]);
                }
            }
        }
    }
}

/// `c[m][n] = a[m][k] * b[k][n]`, all row-major and contiguous, with the
/// `gemm` crate on one thread.
pub fn gemm_f32(m: usize, n: usize, k: usize, a: &[f32], b: &[f32], c: &mut [f32]) {
    assert!(a.len() >= m * k && b.len() >= k * n && c.len() >= m * n);
    // SAFETY: the asserts above keep every index the strides reach inside
    // the three slices; `c` does not alias `a` or `b` (it is borrowed mutably).
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            c.as_mut_ptr(),
            1,
            n as isize,
            false,
            a.as_ptr(),
            1,
            k as isize,
            b.as_ptr(),
            1,
            n as isize,
            0.0,
            1.0,
            false,
            false,
            false,
            gemm::Parallelism::None,
        );
    }
}
