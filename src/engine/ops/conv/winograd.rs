//! Winograd F(2x2, 3x3) for 3x3 stride-1 convolutions: 16 multiplications
//! per 2x2 outputs and input channel instead of 36 (2.25x fewer FLOPs).
//!
//! ```text
//! input 4x4 tile d (stride 2)  V = Bt d B        16 x [cin][tiles]
//! filter 3x3 g (once)          U = G g Gt        16 x [cout][cin], packed
//! per element e of the tile    M_e = U_e * V_e   16 GEMMs (gemm.rs)
//! output 2x2 tile              Y = At M A + bias, activation
//! ```
//!
//! Tiles are processed in chunks of whole tile rows so the V and M
//! matrices of a chunk stay in cache; the transforms run along each tile
//! row on contiguous vectors, reading the input phase-split at stride 2
//! (even and odd columns apart) so tile `tx`'s column `j` is `tx + j / 2`
//! in phase `j % 2`.

use std::arch::x86_64::{
    _mm512_add_ps, _mm512_mask_storeu_ps, _mm512_maskz_loadu_ps, _mm512_max_ps, _mm512_min_ps,
    _mm512_permutex2var_ps, _mm512_set_epi32, _mm512_set1_ps, _mm512_setzero_ps, _mm512_sub_ps,
};
use std::mem::MaybeUninit;

use super::super::activation::Activation;
use super::gemm::{self, Cols, Out, PACK_LEN, PackedWeights, lanes};
use super::im2col::{Phases, phase_split};
use crate::engine::{par_for_each, with_thread_scratch};

// Input transform Bt = [1 0 -1 0; 0 1 1 0; 0 -1 1 0; 0 1 0 -1] and output
// transform At = [1 1 1 0; 0 1 -1 -1] are written out in the kernels.
/// `G` (4x3): filter transform.
const G: [[f64; 3]; 4] = [
    [1.0, 0.0, 0.0],
    [0.5, 0.5, 0.5],
    [0.5, -0.5, 0.5],
    [0.0, 0.0, 1.0],
];

/// f32 elements of V and M per chunk when the transformed weights are
/// small (1 MiB: V and M stay in L2 while the weights are re-read per chunk).
const CHUNK_SMALL: usize = 1 << 18;
/// ... and when they are large (16 MiB: a layer with a 14x14 or smaller
/// output is one chunk, so its weights stream from memory once).
const CHUNK_LARGE: usize = 1 << 22;
/// Transformed weights (f32 elements) above which chunks are large.
const LARGE_WEIGHTS: usize = 1 << 20;

/// Transformed, packed weights: `U_e` for each of the 16 tile elements.
#[derive(Clone, Debug)]
pub(super) struct WinogradWeights {
    u: Vec<PackedWeights>,
    zeros: Vec<f32>,
}

impl WinogradWeights {
    /// Transforms `weight` (`[cout][cin][3][3]`); `U = G g Gt` is computed
    /// in f64 and rounded once.
    #[allow(
        clippy::cast_possible_truncation,
        reason = "transformed in f64 for accuracy, stored as f32"
    )]
    pub(super) fn new(weight: &[f32], cout: usize, cin: usize) -> Self {
        assert_eq!(weight.len(), cout * cin * 9);
        let mut u = vec![vec![0.0f32; cout * cin]; 16];
        for (oc, filters) in weight.chunks_exact(cin * 9).enumerate() {
            for (ic, g) in filters.chunks_exact(9).enumerate() {
                for a in 0..4 {
                    for b in 0..4 {
                        let mut v = 0.0f64;
                        for i in 0..3 {
                            for j in 0..3 {
                                v += G[a][i] * f64::from(g[i * 3 + j]) * G[b][j];
                            }
                        }
                        u[a * 4 + b][oc * cin + ic] = v as f32;
                    }
                }
            }
        }
        Self {
            u: u.iter()
                .map(|ue| PackedWeights::new(ue, 1, cout, cin))
                .collect(),
            zeros: vec![0.0; cout],
        }
    }
}

/// True when a 3x3 stride-1 convolution with these channel counts and
/// output size is worth the transforms: enough channels to amortise them,
/// and more than one 7x7 map of tiles (at 7x7, 49 of 64 computed outputs
/// are kept and the transformed weights, 16/9 the size, dominate).
pub(super) fn worth_it(cin: usize, cout: usize, oh: usize, ow: usize) -> bool {
    cin >= 32 && cout >= 32 && oh * ow > 64
}

