//! The constants the snapshots record, read from the ABI crate's registry.
//!
//! The list itself is [`pvabi_abi::registry::CONSTANTS`], which the spec reads too; this module
//! only selects its released-ABI entries ([`Kind::Abi`](pvabi_abi::registry::Kind::Abi)), in
//! registry order, and maps their evolution rules to the snapshot's [`ConstRule`]. A constant
//! added to the ABI crate must be added there (`abi/tests/registry.rs` fails until it is), and
//! from then on the snapshots record it and `pvabi abi check` applies its rule.

use pvabi_abi::registry::{Evolution, CONSTANTS};

use crate::model::{ConstEntry, ConstRule};

impl From<Evolution> for ConstRule {
    fn from(rule: Evolution) -> Self {
        match rule {
            Evolution::Exact => ConstRule::Exact,
            Evolution::ValidBits => ConstRule::ValidBits,
            Evolution::Grows => ConstRule::Grows,
            Evolution::Version => ConstRule::Version,
            Evolution::Forever => ConstRule::Forever,
        }
    }
}

/// Every constant the snapshots record, in registry order: the released-ABI entries of the
/// registry, with their rules. Enumerator values the spec quotes, derived values and the 2.0
/// preview's constants are left out.
pub fn recorded() -> impl Iterator<Item = ConstEntry> {
    CONSTANTS.iter().filter_map(|c| {
        c.evolution().map(|rule| ConstEntry {
            name: c.name.to_owned(),
            value: c.value,
            rule: rule.into(),
        })
    })
}

/// The recorded constant with this name.
pub fn constant(name: &str) -> Option<ConstEntry> {
    recorded().find(|c| c.name == name)
}
