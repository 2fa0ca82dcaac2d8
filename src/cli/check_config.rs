//! `odin check-config`: validates a configuration file the way `odin run
//! --config` and a reload would, and prints the effective configuration.

use std::path::{Path, PathBuf};

use anyhow::Result;

use super::UsageError;
use odin::agent::config::Config;
use odin::engine::open::ModelSource;
use odin::topology;

/// Validates FILE (that only root or odin's user can change it and the
/// directories above it, that it is no symbolic link, the schema, the
/// values; an ONNX model in model.path must import) and prints the
/// effective configuration as YAML, every default filled in. Exit 2, with
/// one line naming the field, line and column, when it is not valid.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The YAML configuration to check.
    file: PathBuf,
    /// Accept FILE through a symbolic link (as `odin run
    /// --follow-symlinks`); the checks apply to the file it resolves to.
    #[arg(long)]
    follow_symlinks: bool,
}

pub fn run(args: Args) -> Result<()> {
    let online = topology::online_cpus(Path::new("/"))?;
    let cfg = Config::load(&args.file, &online, args.follow_symlinks)
        .map_err(|e| UsageError(e.to_string()))?;
    if let source @ ModelSource::File(_) = cfg.model.source() {
        source
            .open(cfg.model.seed, cfg.model.input_shape.as_deref())
            .map_err(|e| UsageError(format!("{}: model.path: {e}", args.file.display())))?;
    }
    print!("{}", cfg.to_yaml());
    Ok(())
}
