//! Policy parameters: one serde struct for every policy, with the
//! documented defaults and a `validate` whose error names the field.

use serde::{Deserialize, Serialize};

use super::detector::DetectorConfig;

/// Parameters of the policies and their detector.
///
/// Unknown fields are rejected; every field has a default, so an empty
/// document is the default configuration.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PolicyConfig {
    /// odin and guided: most local-search steps (kept candidates) per
    /// detection. Default 10, as in the paper.
    pub alpha: u32,
    /// odin and guided: most local-search steps per detection per
    /// pipeline stage, when that is more than `alpha` (a long pipeline
    /// needs more steps to shed work across many stages). Default 0.5:
    /// `alpha` = 10 up to 20 stages, 32 steps on 64.
    pub alpha_per_stage: f64,
    /// odin and guided: frames that must complete under a candidate before
    /// it is judged. Default 10: stage times are smoothed (the pipeline's
    /// EWMA gives the newest frame weight 0.2), so after n frames a share
    /// 0.8^n of the pre-move time still lingers; 10 frames leave about 11%,
    /// enough for a real improvement to show, while 5 leave a third and
    /// understate it.
    pub candidate_frames: u32,
    /// odin and guided: smallest relative fall of the measured bottleneck
    /// time for a candidate to be kept (0.02 = 2%). Default 0.02.
    pub improvement: f64,
    /// guided and oracle: also search over PE orders when that is cheap
    /// enough (see `oracle::optimal`). Default true.
    pub enumerate_orders: bool,
    /// The least-loaded scheduling baseline.
    pub lls: LlsConfig,
    /// The interference detector the controller runs before every policy.
    pub detector: DetectorConfig,
}

impl Default for PolicyConfig {
    fn default() -> Self {
        Self {
            alpha: 10,
            alpha_per_stage: 0.5,
            candidate_frames: 10,
            improvement: 0.02,
            enumerate_orders: true,
            lls: LlsConfig::default(),
            detector: DetectorConfig::default(),
        }
    }
}

/// Parameters of least-loaded scheduling.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LlsConfig {
    /// Foreign CPU use (in CPUs) below which an interfered PE counts as
    /// quiet again. Default 0.05.
    pub quiet_share: f64,
    /// ... for this many consecutive ticks. Default 3.
    pub quiet_ticks: u32,
}

impl Default for LlsConfig {
    fn default() -> Self {
        Self {
            quiet_share: 0.05,
            quiet_ticks: 3,
        }
    }
}

/// The most local-search steps per detection (`alpha`).
pub const MAX_ALPHA: u32 = 10_000;

/// The most frames or ticks a count parameter may ask to wait for.
pub const MAX_WAIT: u32 = 100_000;

/// The largest CPU share or relative change a threshold may give.
pub const MAX_THRESHOLD: f64 = 1000.0;

/// The most CPUs `lls.quiet_share` may give.
pub const MAX_SHARE_CPUS: f64 = 1024.0;

