//! The agent's YAML configuration.
//!
//! Every field has a default, so an empty file is a valid configuration
//! (the same as running without `--config`). Unknown fields, wrong types
//! and invalid values are errors that name the field path and, where the
//! file says it, the line and column. A validated configuration is shared
//! as `Arc<Config>` and swapped whole on reload.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::engine::Precision;
use crate::engine::open::ModelSource;
use crate::server::image::PreprocessConfig;

use crate::cpulist::CpuSet;
use crate::policy::Slo;
use crate::policy::config::PolicyConfig;

/// Why a configuration was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The failure.
        #[source]
        source: std::io::Error,
    },
    /// The YAML does not fit the schema.
    #[error("{file}: {field}: {message}{at}", at = at(*line, *column))]
    Schema {
        /// The file (or `<embedded>`).
        file: String,
        /// Dotted path of the field, `.` for the document.
        field: String,
        /// What is wrong.
        message: String,
        /// 1-based line, if known.
        line: Option<usize>,
        /// 1-based column, if known.
        column: Option<usize>,
    },
    /// A value is out of range or inconsistent.
    #[error("{file}: {field}: {message}{at}", at = at(*line, *column))]
    Invalid {
        /// The file (or `<embedded>`).
        file: String,
        /// Dotted path of the field.
        field: String,
        /// What is wrong and what would be right.
        message: String,
        /// 1-based line, if found.
        line: Option<usize>,
        /// 1-based column, if found.
        column: Option<usize>,
    },
    /// The file, or a directory above it, is not trusted (see
    /// [`crate::trust`]).
    #[error(transparent)]
    Untrusted(crate::trust::TrustError),
}

fn at(line: Option<usize>, column: Option<usize>) -> String {
    match (line, column) {
        (Some(l), Some(c)) => format!(" (line {l}, column {c})"),
        (Some(l), None) => format!(" (line {l})"),
        _ => String::new(),
    }
}

/// The open-loop rates odin takes, frames per second: one frame in 1000 s
/// to a million a second (beyond either, Poisson gaps overflow or mean
/// nothing).
pub const RATES: std::ops::RangeInclusive<f64> = 0.001..=1_000_000.0;

/// The most values a model's input may hold: 2^28 (1 GiB of f32), far
/// beyond a picture, small enough that one frame can be allocated.
pub const MAX_INPUT_ELEMENTS: usize = 1 << 28;

/// Checks input dimensions: 1 to 4 positive ones, whose product is at most
/// [`MAX_INPUT_ELEMENTS`].
pub fn check_input_shape(shape: &[usize]) -> Result<(), String> {
    if shape.is_empty() || shape.len() > 4 || shape.contains(&0) {
        return Err(format!(
            "{shape:?}: give 1 to 4 positive dimensions, e.g. [1, 3, 224, 224]"
        ));
    }
    let elements = shape
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .filter(|&n| n <= MAX_INPUT_ELEMENTS);
    if elements.is_none() {
        return Err(format!(
            "{shape:?}: at most {MAX_INPUT_ELEMENTS} values in all (1 GiB of f32)"
        ));
    }
    Ok(())
}

/// The latency SLOs odin takes, milliseconds: a microsecond to a day.
pub const LATENCIES_MS: std::ops::RangeInclusive<f64> = 0.001..=86_400_000.0;

/// The most PEs a configuration may list.
pub const MAX_PES: usize = 4096;

/// The whole configuration.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Which network to run.
    pub model: ModelConfig,
    /// One CPU set per stage, in the kernel's list syntax, at most
    /// [`MAX_PES`]; empty: one stage per online CPU.
    pub pes: Vec<String>,
    /// How frames arrive.
    pub load: LoadConfig,
    /// The service-level objective.
    pub slo: Slo,
    /// How the pipeline is re-balanced, and the detector's thresholds.
    pub policy: PolicySection,
    /// What the monitor reads and how often.
    pub monitor: MonitorConfig,
    /// Escalation against antagonists through cgroups.
    pub cgroup: CgroupConfig,
    /// The Prometheus endpoint.
    pub metrics: MetricsConfig,
    /// Serving requests over the Open Inference Protocol.
    pub server: ServerConfig,
    /// Logging.
    pub log: LogConfig,
}

/// The model section.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ModelConfig {
    /// A built-in model (used when `path` is not set).
    pub name: String,
    /// An ONNX file to run instead of a built-in model.
    pub path: Option<PathBuf>,
    /// Dimensions of the ONNX model's input, fixing its dynamic ones
    /// (default: as declared, batch 1): 1 to 4, at most
    /// [`MAX_INPUT_ELEMENTS`] values in all.
    pub input_shape: Option<Vec<usize>>,
    /// A cost profile from `odin profile --output` for the initial partition.
    pub profile: Option<PathBuf>,
    /// Seed of the random weights.
    pub seed: u64,
    /// How convolution and dense weights are stored: `f32` (default) or
    /// `bf16` (half the weight bytes, f32 accumulation; needs AVX512-BF16,
    /// else the model runs f32 and the log says why).
    pub precision: Precision,
    /// How a picture sent to the server (a BYTES input) becomes the input
    /// (default: torchvision's ImageNet recipe, NCHW or NHWC as the input
    /// is laid out).
    pub preprocess: Option<PreprocessConfig>,
    /// Class labels, one per line, for the classification extension.
    pub labels: Option<PathBuf>,
}

