//! Cost profiles: how long each unit of a model takes on an idle PE.
//!
//! `odin profile` measures one ([`measure`]) and writes it as JSON; the
//! pipeline's initial partition and the simulator read it back
//! ([`CostProfile::load`]). Where nothing was measured, [`CostProfile::nominal`]
//! derives the times from FLOPs at a nominal rate.

use std::io;
use std::path::{Path, PathBuf};
use std::time::{Instant, SystemTime};

use serde::{Deserialize, Serialize};

use super::{Model, Tensor, Workspace};
use crate::stats::median;

/// The cost of one unit.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct UnitCost {
    /// Position in the model.
    pub index: usize,
    /// Name in the reference model.
    pub name: String,
    /// Layer kind.
    pub kind: String,
    /// Output shape, `NxCxHxW`.
    pub output: String,
    /// Floating-point operations of one forward.
    pub flops: u64,
    /// Bytes of weights.
    pub weight_bytes: u64,
    /// Bytes of activations read and written.
    pub activation_bytes: u64,
    /// Median wall time of the unit, milliseconds.
    pub median_ms: f64,
}

impl UnitCost {
    /// Achieved GFLOP/s (0 for a unit that took no measurable time).
    pub fn gflops(&self) -> f64 {
        if self.median_ms > 0.0 {
            self.flops as f64 / (self.median_ms * 1e6)
        } else {
            0.0
        }
    }
}

/// Per-unit costs of a model on one CPU.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CostProfile {
    /// Model name.
    pub model: String,
    /// CPU model name, as `/proc/cpuinfo` says.
    pub cpu: String,
    /// The CPU the profile was measured on (`None` for a nominal profile).
    pub cpu_index: Option<usize>,
    /// When it was measured (RFC 3339, UTC).
    pub date: String,
    /// Forward passes measured (0 for a nominal profile).
    pub runs: usize,
    /// The units in model order.
    pub units: Vec<UnitCost>,
    /// Median whole-forward time, milliseconds.
    pub total_ms: f64,
    /// Images per second at `total_ms`.
    pub images_per_s: f64,
    /// Threads the layers ran on (the PE's CPUs; 1 for one CPU).
    #[serde(default = "one")]
    pub threads: usize,
    /// The kernels' instruction set ([`crate::engine::isa::Isa`]), empty
    /// for a nominal profile.
    #[serde(default)]
    pub isa: String,
    /// The precision the weights ran in.
    #[serde(default)]
    pub precision: crate::engine::Precision,
}

fn one() -> usize {
    1
}

/// Why a profile could not be read or written, or does not fit a model.
#[derive(Debug, thiserror::Error)]
pub enum ProfileError {
    /// The file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The failure.
        #[source]
        source: io::Error,
    },
    /// The file is not a valid profile.
    #[error("{path}: not a cost profile: {source}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// Where and what.
        #[source]
        source: serde_json::Error,
    },
    /// The file, or a directory above it, is not trusted.
    #[error(transparent)]
    Untrusted(crate::trust::TrustError),
    /// A value in the profile is out of range.
    #[error("{path}: {field}: {message}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// Which value: `units[3].median_ms`, `total_ms`, ...
        field: String,
        /// What is wrong and what range is valid.
        message: String,
    },
    /// The profile is of another model, or has other units.
    #[error("profile is for {found}, not {expected}")]
    Mismatch {
        /// What the caller's model is.
        expected: String,
        /// What the profile describes.
        found: String,
    },
}

/// The most units a profile may list: far more than any CNN has.
pub const MAX_UNITS: usize = 100_000;

/// The longest a unit may take in a profile, milliseconds: an hour.
pub const MAX_UNIT_MS: f64 = 3_600_000.0;

fn unit_costs(model: &Model, times_ms: impl Fn(usize) -> f64) -> Vec<UnitCost> {
    model
        .units()
        .iter()
        .enumerate()
        .map(|(index, u)| {
            let c = u.cost();
            UnitCost {
                index,
                name: u.name.clone(),
                kind: u.kind().to_string(),
                output: u.output.to_string(),
                flops: c.flops,
                weight_bytes: c.weight_bytes,
                activation_bytes: c.activation_bytes,
                median_ms: times_ms(index),
            }
        })
        .collect()
}

/// Measures `model` on the calling thread: `warmup` untimed forwards, then
/// `runs` forwards with every unit timed. Pin the thread first for a
/// per-CPU profile.
pub fn measure(
    model: &Model,
    runs: usize,
    warmup: usize,
    cpu: Option<usize>,
    cpu_name: String,
) -> CostProfile {
    measure_in(model, runs, warmup, cpu, cpu_name, Workspace::new())
}

