//! Depthwise convolution: one filter per channel, vectorised over each
//! output row. On AVX-512 at stride 1 and 2 the kernel reads the unpadded
//! input in place (masked loads for the borders). Otherwise each input
//! plane is padded and phase-split first (see `super::im2col::phase_split`)
//! into a buffer that stays in L1, so every tap of a row of outputs reads a
//! contiguous slice, for any stride.

use std::mem::MaybeUninit;

use crate::engine::isa::Isa;

use super::super::activation::Activation;
use super::im2col::{Phases, phase_split};

/// One depthwise convolution over a phase-split input.
#[derive(Clone, Copy, Debug)]
pub(super) struct Depthwise<'a> {
    /// The input, `[image][channel][h][w]`.
    pub x: &'a [f32],
    pub h: usize,
    pub w: usize,
    pub pad: usize,
    /// Elements of one phase-split plane: `[row][phase][l]`.
    pub plane: usize,
    /// Channels per image.
    pub c: usize,
    pub kh: usize,
    pub kw: usize,
    pub s: usize,
    pub l: usize,
    pub oh: usize,
    pub ow: usize,
    /// `[c][kh][kw]`.
    pub weight: &'a [f32],
    pub bias: &'a [f32],
    pub act: Activation,
}

impl Depthwise<'_> {
    /// Pads and phase-splits input plane `ch` into `buf`.
    #[inline(always)]
    fn split(&self, ch: usize, buf: &mut [f32]) {
        let hw = self.h * self.w;
        let ph = Phases::with(self.plane / (self.s * self.l), self.s, self.l);
        phase_split(
            &self.x[ch * hw..(ch + 1) * hw],
            self.h,
            self.w,
            self.pad,
            ph,
            buf,
        );
    }
}

/// Computes `y` (`[image][channel][oh][ow]`) with `isa` if the CPU has it,
/// portable code otherwise. Every element of `y` is written.
pub(super) fn depthwise(d: &Depthwise<'_>, y: &mut [MaybeUninit<f32>], buf: &mut [f32], isa: Isa) {
    let planes = y.len() / (d.oh * d.ow).max(1);
    assert_eq!(y.len(), planes * d.oh * d.ow);
    assert!(d.x.len() == planes * d.h * d.w && buf.len() >= d.plane);
    assert!(d.weight.len() == d.c * d.kh * d.kw && d.plane.is_multiple_of(d.s * d.l));
    assert!(d.bias.len() == d.c && d.c > 0 && d.oh > 0 && d.ow > 0);
    // The farthest tap (last row, worst column phase) of the last output
    // of a plane stays inside the plane.
    let far = (0..d.kw)
        .map(|kx| kx % d.s * d.l + kx / d.s)
        .max()
        .unwrap_or(0);
    let last = ((d.oh - 1) * d.s + d.kh - 1) * d.s * d.l + far + (d.ow - 1);
    assert!(last < d.plane, "phase-split planes cover every window");
    #[cfg(target_arch = "x86_64")]
    match isa {
        Isa::Avx512 if is_x86_feature_detected!("avx512f") => {
            if direct::fits(d) {
                // SAFETY: the CPU supports AVX-512F (checked just above);
                // `direct::depthwise` masks every read to the unpadded planes.
                return unsafe { direct::depthwise(d, y) };
            }
            // SAFETY: the CPU supports AVX-512F (checked just above); the
            // asserts above bound every read of the kernel.
            return unsafe { avx512::depthwise(d, y, buf) };
        }
        Isa::Avx2 if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") => {
            // SAFETY: the CPU supports AVX2 and FMA (checked just above).
            return unsafe { depthwise_avx2(d, y, buf) };
        }
        _ => {}
    }
    let _ = isa;
    body::<false>(d, y, buf);
}

/// True when the AVX-512 direct kernel takes a `kh x kw` depthwise
/// convolution at `stride`.
#[cfg(target_arch = "x86_64")]
pub(super) fn direct_fits(stride: usize, kh: usize, kw: usize) -> bool {
    (stride == 1 || stride == 2) && kh * kw <= direct::MAX_TAPS
}

/// Output rows `oys` of one image from a band of its input rows; see
/// `direct::band`.
///
/// # Safety
///
/// As `direct::band`.
#[cfg(target_arch = "x86_64")]
pub(super) unsafe fn direct_band(
    d: &Depthwise<'_>,
    band: &[f32],
    rows: (usize, usize),
    oys: std::ops::Range<usize>,
    y: *mut f32,
) {
    // SAFETY: this function's contract.
    unsafe { direct::band(d, band, rows, oys, y) }
}

/// AVX-512 depthwise convolution straight from the unpadded input, at
/// stride 1 or 2: no phase-split copy. Padding is handled by masked loads
/// (lanes outside the input's columns, and whole rows outside its rows,
/// load zeros), so it computes exactly what the phase-split kernel does,
/// taps in the same order.
#[cfg(target_arch = "x86_64")]
mod direct {
    use std::arch::x86_64::{
        __m512, __m512i, _mm512_alignr_epi32, _mm512_castps_si512, _mm512_castsi512_ps,
        _mm512_fmadd_ps, _mm512_mask_storeu_ps, _mm512_maskz_loadu_ps, _mm512_max_ps,
        _mm512_min_ps, _mm512_permutex2var_ps, _mm512_set_epi32, _mm512_set1_ps, _mm512_setzero_ps,
    };

    use super::{Activation, Depthwise, MaybeUninit};

    /// Taps whose weights are broadcast once per channel.
    pub(super) const MAX_TAPS: usize = 49;