impl Default for ModelConfig {
    fn default() -> Self {
        Self {
            name: "resnet18".into(),
            path: None,
            input_shape: None,
            profile: None,
            seed: 1,
            precision: Precision::F32,
            preprocess: None,
            labels: None,
        }
    }
}

impl ModelConfig {
    /// Where the model comes from: the file when `path` is set, else the
    /// built-in `name`.
    pub fn source(&self) -> ModelSource {
        match &self.path {
            Some(p) => ModelSource::File(p.clone()),
            None => ModelSource::Builtin(self.name.clone()),
        }
    }
}

/// Closed or open loop.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LoadMode {
    /// Keep the pipeline full.
    #[default]
    Closed,
    /// Poisson arrivals at `rate`.
    Open,
}

/// The load section.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LoadConfig {
    /// `closed` or `open`.
    pub mode: LoadMode,
    /// Frames per second, for `open`.
    pub rate: Option<f64>,
}

/// The policies `odin run` can use (the oracle needs the true PE speeds,
/// which only the simulator knows).
pub const POLICY_NAMES: [&str; 4] = ["static", "lls", "odin", "guided"];

/// The policy section.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PolicySection {
    /// static, lls, odin or guided.
    pub name: String,
    /// The policies' parameters and the detector's thresholds.
    pub params: PolicyConfig,
}

impl Default for PolicySection {
    fn default() -> Self {
        Self {
            name: "odin".into(),
            params: PolicyConfig::default(),
        }
    }
}

/// The monitor section.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MonitorConfig {
    /// Milliseconds between samples (and detector ticks), 10 to 60000.
    pub tick_ms: u64,
    /// Open hardware counter groups where the machine has a PMU.
    pub counters: bool,
    /// Walk every task to name antagonists when a PE shows foreign use.
    pub antagonists: bool,
}

impl Default for MonitorConfig {
    fn default() -> Self {
        Self {
            tick_ms: 100,
            counters: true,
            antagonists: true,
        }
    }
}

/// What odin does about antagonists through cgroups.
pub use crate::cgroup::hint::Mode as CgroupMode;

/// The cgroup section.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CgroupConfig {
    /// off, advise or enforce.
    pub mode: CgroupMode,
    /// CPU quota for capped antagonists, in CPUs (0.2 = 20% of one CPU),
    /// shared by all of them.
    pub quota: f64,
    /// CPU weight of the pipeline's cgroup in enforce mode, on the v2 scale
    /// (1..=10000, where the kernel's default is 100; v1 `cpu.shares` =
    /// weight * 1024 / 100).
    pub weight: u32,
    /// Also keep capped antagonists off the pipeline's CPUs (cpuset).
    pub narrow_cpuset: bool,
    /// Milliseconds the SLO must stay missed with antagonists named before
    /// odin escalates (re-balancing's chance to fix it).
    pub escalate_after_ms: u64,
    /// Milliseconds without antagonists, or with slack, before a cap is
    /// lifted.
    pub lift_after_ms: u64,
    /// Least milliseconds a cap stays in force.
    pub hold_ms: u64,
    /// Fraction by which latency and throughput must beat the SLO to count
    /// as slack (lifting needs slack, escalating a miss: hysteresis).
    pub slack: f64,
    /// cgroups never touched (paths relative to the hierarchy root).
    pub protect: Vec<String>,
    /// When not empty, only processes in these cgroups (or below) are
    /// hinted or capped.
    pub allow: Vec<String>,
    /// odin's own cgroup below each hierarchy's root.
    pub name: String,
    /// File system root under which /proc and the cgroup mounts are read.
    pub root: PathBuf,
    /// Where changes are journalled before they are made.
    pub state_dir: PathBuf,
}

impl Default for CgroupConfig {
    fn default() -> Self {
        Self {
            mode: CgroupMode::Advise,
            quota: 0.2,
            weight: 1000,
            narrow_cpuset: false,
            escalate_after_ms: 5000,
            lift_after_ms: 10_000,
            hold_ms: 30_000,
            slack: 0.2,
            protect: vec![
                "init.scope".into(),
                "system.slice/systemd-journald.service".into(),
            ],
            allow: Vec::new(),
            name: "odin".into(),
            root: "/".into(),
            state_dir: "/var/lib/odin".into(),
        }
    }
}

impl CgroupConfig {
    /// The settings of [`crate::cgroup::hint::Hinter`].
    pub fn settings(&self) -> crate::cgroup::hint::Settings {
        use crate::cgroup::{enforce::EnforceSettings, escalation::Timing, hint::Settings};
        Settings {
            mode: self.mode,
            enforce: EnforceSettings {
                root: self.root.clone(),
                name: self.name.clone(),
                quota: self.quota,
                weight: self.weight,
                narrow_cpuset: self.narrow_cpuset,
                state_dir: self.state_dir.clone(),
            },
            timing: Timing {
                escalate_after: self.escalate_after_ms as f64 / 1e3,
                lift_after: self.lift_after_ms as f64 / 1e3,
                hold: self.hold_ms as f64 / 1e3,
            },
            slack: self.slack,
            protect: self.protect.clone(),
            allow: self.allow.clone(),
        }
    }

