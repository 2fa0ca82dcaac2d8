//! Interference scenarios: which PEs are slowed, when, how much and how.
//!
//! A scenario is a YAML document (format in `configs/scenarios/README.md`).
//! Times are fractions of the *nominal run*, the time the run's frames take
//! at the no-interference optimum (`frames x bottleneck`), so one scenario
//! fits any model, PE count and `--frames`. PE references are indices, and a
//! negative index counts from the last PE (-1 is the last), so one scenario
//! fits any PE count. [`Scenario::resolve`] turns a scenario into a concrete
//! [`Timeline`] for one run: intervals in seconds, random ones drawn from a
//! seed, PE speeds for the PE count.
//!
//! Parse errors name the field and the line (`interference[0].factor: ...
//! at line 5 column 13`); unknown fields are rejected.

use std::fmt;
use std::path::Path;

use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::de::{self, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize};

/// The scenarios shipped in `configs/scenarios/`, by name.
pub const SHIPPED: &[(&str, &str)] = &[
    ("none", include_str!("../../configs/scenarios/none.yaml")),
    (
        "long-lived",
        include_str!("../../configs/scenarios/long-lived.yaml"),
    ),
    (
        "short-bursts",
        include_str!("../../configs/scenarios/short-bursts.yaml"),
    ),
    (
        "periodic",
        include_str!("../../configs/scenarios/periodic.yaml"),
    ),
    (
        "multi-pe",
        include_str!("../../configs/scenarios/multi-pe.yaml"),
    ),
    (
        "heterogeneous",
        include_str!("../../configs/scenarios/heterogeneous.yaml"),
    ),
];

/// Names of the shipped scenarios.
pub fn shipped_names() -> Vec<&'static str> {
    SHIPPED.iter().map(|(n, _)| *n).collect()
}

/// Why a scenario could not be read or does not fit the run.
#[derive(Debug, thiserror::Error)]
pub enum ScenarioError {
    /// The file could not be read.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The failure.
        #[source]
        source: std::io::Error,
    },
    /// The document is not a valid scenario; the message names the field
    /// and the line.
    #[error("{origin}: {message}")]
    Parse {
        /// File name or shipped scenario name.
        origin: String,
        /// What and where.
        message: String,
    },
    /// Neither a shipped name nor an existing file.
    #[error("unknown scenario {0:?}: not a file, and not one of the shipped scenarios: {names}", names = shipped_names().join(", "))]
    Unknown(String),
    /// The scenario refers to PEs the run does not have.
    #[error("scenario {origin}: {message}")]
    Fit {
        /// File name or shipped scenario name.
        origin: String,
        /// What does not fit.
        message: String,
    },
}

/// Kind of interference.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// CPU time-sharing: every unit slowed by the full factor.
    Cpu,
    /// Shared-cache thrashing: units slowed by their memory intensity.
    Cache,
    /// Memory-bandwidth contention: units slowed by their memory intensity.
    Memory,
}

impl Kind {
    /// Whether the slowdown depends on the unit's memory intensity.
    pub fn is_memory_bound(self) -> bool {
        !matches!(self, Kind::Cpu)
    }

    /// Lower-case name, as in the YAML.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Cpu => "cpu",
            Kind::Cache => "cache",
            Kind::Memory => "memory",
        }
    }
}

/// A number checked by `check` while the deserializer is still on it, so
/// the error carries the field's path and line.
struct Number(fn(f64) -> Result<f64, String>);