/// Geometry of one convolution's tiling.
#[derive(Clone, Copy, Debug)]
pub(super) struct Tiling {
    pub cin: usize,
    pub cout: usize,
    pub h: usize,
    pub w: usize,
    pub pad: usize,
    pub oh: usize,
    pub ow: usize,
}

impl Tiling {
    fn th(&self) -> usize {
        self.oh.div_ceil(2)
    }

    fn tw(&self) -> usize {
        self.ow.div_ceil(2)
    }

    /// The phase-split input: rows and phase rows long enough for every
    /// tile, including the outputs past an odd `oh`/`ow`.
    pub(super) fn phases(&self) -> Phases {
        Phases::with(2 * self.th() + 2, 2, self.tw() + 1)
    }

    /// Tile rows per chunk.
    fn rows_per_chunk(&self) -> usize {
        let per_row = 16 * (self.cin + self.cout) * self.tw();
        let budget = if 16 * self.cin * self.cout > LARGE_WEIGHTS {
            CHUNK_LARGE
        } else {
            CHUNK_SMALL
        };
        (budget / per_row.max(1)).clamp(1, self.th())
    }

    /// Tile rows per chunk on `threads` threads: at most the cache budget's
    /// [`Tiling::rows_per_chunk`], in a number of chunks that is a multiple
    /// of `threads`, so each thread gets as many.
    fn rows_for(&self, threads: usize) -> usize {
        let th = self.th();
        let chunks = th.div_ceil(self.rows_per_chunk());
        th.div_ceil(chunks.next_multiple_of(threads.max(1)).min(th))
    }

    /// Scratch elements [`forward`] needs from the workspace: the
    /// phase-split input.
    pub(super) fn scratch_len(&self) -> usize {
        self.cin * self.phases().plane()
    }

    /// Per-thread scratch of a chunk of `rows` tile rows: the packing
    /// buffer (64-byte aligned) and the transformed input and products.
    fn chunk_len(&self, rows: usize) -> usize {
        PACK_LEN + 16 + 16 * (self.cin + self.cout) * rows * self.tw()
    }
}

/// One image: `y` (`[cout][oh][ow]`) from `x` (`[cin][h][w]`); with `side`
/// (laid out as `y`), `y = act((conv + bias) + side)`.
///
/// # Safety
///
/// The CPU must support AVX-512F.
#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "avx512f")]
pub(super) unsafe fn forward(
    wg: &WinogradWeights,
    t: &Tiling,
    x: &[f32],
    bias: &[f32],
    act: Activation,
    side: Option<&[f32]>,
    y: &mut [MaybeUninit<f32>],
    scratch: &mut [f32],
    pool: Option<&rayon::ThreadPool>,
) {
    let (cin, cout, tw, th) = (t.cin, t.cout, t.tw(), t.th());
    assert!(x.len() == cin * t.h * t.w && y.len() == cout * t.oh * t.ow);
    assert!(
        side.is_none_or(|s| s.len() == y.len()),
        "side laid out as y"
    );
    assert!(scratch.len() >= t.scratch_len() && bias.len() == cout);
    assert_eq!(t.oh + 2, t.h + 2 * t.pad, "3x3 stride 1");
    let ph = t.phases();
    let threads = pool.map_or(1, rayon::ThreadPool::current_num_threads);
    let rows = t.rows_for(threads);
    let xp = &mut scratch[..cin * ph.plane()];
    phase_split(x, t.h, t.w, t.pad, ph, xp);
    let xp = &*xp;
    let yo = Out::new(y);
    // Chunks of tile rows are independent (their own outputs): each
    // thread takes whole chunks, transforms and GEMMs on its own scratch.
    par_for_each(pool, (0..th).step_by(rows).collect(), |ty0| {
        let nrows = rows.min(th - ty0);
        let tc = nrows * tw;
        with_thread_scratch(t.chunk_len(rows), |buf| {
            let align = buf.as_ptr().align_offset(64).min(16);
            let (pack, rest) = buf[align..].split_at_mut(PACK_LEN);
            let (v, rest) = rest.split_at_mut(16 * cin * tc);
            let m = &mut rest[..16 * cout * tc];
            // SAFETY: AVX-512F (this function's contract).
            unsafe { input_transform(xp, ph, cin, ty0, nrows, tw, v) };
            let v = &*v;
            for (e, me) in m.chunks_exact_mut(cout * tc).enumerate() {
                let cols = Cols {
                    x: &v[e * cin * tc..(e + 1) * cin * tc],
                    plane: tc,
                    kh: 1,
                    kw: 1,
                    s: 1,
                    l: tc,
                    ow: tc,
                    row_stride: tc,
                };
                let u = &wg.u[e];
                // SAFETY: AVX-512F (this function's contract); one call
                // per output. The view only receives initialised f32 stores.
                unsafe {
                    let me = &mut *(me as *mut [f32] as *mut [MaybeUninit<f32>]);
                    gemm::gemm_rows(
                        u,
                        u.group(0),
                        &cols,
                        tc,
                        &wg.zeros,
                        Activation::Identity,
                        None,
                        (0..u.panels(), 0..tc),
                        gemm::Out::new(me),
                        pack,
                    );
                }
            }
            // SAFETY: AVX-512F (this function's contract); the chunks'
            // tile rows are disjoint.
            unsafe { output_transform(m, t, ty0, nrows, bias, act, side, yo) };
        });
    });
}

