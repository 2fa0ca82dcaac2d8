//! bfloat16 conversions shared by the bf16 kernels: the top half of an
//! f32 (8 exponent bits, 8 significant bits).

/// `v` rounded to the nearest bfloat16, ties to even; NaNs stay NaNs
/// (made quiet), infinities stay infinite, and values beyond the largest
/// bfloat16 round to infinity.
#[allow(
    clippy::cast_possible_truncation,
    reason = "the shifted value fits in 16 bits"
)]
pub fn f32_to_bf16(v: f32) -> u16 {
    let bits = v.to_bits();
    if v.is_nan() {
        return ((bits >> 16) | 0x0040) as u16;
    }
    let round = 0x7fff + ((bits >> 16) & 1);
    (bits.wrapping_add(round) >> 16) as u16
}

/// The f32 value of a bfloat16 bit pattern (exact).
#[inline(always)]
pub fn bf16_to_f32(b: u16) -> f32 {
    f32::from_bits(u32::from(b) << 16)
}

/// `v` rounded to the nearest bfloat16, as an f32.
pub fn round_bf16(v: f32) -> f32 {
    bf16_to_f32(f32_to_bf16(v))
}