impl PolicyConfig {
    /// Checks the parameters make sense; the error starts with the field
    /// and gives the valid range.
    pub fn validate(&self) -> Result<(), String> {
        if !(1..=MAX_ALPHA).contains(&self.alpha) {
            return Err(format!(
                "alpha: {} must be from 1 to {MAX_ALPHA} local-search steps",
                self.alpha
            ));
        }
        if !(self.alpha_per_stage >= 0.0 && self.alpha_per_stage <= 1e3) {
            return Err(format!(
                "alpha_per_stage: {} must be a number of steps per stage in [0, 1000]",
                self.alpha_per_stage
            ));
        }
        if !(1..=MAX_WAIT).contains(&self.candidate_frames) {
            return Err(format!(
                "candidate_frames: {} must be from 1 to {MAX_WAIT} frames",
                self.candidate_frames
            ));
        }
        if !(self.improvement >= 0.0 && self.improvement < 1.0) {
            return Err(format!(
                "improvement: {} must be a fraction in [0, 1)",
                self.improvement
            ));
        }
        if !(0.0..=MAX_SHARE_CPUS).contains(&self.lls.quiet_share) {
            return Err(format!(
                "lls.quiet_share: {} must be a number of CPUs from 0 to {MAX_SHARE_CPUS}",
                self.lls.quiet_share
            ));
        }
        if !(1..=MAX_WAIT).contains(&self.lls.quiet_ticks) {
            return Err(format!(
                "lls.quiet_ticks: {} must be from 1 to {MAX_WAIT} ticks",
                self.lls.quiet_ticks
            ));
        }
        self.detector
            .validate()
            .map_err(|e| format!("detector.{e}"))?;
        let d = &self.detector;
        for (name, v) in [
            ("onset_ticks", d.onset_ticks),
            ("offset_ticks", d.offset_ticks),
            ("settle_ticks", d.settle_ticks),
        ] {
            if v > MAX_WAIT {
                return Err(format!(
                    "detector.{name}: {v} must be at most {MAX_WAIT} ticks"
                ));
            }
        }
        for (name, v) in [
            ("threshold", d.threshold),
            ("cpu_share", d.cpu_share),
            ("ipc_drop", d.ipc_drop),
            ("mpki_rise", d.mpki_rise),
        ] {
            if v > MAX_THRESHOLD {
                return Err(format!(
                    "detector.{name}: {v} must be at most {MAX_THRESHOLD}"
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_an_empty_document_is_the_default() {
        PolicyConfig::default().validate().unwrap();
        let c: PolicyConfig = serde_json::from_str("{}").unwrap();
        assert_eq!(c, PolicyConfig::default());
        let c: PolicyConfig =
            serde_json::from_str(r#"{"alpha": 3, "lls": {"quiet_ticks": 5}}"#).unwrap();
        assert_eq!((c.alpha, c.lls.quiet_ticks, c.candidate_frames), (3, 5, 10));
    }

    #[test]
    fn unknown_fields_are_rejected() {
        let e = serde_json::from_str::<PolicyConfig>(r#"{"alpah": 3}"#).unwrap_err();
        assert!(e.to_string().contains("alpah"), "{e}");
    }

    #[test]
    fn validation_names_the_field() {
        let cases: [(&str, PolicyConfig); 12] = [
            (
                "alpha",
                PolicyConfig {
                    alpha: u32::MAX,
                    ..Default::default()
                },
            ),
            (
                "candidate_frames",
                PolicyConfig {
                    candidate_frames: u32::MAX,
                    ..Default::default()
                },
            ),
            (
                "lls.quiet_share",
                PolicyConfig {
                    lls: LlsConfig {
                        quiet_share: f64::INFINITY,
                        ..Default::default()
                    },
                    ..Default::default()
                },
            ),
            (
                "detector.settle_ticks",
                PolicyConfig {
                    detector: DetectorConfig {
                        settle_ticks: u32::MAX,
                        ..Default::default()
                    },
                    ..Default::default()
                },
            ),
            (
                "detector.mpki_rise",
                PolicyConfig {
                    detector: DetectorConfig {
                        mpki_rise: 1e300,
                        ..Default::default()
                    },
                    ..Default::default()
                },
            ),
            (
                "alpha_per_stage",
                PolicyConfig {
                    alpha_per_stage: -1.0,
                    ..Default::default()
                },
            ),
            (
                "alpha",
                PolicyConfig {
                    alpha: 0,
                    ..Default::default()
                },
            ),
            (
                "candidate_frames",
                PolicyConfig {
                    candidate_frames: 0,
                    ..Default::default()
                },
            ),
            (
                "improvement",
                PolicyConfig {
                    improvement: -0.1,
                    ..Default::default()
                },
            ),
            (
                "improvement",
                PolicyConfig {
                    improvement: f64::NAN,
                    ..Default::default()
                },
            ),
            (
                "lls.quiet_ticks",
                PolicyConfig {
                    lls: LlsConfig {
                        quiet_ticks: 0,
                        ..Default::default()
                    },
                    ..Default::default()
                },
            ),
            (
                "detector.threshold",
                PolicyConfig {
                    detector: DetectorConfig {
                        threshold: 0.0,
                        ..Default::default()
                    },
                    ..Default::default()
                },
            ),
        ];
        for (field, cfg) in cases {
            let e = cfg.validate().unwrap_err();
            assert!(e.starts_with(&format!("{field}:")), "{field}: {e}");
        }
    }
}