impl<'de> Visitor<'de> for Number {
    type Value = f64;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a number")
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<f64, E> {
        (self.0)(v).map_err(E::custom)
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<f64, E> {
        self.visit_f64(v as f64)
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<f64, E> {
        self.visit_f64(v as f64)
    }
}

/// A whole number checked against `min..=max` while the deserializer is
/// still on it, so the error carries the field's path and line.
struct Count(u64, u64, &'static str);

impl<'de> Visitor<'de> for Count {
    type Value = u64;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(
            f,
            "a whole number of {} from {} to {}",
            self.2, self.0, self.1
        )
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<u64, E> {
        if (self.0..=self.1).contains(&v) {
            Ok(v)
        } else {
            Err(E::custom(format!(
                "{v} is not a number of {} from {} to {}",
                self.2, self.0, self.1
            )))
        }
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<u64, E> {
        match u64::try_from(v) {
            Ok(v) => self.visit_u64(v),
            Err(_) => Err(E::custom(format!(
                "{v} is not a number of {} from {} to {}",
                self.2, self.0, self.1
            ))),
        }
    }
}

fn count_u32<'de, D: Deserializer<'de>>(
    d: D,
    min: u64,
    max: u64,
    what: &'static str,
) -> Result<u32, D::Error> {
    let v = d.deserialize_u64(Count(min, max, what))?;
    u32::try_from(v).map_err(|_| de::Error::custom(format!("{v} is too large")))
}

fn times<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u32>, D::Error> {
    count_u32(d, 1, MAX_EPISODES as u64, "occurrences").map(Some)
}

fn episodes<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
    count_u32(d, 0, MAX_EPISODES as u64, "episodes")
}

fn pes_each<'de, D: Deserializer<'de>>(d: D) -> Result<usize, D::Error> {
    let v = d.deserialize_u64(Count(1, MAX_PES as u64, "PEs"))?;
    usize::try_from(v).map_err(|_| de::Error::custom(format!("{v} is too large")))
}

/// A `[low, high]` pair with `check` on both ends and `low <= high`.
struct Pair(fn(f64) -> bool, &'static str);

impl<'de> Visitor<'de> for Pair {
    type Value = [f64; 2];

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "a range [low, high] of {}", self.1)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<[f64; 2], A::Error> {
        let bad = || de::Error::custom(format!("expected a range [low, high] of {}", self.1));
        let a: f64 = seq.next_element()?.ok_or_else(bad)?;
        let b: f64 = seq.next_element()?.ok_or_else(bad)?;
        if seq.next_element::<f64>()?.is_some() {
            return Err(bad());
        }
        if (self.0)(a) && (self.0)(b) && a <= b {
            Ok([a, b])
        } else {
            Err(de::Error::custom(format!(
                "[{a}, {b}] is not a range [low, high] of {}",
                self.1
            )))
        }
    }
}

/// A non-empty list of PE indices.
struct PeList;

impl<'de> Visitor<'de> for PeList {
    type Value = Vec<i64>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a list of PE indices")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<i64>, A::Error> {
        let mut v = Vec::new();
        while let Some(p) = seq.next_element()? {
            v.push(p);
        }
        if v.is_empty() {
            return Err(de::Error::custom(
                "empty list: name at least one PE (an index; -1 is the last PE)",
            ));
        }
        Ok(v)
    }
}

fn check_fraction(v: f64) -> Result<f64, String> {
    if (0.0..=1.0).contains(&v) {
        Ok(v)
    } else {
        Err(format!("{v} is not a fraction of the run in [0, 1]"))
    }
}

fn check_positive_fraction(v: f64) -> Result<f64, String> {
    if v > 0.0 && v <= 1.0 {
        Ok(v)
    } else {
        Err(format!(
            "{v} is not a positive fraction of the run in (0, 1]"
        ))
    }
}

fn check_factor(v: f64) -> Result<f64, String> {
    if (1.0..=1000.0).contains(&v) {
        Ok(v)
    } else {
        Err(format!(
            "{v} is not a slowdown factor in [1, 1000] (2.0 = twice as slow)"
        ))
    }
}

fn check_speed(v: f64) -> Result<f64, String> {
    if v > 0.0 && v.is_finite() {
        Ok(v)
    } else {
        Err(format!(
            "{v} is not a positive speed (1.0 = the profile's reference CPU)"
        ))
    }
}

fn fraction<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    d.deserialize_f64(Number(check_fraction))
}

fn positive_fraction<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    d.deserialize_f64(Number(check_positive_fraction))
}

fn slowdown<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    d.deserialize_f64(Number(check_factor))
}

fn positive_speed<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    d.deserialize_f64(Number(check_speed))
}

fn fraction_range<'de, D: Deserializer<'de>>(d: D) -> Result<[f64; 2], D::Error> {
    d.deserialize_seq(Pair(
        |v| (0.0..=1.0).contains(&v),
        "fractions of the run in [0, 1]",
    ))
}

fn factor_range<'de, D: Deserializer<'de>>(d: D) -> Result<[f64; 2], D::Error> {
    d.deserialize_seq(Pair(
        |v| (1.0..=1000.0).contains(&v),
        "slowdown factors in [1, 1000]",
    ))
}

fn non_empty_pes<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<i64>, D::Error> {
    d.deserialize_seq(PeList)
}