/// `V_e[ci][tile]` for the tiles of rows `ty0..ty0 + nrows`, into `v`
/// (`[16][cin][nrows * tw]`): 16 tiles at a time, `V = Bt d B` in
/// registers.
///
/// # Safety
///
/// AVX-512F.
#[target_feature(enable = "avx512f")]
unsafe fn input_transform(
    xp: &[f32],
    ph: Phases,
    cin: usize,
    ty0: usize,
    nrows: usize,
    tw: usize,
    v: &mut [f32],
) {
    let tc = nrows * tw;
    assert!(v.len() >= 16 * cin * tc && xp.len() >= cin * ph.plane());
    // The last tile reads padded row 2 (ty0 + nrows - 1) + 3 and phase
    // column tw - 1 + 1, inside the layout `Tiling::phases` sizes.
    assert!(2 * (ty0 + nrows) + 2 <= ph.hp && tw < ph.l);
    let vp = v.as_mut_ptr();
    for ci in 0..cin {
        let xc = xp[ci * ph.plane()..].as_ptr();
        for r in 0..nrows {
            let ty = ty0 + r;
            let mut tx = 0;
            while tx < tw {
                let mask = lanes(tw - tx);
                // SAFETY: every load is at padded row 2 ty + i < hp, phase
                // j % 2, column j / 2 + tx + lane < l for unmasked lanes
                // (asserted above); every store at (e, ci, r * tw + tx +
                // lane) < 16 cin tc <= v.len() for unmasked lanes.
                unsafe {
                    let mut d = [[_mm512_setzero_ps(); 4]; 4];
                    for (i, di) in d.iter_mut().enumerate() {
                        for (j, dij) in di.iter_mut().enumerate() {
                            let off = ((2 * ty + i) * 2 + j % 2) * ph.l + j / 2 + tx;
                            *dij = _mm512_maskz_loadu_ps(mask, xc.add(off));
                        }
                    }
                    // Rows: t = Bt d.
                    let mut t = [[_mm512_setzero_ps(); 4]; 4];
                    for j in 0..4 {
                        t[0][j] = _mm512_sub_ps(d[0][j], d[2][j]);
                        t[1][j] = _mm512_add_ps(d[1][j], d[2][j]);
                        t[2][j] = _mm512_sub_ps(d[2][j], d[1][j]);
                        t[3][j] = _mm512_sub_ps(d[1][j], d[3][j]);
                    }
                    // Columns: V = t B.
                    for (a, ta) in t.iter().enumerate() {
                        let va = [
                            _mm512_sub_ps(ta[0], ta[2]),
                            _mm512_add_ps(ta[1], ta[2]),
                            _mm512_sub_ps(ta[2], ta[1]),
                            _mm512_sub_ps(ta[1], ta[3]),
                        ];
                        for (b, &vab) in va.iter().enumerate() {
                            let e = a * 4 + b;
                            let at = (e * cin + ci) * tc + r * tw + tx;
                            _mm512_mask_storeu_ps(vp.add(at), mask, vab);
                        }
                    }
                }
                tx += 16;
            }
        }
    }
}

