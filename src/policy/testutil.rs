//! Synthetic observations for the policy tests.

use super::cost::CostModel;
use super::{Observation, PeSignals, Placement, Slo, StageSignals};

/// An observation of `placement` over units `unit_ms` on PEs of nominal
/// speeds `pe_speed`, each slowed by `slowdown[pe]`: every stage's service
/// time is exactly its modelled time at the true speeds (what a settled
/// smoothed time would read), its expected time the idle-PE one. Empty
/// stages have no service time.
pub fn obs(
    unit_ms: &[f64],
    pe_speed: &[f64],
    placement: Placement,
    slowdown: &[f64],
    frames_done: u64,
) -> Observation {
    let truth: Vec<f64> = pe_speed.iter().zip(slowdown).map(|(v, s)| v / s).collect();
    let m = CostModel::new(unit_ms);
    let times = m.stage_times(&placement, &truth);
    let stages = (0..placement.stages())
        .map(|s| {
            let r = placement.range(s);
            let pe = placement.mapping[s];
            StageSignals {
                pe,
                service_ms: (!r.is_empty()).then_some(times[s]),
                expected_ms: m.range_ms(r) / pe_speed[pe],
            }
        })
        .collect();
    Observation {
        t: 0.0,
        unit_ms: unit_ms.to_vec(),
        pe_speed: pe_speed.to_vec(),
        placement,
        stages,
        pes: vec![PeSignals::default(); pe_speed.len()],
        events: Vec::new(),
        frames_done,
        throughput_fps: None,
        p99_latency_ms: None,
        slo: Slo::default(),
        true_speed: Some(truth),
    }
}

/// Stage `s` on PE `s`, cut at `cuts`.
pub fn placement(units: usize, cuts: &[usize]) -> Placement {
    Placement {
        units,
        cuts: cuts.to_vec(),
        mapping: (0..=cuts.len()).collect(),
    }
}

/// An onset of unknown kind on stage `stage`'s own PE (PE index = stage).
pub fn onset(stage: usize) -> super::detector::Event {
    super::detector::Event::Onset {
        pe: stage,
        stage,
        kind: super::detector::Kind::Unknown,
        severity: 1.0,
        antagonists: vec![],
    }
}