fn default_kinds() -> Vec<Kind> {
    vec![Kind::Cpu]
}

fn one() -> usize {
    1
}

/// A group of PEs with one nominal speed.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Cluster {
    /// Share of the PEs in this cluster, in `(0, 1]`; clusters take PEs in
    /// order (the first cluster the lowest indices). The last cluster takes
    /// whatever is left.
    #[serde(deserialize_with = "positive_fraction")]
    pub share: f64,
    /// Nominal speed of its PEs relative to the profile's reference CPU.
    #[serde(deserialize_with = "positive_speed")]
    pub speed: f64,
}

/// The most episodes (occurrences times PEs) a scenario may ask for: far
/// beyond any experiment, small enough that resolving one stays cheap.
pub const MAX_EPISODES: usize = 100_000;

/// The most PEs a simulation may have, and so the most a scenario may
/// name in one episode or split into clusters.
pub const MAX_PES: usize = 4096;

/// One interference episode, possibly repeated.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Episode {
    /// PE indices (negative counts from the end: -1 is the last PE).
    #[serde(deserialize_with = "non_empty_pes")]
    pub pes: Vec<i64>,
    /// Start, as a fraction of the nominal run.
    #[serde(deserialize_with = "fraction")]
    pub start: f64,
    /// Length, as a fraction of the nominal run.
    #[serde(deserialize_with = "positive_fraction")]
    pub duration: f64,
    /// Slowdown factor (2.0 = a unit takes twice as long).
    #[serde(deserialize_with = "slowdown")]
    pub factor: f64,
    /// `cpu`, `cache` or `memory`.
    pub kind: Kind,
    /// Repeat every this fraction of the run (from one start to the next).
    #[serde(default, deserialize_with = "opt_positive_fraction")]
    pub every: Option<f64>,
    /// Number of occurrences in all when `every` is set, 1 to
    /// [`MAX_EPISODES`] (default: until the end of the nominal run).
    #[serde(default, deserialize_with = "times")]
    pub times: Option<u32>,
}

impl Episode {
    /// How many times the episode occurs in the nominal run (counted, not
    /// listed: the count may be absurd before it is checked).
    fn occurrences(&self) -> f64 {
        match self.every {
            Some(every) => {
                let limit = self.times.map_or(f64::INFINITY, |t| f64::from(t.max(1)));
                // The first start, then one per period before the end.
                let after = ((1.0 - self.start) / every).ceil() - 1.0;
                (1.0 + after.max(0.0)).min(limit)
            }
            None => 1.0,
        }
    }
}

fn opt_positive_fraction<'de, D: Deserializer<'de>>(d: D) -> Result<Option<f64>, D::Error> {
    positive_fraction(d).map(Some)
}

/// Interference drawn at random from a seed.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Random {
    /// Number of episodes, at most [`MAX_EPISODES`].
    #[serde(deserialize_with = "episodes")]
    pub count: u32,
    /// Extra episodes per 16 PEs, so larger machines see more of them.
    #[serde(default, deserialize_with = "episodes")]
    pub per_16_pes: u32,
    /// PEs each episode hits (distinct, drawn uniformly), 1 to [`MAX_PES`].
    #[serde(default = "one", deserialize_with = "pes_each")]
    pub pes_each: usize,
    /// Start range, fractions of the nominal run.
    #[serde(deserialize_with = "fraction_range")]
    pub start: [f64; 2],
    /// Length range, fractions of the nominal run.
    #[serde(deserialize_with = "fraction_range")]
    pub duration: [f64; 2],
    /// Slowdown factor range.
    #[serde(deserialize_with = "factor_range")]
    pub factor: [f64; 2],
    /// Kinds to draw from, uniformly (default `[cpu]`).
    #[serde(default = "default_kinds")]
    pub kinds: Vec<Kind>,
    /// Seed of the draw (default: the run's `--seed`).
    #[serde(default)]
    pub seed: Option<u64>,
}

/// A scenario as written in YAML.
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    /// One line on what it shows.
    #[serde(default)]
    pub description: String,
    /// PE speeds as clusters (default: every PE at speed 1).
    #[serde(default)]
    pub clusters: Vec<Cluster>,
    /// Fixed interference episodes.
    #[serde(default)]
    pub interference: Vec<Episode>,
    /// Random interference.
    #[serde(default)]
    pub random: Option<Random>,
}

