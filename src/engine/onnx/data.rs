//! Values of an imported graph: f32 or i64 arrays of any rank, and the
//! static facts (type, shape, constant value) the importer knows of each
//! tensor.
//!
//! Every floating-point ONNX type is held as f32, and every integer type
//! and bool as i64 (bools are 0 or 1). Activations are always f32; i64
//! tensors are shapes, indices and axes, and are folded into constants at
//! load.

use std::fmt;
use std::sync::Arc;

use ndarray::{ArrayD, IxDyn};

use super::proto::{self, TensorProto, data_type};

/// Largest number of elements any one tensor of an imported model may
/// have (2^28: 1 GiB of f32). A graph whose shapes go past it is refused
/// at load rather than allocated.
pub const MAX_ELEMENTS: usize = 1 << 28;

/// Element type of a value.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DType {
    /// Every floating-point ONNX type.
    F32,
    /// Every integer ONNX type, and bool.
    I64,
}

impl DType {
    /// The odin type for an ONNX `TensorProto.DataType`, if odin holds it.
    pub fn from_onnx(t: i32) -> Option<DType> {
        match t {
            data_type::FLOAT | data_type::DOUBLE | data_type::FLOAT16 | data_type::BFLOAT16 => {
                Some(DType::F32)
            }
            data_type::UINT8
            | data_type::INT8
            | data_type::UINT16
            | data_type::INT16
            | data_type::INT32
            | data_type::INT64
            | data_type::BOOL
            | data_type::UINT32
            | data_type::UINT64 => Some(DType::I64),
            _ => None,
        }
    }
}

impl fmt::Display for DType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DType::F32 => "f32",
            DType::I64 => "i64",
        })
    }
}

/// A value: an array of f32 or i64 in standard (row-major) layout.
#[derive(Clone, Debug, PartialEq)]
pub enum Data {
    /// Floating point.
    F32(ArrayD<f32>),
    /// Integers and bools.
    I64(ArrayD<i64>),
}

impl Data {
    /// The element type.
    pub fn dtype(&self) -> DType {
        match self {
            Data::F32(_) => DType::F32,
            Data::I64(_) => DType::I64,
        }
    }

    /// The dimensions.
    pub fn dims(&self) -> &[usize] {
        match self {
            Data::F32(a) => a.shape(),
            Data::I64(a) => a.shape(),
        }
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        self.dims().iter().product()
    }

    /// True when the value has no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The f32 array, or an error naming what it is.
    pub fn f32(&self) -> Result<&ArrayD<f32>, String> {
        match self {
            Data::F32(a) => Ok(a),
            Data::I64(_) => Err("expected a float tensor, got an integer one".into()),
        }
    }

    /// The i64 array, or an error naming what it is.
    pub fn i64(&self) -> Result<&ArrayD<i64>, String> {
        match self {
            Data::I64(a) => Ok(a),
            Data::F32(_) => Err("expected an integer tensor, got a float one".into()),
        }
    }

    /// The values as i64 (floats truncated), for axes, shapes and indices.
    #[allow(
        clippy::cast_possible_truncation,
        reason = "float to integer truncates toward zero and saturates, as ONNX Cast does"
    )]
    pub fn to_i64_vec(&self) -> Vec<i64> {
        match self {
            Data::I64(a) => a.iter().copied().collect(),
            Data::F32(a) => a.iter().map(|&v| v as i64).collect(),
        }
    }

    /// The values as f64, for scalars such as Clip bounds and pad values.
    pub fn to_f64_vec(&self) -> Vec<f64> {
        match self {
            Data::I64(a) => a.iter().map(|&v| v as f64).collect(),
            Data::F32(a) => a.iter().map(|&v| v as f64).collect(),
        }
    }

    /// The value converted to `to` (floats to integers truncate toward zero).
    #[allow(
        clippy::cast_possible_truncation,
        reason = "float to integer truncates toward zero and saturates, as ONNX Cast does"
    )]
    pub fn cast(&self, to: DType) -> Data {
        match (self, to) {
            (Data::F32(a), DType::F32) => Data::F32(a.clone()),
            (Data::I64(a), DType::I64) => Data::I64(a.clone()),
            (Data::F32(a), DType::I64) => Data::I64(a.mapv(|v| v as i64)),
            (Data::I64(a), DType::F32) => Data::F32(a.mapv(|v| v as f32)),
        }
    }

    /// The static facts of this value, the value included.
    pub fn fact(self: &Arc<Self>) -> Fact {
        Fact {
            dtype: self.dtype(),
            dims: self.dims().to_vec(),
            value: Some(self.clone()),
        }
    }
}