    /// Checks the values: the error is (field path, message).
    fn validate(&self) -> Result<(), (String, String)> {
        let err = |f: &str, m: String| Err((format!("cgroup.{f}"), m));
        if !(self.quota.is_finite() && self.quota >= 0.01 && self.quota <= 4096.0) {
            return err(
                "quota",
                format!(
                    "{}: must be a positive number of CPUs, at least 0.01 (the kernel's 1 ms per 100 ms)",
                    self.quota
                ),
            );
        }
        if !(1..=10_000).contains(&self.weight) {
            return err(
                "weight",
                format!("{}: must be between 1 and 10000", self.weight),
            );
        }
        const DAY_MS: u64 = 86_400_000;
        for (field, v) in [
            ("escalate_after_ms", self.escalate_after_ms),
            ("lift_after_ms", self.lift_after_ms),
            ("hold_ms", self.hold_ms),
        ] {
            if v > DAY_MS {
                return err(field, format!("{v}: must be at most {DAY_MS} (a day)"));
            }
        }
        if !(self.slack.is_finite() && (0.0..1.0).contains(&self.slack)) {
            return err(
                "slack",
                format!(
                    "{}: must be a fraction from 0 up to (not including) 1",
                    self.slack
                ),
            );
        }
        for (field, list) in [("protect", &self.protect), ("allow", &self.allow)] {
            for (i, entry) in list.iter().enumerate() {
                if entry.trim_matches('/').is_empty() || entry.split('/').any(|p| p == "..") {
                    return err(
                        &format!("{field}.{i}"),
                        format!("{entry:?}: must name a cgroup below the root, without \"..\""),
                    );
                }
            }
        }
        let name_ok = !self.name.is_empty()
            && self.name != "."
            && self.name != ".."
            && !self.name.contains('/')
            && !self.name.starts_with("cgroup.")
            && self.name.chars().all(|c| c.is_ascii_graphic());
        if !name_ok {
            return err(
                "name",
                format!(
                    "{:?}: must be one directory name (no '/', no spaces, not starting with \"cgroup.\")",
                    self.name
                ),
            );
        }
        if !self.root.is_absolute() {
            return err(
                "root",
                format!("{}: must be an absolute path", self.root.display()),
            );
        }
        if !self.state_dir.is_absolute() {
            return err(
                "state_dir",
                format!("{}: must be an absolute path", self.state_dir.display()),
            );
        }
        Ok(())
    }
}

/// The metrics section.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MetricsConfig {
    /// Serve metrics at all.
    pub enabled: bool,
    /// Address of the HTTP endpoint (loopback by default).
    pub listen: SocketAddr,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            listen: "127.0.0.1:9464".parse().expect("valid default address"),
        }
    }
}

/// The server section: the Open Inference Protocol over REST and gRPC.
/// With the server on, requests are the load and the synthetic source is
/// off.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    /// Serve at all (also turned on by `--http` or `--grpc`).
    pub enabled: bool,
    /// REST address; `null` for no REST.
    pub http: Option<SocketAddr>,
    /// gRPC address; `null` for no gRPC.
    pub grpc: Option<SocketAddr>,
    /// The largest batch a request may carry (its rows become frames).
    pub max_batch_size: usize,
    /// Requests that may wait; one more is refused at once (503).
    pub max_queue: usize,
    /// Deadline for a request to start, when it gives no `timeout` of its
    /// own; none by default.
    pub timeout_ms: Option<u64>,
    /// The name clients use (default: the built-in name or the ONNX file's
    /// stem).
    pub model_name: Option<String>,
    /// Network threads.
    pub threads: usize,
    /// Largest request body (REST) or message (gRPC), in bytes.
    pub max_request_bytes: usize,
    /// Connections open at once on each port; one more waits to be
    /// accepted until one closes.
    pub max_connections: usize,
    /// Time a client has to send a whole HTTP/1 request head, then its
    /// whole body, the HTTP/2 handshake, or an answer to a ping, and the
    /// longest a response write may wait for the client to take bytes; an
    /// idle HTTP/1 keep-alive connection is closed after it too.
    pub read_timeout_ms: u64,
    /// An HTTP/2 connection silent this long is pinged; one whose peer does
    /// not answer within `read_timeout_ms` is closed.
    pub keepalive_ms: u64,
    /// Largest HTTP/1 request head or HTTP/2 header list, in bytes.
    pub max_header_bytes: usize,
    /// Concurrent HTTP/2 streams (gRPC calls) per connection.
    pub max_streams: u32,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            http: Some("127.0.0.1:8000".parse().expect("valid default address")),
            grpc: Some("127.0.0.1:8001".parse().expect("valid default address")),
            max_batch_size: 8,
            max_queue: 64,
            timeout_ms: None,
            model_name: None,
            threads: 2,
            max_request_bytes: 64 << 20,
            max_connections: 256,
            read_timeout_ms: 30_000,
            keepalive_ms: 60_000,
            max_header_bytes: 16 << 10,
            max_streams: 64,
        }
    }
}