    /// True when this kernel takes `d`: stride 1 or 2, at most 7x7 taps.
    pub(super) fn fits(d: &Depthwise<'_>) -> bool {
        super::direct_fits(d.s, d.kh, d.kw) && d.h * d.w > 0
    }

    /// Bits `i < n` with `0 <= start + i < w`.
    #[allow(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        reason = "both bounds are clamped to 0..=32"
    )]
    fn lanes(start: isize, n: usize, w: usize) -> u32 {
        let n = n.cast_signed();
        let lo = (-start).clamp(0, n) as u32;
        let hi = (w.cast_signed() - start).clamp(0, n) as u32;
        if hi <= lo {
            0
        } else {
            (((1u64 << hi) - 1) & !((1u64 << lo) - 1)) as u32
        }
    }

    /// The left and right taps of a 3-wide window over 16 inputs `mid`,
    /// from the vectors before and after it: `mid` shifted by one lane
    /// each way, the lane shifted in coming from the neighbour.
    #[inline]
    #[target_feature(enable = "avx512f")]
    fn neighbours(before: __m512, mid: __m512, after: __m512) -> (__m512, __m512) {
        let (m, a) = (_mm512_castps_si512(mid), _mm512_castps_si512(after));
        (
            shift_in(before, mid),
            _mm512_castsi512_ps(_mm512_alignr_epi32::<1>(a, m)),
        )
    }

    /// `v` shifted up a lane, lane 15 of `before` entering at lane 0.
    #[inline]
    #[target_feature(enable = "avx512f")]
    fn shift_in(before: __m512, v: __m512) -> __m512 {
        _mm512_castsi512_ps(_mm512_alignr_epi32::<15>(
            _mm512_castps_si512(v),
            _mm512_castps_si512(before),
        ))
    }

    /// What every row of one call shares.
    struct Plan<'a> {
        h: usize,
        w: usize,
        pad: usize,
        kh: usize,
        kw: usize,
        ow: usize,
        chunks: usize,
        tail_mask: u16,
        /// Input-column masks, `[chunk][kx]`: 16 lanes at stride 1, 32
        /// (two vectors) at stride 2.
        masks: &'a [u32],
        relu: bool,
        cap: __m512,
        even: __m512i,
        odd: __m512i,
        /// A 3x3 window with padding 1 (at stride 1, as many output as
        /// input columns): the row kernels load each input once and
        /// shift or split it for the three taps.
        three: bool,
    }

    /// # Safety
    ///
    /// AVX-512F; `d` and `y` as [`super::depthwise`] checks them and
    /// [`fits`] accepts `d`.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn depthwise(d: &Depthwise<'_>, y: &mut [MaybeUninit<f32>]) {
        // SAFETY: AVX-512F (this function's contract); `plan` matches `d`.
        unsafe {
            with_plan(d, |plan| {
                if d.s == 1 {
                    run::<1>(d, plan, y);
                } else {
                    run::<2>(d, plan, y);
                }
            });
        }
    }

    /// Output rows `oys` of every channel of one image, from a band of
    /// input rows `r0 .. r0 + rows` (`band`: `[c][rows][w]`) rather than
    /// whole planes: the same taps in the same order as [`depthwise`], so
    /// the same values. `y` is the image's `[c][oh][ow]` outputs; only rows
    /// `oys` of each plane are written.
    ///
    /// # Safety
    ///
    /// AVX-512F; [`fits`] accepts `d`; `d.x` is ignored; the band holds
    /// every input row the windows of `oys` read; `y` is valid for writes
    /// of `d.c * d.oh * d.ow` elements, and calls running at the same time
    /// take disjoint `oys`.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn band(
        d: &Depthwise<'_>,
        band: &[f32],
        (r0, rows): (usize, usize),
        oys: std::ops::Range<usize>,
        y: *mut f32,
    ) {
        let (w, taps) = (d.w, d.kh * d.kw);
        assert!(band.len() >= d.c * rows * w && oys.end <= d.oh && r0 + rows <= d.h);
        // The first and last rows the windows of `oys` read, clipped to the
        // plane, are inside the band.
        if !oys.is_empty() {
            let first = (oys.start * d.s).saturating_sub(d.pad);
            let last = ((oys.end - 1) * d.s + d.kh)
                .saturating_sub(d.pad + 1)
                .min(d.h - 1);
            assert!(r0 <= first && last < r0 + rows, "band covers the windows");
        }
        // SAFETY: AVX-512F (this function's contract).
        unsafe {
            with_plan(d, |plan| {
                let mut wv = [_mm512_setzero_ps(); MAX_TAPS];
                for ch in 0..d.c {
                    // A plane whose row `iy` is the band's row `iy - r0`:
                    // only rows inside the band are read (asserted above).
                    let xc = band
                        .as_ptr()
                        .wrapping_add(ch * rows * w)
                        .wrapping_sub(r0 * w);
                    for (v, &wt) in wv.iter_mut().zip(&d.weight[ch * taps..][..taps]) {
                        *v = _mm512_set1_ps(wt);
                    }
                    let bias = _mm512_set1_ps(d.bias[ch]);
                    let out = y.wrapping_add(ch * d.oh * d.ow);
                    for oy in oys.clone() {
                        if d.s == 1 {
                            plan.row::<1>(xc, out, oy, &wv, bias);
                        } else {
                            plan.row::<2>(xc, out, oy, &wv, bias);
                        }
                    }
                }
            });
        }
    }

    /// Runs `f` with the plan of `d`.
    ///
    /// # Safety
    ///
    /// AVX-512F.
    #[target_feature(enable = "avx512f")]
    unsafe fn with_plan<R>(d: &Depthwise<'_>, f: impl FnOnce(&Plan<'_>) -> R) -> R {
        let ow = d.ow;
        let chunks = ow.div_ceil(16);
        let tail = ow - (chunks - 1) * 16;
        let tail_mask: u16 = if tail == 16 {
            u16::MAX
        } else {
            (1 << tail) - 1
        };
        let span = 16 * d.s;
        let masks: Vec<u32> = (0..chunks * d.kw)
            .map(|i| {
                let (c, kx) = (i / d.kw, i % d.kw);
                lanes(
                    (c * span + kx).cast_signed() - d.pad.cast_signed(),
                    span,
                    d.w,
                )
            })
            .collect();
        let (relu, cap) = match d.act {
            Activation::Identity => (false, f32::INFINITY),
            Activation::Relu => (true, f32::INFINITY),
            Activation::Relu6 => (true, 6.0),
        };
        let plan = Plan {
            h: d.h,
            w: d.w,
            pad: d.pad,
            kh: d.kh,
            kw: d.kw,
            ow,
            chunks,
            tail_mask,
            masks: &masks,
            relu,
            cap: _mm512_set1_ps(cap),
            even: _mm512_set_epi32(30, 28, 26, 24, 22, 20, 18, 16, 14, 12, 10, 8, 6, 4, 2, 0),
            odd: _mm512_set_epi32(31, 29, 27, 25, 23, 21, 19, 17, 15, 13, 11, 9, 7, 5, 3, 1),
            three: d.kh == 3 && d.kw == 3 && d.pad == 1 && (d.s == 2 || d.ow == d.w),
        };
        f(&plan)
    }

    /// Every channel of `d` at stride `S` (`plan.s`).
    ///
    /// # Safety
    ///
    /// AVX-512F; as [`depthwise`].
    #[target_feature(enable = "avx512f")]
    unsafe fn run<const S: usize>(d: &Depthwise<'_>, plan: &Plan<'_>, y: &mut [MaybeUninit<f32>]) {
        let (oh, ow, taps, chunks) = (d.oh, d.ow, d.kh * d.kw, plan.chunks);
        // A 3x3 window's rows load each input once, which beats the flat
        // run's load per tap (7x7 planes: 30.7 against 36.7 us for 960).
        if S == 1 && flat_pays(d) && !plan.three {
            // SAFETY: AVX-512F (this function's contract); `flat_pays`
            // checked the layout `flat` needs.
            return unsafe { flat(d, plan, y) };
        }
        let mut wv = [_mm512_setzero_ps(); MAX_TAPS];
        for (ch, yc) in y.chunks_exact_mut(oh * ow).enumerate() {
            let xc = d.x[ch * d.h * d.w..(ch + 1) * d.h * d.w].as_ptr();
            let wk = &d.weight[(ch % d.c) * taps..][..taps];
            for (v, &w) in wv.iter_mut().zip(wk) {
                *v = _mm512_set1_ps(w);
            }
            let bias = _mm512_set1_ps(d.bias[ch % d.c]);
            let out = yc.as_mut_ptr().cast::<f32>();
            if chunks == 1 {
                // One chunk per row: four rows at a time keep four
                // independent FMA chains.
                let mut oy = 0;
                // SAFETY: as below, for rows `oy .. oy + R < oh`.
                unsafe {
                    while oy + 4 <= oh {
                        plan.rows::<4, S>(xc, out, oy, &wv, bias);
                        oy += 4;
                    }
                    match oh - oy {
                        3 => plan.rows::<3, S>(xc, out, oy, &wv, bias),
                        2 => plan.rows::<2, S>(xc, out, oy, &wv, bias),
                        1 => plan.rows::<1, S>(xc, out, oy, &wv, bias),
                        _ => {}
                    }
                }
                continue;
            }
            for oy in 0..oh {
                // SAFETY: every load is masked to columns `0..w` of rows
                // `0..h` of this channel's plane; every store to the `ow`
                // outputs of row `oy` of `yc`.
                unsafe { plan.row::<S>(xc, out, oy, &wv, bias) };
            }
        }
    }

    /// True when a stride-1 plane is better run as one flat run of
    /// outputs ([`flat`]) than row by row: its rows are as wide as the
    /// input's (`ow == w`, a "same" convolution), and whole-plane chunks
    /// are at least a fifth fewer than rows of chunks (7x7: 4 against 7).
    fn flat_pays(d: &Depthwise<'_>) -> bool {
        let flat = (d.oh * d.ow).div_ceil(16);
        d.s == 1 && d.ow == d.w && 5 * flat <= 4 * d.oh * d.ow.div_ceil(16)
    }

    /// Every channel of a stride-1 convolution with `ow == w`, each
    /// plane's `oh * ow` outputs as one flat run of 16-lane chunks: output
    /// `p` reads input `p + (ky - pad) w + (kx - pad)` for every tap, so a
    /// chunk's tap is one masked load whose mask drops the lanes whose
    /// window leaves the plane at that tap (a row edge or the top or
    /// bottom). Taps in the order of [`Plan::rows`] from the bias, so the
    /// values are the row kernels'.
    ///
    /// # Safety
    ///
    /// AVX-512F; as [`depthwise`], and [`flat_pays`] accepts `d`.
    #[target_feature(enable = "avx512f")]
    unsafe fn flat(d: &Depthwise<'_>, plan: &Plan<'_>, y: &mut [MaybeUninit<f32>]) {
        let (ow, taps, n) = (d.ow, d.kh * d.kw, d.oh * d.ow);
        let chunks = n.div_ceil(16);
        // `[chunk][tap]`: lanes whose output is in the plane and whose
        // window's tap is inside the input.
        let masks: Vec<u16> = (0..chunks * taps)
            .map(|i| {
                let (c, t) = (i / taps, i % taps);
                let (ky, kx) = (t / d.kw, t % d.kw);
                (0..16).fold(0u16, |m, lane| {
                    let p = c * 16 + lane;
                    let iy = (p / ow + ky).wrapping_sub(d.pad);
                    let ix = (p % ow + kx).wrapping_sub(d.pad);
                    if p < n && iy < d.h && ix < d.w {
                        m | 1 << lane
                    } else {
                        m
                    }
                })
            })
            .collect();
        // Distance from output `p` to its tap's input, per tap.
        let offs: Vec<isize> = (0..taps)
            .map(|t| {
                let (ky, kx) = ((t / d.kw).cast_signed(), (t % d.kw).cast_signed());
                let (pad, w) = (d.pad.cast_signed(), d.w.cast_signed());
                (ky - pad) * w + kx - pad
            })
            .collect();
        let mut wv = [_mm512_setzero_ps(); MAX_TAPS];
        for (ch, yc) in y.chunks_exact_mut(n).enumerate() {
            let xc = d.x[ch * d.h * d.w..(ch + 1) * d.h * d.w].as_ptr();
            let wk = &d.weight[(ch % d.c) * taps..][..taps];
            for (v, &w) in wv.iter_mut().zip(wk) {
                *v = _mm512_set1_ps(w);
            }
            let bias = _mm512_set1_ps(d.bias[ch % d.c]);
            let out = yc.as_mut_ptr().cast::<f32>();
            let mut c0 = 0;
            // SAFETY: AVX-512F; `masks` and `offs` are this plane's, `xc`
            // its input and `out` its `oh * ow` outputs.
            unsafe {
                while c0 + 4 <= chunks {
                    flat_chunks::<4>(plan, xc, out, c0, n, &masks, &offs, &wv, bias);
                    c0 += 4;
                }
                match chunks - c0 {
                    3 => flat_chunks::<3>(plan, xc, out, c0, n, &masks, &offs, &wv, bias),
                    2 => flat_chunks::<2>(plan, xc, out, c0, n, &masks, &offs, &wv, bias),
                    1 => flat_chunks::<1>(plan, xc, out, c0, n, &masks, &offs, &wv, bias),
                    _ => {}
                }
            }
        }
    }

    /// Flat chunks `c0 .. c0 + U` of one plane for [`flat`]: `U`
    /// independent FMA chains.
    ///
    /// # Safety
    ///
    /// AVX-512F; `masks` (`[chunk][tap]`) and `offs` (per tap) as [`flat`]
    /// makes them for this plane's `n` outputs, `x` the plane, `out` its
    /// outputs, `c0 + U <= n.div_ceil(16)`.
    #[inline]
    #[target_feature(enable = "avx512f")]
    #[allow(clippy::too_many_arguments)]
    unsafe fn flat_chunks<const U: usize>(
        plan: &Plan<'_>,
        x: *const f32,
        out: *mut f32,
        c0: usize,
        n: usize,
        masks: &[u16],
        offs: &[isize],
        wv: &[__m512; MAX_TAPS],
        bias: __m512,
    ) {
        let taps = offs.len();
        assert!(masks.len() >= (c0 + U) * taps);
        let mut acc = [bias; U];
        for (t, &off) in offs.iter().enumerate() {
            let w = wv[t % MAX_TAPS];
            for (j, a) in acc.iter_mut().enumerate() {
                let c = c0 + j;
                let p = x.wrapping_offset((c * 16).cast_signed() + off);
                // SAFETY: `c * taps + t < (c0 + U) * taps` (asserted
                // above); the mask keeps only lanes whose tap is inside the
                // plane, and masked lanes are not read.
                let v = unsafe { _mm512_maskz_loadu_ps(*masks.get_unchecked(c * taps + t), p) };
                *a = _mm512_fmadd_ps(w, v, *a);
            }
        }
        let zero = _mm512_setzero_ps();
        for (j, &a) in acc.iter().enumerate() {
            let c = c0 + j;
            let v = if plan.relu {
                _mm512_min_ps(_mm512_max_ps(a, zero), plan.cap)
            } else {
                a
            };
            let left = n - c * 16;
            let mask = if left >= 16 {
                u16::MAX
            } else {
                (1 << left) - 1
            };
            // SAFETY: the lanes of `mask` are outputs `16 c .. min(16 c +
            // 16, n)` of the plane.
            unsafe { _mm512_mask_storeu_ps(out.add(c * 16), mask, v) };
        }
    }

    impl Plan<'_> {
        /// Output row `oy` of one plane, 16-lane chunks four at a time.
        ///
        /// # Safety
        ///
        /// AVX-512F; `x` a plane whose rows the windows of row `oy` read
        /// are readable, `out` its `oh x ow` outputs, `oy < oh`.
        #[inline]
        #[target_feature(enable = "avx512f")]
        unsafe fn row<const S: usize>(
            &self,
            x: *const f32,
            out: *mut f32,
            oy: usize,
            wv: &[__m512; MAX_TAPS],
            bias: __m512,
        ) {
            // SAFETY: this function's contract.
            unsafe {
                if self.chunks == 1 {
                    self.rows::<1, S>(x, out, oy, wv, bias);
                    return;
                }
                let mut c = 0;
                while c + 4 <= self.chunks {
                    self.chunks::<4, S>(x, out, oy, c, wv, bias);
                    c += 4;
                }
                match self.chunks - c {
                    3 => self.chunks::<3, S>(x, out, oy, c, wv, bias),
                    2 => self.chunks::<2, S>(x, out, oy, c, wv, bias),
                    1 => self.chunks::<1, S>(x, out, oy, c, wv, bias),
                    _ => {}
                }
            }
        }

        /// Rows `oy0 .. oy0 + R` of a one-chunk output (`ow <= 16`) at
        /// stride `S`; input rows outside the plane load zeros.
        ///
        /// # Safety
        ///
        /// AVX-512F; `x` one `h x w` plane, `out` its `oh x ow` outputs,
        /// `oy0 + R <= oh`, `chunks == 1`.
        #[inline]
        #[target_feature(enable = "avx512f")]
        #[allow(
            clippy::cast_possible_truncation,
            reason = "the low and high 16 lanes of a 32-lane mask"
        )]
        unsafe fn rows<const R: usize, const S: usize>(
            &self,
            x: *const f32,
            out: *mut f32,
            oy0: usize,
            wv: &[__m512; MAX_TAPS],
            bias: __m512,
        ) {
            let mut acc = [bias; R];
            debug_assert!(self.chunks == 1 && self.masks.len() >= self.kw);
            if S == 1 && self.three {
                // One masked load per input row: the row's lanes shifted
                // in registers give the left and right taps (zeros enter
                // at the edges, as the padding would).
                let m = self.masks[1];
                for ky in 0..3 {
                    let (w0, w1, w2) = (wv[3 * ky], wv[3 * ky + 1], wv[3 * ky + 2]);
                    for (r, a) in acc.iter_mut().enumerate() {
                        let iy = (oy0 + r + ky).wrapping_sub(1);
                        let mid = if iy < self.h {
                            // SAFETY: `m` keeps columns `0..w` of row `iy`.
                            unsafe { _mm512_maskz_loadu_ps(m as u16, x.add(iy * self.w)) }
                        } else {
                            _mm512_setzero_ps()
                        };
                        let (left, right) =
                            neighbours(_mm512_setzero_ps(), mid, _mm512_setzero_ps());
                        *a = _mm512_fmadd_ps(w0, left, *a);
                        *a = _mm512_fmadd_ps(w1, mid, *a);
                        *a = _mm512_fmadd_ps(w2, right, *a);
                    }
                }
                // SAFETY: this function's contract.
                unsafe { self.store_rows::<R>(out, oy0, acc) };
                return;
            }
            if S == 2 && self.three {
                // The row's 32 inputs loaded once: its even columns are the
                // middle taps, its odd ones the right taps, and the odd ones
                // shifted a lane (a zero entering) the left taps.
                let m = self.masks[1];
                for ky in 0..3 {
                    let (w0, w1, w2) = (wv[3 * ky], wv[3 * ky + 1], wv[3 * ky + 2]);
                    for (r, a) in acc.iter_mut().enumerate() {
                        let iy = ((oy0 + r) * 2 + ky).wrapping_sub(1);
                        let (even, odd) = if iy < self.h {
                            // SAFETY: `m` keeps columns `0..w` of row `iy`.
                            unsafe { self.split2(m, x.add(iy * self.w)) }
                        } else {
                            (_mm512_setzero_ps(), _mm512_setzero_ps())
                        };
                        let left = shift_in(_mm512_setzero_ps(), odd);
                        *a = _mm512_fmadd_ps(w0, left, *a);
                        *a = _mm512_fmadd_ps(w1, even, *a);
                        *a = _mm512_fmadd_ps(w2, odd, *a);
                    }
                }
                // SAFETY: this function's contract.
                unsafe { self.store_rows::<R>(out, oy0, acc) };
                return;
            }
            for ky in 0..self.kh {
                let mut row = [x; R];
                let mut ok = [0u32; R];
                for r in 0..R {
                    let iy = ((oy0 + r) * S + ky).wrapping_sub(self.pad);
                    if iy < self.h {
                        ok[r] = u32::MAX;
                        // Masked lanes are not read, so the address may
                        // precede the plane.
                        row[r] = x.wrapping_add(iy * self.w).wrapping_sub(self.pad);
                    }
                }
                for kx in 0..self.kw {
                    let w = wv[(ky * self.kw + kx) % MAX_TAPS];
                    // SAFETY: `masks` holds `kw` entries for chunk 0.
                    let m0 = unsafe { *self.masks.as_ptr().add(kx) };
                    for r in 0..R {
                        let m = m0 & ok[r];
                        let p = row[r].wrapping_add(kx);
                        // SAFETY: `m` keeps only lanes inside columns `0..w`
                        // of row `iy` of the plane, none when `iy` is outside.
                        let v = unsafe {
                            if S == 1 {
                                _mm512_maskz_loadu_ps(m as u16, p)
                            } else {
                                let lo = _mm512_maskz_loadu_ps(m as u16, p);
                                let hi =
                                    _mm512_maskz_loadu_ps((m >> 16) as u16, p.wrapping_add(16));
                                _mm512_permutex2var_ps(lo, self.even, hi)
                            }
                        };
                        acc[r] = _mm512_fmadd_ps(w, v, acc[r]);
                    }
                }
            }
            // SAFETY: this function's contract.
            unsafe { self.store_rows::<R>(out, oy0, acc) };
        }

        /// The even and odd columns of the 32 inputs at `p` whose lanes
        /// `m` keeps (the others zero).
        ///
        /// # Safety
        ///
        /// AVX-512F; lanes of `m` (low half from `p`, high half from `p +
        /// 16`) are readable.
        #[inline]
        #[target_feature(enable = "avx512f")]
        #[allow(
            clippy::cast_possible_truncation,
            reason = "the low and high 16 lanes of a 32-lane mask"
        )]
        unsafe fn split2(&self, m: u32, p: *const f32) -> (__m512, __m512) {
            // SAFETY: this function's contract.
            let (lo, hi) = unsafe {
                (
                    _mm512_maskz_loadu_ps(m as u16, p),
                    _mm512_maskz_loadu_ps((m >> 16) as u16, p.wrapping_add(16)),
                )
            };
            (
                _mm512_permutex2var_ps(lo, self.even, hi),
                _mm512_permutex2var_ps(lo, self.odd, hi),
            )
        }

        /// Stores rows `oy0 .. oy0 + R` of a one-chunk output after the
        /// activation.
        ///
        /// # Safety
        ///
        /// AVX-512F; `out` an `oh x ow` plane with `ow <= 16`, `oy0 + R <= oh`.
        #[inline]
        #[target_feature(enable = "avx512f")]
        unsafe fn store_rows<const R: usize>(&self, out: *mut f32, oy0: usize, acc: [__m512; R]) {
            let zero = _mm512_setzero_ps();
            for (r, &a) in acc.iter().enumerate() {
                let v = if self.relu {
                    _mm512_min_ps(_mm512_max_ps(a, zero), self.cap)
                } else {
                    a
                };
                // SAFETY: the `ow <= 16` lanes of `tail_mask` are row `oy0 +
                // r` of the outputs.
                unsafe { _mm512_mask_storeu_ps(out.add((oy0 + r) * self.ow), self.tail_mask, v) };
            }
        }

        /// Chunks `c0 .. c0 + U` (16 outputs each) of output row `oy`, at
        /// stride `S`. Input rows outside the plane are skipped: their
        /// taps would add `w * 0`.
        ///
        /// # Safety
        ///
        /// AVX-512F; `x` one `h x w` plane, `out` its `oh x ow` outputs,
        /// `oy < oh`, `c0 + U <= chunks`.
        #[inline]
        #[target_feature(enable = "avx512f")]
        #[allow(
            clippy::cast_possible_truncation,
            reason = "the low and high 16 lanes of a 32-lane mask"
        )]
        unsafe fn chunks<const U: usize, const S: usize>(
            &self,
            x: *const f32,
            out: *mut f32,
            oy: usize,
            c0: usize,
            wv: &[__m512; MAX_TAPS],
            bias: __m512,
        ) {
            let mut acc = [bias; U];
            debug_assert!(self.masks.len() >= (c0 + U) * self.kw);
            let masks = self.masks.as_ptr().wrapping_add(c0 * self.kw);
            if S == 1 && self.three {
                // Each 16 inputs of a row loaded once (masked to columns
                // `0..w`; zeros past the ends): chunk `c`'s left and right
                // taps are its vector shifted in from its neighbours.
                for ky in 0..3 {
                    let iy = (oy + ky).wrapping_sub(1);
                    if iy >= self.h {
                        continue;
                    }
                    let row = x.wrapping_add(iy * self.w);
                    let mut v = [_mm512_setzero_ps(); 6];
                    for (k, vk) in v.iter_mut().enumerate().take(U + 2) {
                        // Chunk `c0 + k - 1`; before the first and after
                        // the last (columns from `16 chunks >= w`) all
                        // zeros.
                        if c0 + k == 0 || c0 + k > self.chunks {
                            continue;
                        }
                        let c = c0 + k - 1;
                        // SAFETY: `masks` is `[chunk][kx]` for `c <
                        // chunks`; its `kx = pad` entry keeps columns `16 c
                        // .. min(16 c + 16, w)` of row `iy`, which is in
                        // the plane, and masked lanes are not read.
                        *vk = unsafe {
                            let m = *self.masks.as_ptr().add(c * 3 + 1);
                            _mm512_maskz_loadu_ps(m as u16, row.wrapping_add(c * 16))
                        };
                    }
                    let (w0, w1, w2) = (wv[3 * ky], wv[3 * ky + 1], wv[3 * ky + 2]);
                    for (j, a) in acc.iter_mut().enumerate() {
                        let (left, right) = neighbours(v[j], v[j + 1], v[j + 2]);
                        *a = _mm512_fmadd_ps(w0, left, *a);
                        *a = _mm512_fmadd_ps(w1, v[j + 1], *a);
                        *a = _mm512_fmadd_ps(w2, right, *a);
                    }
                }
                // SAFETY: this function's contract.
                unsafe { self.store_chunks::<U>(out, oy, c0, acc) };
                return;
            }
            if S == 2 && self.three {
                // Each chunk's 32 inputs loaded once: even columns are the
                // middle taps, odd ones the right taps, and the odd ones
                // shifted a lane, the previous chunk's last odd input
                // entering, the left taps.
                for ky in 0..3 {
                    let iy = (oy * 2 + ky).wrapping_sub(1);
                    if iy >= self.h {
                        continue;
                    }
                    let row = x.wrapping_add(iy * self.w);
                    // Lane 15: the input just before chunk `c0` (zero at
                    // the row's start).
                    let mut prev = if c0 == 0 {
                        _mm512_setzero_ps()
                    } else {
                        // SAFETY: `masks` is `[chunk][kx]`; chunk `c0 - 1`'s
                        // `kx = pad` entry keeps columns of row `iy` in the
                        // plane; its high half covers the 16 inputs before
                        // chunk `c0`.
                        unsafe {
                            let m = *self.masks.as_ptr().add((c0 - 1) * 3 + 1) >> 16;
                            _mm512_maskz_loadu_ps(m as u16, row.wrapping_add(c0 * 32 - 16))
                        }
                    };
                    let (w0, w1, w2) = (wv[3 * ky], wv[3 * ky + 1], wv[3 * ky + 2]);
                    for (j, a) in acc.iter_mut().enumerate() {
                        let c = c0 + j;
                        // SAFETY: as above, for chunk `c < chunks`.
                        let (even, odd) = unsafe {
                            let m = *self.masks.as_ptr().add(c * 3 + 1);
                            self.split2(m, row.wrapping_add(c * 32))
                        };
                        let left = shift_in(prev, odd);
                        *a = _mm512_fmadd_ps(w0, left, *a);
                        *a = _mm512_fmadd_ps(w1, even, *a);
                        *a = _mm512_fmadd_ps(w2, odd, *a);
                        prev = odd;
                    }
                }
                // SAFETY: this function's contract.
                unsafe { self.store_chunks::<U>(out, oy, c0, acc) };
                return;
            }
            for ky in 0..self.kh {
                let iy = (oy * S + ky).wrapping_sub(self.pad);
                if iy >= self.h {
                    continue;
                }
                // Columns from the first chunk's start minus the padding;
                // masked lanes are not read, so the address may precede the
                // plane.
                let row = x
                    .wrapping_add(iy * self.w + c0 * 16 * S)
                    .wrapping_sub(self.pad);
                for kx in 0..self.kw {
                    let w = wv[(ky * self.kw + kx) % MAX_TAPS];
                    for (j, a) in acc.iter_mut().enumerate() {
                        let p = row.wrapping_add(j * 16 * S + kx);
                        // SAFETY: `masks` holds `[chunk][kx]` for chunks
                        // `c0 .. c0 + U`; each keeps only lanes inside
                        // columns `0..w` of row `iy`, which is in the plane.
                        let v = unsafe {
                            let m = *masks.add(j * self.kw + kx);
                            if S == 1 {
                                _mm512_maskz_loadu_ps(m as u16, p)
                            } else {
                                let lo = _mm512_maskz_loadu_ps(m as u16, p);
                                let hi =
                                    _mm512_maskz_loadu_ps((m >> 16) as u16, p.wrapping_add(16));
                                _mm512_permutex2var_ps(lo, self.even, hi)
                            }
                        };
                        *a = _mm512_fmadd_ps(w, v, *a);
                    }
                }
            }
            // SAFETY: this function's contract.
            unsafe { self.store_chunks::<U>(out, oy, c0, acc) };
        }

        /// Stores chunks `c0 .. c0 + U` of output row `oy` after the
        /// activation.
        ///
        /// # Safety
        ///
        /// AVX-512F; `out` an `oh x ow` plane, `oy < oh`, `c0 + U <= chunks`.
        #[inline]
        #[target_feature(enable = "avx512f")]
        unsafe fn store_chunks<const U: usize>(
            &self,
            out: *mut f32,
            oy: usize,
            c0: usize,
            acc: [__m512; U],
        ) {
            let zero = _mm512_setzero_ps();
            for (j, &a) in acc.iter().enumerate() {
                let v = if self.relu {
                    _mm512_min_ps(_mm512_max_ps(a, zero), self.cap)
                } else {
                    a
                };
                let mask = if c0 + j + 1 == self.chunks {
                    self.tail_mask
                } else {
                    u16::MAX
                };
                // SAFETY: lanes of `mask` are outputs `16 c .. ow` of row
                // `oy`, inside the plane's outputs.
                unsafe { _mm512_mask_storeu_ps(out.add(oy * self.ow + (c0 + j) * 16), mask, v) };
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use std::arch::x86_64::{
        __m512, _mm512_fmadd_ps, _mm512_mask_storeu_ps, _mm512_maskz_loadu_ps, _mm512_max_ps,
        _mm512_min_ps, _mm512_set1_ps, _mm512_setzero_ps,
    };

    use super::{Activation, Depthwise, MaybeUninit};

    /// Taps whose weights stay in broadcast registers (7x7 fits; larger
    /// kernels broadcast the rest on every use).
    const MAX_TAPS: usize = 49;

    /// Each output row in 16-lane chunks (the last one masked), four chunks
    /// at a time so four independent FMA chains hide the latency.
    ///
    /// # Safety
    ///
    /// AVX-512F; `d` and `y` as [`super::depthwise`] checks them.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn depthwise(d: &Depthwise<'_>, y: &mut [MaybeUninit<f32>], buf: &mut [f32]) {
        let (oh, ow, taps) = (d.oh, d.ow, d.kh * d.kw);
        let offs: Vec<usize> = (0..taps)
            .map(|t| {
                let (ky, kx) = (t / d.kw, t % d.kw);
                (ky * d.s + kx % d.s) * d.l + kx / d.s
            })
            .collect();
        let (relu, cap) = match d.act {
            Activation::Identity => (false, f32::INFINITY),
            Activation::Relu => (true, f32::INFINITY),
            Activation::Relu6 => (true, 6.0),
        };
        let row_stride = d.s * d.s * d.l;
        let chunks = ow.div_ceil(16);
        let tail = ow - (chunks - 1) * 16;
        let tail_mask: u16 = if tail == 16 {
            u16::MAX
        } else {
            (1 << tail) - 1
        };
        let mut wv = [_mm512_setzero_ps(); MAX_TAPS];
        for (ch, yc) in y.chunks_exact_mut(oh * ow).enumerate() {
            d.split(ch, buf);
            let xc = buf.as_ptr();
            let wk = &d.weight[(ch % d.c) * taps..][..taps];
            for (v, &w) in wv.iter_mut().zip(wk) {
                *v = _mm512_set1_ps(w);
            }
            let row = Row {
                offs: &offs,
                wv: &wv[..taps.min(MAX_TAPS)],
                wk,
                bias: _mm512_set1_ps(d.bias[ch % d.c]),
                relu,
                cap: _mm512_set1_ps(cap),
            };
            for oy in 0..oh {
                // SAFETY: `xc + oy * row_stride + offs[t] + ox` for ox < ow
                // is inside the plane (checked by `super::depthwise`); masked
                // lanes past `ow` are neither read nor written.
                unsafe {
                    let x = xc.add(oy * row_stride);
                    let out = yc.as_mut_ptr().add(oy * ow).cast::<f32>();
                    let mut c = 0;
                    while c + 4 <= chunks {
                        row.chunks::<4>(x, out, c, chunks, tail_mask);
                        c += 4;
                    }
                    match chunks - c {
                        3 => row.chunks::<3>(x, out, c, chunks, tail_mask),
                        2 => row.chunks::<2>(x, out, c, chunks, tail_mask),
                        1 => row.chunks::<1>(x, out, c, chunks, tail_mask),
                        _ => {}
                    }
                }
            }
        }
    }

    /// What every row of one channel shares.
    struct Row<'a> {
        offs: &'a [usize],
        wv: &'a [__m512],
        wk: &'a [f32],
        bias: __m512,
        relu: bool,
        cap: __m512,
    }

    impl Row<'_> {
        /// Outputs `16 c .. 16 (c + U)` of one row.
        ///
        /// # Safety
        ///
        /// AVX-512F; `x + off + 16 * chunk + lane` readable and `out + 16 *
        /// chunk + lane` writable for every tap and every unmasked lane.
        #[inline]
        #[target_feature(enable = "avx512f")]
        unsafe fn chunks<const U: usize>(
            &self,
            x: *const f32,
            out: *mut f32,
            c: usize,
            chunks: usize,
            tail_mask: u16,
        ) {
            let mut mask = [u16::MAX; U];
            if c + U == chunks {
                mask[U - 1] = tail_mask;
            }
            let mut acc = [self.bias; U];
            // SAFETY: the caller's contract covers every access below.
            unsafe {
                for (t, &off) in self.offs.iter().enumerate() {
                    let w = match self.wv.get(t) {
                        Some(&w) => w,
                        None => _mm512_set1_ps(self.wk[t]),
                    };
                    for (u, a) in acc.iter_mut().enumerate() {
                        let v = _mm512_maskz_loadu_ps(mask[u], x.add(off + (c + u) * 16));
                        *a = _mm512_fmadd_ps(w, v, *a);
                    }
                }
                let zero = _mm512_setzero_ps();
                for (u, &a) in acc.iter().enumerate() {
                    let v = if self.relu {
                        _mm512_min_ps(_mm512_max_ps(a, zero), self.cap)
                    } else {
                        a
                    };
                    _mm512_mask_storeu_ps(out.add((c + u) * 16), mask[u], v);
                }
            }
        }
    }
}