/// [`measure`] with the layers running in `ws` (whose pool, if any, is
/// the intra-op threads of a PE of several CPUs).
pub fn measure_in(
    model: &Model,
    runs: usize,
    warmup: usize,
    cpu: Option<usize>,
    cpu_name: String,
    mut ws: Workspace,
) -> CostProfile {
    assert!(runs > 0, "at least one run");
    let x = Tensor::random(model.input(), 0x0d1);
    for _ in 0..warmup {
        std::hint::black_box(model.forward(&x, &mut ws));
    }
    let n = model.len();
    let mut per_unit = vec![Vec::with_capacity(runs); n];
    let mut totals = Vec::with_capacity(runs);
    for _ in 0..runs {
        let start = Instant::now();
        let mut t = x.clone();
        for (i, times) in per_unit.iter_mut().enumerate() {
            let u0 = Instant::now();
            t = model.forward_range(i..i + 1, &t, &mut ws);
            times.push(u0.elapsed().as_secs_f64() * 1e3);
        }
        std::hint::black_box(&t);
        totals.push(start.elapsed().as_secs_f64() * 1e3);
    }
    let medians: Vec<f64> = per_unit.iter_mut().map(|t| median(t)).collect();
    let total_ms = median(&mut totals);
    CostProfile {
        model: model.name().to_string(),
        cpu: cpu_name,
        cpu_index: cpu,
        date: humantime::format_rfc3339_seconds(SystemTime::now()).to_string(),
        runs,
        units: unit_costs(model, |i| medians[i]),
        total_ms,
        images_per_s: 1e3 / total_ms,
        threads: ws.threads(),
        isa: crate::engine::isa::Isa::active().to_string(),
        precision: model.precision(),
    }
}

impl CostProfile {
    /// A profile estimated from FLOPs at `gflops` GFLOP/s, for when nothing
    /// has been measured.
    pub fn nominal(model: &Model, gflops: f64) -> Self {
        assert!(gflops > 0.0, "a positive rate");
        let units = unit_costs(model, |i| {
            model.units()[i].cost().flops as f64 / (gflops * 1e6)
        });
        let total_ms = units.iter().map(|u| u.median_ms).sum::<f64>();
        Self {
            model: model.name().to_string(),
            cpu: format!("nominal {gflops} GFLOP/s"),
            cpu_index: None,
            date: String::new(),
            runs: 0,
            units,
            total_ms,
            images_per_s: 1e3 / total_ms,
            threads: 1,
            isa: String::new(),
            precision: crate::engine::Precision::F32,
        }
    }

    /// Unit times in milliseconds, in model order.
    pub fn unit_ms(&self) -> Vec<f64> {
        self.units.iter().map(|u| u.median_ms).collect()
    }

    /// Checks that the profile describes `model`'s units.
    pub fn check_fits(&self, model: &Model) -> Result<(), ProfileError> {
        let kinds = |p: &[UnitCost]| p.iter().map(|u| u.kind.clone()).collect::<Vec<_>>();
        let model_kinds: Vec<String> = model.units().iter().map(|u| u.kind().to_string()).collect();
        if self.model != model.name() || kinds(&self.units) != model_kinds {
            return Err(ProfileError::Mismatch {
                expected: format!("{} ({} units)", model.name(), model.len()),
                found: format!("{} ({} units)", self.model, self.units.len()),
            });
        }
        Ok(())
    }

    /// Reads a profile written by [`CostProfile::save`], through
    /// [`crate::trust`]: odin builds its partition on what the file says,
    /// so it must be root's (or odin's user's), writable by no one else,
    /// and not a symbolic link unless `follow`.
    pub fn load(path: &Path, follow: bool) -> Result<Self, ProfileError> {
        let text = crate::trust::read(path, "cost profile", follow).map_err(|e| match e {
            crate::trust::TrustError::Io { path, source } => ProfileError::Io { path, source },
            e => ProfileError::Untrusted(e),
        })?;
        Self::parse(&text, path)
    }

    /// Parses and checks a profile's JSON; `origin` names it in errors
    /// (with the line and column of a syntax error, the field of a value
    /// out of range).
    pub fn parse(text: &str, origin: &Path) -> Result<Self, ProfileError> {
        let profile: Self = serde_json::from_str(text).map_err(|source| ProfileError::Parse {
            path: origin.to_path_buf(),
            source,
        })?;
        profile
            .validate()
            .map_err(|(field, message)| ProfileError::Invalid {
                path: origin.to_path_buf(),
                field,
                message,
            })?;
        Ok(profile)
    }

