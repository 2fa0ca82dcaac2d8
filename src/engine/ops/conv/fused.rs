//! A pointwise (1x1) convolution fused with the depthwise convolution that
//! reads its output: MobileNetV2's expand and depthwise layers.
//!
//! Problem: the expansion multiplies the channels by six, so at 112x112 or
//! 56x56 its output (2 to 5 MB) leaves L2 on the way from one layer to the
//! next, and in a whole network (whose other layers have evicted it from
//! L3 too) the depthwise layer and the expansion's own stores wait on DRAM.
//!
//! Approach: the depthwise output is computed in bands of rows. For each
//! band the expansion computes just the input rows the band's windows read
//! (the halo rows twice, once for each band that reads them) into a
//! per-thread buffer sized to stay in L2, and the depthwise kernel reads
//! them there. Both are the unfused kernels (the GEMM over a column range,
//! the direct depthwise rows), so every value is bit-identical to running
//! the two layers one after the other.

use std::mem::MaybeUninit;

use super::depthwise::{self, Depthwise};
use super::gemm::{self, Cols, PackedWeights};
use super::im2col::Phases;
use super::{Conv2d, Isa};
use crate::engine::{Shape, Tensor, Workspace, par_for_each, with_thread_scratch};

/// Bytes of expanded rows a band may hold: with the band's input rows and
/// outputs it stays within a 2 MiB L2 and most of a 1 MiB one.
const BAND_BYTES: usize = 768 << 10;

impl Conv2d {
    /// True when [`Conv2d::forward_fused`] runs `self` then `dw` on
    /// `input`: `self` a 1x1, stride-1, unpadded f32 convolution on the
    /// AVX-512 GEMM, `dw` a depthwise convolution of its outputs at stride
    /// 1 or 2, and the expanded tensor too large to stay in L2.
    pub(crate) fn fuses_with(&self, dw: &Conv2d, input: Shape) -> bool {
        self.pair_fits(dw, input) && self.cout * input.h * input.w * 4 > BAND_BYTES
    }

    /// [`Conv2d::fuses_with`] whatever the size.
    pub(super) fn pair_fits(&self, dw: &Conv2d, input: Shape) -> bool {
        let f32_gemm = self.avx512 && self.bf16.is_none() && dw.bf16.is_none();
        let pointwise = self.is_pointwise() && self.cfg.groups == 1;
        let depthwise = dw.is_depthwise()
            && dw.cin == self.cout
            && Isa::active() == Isa::Avx512
            && dw.out_hw(input.h, input.w).is_some()
            && depthwise::direct_fits(dw.cfg.stride, dw.kh, dw.kw);
        f32_gemm && pointwise && depthwise && input.c == self.cin && input.h * input.w > 0
    }

    /// `dw(self(x))`, computed band by band (see the module doc). Panics
    /// unless [`Conv2d::fuses_with`] accepts the pair.
    pub(crate) fn forward_fused(&self, dw: &Conv2d, x: &Tensor, ws: &mut Workspace) -> Tensor {
        let s = x.shape();
        let band = self.band_rows(dw, s, ws.threads());
        self.forward_fused_in(dw, x, ws, band)
    }

    /// Output rows per band: as many as keep the expanded rows they read
    /// within [`BAND_BYTES`], at least one band per thread, balanced.
    pub(super) fn band_rows(&self, dw: &Conv2d, s: Shape, threads: usize) -> usize {
        let (oh, _) = dw.out_hw(s.h, s.w).expect("depthwise input shape");
        let row_bytes = self.cout * s.w * 4;
        let rows_in = (BAND_BYTES / row_bytes).max(dw.kh);
        let b = ((rows_in - dw.kh) / dw.cfg.stride + 1).min(oh);
        let bands = oh.div_ceil(b).max(threads.min(oh));
        oh.div_ceil(bands)
    }