/// What the importer knows of a tensor before running anything: its type
/// and shape, and its value when it is a constant.
#[derive(Clone, Debug, PartialEq)]
pub struct Fact {
    /// Element type.
    pub dtype: DType,
    /// Dimensions, all known (dynamic ones are fixed at load).
    pub dims: Vec<usize>,
    /// The value, for constants.
    pub value: Option<Arc<Data>>,
}

impl Fact {
    /// A fact without a value.
    pub fn new(dtype: DType, dims: Vec<usize>) -> Self {
        Self {
            dtype,
            dims,
            value: None,
        }
    }

    /// A float fact without a value.
    pub fn f32(dims: Vec<usize>) -> Self {
        Self::new(DType::F32, dims)
    }

    /// An integer fact without a value.
    pub fn i64(dims: Vec<usize>) -> Self {
        Self::new(DType::I64, dims)
    }

    /// Rank.
    pub fn rank(&self) -> usize {
        self.dims.len()
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        self.dims.iter().product()
    }

    /// True when the tensor has no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The constant value, or an error saying the input must be constant.
    pub fn konst(&self) -> Result<&Data, String> {
        self.value
            .as_deref()
            .ok_or_else(|| "must be a constant (an initializer or computable at load)".into())
    }
}

/// `dims` as `[d0, d1, ...]`, for messages.
pub fn fmt_dims(dims: &[usize]) -> String {
    let parts: Vec<String> = dims.iter().map(usize::to_string).collect();
    format!("[{}]", parts.join(", "))
}

/// The element count of `dims`, or an error if it overflows or passes
/// [`MAX_ELEMENTS`].
pub fn checked_len(dims: &[usize]) -> Result<usize, String> {
    let n = dims
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .ok_or_else(|| format!("shape {} overflows", fmt_dims(dims)))?;
    if n > MAX_ELEMENTS {
        return Err(format!(
            "shape {} has {n} elements, more than the {MAX_ELEMENTS} odin allows per tensor",
            fmt_dims(dims)
        ));
    }
    Ok(n)
}

/// Converts a list of ONNX dimensions (non-negative) to `usize`.
pub fn dims_of(dims: &[i64]) -> Result<Vec<usize>, String> {
    let out = dims
        .iter()
        .map(|&d| usize::try_from(d).map_err(|_| format!("negative dimension {d}")))
        .collect::<Result<Vec<_>, _>>()?;
    checked_len(&out)?;
    Ok(out)
}

