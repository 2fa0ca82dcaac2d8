//! The `.npy` array format (version 1.0 to 3.0), f32 little-endian in C
//! order: what `odin infer` reads and writes.

use std::fs;
use std::path::Path;

/// Why an `.npy` file could not be read.
#[derive(Debug, thiserror::Error)]
pub enum NpyError {
    /// The file could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: std::path::PathBuf,
        /// The failure.
        #[source]
        source: std::io::Error,
    },
    /// The file is not an f32 array odin reads.
    #[error("{}: {reason}", path.display())]
    Format {
        /// The file.
        path: std::path::PathBuf,
        /// What is wrong.
        reason: String,
    },
}

/// An array read from an `.npy` file.
#[derive(Clone, Debug, PartialEq)]
pub struct Npy {
    /// Dimensions.
    pub dims: Vec<usize>,
    /// Values in C order.
    pub values: Vec<f32>,
}

const MAGIC: &[u8] = b"\x93NUMPY";

/// Largest array read, in elements (as for model tensors).
const MAX_ELEMENTS: usize = crate::engine::onnx::data::MAX_ELEMENTS;

/// Parses the header dictionary: `{'descr': '<f4', 'fortran_order': False, 'shape': (1, 3), }`.
fn parse_header(h: &str) -> Result<Vec<usize>, String> {
    let field = |key: &str| -> Result<&str, String> {
        let at = h
            .find(&format!("'{key}'"))
            .ok_or_else(|| format!("header has no '{key}'"))?;
        let rest = h[at + key.len() + 2..].trim_start();
        rest.strip_prefix(':')
            .map(str::trim_start)
            .ok_or_else(|| format!("header: '{key}' has no value"))
    };
    let descr = field("descr")?;
    let descr = descr
        .split(['\'', '"'])
        .nth(1)
        .ok_or("header: descr is not a string")?;
    if !matches!(descr, "<f4" | "=f4") {
        return Err(format!(
            "dtype {descr:?}; odin reads float32 arrays ('<f4'): convert with a.astype(np.float32)"
        ));
    }
    if field("fortran_order")?.starts_with("True") {
        return Err(
            "the array is in Fortran order; save it in C order (np.ascontiguousarray)".into(),
        );
    }
    let shape = field("shape")?;
    let inner = shape
        .strip_prefix('(')
        .and_then(|s| s.split(')').next())
        .ok_or("header: shape is not a tuple")?;
    let dims = inner
        .split(',')
        .map(str::trim)
        .filter(|d| !d.is_empty())
        .map(|d| {
            d.parse::<usize>()
                .map_err(|_| format!("header: dimension {d:?} is not a number"))
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(dims)
}

/// Decodes an `.npy` image.
pub fn decode(bytes: &[u8]) -> Result<Npy, String> {
    if bytes.len() < 10 || &bytes[..6] != MAGIC {
        return Err("not an .npy file (no \\x93NUMPY magic)".into());
    }
    let (len, start): (usize, usize) = match bytes[6] {
        1 => (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10),
        2 | 3 if bytes.len() >= 12 => (
            u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize,
            12,
        ),
        v => return Err(format!("unsupported .npy version {v}")),
    };
    let end = start
        .checked_add(len)
        .filter(|&e| e <= bytes.len())
        .ok_or("the header runs past the end of the file")?;
    let header = std::str::from_utf8(&bytes[start..end]).map_err(|_| "the header is not text")?;
    let dims = parse_header(header)?;
    let n = dims
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .filter(|&n| n <= MAX_ELEMENTS)
        .ok_or_else(|| format!("shape {dims:?} is too large"))?;
    let data = &bytes[end..];
    if data.len() != n * 4 {
        return Err(format!(
            "shape {dims:?} needs {} bytes of data, the file has {}",
            n * 4,
            data.len()
        ));
    }
    let values = data
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    Ok(Npy { dims, values })
}

/// Encodes an f32 array as `.npy` version 1.0.
#[allow(
    clippy::cast_possible_truncation,
    reason = "an npy header of a shape is well under 64 KiB"
)]
pub fn encode(dims: &[usize], values: &[f32]) -> Vec<u8> {
    let shape = match dims {
        [one] => format!("({one},)"),
        d => format!(
            "({})",
            d.iter()
                .map(usize::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        ),
    };
    let mut header = format!("{{'descr': '<f4', 'fortran_order': False, 'shape': {shape}, }}");
    // Pad with spaces so the data starts on a 64-byte boundary.
    let unpadded = MAGIC.len() + 4 + header.len() + 1;
    header.push_str(&" ".repeat((64 - unpadded % 64) % 64));
    header.push('\n');
    let mut out = Vec::with_capacity(10 + header.len() + values.len() * 4);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&[1, 0]);
    out.extend_from_slice(&(header.len() as u16).to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    for v in values {
        out.extend_from_slice(&v.to_le_bytes());
    }
    out
}

/// Reads an f32 `.npy` file.
pub fn read(path: &Path) -> Result<Npy, NpyError> {
    let bytes = fs::read(path).map_err(|source| NpyError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    decode(&bytes).map_err(|reason| NpyError::Format {
        path: path.to_path_buf(),
        reason,
    })
}

/// Writes an f32 `.npy` file.
pub fn write(path: &Path, dims: &[usize], values: &[f32]) -> Result<(), NpyError> {
    fs::write(path, encode(dims, values)).map_err(|source| NpyError::Io {
        path: path.to_path_buf(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        for dims in [vec![2, 3], vec![5], vec![1, 3, 2, 2], vec![]] {
            let n: usize = dims.iter().product();
            let values: Vec<f32> = (0..n).map(|i| i as f32 * 0.5 - 1.0).collect();
            let bytes = encode(&dims, &values);
            assert_eq!((bytes.len() - values.len() * 4) % 64, 0, "data aligned");
            assert_eq!(decode(&bytes).unwrap(), Npy { dims, values });
        }
    }

    #[test]
    fn numpy_header() {
        // np.save(f, np.zeros((2,), np.float32)) writes this header.
        let mut b =
            b"\x93NUMPY\x01\x00v\x00{'descr': '<f4', 'fortran_order': False, 'shape': (2,), }"
                .to_vec();
        b.resize(10 + 0x76 - 1, b' ');
        b.push(b'\n');
        b.extend_from_slice(&[0; 8]);
        assert_eq!(decode(&b).unwrap().dims, vec![2]);
    }

    /// `b` with the first `from` replaced by `to`.
    fn patch(mut b: Vec<u8>, from: &[u8], to: &[u8]) -> Vec<u8> {
        let at = b.windows(from.len()).position(|w| w == from).unwrap();
        b.splice(at..at + from.len(), to.iter().copied());
        b
    }

    #[test]
    fn refusals() {
        assert!(decode(b"hello world").unwrap_err().contains("magic"));
        let f64s = patch(encode(&[2], &[1.0, 2.0]), b"<f4", b"<f8");
        assert!(decode(&f64s).unwrap_err().contains("float32"));
        let mut short = encode(&[4], &[1.0; 4]);
        short.truncate(short.len() - 3);
        assert!(decode(&short).unwrap_err().contains("needs 16 bytes"));
        let fortran = patch(encode(&[1], &[1.0]), b"False", b"True ");
        assert!(decode(&fortran).unwrap_err().contains("Fortran"));
        let huge = patch(
            encode(&[1], &[1.0]),
            b"(1,), }               ",
            b"(99999,99999,99999), }",
        );
        assert!(
            decode(&huge).unwrap_err().contains("too large"),
            "{:?}",
            decode(&huge)
        );
    }
}