    /// [`Conv2d::forward_fused`] with bands of `band` output rows.
    pub(super) fn forward_fused_in(
        &self,
        dw: &Conv2d,
        x: &Tensor,
        ws: &mut Workspace,
        band: usize,
    ) -> Tensor {
        let s = x.shape();
        assert!(
            self.pair_fits(dw, s),
            "a fusable pointwise + depthwise pair"
        );
        let (h, w, hidden) = (s.h, s.w, self.cout);
        let (oh, ow) = dw.out_hw(h, w).expect("depthwise input shape");
        let (stride, pad, kh) = (dw.cfg.stride, dw.cfg.padding, dw.kh);
        assert!(band > 0, "at least one row per band");
        let packed = self
            .packed
            .get_or_init(|| PackedWeights::new(&self.weight, 1, hidden, self.cin));
        let ph = Phases::new(h, w, pad, stride);
        let d = Depthwise {
            x: &[],
            h,
            w,
            pad,
            plane: ph.plane(),
            c: hidden,
            kh,
            kw: dw.kw,
            s: stride,
            l: ph.l,
            oh,
            ow,
            weight: &dw.weight,
            bias: &dw.bias,
            act: dw.act,
        };
        // The input rows a band of outputs reads, clipped to the plane.
        let rows_of = |oys: &std::ops::Range<usize>| {
            let r0 = (oys.start * stride).saturating_sub(pad);
            let r1 = ((oys.end - 1) * stride + kh).saturating_sub(pad).min(h);
            (r0, r1 - r0)
        };
        let max_rows = (0..oh)
            .step_by(band)
            .map(|o0| rows_of(&(o0..(o0 + band).min(oh))).1)
            .max()
            .unwrap_or(0);
        let out = Shape::new(s.n, hidden, oh, ow);
        let mut y = ws.buffer(out.len());
        let yo = gemm::Out::new(&mut y.spare_capacity_mut()[..out.len()]);
        let work: Vec<(usize, usize)> = (0..s.n)
            .flat_map(|i| (0..oh).step_by(band).map(move |o0| (i, o0)))
            .collect();
        let pool = ws.pool();
        par_for_each(pool, work, |(image, o0)| {
            let oys = o0..(o0 + band).min(oh);
            let (r0, rows) = rows_of(&oys);
            let n = rows * w;
            let xi = &x.as_slice()[image * s.per_image()..(image + 1) * s.per_image()];
            let cols = Cols {
                x: &xi[r0 * w..],
                plane: h * w,
                kh: 1,
                kw: 1,
                s: 1,
                l: w,
                ow: w,
                row_stride: w,
            };
            with_thread_scratch(gemm::PACK_LEN + 16 + hidden * max_rows * w, |buf| {
                let align = buf.as_ptr().align_offset(64).min(16);
                let (pack, e) = buf[align..].split_at_mut(gemm::PACK_LEN);
                let e = &mut e[..hidden * n];
                // SAFETY: f32 and MaybeUninit<f32> share a layout, and the
                // view only receives initialised f32 stores.
                let ev = unsafe { &mut *(std::ptr::from_mut(e) as *mut [MaybeUninit<f32>]) };
                // SAFETY: `pair_fits` (asserted) means `avx512`, so the CPU
                // has AVX-512F; one call writes the whole band.
                unsafe {
                    gemm::gemm_rows(
                        packed,
                        packed.group(0),
                        &cols,
                        n,
                        &self.bias,
                        self.act,
                        None,
                        (0..packed.panels(), 0..n),
                        gemm::Out::new(ev),
                        pack,
                    );
                }
                let yi = yo.at(image * hidden * oh * ow);
                // SAFETY: AVX-512F as above, and `pair_fits` checked that
                // the direct kernel fits; the band holds rows `r0 .. r0 +
                // rows`, which `rows_of` made every row the windows of `oys`
                // read; bands of one image take disjoint rows `oys`.
                unsafe { depthwise::direct_band(&d, e, (r0, rows), oys, yi) };
            });
        });
        // SAFETY: the bands of each image cover output rows `0..oh`, and
        // `direct_band` writes every output of those rows of every channel.
        unsafe { y.set_len(out.len()) };
        Tensor::from_vec(out, y)
    }
}
