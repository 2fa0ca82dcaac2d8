//! `odin check-config`: validates a configuration file the way `odin run
//! --config` and a reload would, and prints the effective configuration.

use std::path::{Path, PathBuf};

use anyhow::Result;

use super::UsageError;
use odin::agent::config::Config;
use odin::engine::open::ModelSource;
use odin::topology;

/// Validates FILE (schema, values, and, when run as root, that only root
/// can change it; an ONNX model in model.path must import) and prints the
/// effective configuration as YAML, every default filled in. Exit 2, with one line naming the field, line and
/// column, when it is not valid.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The YAML configuration to check.
    file: PathBuf,
}

pub fn run(args: Args) -> Result<()> {
    let online = topology::online_cpus(Path::new("/"))?;
    let cfg = Config::load(&args.file, &online).map_err(|e| UsageError(e.to_string()))?;
    if let source @ ModelSource::File(_) = cfg.model.source() {
        source
            .open(cfg.model.seed, cfg.model.input_shape.as_deref())
            .map_err(|e| UsageError(format!("{}: model.path: {e}", args.file.display())))?;
    }
    print!("{}", cfg.to_yaml());
    Ok(())
}
