//! placeholder

use super::Builder;

/// The op types this family supports.
pub(super) const OPS: &[(&str, Builder)] = &[];
