//! How `odin run` is asked to run: the command-line flags over the
//! configuration file, and the configuration they make.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::config::{Config, ConfigError, LoadMode};
use crate::cpulist::CpuSet;
use crate::engine::open::ModelSource;

/// A configuration that cannot run (as opposed to a failure while
/// running): the CLI maps it to exit code 2.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Refused(pub String);

/// Command-line flags that override the file, on start and on every
/// reload.
#[derive(Clone, Debug, Default)]
pub struct Overrides {
    /// `--model`: a built-in name or an ONNX file.
    pub model: Option<String>,
    /// `--input-shape`.
    pub input_shape: Option<Vec<usize>>,
    /// `--pes`, one CPU list per PE.
    pub pes: Option<Vec<String>>,
    /// `--rate`: open loop at this rate.
    pub rate: Option<f64>,
    /// `--policy`.
    pub policy: Option<String>,
    /// `--profile`.
    pub profile: Option<PathBuf>,
    /// `--seed`.
    pub seed: Option<u64>,
    /// `--http`: serve REST here.
    pub http: Option<SocketAddr>,
    /// `--grpc`: serve gRPC here.
    pub grpc: Option<SocketAddr>,
    /// `--model-name`: the model's name in the server's URLs.
    pub model_name: Option<String>,
    /// `--state-dir`: the cgroup journal and the instance lock here.
    pub state_dir: Option<PathBuf>,
    /// `--follow-symlinks`: trust a configuration or cost profile reached
    /// through a symbolic link (the checks apply to the file it resolves
    /// to).
    pub follow_symlinks: bool,
}

impl Overrides {
    /// Writes the flags given into `cfg`.
    pub fn apply(&self, cfg: &mut Config) {
        if let Some(m) = &self.model {
            match ModelSource::parse(m) {
                Ok(ModelSource::File(p)) => cfg.model.path = Some(p),
                // An unknown name is refused by validation, naming it.
                _ => {
                    cfg.model.name = m.clone();
                    cfg.model.path = None;
                }
            }
        }
        if let Some(s) = &self.input_shape {
            cfg.model.input_shape = Some(s.clone());
        }
        if let Some(p) = &self.pes {
            cfg.pes = p.clone();
        }
        if let Some(r) = self.rate {
            cfg.load.mode = LoadMode::Open;
            cfg.load.rate = Some(r);
        }
        if let Some(p) = &self.policy {
            cfg.policy.name = p.clone();
        }
        if let Some(p) = &self.profile {
            cfg.model.profile = Some(p.clone());
        }
        if let Some(s) = self.seed {
            cfg.model.seed = s;
        }
        if let Some(a) = self.http {
            cfg.server.enabled = true;
            cfg.server.http = Some(a);
        }
        if let Some(a) = self.grpc {
            cfg.server.enabled = true;
            cfg.server.grpc = Some(a);
        }
        if let Some(n) = &self.model_name {
            cfg.server.model_name = Some(n.clone());
        }
        if let Some(d) = &self.state_dir {
            cfg.cgroup.state_dir = d.clone();
        }
    }
}

/// How `odin run` was asked to run.
#[derive(Debug, Default)]
pub struct Options {
    /// `--config`: re-read on SIGHUP.
    pub config_path: Option<PathBuf>,
    /// Flags that override the file.
    pub overrides: Overrides,
    /// Stop after this long.
    pub duration: Option<Duration>,
    /// Write the summary here at exit.
    pub json_summary: Option<PathBuf>,
}

/// The configuration at `path` (the defaults without one) with the
/// overrides applied, validated against the online CPUs.
pub fn load_config(
    path: Option<&Path>,
    overrides: &Overrides,
    online: &CpuSet,
) -> Result<Config, ConfigError> {
    let (mut cfg, text, source) = match path {
        Some(p) => {
            // Read once: what is parsed is what the flags are checked against.
            let text = Config::read(p, overrides.follow_symlinks)?;
            let source = p.display().to_string();
            (Config::parse(&text, &source, online)?, text, source)
        }
        None => (Config::default(), String::new(), "<defaults>".to_string()),
    };
    overrides.apply(&mut cfg);
    cfg.revalidate(
        &text,
        &format!("{source} with the command-line flags"),
        online,
    )?;
    Ok(cfg)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn model_name_flag_names_the_served_model_and_is_validated() {
        let online: CpuSet = "0".parse().unwrap();
        let flags = Overrides {
            model_name: Some("resnet50-prod".into()),
            ..Overrides::default()
        };
        let cfg = load_config(None, &flags, &online).unwrap();
        assert_eq!(cfg.server.model_name.as_deref(), Some("resnet50-prod"));
        let bad = Overrides {
            model_name: Some("a/b".into()),
            ..Overrides::default()
        };
        let e = load_config(None, &bad, &online).unwrap_err().to_string();
        assert!(e.contains("server.model_name") && e.contains("a/b"), "{e}");
    }
}