/// One concrete interval of a timeline.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Interval {
    /// The PE.
    pub pe: usize,
    /// Start, seconds of virtual time.
    pub start_s: f64,
    /// End, seconds of virtual time.
    pub end_s: f64,
    /// Slowdown factor.
    pub factor: f64,
    /// Kind.
    pub kind: Kind,
}

/// A scenario resolved for one run.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Timeline {
    /// Nominal speed of each PE.
    pub pe_speed: Vec<f64>,
    /// Interference intervals, sorted by start then PE.
    pub intervals: Vec<Interval>,
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A scenario and where it came from.
#[derive(Clone, Debug, PartialEq)]
pub struct Named {
    /// Shipped name or file path, for messages and reports.
    pub name: String,
    /// The scenario.
    pub scenario: Scenario,
}

impl Scenario {
    /// Parses a YAML document; `origin` names it in errors.
    pub fn parse(text: &str, origin: &str) -> Result<Self, ScenarioError> {
        let scenario = yaml_serde::from_str::<Option<Scenario>>(text)
            .map(Option::unwrap_or_default)
            .map_err(|e| ScenarioError::Parse {
                origin: origin.to_string(),
                message: e.to_string(),
            })?;
        scenario
            .validate()
            .map_err(|message| ScenarioError::Parse {
                origin: origin.to_string(),
                message,
            })?;
        Ok(scenario)
    }

    /// Bounds what the fields say together, before any PE count is known:
    /// list lengths, and the occurrences a repeated episode asks for. The
    /// error starts with the field.
    fn validate(&self) -> Result<(), String> {
        if self.interference.len() > MAX_EPISODES {
            return Err(format!(
                "interference: {} episodes, more than the {MAX_EPISODES} a scenario may have",
                self.interference.len()
            ));
        }
        if self.clusters.len() > MAX_PES {
            return Err(format!(
                "clusters: {} clusters, more than the {MAX_PES} PEs a simulation may have",
                self.clusters.len()
            ));
        }
        for (i, e) in self.interference.iter().enumerate() {
            if e.pes.len() > MAX_PES {
                return Err(format!(
                    "interference[{i}].pes: {} PEs, more than the {MAX_PES} a simulation may have",
                    e.pes.len()
                ));
            }
            let occurrences = e.occurrences();
            if occurrences > MAX_EPISODES as f64 {
                return Err(format!(
                    "interference[{i}].every: {} repeats the episode {occurrences} times, more \
                     than the {MAX_EPISODES} episodes a scenario may have; use a longer period or `times`",
                    e.every.unwrap_or(1.0)
                ));
            }
        }
        if let Some(r) = &self.random
            && r.kinds.is_empty()
        {
            return Err("random.kinds: empty list: give at least one of cpu, cache, memory".into());
        }
        Ok(())
    }

    /// A shipped scenario by name, else the YAML file at that path, read
    /// with `read` (the caller's file access: the simulator itself touches
    /// no files). A file that does not exist is an unknown name.
    pub fn find(
        name_or_path: &str,
        read: impl FnOnce(&Path) -> std::io::Result<String>,
    ) -> Result<Named, ScenarioError> {
        if let Some((name, text)) = SHIPPED.iter().find(|(n, _)| *n == name_or_path) {
            let scenario = Self::parse(text, name)?;
            return Ok(Named {
                name: name.to_string(),
                scenario,
            });
        }
        let path = Path::new(name_or_path);
        let text = read(path).map_err(|source| {
            if source.kind() == std::io::ErrorKind::NotFound {
                ScenarioError::Unknown(name_or_path.to_string())
            } else {
                ScenarioError::Io {
                    path: name_or_path.to_string(),
                    source,
                }
            }
        })?;
        let scenario = Self::parse(&text, name_or_path)?;
        Ok(Named {
            name: path
                .file_stem()
                .map_or_else(|| name_or_path.to_string(), |s| s.to_string_lossy().into()),
            scenario,
        })
    }

    /// PE speeds for `pes` PEs.
    #[allow(clippy::cast_possible_truncation, reason = "clamped to the PE count")]
    pub fn speeds(&self, pes: usize) -> Vec<f64> {
        if self.clusters.is_empty() {
            return vec![1.0; pes];
        }
        let mut speeds = Vec::with_capacity(pes);
        let mut acc = 0.0;
        for (i, c) in self.clusters.iter().enumerate() {
            acc += c.share;
            let upto = if i + 1 == self.clusters.len() {
                pes
            } else {
                ((acc * pes as f64).round() as usize).clamp(speeds.len(), pes)
            };
            speeds.resize(upto, c.speed);
        }
        speeds
    }

