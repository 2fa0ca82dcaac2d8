//! `static`: the initial balanced placement, never changed. The baseline
//! that shows what interference costs when nobody reacts.

use super::{Action, Observation, Policy};

/// Keeps the placement it is given, forever.
#[derive(Clone, Copy, Debug, Default)]
pub struct Static;

impl Policy for Static {
    fn name(&self) -> &'static str {
        "static"
    }

    fn decide(&mut self, _obs: &Observation) -> Action {
        Action::Keep
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::detector::{Event, Kind};
    use crate::policy::testutil;

    #[test]
    fn never_changes_anything() {
        let mut p = Static;
        let mut o = testutil::obs(
            &[1.0; 4],
            &[1.0; 2],
            testutil::placement(4, &[2]),
            &[1.0, 5.0],
            0,
        );
        for t in 0..20 {
            o.frames_done = t * 10;
            o.events = match t % 3 {
                0 => vec![Event::Onset {
                    pe: 1,
                    stage: 1,
                    kind: Kind::Unknown,
                    severity: 4.0,
                    antagonists: vec![],
                }],
                1 => vec![Event::Offset { pe: 1, stage: 1 }],
                _ => vec![],
            };
            assert_eq!(p.decide(&o), Action::Keep);
        }
        assert_eq!(p.name(), "static");
    }
}