/// Decodes the values of `t` from its typed fields or `raw` (its
/// `raw_data`, or the bytes read from external data).
#[allow(
    clippy::cast_possible_truncation,
    reason = "DOUBLE tensors are computed in f32"
)]
pub fn decode(t: &TensorProto, raw: Option<&[u8]>) -> Result<Data, String> {
    let ty = t.data_type.unwrap_or(0);
    let dtype = DType::from_onnx(ty)
        .ok_or_else(|| format!("data type {} ({ty}) is not supported", data_type::name(ty)))?;
    let dims = dims_of(&t.dims)?;
    let n = checked_len(&dims)?;
    let shape = IxDyn(&dims);
    let wrong = |got: usize| format!("holds {got} values for shape {}", fmt_dims(&dims));
    if let Some(raw) = raw {
        let width = match ty {
            data_type::FLOAT | data_type::INT32 | data_type::UINT32 => 4,
            data_type::DOUBLE | data_type::INT64 | data_type::UINT64 => 8,
            data_type::FLOAT16 | data_type::BFLOAT16 | data_type::INT16 | data_type::UINT16 => 2,
            _ => 1,
        };
        if raw.len() != n * width {
            return Err(format!(
                "raw data is {} bytes, shape {} of {} needs {}",
                raw.len(),
                fmt_dims(&dims),
                data_type::name(ty),
                n * width
            ));
        }
        let chunks = raw.chunks_exact(width);
        let arr = |v: Vec<f32>| ArrayD::from_shape_vec(shape.clone(), v).expect("length checked");
        let arr_i = |v: Vec<i64>| ArrayD::from_shape_vec(shape.clone(), v).expect("length checked");
        return Ok(match ty {
            data_type::FLOAT => Data::F32(arr(chunks
                .map(|c| f32::from_le_bytes(c.try_into().expect("4 bytes")))
                .collect())),
            data_type::DOUBLE => Data::F32(arr(chunks
                .map(|c| f64::from_le_bytes(c.try_into().expect("8 bytes")) as f32)
                .collect())),
            data_type::FLOAT16 => Data::F32(arr(chunks
                .map(|c| f16_to_f32(u16::from_le_bytes([c[0], c[1]])))
                .collect())),
            data_type::BFLOAT16 => Data::F32(arr(chunks
                .map(|c| f32::from_bits((u16::from_le_bytes([c[0], c[1]]) as u32) << 16))
                .collect())),
            data_type::INT64 => Data::I64(arr_i(
                chunks
                    .map(|c| i64::from_le_bytes(c.try_into().expect("8 bytes")))
                    .collect(),
            )),
            data_type::UINT64 => Data::I64(arr_i(
                chunks
                    .map(|c| u64::from_le_bytes(c.try_into().expect("8 bytes")) as i64)
                    .collect(),
            )),
            data_type::INT32 => Data::I64(arr_i(
                chunks
                    .map(|c| i32::from_le_bytes(c.try_into().expect("4 bytes")) as i64)
                    .collect(),
            )),
            data_type::UINT32 => Data::I64(arr_i(
                chunks
                    .map(|c| u32::from_le_bytes(c.try_into().expect("4 bytes")) as i64)
                    .collect(),
            )),
            data_type::INT16 => Data::I64(arr_i(
                chunks
                    .map(|c| i16::from_le_bytes([c[0], c[1]]) as i64)
                    .collect(),
            )),
            data_type::UINT16 => Data::I64(arr_i(
                chunks
                    .map(|c| u16::from_le_bytes([c[0], c[1]]) as i64)
                    .collect(),
            )),
            data_type::INT8 => Data::I64(arr_i(raw.iter().map(|&b| b as i8 as i64).collect())),
            data_type::UINT8 => Data::I64(arr_i(raw.iter().map(|&b| b as i64).collect())),
            data_type::BOOL => Data::I64(arr_i(raw.iter().map(|&b| (b != 0) as i64).collect())),
            _ => unreachable!("types without a width were refused above"),
        });
    }
    let data = match (dtype, ty) {
        (DType::F32, data_type::FLOAT) => {
            check_count(t.float_data.len(), n, &wrong)?;
            Data::F32(ArrayD::from_shape_vec(shape, t.float_data.clone()).expect("checked"))
        }
        (DType::F32, data_type::DOUBLE) => {
            check_count(t.double_data.len(), n, &wrong)?;
            let v = t.double_data.iter().map(|&v| v as f32).collect();
            Data::F32(ArrayD::from_shape_vec(shape, v).expect("checked"))
        }
        (DType::F32, _) => {
            // FLOAT16 and BFLOAT16 are stored as their bits in int32_data.
            check_count(t.int32_data.len(), n, &wrong)?;
            let v = t
                .int32_data
                .iter()
                .map(|&b| {
                    let bits = b as u16;
                    if ty == data_type::FLOAT16 {
                        f16_to_f32(bits)
                    } else {
                        f32::from_bits((bits as u32) << 16)
                    }
                })
                .collect();
            Data::F32(ArrayD::from_shape_vec(shape, v).expect("checked"))
        }
        (DType::I64, data_type::INT64) => {
            check_count(t.int64_data.len(), n, &wrong)?;
            Data::I64(ArrayD::from_shape_vec(shape, t.int64_data.clone()).expect("checked"))
        }
        (DType::I64, data_type::UINT64 | data_type::UINT32) => {
            check_count(t.uint64_data.len(), n, &wrong)?;
            let v = t.uint64_data.iter().map(|&v| v as i64).collect();
            Data::I64(ArrayD::from_shape_vec(shape, v).expect("checked"))
        }
        (DType::I64, _) => {
            check_count(t.int32_data.len(), n, &wrong)?;
            let v = t
                .int32_data
                .iter()
                .map(|&v| {
                    if ty == data_type::BOOL {
                        (v != 0) as i64
                    } else {
                        v as i64
                    }
                })
                .collect();
            Data::I64(ArrayD::from_shape_vec(shape, v).expect("checked"))
        }
    };
    Ok(data)
}