    /// The concrete timeline for `pes` PEs over a nominal run of
    /// `run_s` seconds; random episodes come from `seed` unless the
    /// scenario fixes one.
    #[allow(
        clippy::cast_possible_truncation,
        reason = "an occurrence count and a PE index, both checked above"
    )]
    pub fn resolve(
        &self,
        origin: &str,
        pes: usize,
        run_s: f64,
        seed: u64,
    ) -> Result<Timeline, ScenarioError> {
        let fit = |message: String| ScenarioError::Fit {
            origin: origin.to_string(),
            message,
        };
        // Every episode is counted before anything is allocated.
        let mut total = 0.0;
        for (i, e) in self.interference.iter().enumerate() {
            let occurrences = e.occurrences();
            total += occurrences * e.pes.len() as f64;
            if total > MAX_EPISODES as f64 {
                return Err(fit(format!(
                    "interference[{i}]: its {occurrences} occurrences on {} PEs bring the scenario \
                     to more than the {MAX_EPISODES} episodes it may have; use a longer `every` or `times`",
                    e.pes.len()
                )));
            }
        }
        if let Some(r) = &self.random {
            let count = random_count(r, pes);
            total += count as f64 * r.pes_each.min(pes) as f64;
            if total > MAX_EPISODES as f64 {
                return Err(fit(format!(
                    "random.count: {count} episodes of {} PEs on {pes} PEs bring the scenario to \
                     more than the {MAX_EPISODES} episodes it may have",
                    r.pes_each
                )));
            }
        }
        let mut intervals = Vec::new();
        for (i, e) in self.interference.iter().enumerate() {
            let mut starts = vec![e.start];
            if let Some(every) = e.every {
                // At most as many as were counted above.
                let limit = (e.occurrences() as usize).max(1);
                let mut s = e.start + every;
                while s < 1.0 && starts.len() < limit {
                    starts.push(s);
                    s += every;
                }
            } else if e.times.is_some() {
                return Err(fit(format!(
                    "interference[{i}].times: needs `every` (the repeat period)"
                )));
            }
            for &pe in &e.pes {
                let idx = if pe < 0 { pes as i64 + pe } else { pe };
                if idx < 0 || idx >= pes as i64 {
                    return Err(fit(format!(
                        "interference[{i}].pes: PE {pe} does not exist on {pes} PEs \
                         (indices 0..{pes}, or -1 for the last)"
                    )));
                }
                for &s in &starts {
                    intervals.push(Interval {
                        pe: idx as usize,
                        start_s: s * run_s,
                        end_s: (s + e.duration) * run_s,
                        factor: e.factor,
                        kind: e.kind,
                    });
                }
            }
        }
        if let Some(r) = &self.random {
            if r.pes_each == 0 || r.pes_each > pes {
                return Err(fit(format!(
                    "random.pes_each: {} PEs per episode on {pes} PEs",
                    r.pes_each
                )));
            }
            if r.kinds.is_empty() {
                return Err(fit("random.kinds: empty list".into()));
            }
            let mut rng = ChaCha8Rng::seed_from_u64(r.seed.unwrap_or(seed) ^ 0x5ce7_a210);
            let count = random_count(r, pes);
            let draw = |rng: &mut ChaCha8Rng, [a, b]: [f64; 2]| {
                if b > a { rng.random_range(a..b) } else { a }
            };
            for _ in 0..count {
                let start = draw(&mut rng, r.start);
                let duration = draw(&mut rng, r.duration);
                let factor = draw(&mut rng, r.factor);
                let kind = r.kinds[rng.random_range(0..r.kinds.len())];
                let mut chosen: Vec<usize> = Vec::with_capacity(r.pes_each);
                while chosen.len() < r.pes_each {
                    let p = rng.random_range(0..pes);
                    if !chosen.contains(&p) {
                        chosen.push(p);
                    }
                }
                for pe in chosen {
                    intervals.push(Interval {
                        pe,
                        start_s: start * run_s,
                        end_s: (start + duration) * run_s,
                        factor,
                        kind,
                    });
                }
            }
        }
        intervals.retain(|iv| iv.end_s > iv.start_s && iv.factor > 1.0);
        intervals.sort_by(|a, b| a.start_s.total_cmp(&b.start_s).then(a.pe.cmp(&b.pe)));
        Ok(Timeline {
            pe_speed: self.speeds(pes),
            intervals,
        })
    }
}

