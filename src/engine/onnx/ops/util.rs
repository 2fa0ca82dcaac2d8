//! Helpers shared by the op families: axes, broadcasting, facts.

use super::super::data::{Data, Fact, checked_len, fmt_dims};

/// `axis` (negative counts from the end) as an index into `rank` axes.
#[allow(clippy::cast_possible_truncation, reason = "checked to lie in 0..rank")]
pub fn norm_axis(axis: i64, rank: usize) -> Result<usize, String> {
    let r = rank as i64;
    let a = if axis < 0 { axis + r } else { axis };
    if (0..r).contains(&a) {
        Ok(a as usize)
    } else {
        Err(format!("axis {axis} is out of range for rank {rank}"))
    }
}

/// Every axis of `axes` normalised, refusing repeats.
pub fn norm_axes(axes: &[i64], rank: usize) -> Result<Vec<usize>, String> {
    let mut out = Vec::with_capacity(axes.len());
    for &a in axes {
        let a = norm_axis(a, rank)?;
        if out.contains(&a) {
            return Err(format!("axis {a} is repeated"));
        }
        out.push(a);
    }
    Ok(out)
}

/// The numpy broadcast of two shapes.
pub fn broadcast(a: &[usize], b: &[usize]) -> Result<Vec<usize>, String> {
    let rank = a.len().max(b.len());
    let mut out = vec![0; rank];
    for i in 0..rank {
        let da = if i + a.len() >= rank {
            a[i + a.len() - rank]
        } else {
            1
        };
        let db = if i + b.len() >= rank {
            b[i + b.len() - rank]
        } else {
            1
        };
        out[i] = match (da, db) {
            (x, y) if x == y => x,
            (1, y) => y,
            (x, 1) => x,
            _ => {
                return Err(format!(
                    "shapes {} and {} do not broadcast",
                    fmt_dims(a),
                    fmt_dims(b)
                ));
            }
        };
    }
    checked_len(&out)?;
    Ok(out)
}

/// The broadcast of every shape in `shapes`.
pub fn broadcast_all<'a>(
    shapes: impl IntoIterator<Item = &'a [usize]>,
) -> Result<Vec<usize>, String> {
    shapes
        .into_iter()
        .try_fold(Vec::new(), |acc, s| broadcast(&acc, s))
}

/// Input `i` of `inputs`, which must be present.
pub fn input<'a, T>(inputs: &[Option<&'a T>], i: usize) -> Result<&'a T, String> {
    inputs
        .get(i)
        .copied()
        .flatten()
        .ok_or_else(|| format!("input {i} is required"))
}

/// A fact like `f`'s type with new dimensions, bounded.
pub fn like(f: &Fact, dims: Vec<usize>) -> Result<Fact, String> {
    checked_len(&dims)?;
    Ok(Fact::new(f.dtype, dims))
}

/// The one f32 array of input `i`.
pub fn f32_input<'a>(
    inputs: &[Option<&'a Data>],
    i: usize,
) -> Result<&'a ndarray::ArrayD<f32>, String> {
    input(inputs, i)?
        .f32()
        .map_err(|e| format!("input {i}: {e}"))
}

/// The elements of `a` in logical (row-major) order, borrowed when `a` is
/// already in standard layout.
pub fn std_slice<T: Copy>(a: &ndarray::ArrayD<T>) -> std::borrow::Cow<'_, [T]> {
    match a.as_slice() {
        Some(s) => std::borrow::Cow::Borrowed(s),
        None => std::borrow::Cow::Owned(a.iter().copied().collect()),
    }
}

/// An array of `dims` over `v`.
pub fn array<T>(dims: &[usize], v: Vec<T>) -> Result<ndarray::ArrayD<T>, String> {
    ndarray::ArrayD::from_shape_vec(ndarray::IxDyn(dims), v).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn axes_and_broadcast() {
        assert_eq!(norm_axis(-1, 4).unwrap(), 3);
        assert!(norm_axis(4, 4).is_err());
        assert!(norm_axes(&[1, -3], 4).unwrap_err().contains("repeated"));
        assert_eq!(
            broadcast(&[1, 64, 56, 56], &[64, 1, 1]).unwrap(),
            vec![1, 64, 56, 56]
        );
        assert_eq!(broadcast(&[], &[3]).unwrap(), vec![3]);
        assert!(broadcast(&[2, 3], &[4]).is_err());
    }
}
