//! The instruction sets the engine's kernels may use, decided once per
//! process at run time.
//!
//! The CPU is asked (`is_x86_feature_detected!`), never assumed; the
//! environment variable `ODIN_ISA` (`avx512`, `avx2` or `portable`) caps
//! the choice below what the CPU has, so one machine can run, test and
//! time every kernel path, and a CPU without AVX-512 can be imitated on
//! one that has it. A cap above what the CPU has changes nothing.

use std::fmt;
use std::sync::OnceLock;

/// The environment variable that caps the kernels' instruction set.
pub const ISA_ENV: &str = "ODIN_ISA";

/// A family of kernels, ordered from the most portable to the widest.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Isa {
    /// Plain Rust, vectorised only as the compiler manages for the
    /// baseline target.
    Portable,
    /// AVX2 with FMA: 8 lanes of f32.
    Avx2,
    /// AVX-512F (with VL, BW and DQ where a kernel needs them): 16 lanes.
    Avx512,
}

impl Isa {
    /// Every family, most portable first.
    pub const ALL: [Isa; 3] = [Isa::Portable, Isa::Avx2, Isa::Avx512];

    /// The name `ODIN_ISA` takes.
    pub fn name(self) -> &'static str {
        match self {
            Isa::Portable => "portable",
            Isa::Avx2 => "avx2",
            Isa::Avx512 => "avx512",
        }
    }

    /// Parses an `ODIN_ISA` value.
    pub fn parse(s: &str) -> Option<Isa> {
        Isa::ALL
            .into_iter()
            .find(|i| i.name().eq_ignore_ascii_case(s.trim()))
    }

    /// The widest family this CPU supports.
    pub fn detected() -> Isa {
        #[cfg(target_arch = "x86_64")]
        {
            if is_x86_feature_detected!("avx512f")
                && is_x86_feature_detected!("avx512vl")
                && is_x86_feature_detected!("avx512bw")
                && is_x86_feature_detected!("avx512dq")
            {
                return Isa::Avx512;
            }
            if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
                return Isa::Avx2;
            }
        }
        Isa::Portable
    }

    /// True when this CPU can run kernels of this family.
    pub fn supported(self) -> bool {
        self <= Isa::detected()
    }

    /// The family the kernels use: the detected one, capped by `ODIN_ISA`.
    /// Decided on the first call and fixed for the life of the process.
    pub fn active() -> Isa {
        active_choice().isa
    }

    /// Why [`Isa::active`] is what it is, for logs and `odin profile`.
    pub fn active_reason() -> &'static str {
        &active_choice().reason
    }

    /// True when the active family is AVX-512 and the CPU also has
    /// AVX512-BF16 (`vdpbf16ps`), so bf16 kernels can run.
    pub fn bf16() -> bool {
        Isa::active() == Isa::Avx512 && bf16_detected()
    }
}

/// True when the CPU has AVX512-BF16, whatever `ODIN_ISA` says.
pub fn bf16_detected() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        is_x86_feature_detected!("avx512bf16")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

impl fmt::Display for Isa {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

struct Choice {
    isa: Isa,
    reason: String,
}

fn active_choice() -> &'static Choice {
    static CHOICE: OnceLock<Choice> = OnceLock::new();
    CHOICE.get_or_init(|| {
        let value = std::env::var(ISA_ENV).ok();
        let choice = choose(Isa::detected(), value.as_deref());
        tracing::debug!(isa = %choice.isa, reason = %choice.reason, "kernel instruction set");
        choice
    })
}

/// The family to use on a CPU that supports up to `detected`, given the
/// value of `ODIN_ISA` (if set).
fn choose(detected: Isa, value: Option<&str>) -> Choice {
    match value.map(|v| (v, Isa::parse(v))) {
        None => Choice {
            isa: detected,
            reason: format!("{detected}, the widest this CPU supports"),
        },
        Some((_, Some(cap))) if cap < detected => Choice {
            isa: cap,
            reason: format!("{cap}, capped by {ISA_ENV} (the CPU supports {detected})"),
        },
        Some((_, Some(cap))) => Choice {
            isa: detected,
            reason: format!("{detected}: {ISA_ENV}={cap} is not below what the CPU supports"),
        },
        Some((v, None)) => {
            let reason = format!(
                "{detected}: {ISA_ENV}={v:?} is not one of avx512, avx2, portable, so it is ignored"
            );
            tracing::warn!("{reason}");
            Choice {
                isa: detected,
                reason,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_order_is_by_width() {
        for isa in Isa::ALL {
            assert_eq!(Isa::parse(isa.name()), Some(isa));
            assert_eq!(Isa::parse(&isa.name().to_uppercase()), Some(isa));
        }
        assert_eq!(Isa::parse("sse4"), None);
        assert!(Isa::Portable < Isa::Avx2 && Isa::Avx2 < Isa::Avx512);
    }

    #[test]
    fn the_variable_caps_but_never_raises() {
        let c = choose(Isa::Avx512, Some("avx2"));
        assert_eq!(c.isa, Isa::Avx2);
        assert!(c.reason.contains("capped by ODIN_ISA"), "{}", c.reason);
        assert_eq!(choose(Isa::Avx512, Some("portable")).isa, Isa::Portable);
        assert_eq!(choose(Isa::Avx2, Some("avx512")).isa, Isa::Avx2);
        assert_eq!(choose(Isa::Portable, None).isa, Isa::Portable);
        let bad = choose(Isa::Avx2, Some("neon"));
        assert_eq!(bad.isa, Isa::Avx2);
        assert!(bad.reason.contains("\"neon\""), "{}", bad.reason);
    }

    #[test]
    fn the_active_family_runs_on_this_cpu() {
        assert!(Isa::active().supported());
        assert!(Isa::detected().supported());
        if Isa::bf16() {
            assert!(bf16_detected());
        }
    }
}