/// The random episodes on `pes` PEs: `count` plus `per_16_pes` for every
/// 16 PEs (saturating: the sum is checked against [`MAX_EPISODES`]).
fn random_count(r: &Random, pes: usize) -> usize {
    (r.count as usize).saturating_add((r.per_16_pes as usize).saturating_mul(pes) / 16)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_scenario_cannot_ask_for_unbounded_work() {
        let e = Scenario::parse(
            "interference:\n  - {pes: [0], start: 0, duration: 0.01, factor: 2, kind: cpu, every: 1e-12}\n",
            "f.yaml",
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("f.yaml") && e.contains("interference[0].every") && e.contains("100000"),
            "{e}"
        );
        // A bounded repeat still resolves.
        let ok = Scenario::parse(
            "interference:\n  - {pes: [0], start: 0, duration: 0.01, factor: 2, kind: cpu, every: 1e-12, times: 3}\n",
            "f.yaml",
        )
        .unwrap()
        .resolve("f.yaml", 2, 10.0, 1)
        .unwrap();
        assert_eq!(ok.intervals.len(), 3);
        // Each episode within bounds, but together too many on this many PEs.
        let each = "  - {pes: [0, 1, 2, 3], start: 0, duration: 0.01, factor: 2, kind: cpu, every: 0.0001}\n";
        let text = format!("interference:\n{}", each.repeat(30));
        let e = Scenario::parse(&text, "f.yaml")
            .unwrap()
            .resolve("f.yaml", 4, 10.0, 1)
            .unwrap_err()
            .to_string();
        assert!(e.contains("f.yaml") && e.contains("100000 episodes"), "{e}");
        let e = Scenario::parse(
            "random:\n  count: 90000\n  pes_each: 2\n  start: [0, 0.9]\n  duration: [0.01, 0.02]\n  factor: [1.5, 2]\n",
            "f.yaml",
        )
        .unwrap()
        .resolve("f.yaml", 2, 10.0, 1)
        .unwrap_err()
        .to_string();
        assert!(e.contains("random.count: 90000"), "{e}");
    }

    #[test]
    fn every_count_is_range_checked_at_parse_time_with_field_and_line() {
        let random = |field: &str| {
            format!(
                "random:\n  count: 2\n  start: [0, 0.9]\n  duration: [0.01, 0.02]\n  factor: [1.5, 2]\n  {field}\n"
            )
        };
        let cases: Vec<(String, &str, &str)> = vec![
            (
                "random:\n  count: 4294967295\n  start: [0, 0.9]\n  duration: [0.01, 0.02]\n  factor: [1.5, 2]\n".into(),
                "random.count",
                "line 2",
            ),
            (random("per_16_pes: 4294967295"), "random.per_16_pes", "line 6"),
            (random("pes_each: 0"), "random.pes_each", "line 6"),
            (random("pes_each: 18446744073709551615"), "random.pes_each", "line 6"),
            (random("pes_each: -1"), "random.pes_each", "line 6"),
            (random("kinds: []"), "random.kinds", "at least one"),
            (
                "interference:\n  - {pes: [0], start: 0, duration: 0.1, factor: 2, kind: cpu, every: 0.1, times: 0}\n".into(),
                "interference[0].times",
                "line 2",
            ),
            (
                "interference:\n  - {pes: [0], start: 0, duration: 0.1, factor: 2, kind: cpu, every: 0.1, times: 4294967295}\n".into(),
                "interference[0].times",
                "line 2",
            ),
            (
                "interference:\n  - {pes: [0], start: .nan, duration: 0.1, factor: 2, kind: cpu}\n".into(),
                "interference[0].start",
                "line 2",
            ),
            (
                "interference:\n  - {pes: [0], start: 0, duration: .inf, factor: 2, kind: cpu}\n".into(),
                "interference[0].duration",
                "line 2",
            ),
            (
                "interference:\n  - {pes: [0], start: 0, duration: 0.1, factor: 1e308, kind: cpu}\n".into(),
                "interference[0].factor",
                "line 2",
            ),
            (
                "interference:\n  - {pes: [0], start: 0, duration: 0.1, factor: 2, kind: cpu, every: 0}\n".into(),
                "interference[0].every",
                "line 2",
            ),
            ("clusters: [{share: 1, speed: .inf}]\n".into(), "clusters[0].speed", "line 1"),
            ("clusters: [{share: -0.5, speed: 1}]\n".into(), "clusters[0].share", "line 1"),
            (
                format!("clusters:\n{}", "  - {share: 0.0001, speed: 1}\n".repeat(MAX_PES + 1)),
                "clusters",
                "4096",
            ),
        ];
        for (text, field, where_) in cases {
            let e = Scenario::parse(&text, "f.yaml").unwrap_err().to_string();
            assert!(
                e.contains("f.yaml") && e.contains(field) && e.contains(where_),
                "{text:?}: {e}"
            );
        }
    }

    #[test]
    fn every_shipped_scenario_parses_and_resolves() {
        for (name, text) in SHIPPED {
            let s = Scenario::parse(text, name).unwrap();
            for pes in [2, 4, 16, 64] {
                let t = s.resolve(name, pes, 10.0, 1).unwrap();
                assert_eq!(t.pe_speed.len(), pes);
                for iv in &t.intervals {
                    assert!(iv.pe < pes && iv.end_s > iv.start_s && iv.factor > 1.0);
                }
            }
        }
    }

    #[test]
    fn bad_fields_name_the_field_and_the_line() {
        let text = "description: x\ninterference:\n  - pes: [1]\n    start: 0.1\n    duration: 0.5\n    factor: 0.5\n    kind: cpu\n";
        let e = Scenario::parse(text, "f.yaml").unwrap_err().to_string();
        assert!(e.contains("factor") && e.contains("line 6"), "{e}");
        let e = Scenario::parse("interference:\n  - pes: [1]\n    strat: 0.1\n", "f.yaml")
            .unwrap_err()
            .to_string();
        assert!(e.contains("strat") && e.contains("line 3"), "{e}");
        let e = Scenario::parse("random:\n  count: 2\n  start: [0.5, 0.1]\n", "f.yaml")
            .unwrap_err()
            .to_string();
        assert!(e.contains("random.start") && e.contains("line 3"), "{e}");
    }

    #[test]
    fn negative_pes_count_from_the_end_and_out_of_range_is_an_error() {
        let s = Scenario::parse(
            "interference:\n  - {pes: [-1], start: 0.5, duration: 0.25, factor: 2, kind: cache}\n",
            "t",
        )
        .unwrap();
        let t = s.resolve("t", 4, 8.0, 0).unwrap();
        assert_eq!(t.intervals.len(), 1);
        assert_eq!(t.intervals[0].pe, 3);
        assert_eq!((t.intervals[0].start_s, t.intervals[0].end_s), (4.0, 6.0));
        let s = Scenario::parse(
            "interference:\n  - {pes: [5], start: 0.5, duration: 0.25, factor: 2, kind: cpu}\n",
            "t",
        )
        .unwrap();
        assert!(s.resolve("t", 4, 8.0, 0).is_err());
    }

    #[test]
    fn repeats_and_random_draws_are_deterministic() {
        let s = Scenario::parse(
            "interference:\n  - {pes: [0], start: 0.1, duration: 0.05, factor: 2, kind: cpu, every: 0.2}\n\
             random: {count: 3, start: [0, 0.8], duration: [0.05, 0.2], factor: [1.5, 3]}\n",
            "t",
        )
        .unwrap();
        let a = s.resolve("t", 4, 10.0, 7).unwrap();
        assert_eq!(a, s.resolve("t", 4, 10.0, 7).unwrap());
        assert_ne!(a, s.resolve("t", 4, 10.0, 8).unwrap());
        // 0.1, 0.3, 0.5, 0.7, 0.9 plus three random ones.
        assert_eq!(a.intervals.len(), 8);
    }

    #[test]
    fn clusters_split_the_pes_in_order() {
        let s = Scenario::parse(
            "clusters: [{share: 0.5, speed: 2.0}, {share: 0.5, speed: 1.0}]\n",
            "t",
        )
        .unwrap();
        assert_eq!(s.speeds(4), vec![2.0, 2.0, 1.0, 1.0]);
        assert_eq!(s.speeds(3), vec![2.0, 2.0, 1.0]);
        assert_eq!(s.speeds(1).len(), 1);
    }
}