/// `y = act(At M A + bias)` (with `side`: `act((At M A + bias) + side)`)
/// for the tiles of rows `ty0..ty0 + nrows`, clipped to the output: 16
/// tiles (32 columns of two output rows) at a time.
///
/// # Safety
///
/// AVX-512F, and calls running at the same time on one `y` must take
/// disjoint tile rows.
#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "avx512f")]
unsafe fn output_transform(
    m: &[f32],
    t: &Tiling,
    ty0: usize,
    nrows: usize,
    bias: &[f32],
    act: Activation,
    side: Option<&[f32]>,
    y: Out<'_>,
) {
    let (cout, tw, oh, ow) = (t.cout, t.tw(), t.oh, t.ow);
    let tc = nrows * tw;
    assert!(m.len() >= 16 * cout * tc && y.len() >= cout * oh * ow && bias.len() >= cout);
    assert!(side.is_none_or(|s| s.len() >= cout * oh * ow));
    let (relu, cap) = match act {
        Activation::Identity => (false, f32::INFINITY),
        Activation::Relu => (true, f32::INFINITY),
        Activation::Relu6 => (true, 6.0),
    };
    // Interleave y0 (even columns) and y1 (odd columns).
    let lo = _mm512_set_epi32(23, 7, 22, 6, 21, 5, 20, 4, 19, 3, 18, 2, 17, 1, 16, 0);
    let hi = _mm512_set_epi32(31, 15, 30, 14, 29, 13, 28, 12, 27, 11, 26, 10, 25, 9, 24, 8);
    let (zero, capv) = (_mm512_setzero_ps(), _mm512_set1_ps(cap));
    for (co, &b) in bias[..cout].iter().enumerate() {
        let bv = _mm512_set1_ps(b);
        for r in 0..nrows {
            let mut tx = 0;
            while tx < tw {
                let mask = lanes(tw - tx);
                // SAFETY: loads at (e, co, r * tw + tx + lane) < 16 cout tc
                // for unmasked lanes; side loads and stores at output row
                // oy < oh, columns 2 tx + c < ow (masks clip both): rows of
                // this call's tiles, which no other call writes (the contract).
                unsafe {
                    let mut mm = [[_mm512_setzero_ps(); 4]; 4];
                    for (i, mi) in mm.iter_mut().enumerate() {
                        for (j, mij) in mi.iter_mut().enumerate() {
                            let at = ((i * 4 + j) * cout + co) * tc + r * tw + tx;
                            *mij = _mm512_maskz_loadu_ps(mask, m.as_ptr().add(at));
                        }
                    }
                    for a in 0..2 {
                        let oy = 2 * (ty0 + r) + a;
                        if oy >= oh {
                            break;
                        }
                        // s = At M (row a), then Y = s A.
                        let mut sa = [_mm512_setzero_ps(); 4];
                        for (j, sj) in sa.iter_mut().enumerate() {
                            *sj = if a == 0 {
                                _mm512_add_ps(_mm512_add_ps(mm[0][j], mm[1][j]), mm[2][j])
                            } else {
                                _mm512_sub_ps(_mm512_sub_ps(mm[1][j], mm[2][j]), mm[3][j])
                            };
                        }
                        let mut y0 = _mm512_add_ps(_mm512_add_ps(sa[0], sa[1]), sa[2]);
                        let mut y1 = _mm512_sub_ps(_mm512_sub_ps(sa[1], sa[2]), sa[3]);
                        y0 = _mm512_add_ps(y0, bv);
                        y1 = _mm512_add_ps(y1, bv);
                        let (mut first, mut second) = (
                            _mm512_permutex2var_ps(y0, lo, y1),
                            _mm512_permutex2var_ps(y0, hi, y1),
                        );
                        let left = ow - 2 * tx;
                        let at = (co * oh + oy) * ow + 2 * tx;
                        if let Some(s) = side {
                            let sp = s.as_ptr().add(at);
                            first = _mm512_add_ps(first, _mm512_maskz_loadu_ps(lanes(left), sp));
                            if left > 16 {
                                let sv = _mm512_maskz_loadu_ps(lanes(left - 16), sp.add(16));
                                second = _mm512_add_ps(second, sv);
                            }
                        }
                        if relu {
                            first = _mm512_min_ps(_mm512_max_ps(first, zero), capv);
                            second = _mm512_min_ps(_mm512_max_ps(second, zero), capv);
                        }
                        let row = y.at(at);
                        _mm512_mask_storeu_ps(row, lanes(left), first);
                        if left > 16 {
                            _mm512_mask_storeu_ps(row.add(16), lanes(left - 16), second);
                        }
                    }
                }
                tx += 16;
            }
        }
    }
}
