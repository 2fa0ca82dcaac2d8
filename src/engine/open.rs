//! Opening a model by what a user names: a built-in network or an ONNX file.

use std::path::{Path, PathBuf};

use super::onnx::{self, ImportOptions, OnnxError};
use super::{Model, ModelError, zoo};

/// Where a model comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ModelSource {
    /// A built-in network with seeded random weights.
    Builtin(String),
    /// An ONNX file.
    File(PathBuf),
}

/// The names and dimensions of a model's input and output: the graph's for
/// an ONNX file, `input` `[1, 3, 224, 224]` and `output` `[1, classes]` for
/// a built-in network.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ModelIo {
    /// Input name and dimensions as run.
    pub input: (String, Vec<usize>),
    /// Output name and dimensions.
    pub output: (String, Vec<usize>),
}

/// Why a model could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// A built-in model failed to build.
    #[error(transparent)]
    Builtin(#[from] ModelError),
    /// An ONNX file failed to import.
    #[error("{}: {source}", path.display())]
    Onnx {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: Box<OnnxError>,
    },
    /// The name is neither a built-in model nor a file.
    #[error("{0:?} is neither a built-in model ({valid}) nor an ONNX file", valid = zoo::NAMES.join(", "))]
    Unknown(String),
    /// An input shape was given for a built-in model.
    #[error("an input shape applies to ONNX models only; {0} takes 1x3x224x224")]
    ShapeForBuiltin(String),
}

impl ModelSource {
    /// What `value` names: a path to an existing file is a file; otherwise
    /// a built-in name is that network; otherwise a value that looks like
    /// a path (it has a `/` or ends in `.onnx`) is a file, which opening
    /// will report missing.
    pub fn parse(value: &str) -> Result<Self, OpenError> {
        let path = Path::new(value);
        if path.is_file() {
            return Ok(Self::File(path.to_path_buf()));
        }
        if zoo::NAMES.contains(&value) {
            return Ok(Self::Builtin(value.to_string()));
        }
        if value.contains('/') || value.ends_with(".onnx") {
            return Ok(Self::File(path.to_path_buf()));
        }
        Err(OpenError::Unknown(value.to_string()))
    }

    /// The model's name: the built-in name or the file's stem.
    pub fn name(&self) -> String {
        match self {
            Self::Builtin(n) => n.clone(),
            Self::File(p) => onnx::model_name(p),
        }
    }

    /// Opens the model: builds the built-in network from `seed`, or imports
    /// the file with `input_shape` fixing its dynamic dimensions.
    pub fn open(&self, seed: u64, input_shape: Option<&[usize]>) -> Result<Model, OpenError> {
        self.open_with_io(seed, input_shape).map(|(m, _)| m)
    }

    /// Opens the model as [`ModelSource::open`] does, with the names and
    /// dimensions of its input and output.
    pub fn open_with_io(
        &self,
        seed: u64,
        input_shape: Option<&[usize]>,
    ) -> Result<(Model, ModelIo), OpenError> {
        match self {
            Self::Builtin(name) => {
                if input_shape.is_some_and(|s| s != zoo::INPUT.dims()) {
                    return Err(OpenError::ShapeForBuiltin(name.clone()));
                }
                let m = zoo::build(name, seed)?;
                let o = m.output();
                let out = if (o.h, o.w) == (1, 1) {
                    vec![o.n, o.c]
                } else {
                    o.dims().to_vec()
                };
                let io = ModelIo {
                    input: ("input".into(), m.input().dims().to_vec()),
                    output: ("output".into(), out),
                };
                Ok((m, io))
            }
            Self::File(path) => self.import(path, input_shape).map(|i| {
                let io = ModelIo {
                    input: i.input,
                    output: i.output,
                };
                (i.model, io)
            }),
        }
    }

    fn import(
        &self,
        path: &Path,
        input_shape: Option<&[usize]>,
    ) -> Result<onnx::Imported, OpenError> {
        let opts = ImportOptions {
            input_shape: input_shape.map(<[usize]>::to_vec),
        };
        onnx::load(path, &opts).map_err(|e| OpenError::Onnx {
            path: path.to_path_buf(),
            source: Box::new(e),
        })
    }
}

/// Parses an input shape such as `1,3,224,224` (also `1x3x224x224`).
pub fn parse_shape(text: &str) -> Result<Vec<usize>, String> {
    let dims: Vec<usize> = text
        .split([',', 'x'])
        .map(|d| {
            d.trim()
                .parse::<usize>()
                .ok()
                .filter(|&v| v > 0)
                .ok_or_else(|| format!("{text:?}: dimension {d:?} is not a positive integer"))
        })
        .collect::<Result<_, _>>()?;
    if dims.is_empty() || dims.len() > 4 {
        return Err(format!(
            "{text:?}: give 1 to 4 dimensions, e.g. 1,3,224,224"
        ));
    }
    Ok(dims)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_paths() {
        assert_eq!(
            ModelSource::parse("resnet50").unwrap(),
            ModelSource::Builtin("resnet50".into())
        );
        assert_eq!(
            ModelSource::parse("m.onnx").unwrap(),
            ModelSource::File("m.onnx".into())
        );
        assert_eq!(
            ModelSource::parse("./resnet50").unwrap(),
            ModelSource::File("./resnet50".into())
        );
        let dir = tempfile::tempdir().unwrap();
        // An existing file wins over a built-in name.
        let f = dir.path().join("resnet50");
        std::fs::write(&f, b"x").unwrap();
        let text = f.to_str().unwrap();
        assert_eq!(
            ModelSource::parse(text).unwrap(),
            ModelSource::File(f.clone())
        );
        assert_eq!(
            ModelSource::File(dir.path().join("my-net.onnx")).name(),
            "my-net"
        );
        let e = ModelSource::parse("resnet51").unwrap_err().to_string();
        assert!(e.contains("resnet51") && e.contains("resnet50"), "{e}");
    }

    #[test]
    fn shapes() {
        assert_eq!(parse_shape("1,3,224,224").unwrap(), vec![1, 3, 224, 224]);
        assert_eq!(parse_shape("1x3x32x32").unwrap(), vec![1, 3, 32, 32]);
        assert!(parse_shape("1,0,2").unwrap_err().contains("\"0\""));
        assert!(parse_shape("1,3,a").is_err());
        assert!(parse_shape("1,1,1,1,1").unwrap_err().contains("1 to 4"));
    }

    #[test]
    fn builtin_refuses_another_shape() {
        let e = ModelSource::Builtin("resnet18".into())
            .open(1, Some(&[1, 3, 32, 32]))
            .unwrap_err();
        assert!(e.to_string().contains("ONNX models only"), "{e}");
    }
}