fn check_count(got: usize, want: usize, wrong: &dyn Fn(usize) -> String) -> Result<(), String> {
    if got == want { Ok(()) } else { Err(wrong(got)) }
}

/// IEEE 754 half precision to single.
pub fn f16_to_f32(h: u16) -> f32 {
    let sign = ((h >> 15) as u32) << 31;
    let exp = ((h >> 10) & 0x1f) as u32;
    let frac = (h & 0x3ff) as u32;
    let bits = match (exp, frac) {
        (0, 0) => sign,
        (0, f) => {
            // Subnormal: renormalise.
            let shift = f.leading_zeros() - 21;
            let f = (f << shift) & 0x3ff;
            sign | ((127 - 15 + 1 - shift) << 23) | (f << 13)
        }
        (0x1f, f) => sign | 0x7f80_0000 | (f << 13),
        (e, f) => sign | ((e + 127 - 15) << 23) | (f << 13),
    };
    f32::from_bits(bits)
}

/// True when `t` keeps its values in an external file.
pub fn is_external(t: &TensorProto) -> bool {
    t.data_location == Some(proto::DATA_LOCATION_EXTERNAL)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn half_precision() {
        assert_eq!(f16_to_f32(0x3c00), 1.0);
        assert_eq!(f16_to_f32(0xc000), -2.0);
        assert_eq!(f16_to_f32(0x7bff), 65504.0);
        assert_eq!(f16_to_f32(0x0001), 2f32.powi(-24));
        assert_eq!(f16_to_f32(0x0400), 2f32.powi(-14));
        assert!(f16_to_f32(0x7e00).is_nan());
        assert_eq!(f16_to_f32(0x7c00), f32::INFINITY);
    }

    #[test]
    fn decode_raw_and_typed() {
        let t = TensorProto {
            dims: vec![2],
            data_type: Some(data_type::FLOAT),
            raw_data: Some([1.5f32.to_le_bytes(), (-2f32).to_le_bytes()].concat()),
            ..Default::default()
        };
        let d = decode(&t, t.raw_data.as_deref()).unwrap();
        assert_eq!(d.f32().unwrap().as_slice().unwrap(), &[1.5, -2.0]);
        let t = TensorProto {
            dims: vec![3],
            data_type: Some(data_type::INT64),
            int64_data: vec![1, -1, 7],
            ..Default::default()
        };
        assert_eq!(decode(&t, None).unwrap().to_i64_vec(), vec![1, -1, 7]);
        // Too few values for the shape.
        let t = TensorProto {
            dims: vec![4],
            data_type: Some(data_type::INT64),
            int64_data: vec![1],
            ..Default::default()
        };
        assert!(decode(&t, None).unwrap_err().contains("holds 1 values"));
    }

    #[test]
    fn bounds() {
        assert!(
            checked_len(&[1 << 40, 1 << 40])
                .unwrap_err()
                .contains("overflows")
        );
        assert!(
            checked_len(&[1 << 20, 1 << 10])
                .unwrap_err()
                .contains("more than")
        );
        assert_eq!(checked_len(&[]).unwrap(), 1);
        assert!(dims_of(&[-1, 3]).unwrap_err().contains("negative"));
    }
}
