//! The named constants the chapters may quote, read from the ABI crate's registry.
//!
//! A chapter writes `{{pvabi:NAME}}` where it needs a number; rendering replaces the token with
//! the constant's formatted value, so prose never types an ABI number. Any entry of
//! [`pvabi_abi::registry::CONSTANTS`] may be quoted (the registry holds the name, value,
//! [`Format`] and one-line doc); the same registry renders the constants tables, one per
//! [`Module`] that has one (see [`tabulated`]). This module only adds the spec's side: how a
//! value is written, the tables, and the token substitution.

use std::fmt::Write as _;

use pvabi_abi::registry::{self, CONSTANTS};
pub use pvabi_abi::registry::{Constant, Format, Module};
use pvabi_abi::version::Version;

/// The value of a registry entry as the spec writes it.
pub trait Text {
    /// The value as the spec writes it: `0x5650`, `bit 0`, `bits 4:1`, `1.1`, ...
    fn text(&self) -> String;
}

impl Text for Constant {
    fn text(&self) -> String {
        match self.format {
            Format::Dec => self.value.to_string(),
            Format::Hex => format!("0x{:x}", self.value),
            Format::Bit => format!("bit {}", self.value.trailing_zeros()),
            Format::Mask => mask_text(self.value),
            Format::Version => Version(self.value as u32).to_string(),
            Format::Text(t) => t.to_string(),
        }
    }
}

/// The bit ranges set in `mask`, high first: `bits 4:1`, `bit 0`, `bits 31:0`; `none` if 0.
pub fn mask_text(mask: u64) -> String {
    let ranges = bit_ranges(mask);
    if ranges.is_empty() {
        return "none".to_string();
    }
    let parts: Vec<String> = ranges
        .iter()
        .map(|&(hi, lo)| {
            if hi == lo {
                format!("bit {lo}")
            } else {
                format!("bits {hi}:{lo}")
            }
        })
        .collect();
    parts.join(", ")
}

/// The runs of set bits in `mask` as `(high, low)` pairs, highest run first.
pub fn bit_ranges(mask: u64) -> Vec<(u32, u32)> {
    let mut ranges = Vec::new();
    let mut bit = 0;
    while bit < 64 {
        if mask & (1 << bit) != 0 {
            let lo = bit;
            while bit < 64 && mask & (1 << bit) != 0 {
                bit += 1;
            }
            ranges.push((bit - 1, lo));
        } else {
            bit += 1;
        }
    }
    ranges.reverse();
    ranges
}

/// Whether the spec has a constants table for the module's entries (in
/// `generated/constants.md`, anchored by [`Module::name`]). The feature bits have their own
/// table (`generated/features.md`) and the 2.0 preview has none; their entries can still be
/// quoted.
pub const fn tabulated(module: Module) -> bool {
    match module {
        Module::Discovery
        | Module::Convention
        | Module::Version
        | Module::Base
        | Module::Console
        | Module::Time
        | Module::Events
        | Module::Memory
        | Module::Vcpu
        | Module::System
        | Module::Batch => true,
        Module::Features | Module::Preview2 | Module::Platform => false,
    }
}

/// The modules with a constants table, in book order.
pub fn tables() -> impl Iterator<Item = Module> {
    Module::ALL.into_iter().filter(|&m| tabulated(m))
}

/// Entries a constants table lists before the rest of its module's entries, in this order.
/// The tables otherwise follow registry order, which is the order of the snapshots; these
/// keep the order the book had before the registry existed.
const TABLE_FIRST: &[&str] = &["SPEC_VERSION", "SPEC_VERSION_RAW", "SHARE_MAX_PAGES"];

/// Every constant the chapters may quote: the whole registry.
pub fn constants() -> &'static [Constant] {
    CONSTANTS
}

/// Looks a constant up by name.
pub fn lookup(name: &str) -> Option<&'static Constant> {
    registry::get(name)
}

/// The token pattern: `{{pvabi:NAME}}`.
pub const TOKEN: &str = r"\{\{pvabi:([A-Za-z0-9_:]+)\}\}";

/// Replaces every `{{pvabi:NAME}}` in `text` with the constant's value. Unknown names are
/// returned as errors (and left in place).
pub fn substitute(text: &str) -> (String, Vec<String>) {
    let re = regex::Regex::new(TOKEN).expect("valid regex");
    let all = constants();
    let mut unknown = Vec::new();
    let out = re.replace_all(text, |caps: &regex::Captures<'_>| {
        match all.iter().find(|c| c.name == &caps[1]) {
            Some(c) => c.text(),
            None => {
                unknown.push(caps[1].to_string());
                caps[0].to_string()
            }
        }
    });
    (out.into_owned(), unknown)
}

/// The constants table of one module, as Markdown.
pub fn table(module: Module) -> String {
    let mut rows: Vec<&Constant> = constants().iter().filter(|k| k.module == module).collect();
    rows.sort_by_key(|k| {
        TABLE_FIRST
            .iter()
            .position(|&n| n == k.name)
            .unwrap_or(TABLE_FIRST.len())
    });
    let mut out = String::from("| Constant | Value | Meaning |\n|---|---|---|\n");
    for k in rows {
        let _ = writeln!(out, "| `{}` | `{}` | {} |", k.name, k.text(), k.doc);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use pvabi_abi::convention::DOORBELL_PORT;

    #[test]
    fn formats() {
        assert_eq!(mask_text(0b1_1110), "bits 4:1");
        assert_eq!(mask_text(0xffff_ffff), "bits 31:0");
        assert_eq!(mask_text(0), "none");
        assert_eq!(mask_text(0b101), "bit 2, bit 0");
        assert_eq!(
            lookup("DOORBELL_PORT").unwrap().text(),
            format!("0x{DOORBELL_PORT:x}")
        );
        assert_eq!(lookup("SQ_NEED_WAKEUP").unwrap().text(), "bit 0");
    }

    #[test]
    fn names_are_unique() {
        let all = constants();
        for (i, a) in all.iter().enumerate() {
            assert!(
                all[i + 1..].iter().all(|b| b.name != a.name),
                "{} twice",
                a.name
            );
        }
    }

    #[test]
    fn substitutes_known_tokens() {
        let (text, unknown) = substitute("port {{pvabi:DOORBELL_PORT}}, {{pvabi:NOPE}}");
        assert_eq!(
            text,
            format!("port 0x{DOORBELL_PORT:x}, {{{{pvabi:NOPE}}}}")
        );
        assert_eq!(unknown, ["NOPE"]);
    }

    #[test]
    fn table_first_names_tabulated_entries() {
        for name in TABLE_FIRST {
            let c = lookup(name).unwrap_or_else(|| panic!("{name} is not in the registry"));
            assert!(tabulated(c.module), "{name} is in no table");
        }
    }
}