impl ServerConfig {
    /// What a reload can change without restarting the listeners: the
    /// rest needs a restart.
    pub fn restart_fields(&self, other: &ServerConfig) -> Vec<&'static str> {
        let mut v = Vec::new();
        if self.enabled != other.enabled {
            v.push("server.enabled");
        }
        if self.http != other.http {
            v.push("server.http");
        }
        if self.grpc != other.grpc {
            v.push("server.grpc");
        }
        if self.max_queue != other.max_queue {
            v.push("server.max_queue");
        }
        if self.threads != other.threads {
            v.push("server.threads");
        }
        if self.max_connections != other.max_connections {
            v.push("server.max_connections");
        }
        if self.read_timeout_ms != other.read_timeout_ms {
            v.push("server.read_timeout_ms");
        }
        if self.keepalive_ms != other.keepalive_ms {
            v.push("server.keepalive_ms");
        }
        if self.max_header_bytes != other.max_header_bytes {
            v.push("server.max_header_bytes");
        }
        if self.max_streams != other.max_streams {
            v.push("server.max_streams");
        }
        v
    }

    fn validate(&self) -> Result<(), (String, String)> {
        let err = |f: &str, m: String| Err((f.to_string(), m));
        if self.enabled && self.http.is_none() && self.grpc.is_none() {
            return err(
                "server",
                "enabled with neither http nor grpc: give at least one address".into(),
            );
        }
        if !(1..=1024).contains(&self.max_batch_size) {
            return err(
                "server.max_batch_size",
                format!("{}: must be between 1 and 1024", self.max_batch_size),
            );
        }
        if !(1..=65_536).contains(&self.max_queue) {
            return err(
                "server.max_queue",
                format!("{}: must be between 1 and 65536", self.max_queue),
            );
        }
        if self.timeout_ms == Some(0) {
            return err(
                "server.timeout_ms",
                "0: must be positive (leave it out for no deadline)".into(),
            );
        }
        if !(1..=64).contains(&self.threads) {
            return err(
                "server.threads",
                format!("{}: must be between 1 and 64", self.threads),
            );
        }
        if !(1024..=(1 << 31)).contains(&self.max_request_bytes) {
            return err(
                "server.max_request_bytes",
                format!(
                    "{}: must be between 1024 and 2147483648",
                    self.max_request_bytes
                ),
            );
        }
        if !(1..=65_536).contains(&self.max_connections) {
            return err(
                "server.max_connections",
                format!("{}: must be between 1 and 65536", self.max_connections),
            );
        }
        if !(100..=600_000).contains(&self.read_timeout_ms) {
            return err(
                "server.read_timeout_ms",
                format!("{}: must be between 100 and 600000", self.read_timeout_ms),
            );
        }
        if !(100..=86_400_000).contains(&self.keepalive_ms) {
            return err(
                "server.keepalive_ms",
                format!("{}: must be between 100 and 86400000", self.keepalive_ms),
            );
        }
        if !(1024..=(1 << 20)).contains(&self.max_header_bytes) {
            return err(
                "server.max_header_bytes",
                format!(
                    "{}: must be between 1024 and 1048576",
                    self.max_header_bytes
                ),
            );
        }
        if !(1..=1024).contains(&self.max_streams) {
            return err(
                "server.max_streams",
                format!("{}: must be between 1 and 1024", self.max_streams),
            );
        }
        if let Some(n) = &self.model_name
            && (n.is_empty()
                || n.len() > 128
                || !n
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)))
        {
            return err(
                "server.model_name",
                format!("{n:?}: use 1 to 128 letters, digits, '-', '_' or '.'"),
            );
        }
        Ok(())
    }
}

/// The log section.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    /// error, warn, info, debug or trace.
    pub level: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            level: "info".into(),
        }
    }
}

impl Config {
    /// Parses and validates `text`; `file` names it in errors; `online` are
    /// the CPUs PEs may use.
    pub fn parse(text: &str, file: &str, online: &CpuSet) -> Result<Self, ConfigError> {
        let de = yaml_serde::Deserializer::from_str(text);
        let cfg: Config = serde_path_to_error::deserialize(de)
            .map_err(|e| {
                let field = e.path().to_string();
                let inner = e.into_inner();
                let (line, column) = inner
                    .location()
                    .map_or((None, None), |l| (Some(l.line()), Some(l.column())));
                ConfigError::Schema {
                    file: file.to_string(),
                    field,
                    message: strip_location(&inner.to_string()),
                    line,
                    column,
                }
            })
            // An empty document is the default configuration.
            .or_else(|e| {
                if text.trim().is_empty() {
                    Ok(Config::default())
                } else {
                    Err(e)
                }
            })?;
        cfg.validate(online).map_err(|(field, message)| {
            let (line, column) =
                locate(text, &field).map_or((None, None), |(l, c)| (Some(l), Some(c)));
            ConfigError::Invalid {
                file: file.to_string(),
                field,
                message,
                line,
                column,
            }
        })?;
        Ok(cfg)
    }

    /// Reads `path` once, through [`crate::trust`]: a regular file owned by
    /// root or odin's user, that no one else can write, in directories no
    /// one else can write, not a symbolic link unless `follow`.
    pub fn read(path: &Path, follow: bool) -> Result<String, ConfigError> {
        crate::trust::read(path, "configuration", follow).map_err(|e| match e {
            crate::trust::TrustError::Io { path, source } => ConfigError::Io { path, source },
            e => ConfigError::Untrusted(e),
        })
    }

    /// Reads ([`Config::read`]) and parses `path`.
    pub fn load(path: &Path, online: &CpuSet, follow: bool) -> Result<Self, ConfigError> {
        let text = Self::read(path, follow)?;
        Self::parse(&text, &path.display().to_string(), online)
    }

    /// The configuration as YAML, every field present.
    pub fn to_yaml(&self) -> String {
        yaml_serde::to_string(self).expect("a configuration always serialises")
    }

