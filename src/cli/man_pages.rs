//! `odin man-pages DIR`: the manual pages, made from the same clap
//! definitions as `--help`. The pages under docs/man (shipped in the
//! Debian package) are its output; a test keeps them current.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::CommandFactory;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Directory to write odin.1 and odin-<command>.1 into (created if
    /// missing).
    dir: PathBuf,
}

pub fn run(args: Args) -> Result<()> {
    std::fs::create_dir_all(&args.dir).with_context(|| format!("{}", args.dir.display()))?;
    // clap_mangen leaves hidden commands (this one) out.
    clap_mangen::generate_to(super::Cli::command(), &args.dir)
        .with_context(|| format!("writing the manual pages into {}", args.dir.display()))?;
    println!("{}", args.dir.display());
    Ok(())
}