/// # Safety
///
/// The CPU must support AVX2 and FMA.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn depthwise_avx2(d: &Depthwise<'_>, y: &mut [MaybeUninit<f32>], buf: &mut [f32]) {
    body::<true>(d, y, buf);
}

/// `a * b + c`, fused only where the caller was compiled with FMA (a
/// software `fmaf` would be slower than the separate operations).
#[inline(always)]
fn madd<const FMA: bool>(a: f32, b: f32, c: f32) -> f32 {
    if FMA { a.mul_add(b, c) } else { a * b + c }
}

#[inline(always)]
fn body<const FMA: bool>(d: &Depthwise<'_>, y: &mut [MaybeUninit<f32>], buf: &mut [f32]) {
    let (oh, ow, taps) = (d.oh, d.ow, d.kh * d.kw);
    let row_stride = d.s * d.s * d.l;
    for (ch, yc) in y.chunks_exact_mut(oh * ow).enumerate() {
        d.split(ch, buf);
        let xc = &buf[..d.plane];
        let wk = &d.weight[(ch % d.c) * taps..][..taps];
        let b = d.bias[ch % d.c];
        for (oy, yrow) in yc.chunks_exact_mut(ow).enumerate() {
            let base = oy * row_stride;
            let mut ox = 0;
            while ox + 16 <= ow {
                block::<16, FMA>(d, xc, wk, b, base + ox, &mut yrow[ox..ox + 16]);
                ox += 16;
            }
            while ox + 8 <= ow {
                block::<8, FMA>(d, xc, wk, b, base + ox, &mut yrow[ox..ox + 8]);
                ox += 8;
            }
            while ox < ow {
                block::<1, FMA>(d, xc, wk, b, base + ox, &mut yrow[ox..ox + 1]);
                ox += 1;
            }
        }
    }
}

/// `W` adjacent outputs of one row, accumulated in registers over all taps.
#[inline(always)]
fn block<const W: usize, const FMA: bool>(
    d: &Depthwise<'_>,
    xc: &[f32],
    wk: &[f32],
    b: f32,
    base: usize,
    out: &mut [MaybeUninit<f32>],
) {
    let mut acc = [b; W];
    for ky in 0..d.kh {
        for kx in 0..d.kw {
            let wv = wk[ky * d.kw + kx];
            let off = base + (ky * d.s + kx % d.s) * d.l + kx / d.s;
            let src: &[f32; W] = xc[off..off + W].try_into().expect("W values");
            for (a, &v) in acc.iter_mut().zip(src) {
                *a = madd::<FMA>(wv, v, *a);
            }
        }
    }
    for (o, a) in out.iter_mut().zip(acc) {
        o.write(d.act.apply_one(a));
    }
}