    /// Checks the numbers a partition is computed from: the error is
    /// (field, message).
    fn validate(&self) -> Result<(), (String, String)> {
        let ms_ok = |v: f64| v.is_finite() && (0.0..=MAX_UNIT_MS).contains(&v);
        let range = format!("must be a number of milliseconds from 0 to {MAX_UNIT_MS} (an hour)");
        if self.units.is_empty() || self.units.len() > MAX_UNITS {
            return Err((
                "units".into(),
                format!(
                    "{} units: a profile has 1 to {MAX_UNITS} units",
                    self.units.len()
                ),
            ));
        }
        for (i, u) in self.units.iter().enumerate() {
            if u.index != i {
                return Err((
                    format!("units[{i}].index"),
                    format!(
                        "{}: units are listed in model order, so this is {i}",
                        u.index
                    ),
                ));
            }
            if !ms_ok(u.median_ms) {
                return Err((
                    format!("units[{i}].median_ms"),
                    format!("{}: {range}", u.median_ms),
                ));
            }
        }
        if !ms_ok(self.total_ms) {
            return Err(("total_ms".into(), format!("{}: {range}", self.total_ms)));
        }
        if !(self.images_per_s.is_finite() && self.images_per_s >= 0.0) {
            return Err((
                "images_per_s".into(),
                format!("{}: must be a finite number, at least 0", self.images_per_s),
            ));
        }
        Ok(())
    }

    /// Writes the profile as pretty JSON.
    pub fn save(&self, path: &Path) -> Result<(), ProfileError> {
        let text = serde_json::to_string_pretty(self).expect("profiles serialise");
        std::fs::write(path, text + "\n").map_err(|source| ProfileError::Io {
            path: path.to_path_buf(),
            source,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::zoo;

    #[test]
    fn measured_profile_covers_every_unit_and_round_trips() {
        let model = zoo::build("mobilenet_v2", 1).unwrap();
        let p = measure(&model, 3, 1, None, "test".into());
        assert_eq!(p.units.len(), model.len());
        assert!(p.units.iter().all(|u| u.median_ms > 0.0));
        // The whole forward includes every unit's time.
        let sum: f64 = p.unit_ms().iter().sum();
        assert!(
            p.total_ms >= 0.5 * sum && p.total_ms > 0.0,
            "{} vs {}",
            p.total_ms,
            sum
        );
        assert_eq!(
            p.units.iter().map(|u| u.flops).sum::<u64>(),
            model.cost().flops
        );
        p.check_fits(&model).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.json");
        p.save(&path).unwrap();
        assert_eq!(CostProfile::load(&path, false).unwrap(), p);
    }

    #[test]
    fn nominal_profile_is_proportional_to_flops() {
        let model = zoo::build("resnet18", 1).unwrap();
        let p = CostProfile::nominal(&model, 100.0);
        let total_flops = model.cost().flops as f64;
        assert!((p.total_ms - total_flops / 1e8).abs() < 1e-6 * p.total_ms);
        let other = zoo::build("alexnet", 1).unwrap();
        assert!(matches!(
            p.check_fits(&other),
            Err(ProfileError::Mismatch { .. })
        ));
    }

    #[test]
    fn values_out_of_range_are_refused_with_the_field() {
        let model = zoo::build("mobilenet_v2", 1).unwrap();
        let good = CostProfile::nominal(&model, 100.0);
        let text = serde_json::to_string(&good).unwrap();
        assert_eq!(
            CostProfile::parse(&text, Path::new("p.json")).unwrap(),
            good
        );
        let with = |f: &dyn Fn(&mut CostProfile)| {
            let mut p = good.clone();
            f(&mut p);
            serde_json::to_string(&p).unwrap()
        };
        let cases: Vec<(String, &str)> = vec![
            (with(&|p| p.units[2].median_ms = -1.0), "units[2].median_ms"),
            (
                with(&|p| p.units[0].median_ms = 1e300),
                "units[0].median_ms",
            ),
            (with(&|p| p.units[1].index = 7), "units[1].index"),
            (with(&|p| p.units.clear()), "units"),
            (with(&|p| p.total_ms = -5.0), "total_ms"),
            (with(&|p| p.images_per_s = -5.0), "images_per_s"),
        ];
        for (text, field) in cases {
            let e = CostProfile::parse(&text, Path::new("p.json"))
                .unwrap_err()
                .to_string();
            assert!(e.contains("p.json") && e.contains(field), "{field}: {e}");
        }
    }

    #[test]
    fn load_errors_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bad.json");
        std::fs::write(&path, "{\"model\": 3}").unwrap();
        let err = CostProfile::load(&path, false).unwrap_err().to_string();
        assert!(err.contains("bad.json") && err.contains("line 1"), "{err}");
        let err = CostProfile::load(&dir.path().join("none.json"), false)
            .unwrap_err()
            .to_string();
        assert!(err.contains("none.json"), "{err}");
    }
}