    /// Re-checks a configuration changed after parsing (by command-line
    /// flags): the error names the field, and `source` (the file) with the
    /// line where the file has it.
    pub fn revalidate(&self, text: &str, source: &str, online: &CpuSet) -> Result<(), ConfigError> {
        self.validate(online).map_err(|(field, message)| {
            let (line, column) =
                locate(text, &field).map_or((None, None), |(l, c)| (Some(l), Some(c)));
            ConfigError::Invalid {
                file: source.to_string(),
                field,
                message,
                line,
                column,
            }
        })
    }

    /// The PEs as CPU sets (`None`: one per online CPU).
    pub fn pe_sets(&self) -> Option<Vec<CpuSet>> {
        if self.pes.is_empty() {
            return None;
        }
        Some(
            self.pes
                .iter()
                .map(|p| p.parse().expect("validated"))
                .collect(),
        )
    }

    /// Checks values the schema cannot: the error is (field path, message).
    pub fn validate(&self, online: &CpuSet) -> Result<(), (String, String)> {
        let err = |f: &str, m: String| Err((f.to_string(), m));
        if let Some(p) = &self.model.path
            && p.as_os_str().is_empty()
        {
            return err("model.path", "must name an ONNX file".into());
        }
        if let Some(shape) = &self.model.input_shape {
            if self.model.path.is_none() {
                return err(
                    "model.input_shape",
                    "applies to an ONNX model (model.path); built-in models take 1x3x224x224"
                        .into(),
                );
            }
            if let Err(e) = check_input_shape(shape) {
                return err("model.input_shape", e);
            }
        }
        if self.model.path.is_none()
            && !crate::engine::zoo::NAMES.contains(&self.model.name.as_str())
        {
            return err(
                "model.name",
                format!(
                    "unknown model {:?}; valid: {}, or an ONNX file in model.path",
                    self.model.name,
                    crate::engine::zoo::NAMES.join(", ")
                ),
            );
        }
        if self.pes.len() > MAX_PES {
            return err("pes", format!("{} PEs: at most {MAX_PES}", self.pes.len()));
        }
        for (i, text) in self.pes.iter().enumerate() {
            let set: CpuSet = match text.parse() {
                Ok(s) => s,
                Err(e) => return err(&format!("pes.{i}"), format!("{text:?}: {e}")),
            };
            let offline = set.difference(online);
            if !offline.is_empty() {
                return err(
                    &format!("pes.{i}"),
                    format!("CPU {offline} not online (online: {online})"),
                );
            }
        }
        match (self.load.mode, self.load.rate) {
            (LoadMode::Open, None) => {
                return err(
                    "load.rate",
                    "open loop needs a rate (frames per second)".into(),
                );
            }
            (_, Some(r)) if !RATES.contains(&r) => {
                return err(
                    "load.rate",
                    format!(
                        "{r}: must be a number of frames per second from {} to {}",
                        RATES.start(),
                        RATES.end()
                    ),
                );
            }
            _ => {}
        }
        if let Some(l) = self.slo.latency_ms
            && !LATENCIES_MS.contains(&l)
        {
            return err(
                "slo.latency_ms",
                format!(
                    "{l}: must be a positive number of milliseconds from {} to {} (a day)",
                    LATENCIES_MS.start(),
                    LATENCIES_MS.end()
                ),
            );
        }
        if let Some(t) = self.slo.throughput_fps
            && !RATES.contains(&t)
        {
            return err(
                "slo.throughput_fps",
                format!(
                    "{t}: must be a positive number of frames per second from {} to {}",
                    RATES.start(),
                    RATES.end()
                ),
            );
        }
        if !POLICY_NAMES.contains(&self.policy.name.as_str()) {
            return err(
                "policy.name",
                format!(
                    "unknown policy {:?}; valid: {}",
                    self.policy.name,
                    POLICY_NAMES.join(", ")
                ),
            );
        }
        if let Err(e) = self.policy.params.validate() {
            // PolicyConfig's errors start with the field: "alpha: ...".
            let (field, message) = e.split_once(": ").unwrap_or(("", e.as_str()));
            let field = if field.is_empty() {
                "policy.params".to_string()
            } else {
                format!("policy.params.{field}")
            };
            return err(&field, message.to_string());
        }
        if !(10..=60_000).contains(&self.monitor.tick_ms) {
            return err(
                "monitor.tick_ms",
                format!("{}: must be between 10 and 60000", self.monitor.tick_ms),
            );
        }
        self.cgroup.validate()?;
        self.server.validate()?;
        if let Some(p) = &self.model.preprocess
            && let Err(e) = p.validate()
        {
            let (field, reason) = match e {
                crate::server::image::ImageError::Config { field, reason } => (field, reason),
                other => ("model.preprocess".to_string(), other.to_string()),
            };
            return Err((field, reason));
        }
        if let Some(l) = &self.model.labels
            && l.as_os_str().is_empty()
        {
            return err("model.labels", "must name a text file".into());
        }
        if !["error", "warn", "info", "debug", "trace"].contains(&self.log.level.as_str()) {
            return err(
                "log.level",
                format!(
                    "{:?}: must be one of error, warn, info, debug, trace",
                    self.log.level
                ),
            );
        }
        Ok(())
    }
}

/// The YAML library appends " at line L column C"; the location is
/// reported separately.
fn strip_location(msg: &str) -> String {
    match msg.rfind(" at line ") {
        Some(i) => msg[..i].to_string(),
        None => msg.to_string(),
    }
}

