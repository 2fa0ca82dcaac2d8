//! CPU sets in the kernel's list syntax: `"0"`, `"2-3"`, `"0,4-7"`.

use std::collections::BTreeSet;
use std::fmt;
use std::str::FromStr;

/// Why a CPU list does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CpuListError {
    /// The list names no CPU.
    #[error("empty CPU list")]
    Empty,
    /// An element is not a number or a range of numbers.
    #[error("{0:?} is not a CPU number or range (expected e.g. \"0\", \"2-3\", \"0,4-7\")")]
    Syntax(String),
    /// A range runs backwards.
    #[error("range {0:?} ends before it starts")]
    Reversed(String),
    /// A CPU number beyond what any kernel supports.
    #[error("CPU {0} is out of range (at most {max})", max = CpuSet::MAX_CPU)]
    TooLarge(usize),
}

/// An ordered set of CPU numbers.
#[derive(Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CpuSet(BTreeSet<usize>);

/// Debug output is the CPU list, quoted (`"0-3,8"`), as state dumps and
/// test failures read best.
impl std::fmt::Debug for CpuSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "\"{self}\"")
    }
}

impl CpuSet {
    /// Highest CPU number accepted (the kernel's NR_CPUS ceiling).
    pub const MAX_CPU: usize = 8191;

    /// A set of the given CPUs.
    pub fn from_cpus(cpus: impl IntoIterator<Item = usize>) -> Self {
        Self(cpus.into_iter().collect())
    }

    /// One CPU.
    pub fn single(cpu: usize) -> Self {
        Self::from_cpus([cpu])
    }

    /// The CPUs in ascending order.
    pub fn iter(&self) -> impl Iterator<Item = usize> + '_ {
        self.0.iter().copied()
    }

    /// Number of CPUs.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// True when the set is empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// True when `cpu` is in the set.
    pub fn contains(&self, cpu: usize) -> bool {
        self.0.contains(&cpu)
    }

    /// True when every CPU of `self` is in `other`.
    pub fn is_subset(&self, other: &CpuSet) -> bool {
        self.0.is_subset(&other.0)
    }

    /// CPUs in both `self` and `other`.
    pub fn intersection(&self, other: &CpuSet) -> CpuSet {
        CpuSet(self.0.intersection(&other.0).copied().collect())
    }

    /// CPUs of `self` that are not in `other`.
    pub fn difference(&self, other: &CpuSet) -> CpuSet {
        CpuSet(self.0.difference(&other.0).copied().collect())
    }
}

impl FromStr for CpuSet {
    type Err = CpuListError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut set = BTreeSet::new();
        let s = s.trim();
        if s.is_empty() {
            return Err(CpuListError::Empty);
        }
        for part in s.split(',') {
            let part = part.trim();
            let num = |t: &str| -> Result<usize, CpuListError> {
                let n: usize = t
                    .trim()
                    .parse()
                    .map_err(|_| CpuListError::Syntax(part.to_string()))?;
                if n > Self::MAX_CPU {
                    return Err(CpuListError::TooLarge(n));
                }
                Ok(n)
            };
            match part.split_once('-') {
                Some((a, b)) => {
                    let (a, b) = (num(a)?, num(b)?);
                    if b < a {
                        return Err(CpuListError::Reversed(part.to_string()));
                    }
                    set.extend(a..=b);
                }
                None => {
                    set.insert(num(part)?);
                }
            }
        }
        Ok(Self(set))
    }
}

impl fmt::Display for CpuSet {
    /// Formats with ranges collapsed: `{0,1,2,5}` is `"0-2,5"`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        let mut it = self.0.iter().copied().peekable();
        while let Some(start) = it.next() {
            let mut end = start;
            while it.peek() == Some(&(end + 1)) {
                end = it.next().expect("peeked");
            }
            if !first {
                f.write_str(",")?;
            }
            first = false;
            if end == start {
                write!(f, "{start}")?;
            } else {
                write!(f, "{start}-{end}")?;
            }
        }
        Ok(())
    }
}

impl FromIterator<usize> for CpuSet {
    fn from_iter<I: IntoIterator<Item = usize>>(iter: I) -> Self {
        Self::from_cpus(iter)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_the_kernel_syntax() {
        let cases: &[(&str, &[usize])] = &[
            ("0", &[0]),
            ("2-3", &[2, 3]),
            ("0,4-7", &[0, 4, 5, 6, 7]),
            (" 1 , 1-2 ", &[1, 2]),
            ("5-5", &[5]),
        ];
        for (text, cpus) in cases {
            let set: CpuSet = text.parse().unwrap();
            assert_eq!(set.iter().collect::<Vec<_>>(), *cpus, "{text}");
        }
    }

    #[test]
    fn rejects_bad_lists_with_the_reason() {
        assert_eq!("".parse::<CpuSet>(), Err(CpuListError::Empty));
        assert_eq!("a".parse::<CpuSet>(), Err(CpuListError::Syntax("a".into())));
        assert_eq!(
            "1,,2".parse::<CpuSet>(),
            Err(CpuListError::Syntax("".into()))
        );
        assert_eq!(
            "3-1".parse::<CpuSet>(),
            Err(CpuListError::Reversed("3-1".into()))
        );
        assert_eq!(
            "1-2-3".parse::<CpuSet>(),
            Err(CpuListError::Syntax("1-2-3".into()))
        );
        assert_eq!(
            "-1".parse::<CpuSet>(),
            Err(CpuListError::Syntax("-1".into()))
        );
        assert_eq!("9000".parse::<CpuSet>(), Err(CpuListError::TooLarge(9000)));
    }

    proptest! {
        #[test]
        fn display_round_trips(cpus in proptest::collection::btree_set(0usize..64, 1..20)) {
            let set = CpuSet::from_cpus(cpus.iter().copied());
            let text = set.to_string();
            prop_assert_eq!(text.parse::<CpuSet>().unwrap(), set);
            // Collapsed: no two adjacent singletons in the text.
            for w in text.split(',').collect::<Vec<_>>().windows(2) {
                if let (Ok(a), Ok(b)) = (w[0].parse::<usize>(), w[1].parse::<usize>()) {
                    prop_assert!(b > a + 1, "{} not collapsed", text);
                }
            }
        }
    }
}