/// Line and column of the key at dotted `path` in block-style YAML
/// (`pes.1` is the second item of the `pes` sequence); for a key the file
/// does not have, its nearest ancestor that it has.
pub fn locate(text: &str, path: &str) -> Option<(usize, usize)> {
    let mut parts = path.split('.').peekable();
    let mut min_indent = 0usize;
    let mut lines = text.lines().enumerate();
    let mut found = None;
    while let Some(part) = parts.next() {
        let index: Option<usize> = part.parse().ok();
        let mut item = 0;
        let mut hit = None;
        for (n, line) in lines.by_ref() {
            let trimmed = line.trim_start();
            let indent = line.len() - trimmed.len();
            if trimmed.is_empty() || trimmed.starts_with('#') {
                continue;
            }
            if indent < min_indent {
                return found;
            }
            match index {
                Some(i) if trimmed.starts_with("- ") || trimmed == "-" => {
                    if item == i {
                        hit = Some((n + 1, indent + 3, indent + 2));
                        break;
                    }
                    item += 1;
                }
                None if trimmed.starts_with(&format!("{part}:")) => {
                    hit = Some((n + 1, indent + 1, indent + 1));
                    break;
                }
                _ => {}
            }
        }
        let Some((line, column, next_indent)) = hit else {
            return found;
        };
        found = Some((line, column));
        min_indent = next_indent;
        if parts.peek().is_none() {
            break;
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    fn online() -> CpuSet {
        "0-3".parse().unwrap()
    }

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(text, "odin.yaml", &online())
    }

    #[test]
    fn empty_file_is_the_default() {
        assert_eq!(parse("").unwrap(), Config::default());
        assert_eq!(parse("# nothing\n").unwrap(), Config::default());
        assert_eq!(parse("{}").unwrap(), Config::default());
        let c = Config::default();
        assert_eq!(c.metrics.listen.to_string(), "127.0.0.1:9464");
        assert_eq!(c.cgroup.mode, CgroupMode::Advise);
        assert_eq!(c.monitor.tick_ms, 100);
    }

    #[test]
    fn a_full_file_parses() {
        let c = parse(
            "model:\n  name: resnet50\npes: [\"0\", \"1-2\"]\nload:\n  mode: open\n  rate: 30\nslo:\n  latency_ms: 200\ncgroup:\n  mode: enforce\n",
        )
        .unwrap();
        assert_eq!(c.model.name, "resnet50");
        assert_eq!(c.pe_sets().unwrap()[1], "1-2".parse().unwrap());
        assert_eq!((c.load.mode, c.load.rate), (LoadMode::Open, Some(30.0)));
        assert_eq!(c.slo.latency_ms, Some(200.0));
        assert_eq!(c.cgroup.mode, CgroupMode::Enforce);
    }

    #[test]
    fn an_onnx_model_comes_from_its_path() {
        let c = parse("model:\n  path: /srv/m.onnx\n  input_shape: [1, 3, 96, 96]\n").unwrap();
        assert_eq!(c.model.source(), ModelSource::File("/srv/m.onnx".into()));
        assert_eq!(c.model.input_shape, Some(vec![1, 3, 96, 96]));
        // Without a path the built-in name is the model.
        assert_eq!(
            Config::default().model.source(),
            ModelSource::Builtin("resnet18".into())
        );
        for (text, field, words) in [
            (
                "model:\n  input_shape: [1, 3, 32, 32]\n",
                "model.input_shape",
                "model.path",
            ),
            (
                "model:\n  path: m.onnx\n  input_shape: [1, 0]\n",
                "model.input_shape",
                "positive",
            ),
            (
                "model:\n  path: m.onnx\n  input_shape: []\n",
                "model.input_shape",
                "1 to 4",
            ),
            ("model:\n  path: \"\"\n", "model.path", "ONNX file"),
        ] {
            let e = parse(text).unwrap_err().to_string();
            assert!(e.contains(field) && e.contains(words), "{text}: {e}");
        }
    }

    #[test]
    fn precision_is_f32_unless_bf16_is_asked() {
        assert_eq!(Config::default().model.precision, Precision::F32);
        let c = parse("model:\n  precision: bf16\n").unwrap();
        assert_eq!(c.model.precision, Precision::Bf16);
        let e = parse("model:\n  precision: fp8\n").unwrap_err().to_string();
        assert!(
            e.contains("precision") && e.contains("fp8") && e.contains("bf16"),
            "{e}"
        );
    }

    #[test]
    fn unknown_fields_name_the_path_and_line() {
        let e = parse("model:\n  name: resnet50\n  nmae: x\n")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("odin.yaml")
                && e.contains("model")
                && e.contains("nmae")
                && e.contains("line 3"),
            "{e}"
        );
    }

    #[test]
    fn wrong_types_name_the_path_and_line() {
        let e = parse("monitor:\n  tick_ms: fast\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("monitor.tick_ms") && e.contains("line 2"), "{e}");
        let e = parse("metrics:\n  listen: nowhere\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("metrics.listen") && e.contains("line 2"), "{e}");
    }

    #[test]
    fn invalid_values_name_the_field_and_line() {
        let cases = [
            (
                "pes:\n  - \"0\"\n  - \"9\"\n",
                "pes.1",
                "line 3",
                "not online",
            ),
            (
                "load:\n  mode: open\n  rate: -3\n",
                "load.rate",
                "line 3",
                "from 0.001 to 1000000",
            ),
            (
                "load:\n  mode: open\n  rate: 1e-300\n",
                "load.rate",
                "line 3",
                "from 0.001 to 1000000",
            ),
            (
                "load:\n  mode: open\n",
                "load.rate",
                "line 1",
                "needs a rate",
            ),
            (
                "model:\n  name: resnet51\n",
                "model.name",
                "line 2",
                "resnet50",
            ),
            ("log:\n  level: loud\n", "log.level", "line 2", "debug"),
            (
                "cgroup:\n  quota: 0\n",
                "cgroup.quota",
                "line 2",
                "at least 0.01",
            ),
            (
                "cgroup:\n  weight: 20000\n",
                "cgroup.weight",
                "line 2",
                "10000",
            ),
            (
                "cgroup:\n  slack: 1\n",
                "cgroup.slack",
                "line 2",
                "fraction",
            ),
            (
                "cgroup:\n  hold_ms: 100000000\n",
                "cgroup.hold_ms",
                "line 2",
                "a day",
            ),
            (
                "cgroup:\n  name: a/b\n",
                "cgroup.name",
                "line 2",
                "directory name",
            ),
            (
                "cgroup:\n  protect:\n    - init.scope\n    - /\n",
                "cgroup.protect.1",
                "line 4",
                "below the root",
            ),
            (
                "cgroup:\n  state_dir: var/lib/odin\n",
                "cgroup.state_dir",
                "line 2",
                "absolute",
            ),
            (
                "slo:\n  latency_ms: 0\n",
                "slo.latency_ms",
                "line 2",
                "positive",
            ),
        ];
        for (text, field, line, needle) in cases {
            let e = parse(text).unwrap_err().to_string();
            assert!(
                e.contains(field) && e.contains(line) && e.contains(needle),
                "{text:?}: {e}"
            );
        }
    }

    #[test]
    fn every_number_is_range_checked_with_the_field_and_the_range() {
        let many_pes = format!("pes: [{}]\n", vec!["\"0\""; MAX_PES + 1].join(", "));
        let cases: Vec<(String, &str, &str)> = vec![
            (
                "slo:\n  latency_ms: .nan\n".into(),
                "slo.latency_ms",
                "86400000",
            ),
            (
                "slo:\n  latency_ms: 1e300\n".into(),
                "slo.latency_ms",
                "86400000",
            ),
            (
                "slo:\n  latency_ms: -.inf\n".into(),
                "slo.latency_ms",
                "0.001",
            ),
            (
                "slo:\n  throughput_fps: 1e-300\n".into(),
                "slo.throughput_fps",
                "0.001 to 1000000",
            ),
            (
                "slo:\n  throughput_fps: .inf\n".into(),
                "slo.throughput_fps",
                "1000000",
            ),
            (
                "model:\n  path: m.onnx\n  input_shape: [1, 3, 100000, 100000]\n".into(),
                "model.input_shape",
                "268435456",
            ),
            (
                "model:\n  path: m.onnx\n  input_shape: [4294967296, 4294967296, 4294967296]\n"
                    .into(),
                "model.input_shape",
                "268435456",
            ),
            (many_pes, "pes", "at most 4096"),
            (
                "monitor:\n  tick_ms: 18446744073709551615\n".into(),
                "monitor.tick_ms",
                "10 and 60000",
            ),
            ("cgroup:\n  quota: .nan\n".into(), "cgroup.quota", "0.01"),
            (
                "cgroup:\n  escalate_after_ms: 1e3\n".into(),
                "cgroup.escalate_after_ms",
                "",
            ),
            (
                "cgroup:\n  slack: -.inf\n".into(),
                "cgroup.slack",
                "fraction",
            ),
            (
                "policy:\n  params:\n    alpha: 4294967295\n".into(),
                "policy.params.alpha",
                "10000",
            ),
            (
                "policy:\n  params:\n    candidate_frames: 4000000000\n".into(),
                "policy.params.candidate_frames",
                "100000",
            ),
            (
                "policy:\n  params:\n    lls:\n      quiet_share: 1e300\n".into(),
                "policy.params.lls.quiet_share",
                "1024",
            ),
            (
                "policy:\n  params:\n    detector:\n      onset_ticks: 4294967295\n".into(),
                "policy.params.detector.onset_ticks",
                "100000",
            ),
            (
                "policy:\n  params:\n    detector:\n      threshold: 1e300\n".into(),
                "policy.params.detector.threshold",
                "1000",
            ),
        ];
        for (text, field, range) in cases {
            let e = parse(&text).unwrap_err().to_string();
            assert!(
                e.contains("odin.yaml") && e.contains(field) && e.contains(range),
                "{text:?}: {e}"
            );
        }
        // The edges themselves are accepted.
        parse("slo:\n  latency_ms: 86400000\n  throughput_fps: 1000000\n").unwrap();
        parse("model:\n  path: m.onnx\n  input_shape: [1, 1, 16384, 16384]\n").unwrap();
    }

    #[test]
    fn the_policy_section_is_checked_with_field_and_line() {
        let c = parse(
            "policy:\n  name: lls\n  params:\n    alpha: 3\n    detector:\n      onset_ticks: 5\n",
        )
        .unwrap();
        assert_eq!(c.policy.name, "lls");
        assert_eq!(c.policy.params.alpha, 3);
        assert_eq!(c.policy.params.detector.onset_ticks, 5);
        assert_eq!(
            c.policy.params.candidate_frames, 10,
            "defaults fill the rest"
        );
        let cases = [
            (
                "policy:\n  name: oracle\n",
                "policy.name",
                "line 2",
                "guided",
            ),
            (
                "policy:\n  params:\n    alpha: 0\n",
                "policy.params.alpha",
                "line 3",
                "from 1 to 10000",
            ),
            (
                "policy:\n  params:\n    detector:\n      threshold: 0\n",
                "policy.params.detector.threshold",
                "line 4",
                "positive",
            ),
            (
                "policy:\n  params:\n    alpah: 3\n",
                "policy.params",
                "line 3",
                "alpah",
            ),
        ];
        for (text, field, line, needle) in cases {
            let e = parse(text).unwrap_err().to_string();
            assert!(
                e.contains(field) && e.contains(line) && e.contains(needle),
                "{text:?}: {e}"
            );
        }
    }

    #[test]
    fn the_shipped_file_is_the_default_and_names_every_field() {
        let text = include_str!("../../configs/odin.yaml");
        assert_eq!(parse(text).unwrap(), Config::default());
        // Every field of the effective YAML appears in the shipped file.
        let full = Config::default().to_yaml();
        for line in full.lines() {
            let key = line.trim_start().trim_start_matches("- ");
            if let Some((key, _)) = key.split_once(':') {
                assert!(
                    text.lines()
                        .any(|l| l.trim_start().starts_with(&format!("{key}:"))),
                    "configs/odin.yaml lacks {key}"
                );
            }
        }
    }

    #[test]
    fn the_effective_yaml_reads_back_as_the_same_config() {
        let c = parse("policy:\n  name: guided\nslo:\n  latency_ms: 50\npes: [\"0\", \"1-2\"]\n")
            .unwrap();
        assert_eq!(parse(&c.to_yaml()).unwrap(), c);
        assert_eq!(
            parse(&Config::default().to_yaml()).unwrap(),
            Config::default()
        );
    }

    #[test]
    fn locate_follows_nesting_and_sequences() {
        let text = "a:\n  b: 1\n  c:\n    d: 2\npes:\n  - x\n  - y\n";
        assert_eq!(locate(text, "a.c.d"), Some((4, 5)));
        assert_eq!(locate(text, "pes.1"), Some((7, 5)));
        // A missing key points at its nearest ancestor; a missing root at nothing.
        assert_eq!(locate(text, "a.z"), Some((1, 1)));
        assert_eq!(locate(text, "z"), None);
    }

    #[test]
    fn a_configuration_others_could_change_or_swap_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("odin.yaml");
        std::fs::write(&path, "log:\n  level: debug\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o666)).unwrap();
        // As root or not: odin may run unprivileged with capabilities.
        let e = Config::load(&path, &online(), false)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("writable by group or others") && e.contains("chmod go-w"),
            "{e}"
        );
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert_eq!(
            Config::load(&path, &online(), false).unwrap().log.level,
            "debug"
        );
        let link = dir.path().join("link.yaml");
        std::os::unix::fs::symlink(&path, &link).unwrap();
        let e = Config::load(&link, &online(), false)
            .unwrap_err()
            .to_string();
        assert!(e.contains("symbolic link"), "{e}");
        Config::load(&link, &online(), true).unwrap();
        let e = Config::load(&dir.path().join("none.yaml"), &online(), false)
            .unwrap_err()
            .to_string();
        assert!(e.contains("none.yaml"), "{e}");
    }

    #[test]
    fn connection_bounds_have_defaults_and_ranges() {
        let s = parse("").unwrap().server;
        assert_eq!(
            (
                s.max_connections,
                s.read_timeout_ms,
                s.keepalive_ms,
                s.max_header_bytes,
                s.max_streams
            ),
            (256, 30_000, 60_000, 16_384, 64)
        );
        let c = parse(
            "server:\n  max_connections: 8\n  read_timeout_ms: 500\n  keepalive_ms: 1000\n  max_header_bytes: 4096\n  max_streams: 2\n",
        )
        .unwrap();
        assert_eq!(c.server.max_connections, 8);
        assert_eq!(c.server.max_streams, 2);
        for (field, value, range) in [
            ("max_connections", "0", "between 1 and 65536"),
            ("max_connections", "65537", "between 1 and 65536"),
            ("read_timeout_ms", "99", "between 100 and 600000"),
            ("read_timeout_ms", "600001", "between 100 and 600000"),
            ("keepalive_ms", "50", "between 100 and 86400000"),
            ("max_header_bytes", "1023", "between 1024 and 1048576"),
            ("max_header_bytes", "1048577", "between 1024 and 1048576"),
            ("max_streams", "0", "between 1 and 1024"),
            ("max_streams", "1025", "between 1 and 1024"),
        ] {
            let text = format!("server:\n  {field}: {value}\n");
            let e = parse(&text).unwrap_err().to_string();
            assert!(
                e.contains(&format!("server.{field}")) && e.contains(range) && e.contains(value),
                "{text}: {e}"
            );
        }
        let mut other = c.server.clone();
        other.read_timeout_ms = 600;
        assert_eq!(
            c.server.restart_fields(&other),
            vec!["server.read_timeout_ms"]
        );
    }
}
