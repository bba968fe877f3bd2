//! Comparing two snapshots and classifying each difference.
//!
//! [`diff`] lists every difference between an older and a newer snapshot, each classified as
//! an [`Addition`](ChangeKind::Addition) (compatible: allowed in a minor version), a
//! [`Breaking`](ChangeKind::Breaking) change (needs a new major version) or
//! [`Neutral`](ChangeKind::Neutral) (no effect on the ABI, such as a renamed argument).
//!
//! The classification, in the spirit of libabigail's split between "ABI change" and
//! "incompatible ABI change":
//!
//! | what | addition | breaking | none |
//! |---|---|---|---|
//! | calls | a new call with a new code | removed, renamed, renumbered, moved family or feature, `since` changed, any change of a block, `batchable`, `deferral`, `sync_point`, `returns` | |
//! | arguments | a mask check that accepts more bits (reserved bits taking a meaning) | added, removed, register or any other check changed | renamed |
//! | results | a new result register (older guests ignore it) | removed, register changed | renamed |
//! | structures | a new structure; a new field in bytes that were reserved | removed, renamed, size, alignment or C name changed; a field removed, renamed, moved (swapped), resized or retyped | reserved fields rearranged over the same bytes |
//! | statuses, enum values | a new name with an unused value | removed, renamed, value changed or reused | |
//! | features | a new bit never used before | removed, renamed, moved, reused, `since` changed | |
//! | constants | new; `valid_bits` gaining bits; `grows` rising | removed, any other value change | `version` constants |
//! | CPUID | a new leaf; a new field in unused bits; a reserved register described | signature changed, leaf removed, a field moved or dropped | descriptions reworded |
//!
//! Descriptor changes are strict on purpose: making a call batchable, deferrable or a sync
//! point changes what a host must accept and when deferred work runs, so it is a major change.
//!
//! Some breaking changes also break a rule that holds across major versions; they carry the
//! requirement in [`Change::violates`]: reusing a call code, status value or feature bit for
//! another meaning (PVABI-VER-003), and changing the Base family or the discovery leaves and
//! constants (PVABI-VER-004).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::model::{
    parse_bit_range, CallEntry, ConstEntry, ConstRule, CpuidEntry, CpuidFieldEntry, FeatureEntry,
    FieldEntry, NamedValue, Snapshot, StructEntry,
};

/// Requirement: call codes, status values and feature bits are never reused for another
/// meaning, even across major versions.
pub const VER_NO_REUSE: &str = "PVABI-VER-003";
/// Requirement: the Base family and the discovery leaves never change.
pub const VER_BASE_FROZEN: &str = "PVABI-VER-004";

/// The class of a difference.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChangeKind {
    /// A compatible addition: needs a minor version.
    Addition,
    /// A breaking change: needs a major version.
    Breaking,
    /// No effect on the ABI.
    #[serde(rename = "none")]
    Neutral,
}

impl fmt::Display for ChangeKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ChangeKind::Addition => "addition",
            ChangeKind::Breaking => "breaking",
            ChangeKind::Neutral => "none",
        })
    }
}

/// One difference between two snapshots.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Change {
    /// Its class.
    pub kind: ChangeKind,
    /// What changed, as a path into the snapshot (`calls.CONSOLE_WRITE.code`).
    pub path: String,
    /// The old value, if there was one.
    pub old: Option<String>,
    /// The new value, if there is one.
    pub new: Option<String>,
    /// One sentence saying what changed.
    pub explanation: String,
    /// Requirements that the change breaks even across major versions.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub violates: Vec<String>,
}

impl fmt::Display for Change {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.explanation)?;
        if !self.violates.is_empty() {
            write!(f, " (violates {})", self.violates.join(", "))?;
        }
        Ok(())
    }
}

/// The changes as pretty JSON (an array) with a trailing newline.
pub fn changes_to_json(changes: &[Change]) -> String {
    let mut s = serde_json::to_string_pretty(changes).expect("changes always serialize");
    s.push('\n');
    s
}

/// Lists every difference from `old` to `new`, classified.
pub fn diff(old: &Snapshot, new: &Snapshot) -> Vec<Change> {
    let mut d = Differ::default();
    d.calls(&old.calls, &new.calls);
    d.structs(&old.structs, &new.structs);
    d.values(
        "statuses",
        "status",
        &old.statuses,
        &new.statuses,
        &[VER_NO_REUSE],
        &[],
    );
    d.features(&old.features, &new.features);
    for (name, old_values) in &old.enums {
        // PROBE_CALL's CallState is part of the Base family.
        let frozen: &[&str] = if name == "CallState" {
            &[VER_BASE_FROZEN]
        } else {
            &[]
        };
        match new.enums.get(name) {
            Some(new_values) => d.values(
                &format!("enums.{name}"),
                &format!("{name} value"),
                old_values,
                new_values,
                &[],
                frozen,
            ),
            None => {
                d.push(
                    ChangeKind::Breaking,
                    format!("enums.{name}"),
                    Some(name.clone()),
                    None,
                    format!("The enumeration {name} was removed."),
                )
                .violate(frozen);
            }
        }
    }
    for name in new.enums.keys().filter(|n| !old.enums.contains_key(*n)) {
        d.push(
            ChangeKind::Addition,
            format!("enums.{name}"),
            None,
            Some(name.clone()),
            format!("New enumeration {name}."),
        );
    }
    d.constants(&old.constants, &new.constants);
    d.cpuid(&old.cpuid, &new.cpuid);
    d.out
}

#[derive(Default)]
struct Differ {
    out: Vec<Change>,
}

fn hex(code: u32) -> String {
    format!("{code:#06x}")
}

fn describe_call(c: &CallEntry) -> String {
    let args: Vec<&str> = c.args.iter().map(|a| a.name.as_str()).collect();
    format!(
        "{}({}) {}, family {}, feature {}, since {}",
        c.name,
        args.join(", "),
        hex(c.code),
        c.family,
        c.feature.as_deref().unwrap_or("none"),
        c.since
    )
}

fn describe_field(f: &FieldEntry) -> String {
    format!("{}: {} at {} ({} bytes)", f.name, f.ty, f.offset, f.size)
}

fn opt<T: fmt::Display>(v: &Option<T>) -> String {
    match v {
        Some(v) => v.to_string(),
        None => "none".to_owned(),
    }
}

impl Change {
    fn violate(&mut self, reqs: &[&str]) -> &mut Self {
        if self.kind == ChangeKind::Breaking {
            for r in reqs {
                if !self.violates.iter().any(|v| v == r) {
                    self.violates.push((*r).to_owned());
                }
            }
        }
        self
    }
}

impl Differ {
    fn push(
        &mut self,
        kind: ChangeKind,
        path: String,
        old: Option<String>,
        new: Option<String>,
        explanation: String,
    ) -> &mut Change {
        self.out.push(Change {
            kind,
            path,
            old,
            new,
            explanation,
            violates: Vec::new(),
        });
        self.out.last_mut().expect("just pushed")
    }

    fn breaking<O: fmt::Display, N: fmt::Display>(
        &mut self,
        path: String,
        old: O,
        new: N,
        explanation: String,
    ) -> &mut Change {
        self.push(
            ChangeKind::Breaking,
            path,
            Some(old.to_string()),
            Some(new.to_string()),
            explanation,
        )
    }

    // ---------------------------------------------------------------- calls

    fn calls(&mut self, old: &[CallEntry], new: &[CallEntry]) {
        let old_names: BTreeSet<&str> = old.iter().map(|c| c.name.as_str()).collect();
        let new_by_name: BTreeMap<&str, &CallEntry> =
            new.iter().map(|c| (c.name.as_str(), c)).collect();
        let old_by_code: BTreeMap<u32, &CallEntry> = old.iter().map(|c| (c.code, c)).collect();
        let new_by_code: BTreeMap<u32, &CallEntry> = new.iter().map(|c| (c.code, c)).collect();
        let mut handled: BTreeSet<&str> = BTreeSet::new();
        for o in old {
            let frozen: &[&str] = if o.family == "BASE" {
                &[VER_BASE_FROZEN]
            } else {
                &[]
            };
            let path = format!("calls.{}", o.name);
            if let Some(n) = new_by_name.get(o.name.as_str()) {
                let start = self.out.len();
                self.call(&path, o, n);
                for c in &mut self.out[start..] {
                    c.violate(frozen);
                }
            } else if let Some(n) = new_by_code
                .get(&o.code)
                .filter(|n| !old_names.contains(n.name.as_str()))
            {
                handled.insert(n.name.as_str());
                self.breaking(
                    path,
                    &o.name,
                    &n.name,
                    format!(
                        "Call {} ({}) is now named {}: a rename breaks C code, and a new call \
                         must not reuse an old call's code.",
                        o.name,
                        hex(o.code),
                        n.name
                    ),
                )
                .violate(&[VER_NO_REUSE])
                .violate(frozen);
            } else {
                self.push(
                    ChangeKind::Breaking,
                    path,
                    Some(describe_call(o)),
                    None,
                    format!("Call {} ({}) was removed.", o.name, hex(o.code)),
                )
                .violate(frozen);
            }
        }
        for n in new {
            if old_names.contains(n.name.as_str()) || handled.contains(n.name.as_str()) {
                continue;
            }
            let path = format!("calls.{}", n.name);
            if let Some(o) = old_by_code.get(&n.code) {
                self.breaking(
                    format!("{path}.code"),
                    format!("{} {}", hex(o.code), o.name),
                    format!("{} {}", hex(n.code), n.name),
                    format!(
                        "New call {} reuses code {} of {}.",
                        n.name,
                        hex(n.code),
                        o.name
                    ),
                )
                .violate(&[VER_NO_REUSE]);
            } else {
                self.push(
                    ChangeKind::Addition,
                    path,
                    None,
                    Some(describe_call(n)),
                    format!(
                        "New call {} ({}) in family {}, feature {}, since {}.",
                        n.name,
                        hex(n.code),
                        n.family,
                        n.feature.as_deref().unwrap_or("none"),
                        n.since
                    ),
                );
            }
        }
    }

    fn call(&mut self, path: &str, o: &CallEntry, n: &CallEntry) {
        let name = &o.name;
        if o.code != n.code {
            self.breaking(
                format!("{path}.code"),
                hex(o.code),
                hex(n.code),
                format!(
                    "{name} was renumbered from {} to {}.",
                    hex(o.code),
                    hex(n.code)
                ),
            );
        }
        if o.family != n.family {
            self.breaking(
                format!("{path}.family"),
                &o.family,
                &n.family,
                format!("{name} moved from family {} to {}.", o.family, n.family),
            );
        }
        if o.feature != n.feature {
            self.breaking(
                format!("{path}.feature"),
                opt(&o.feature),
                opt(&n.feature),
                format!(
                    "{name} now needs feature {} instead of {}.",
                    opt(&n.feature),
                    opt(&o.feature)
                ),
            );
        }
        if o.since != n.since {
            self.breaking(
                format!("{path}.since"),
                o.since,
                n.since,
                format!(
                    "{name} now says it was introduced in {} instead of {}; a call keeps the \
                     version that introduced it.",
                    n.since, o.since
                ),
            );
        }
        for i in 0..o.args.len().max(n.args.len()) {
            let p = format!("{path}.args[{i}]");
            match (o.args.get(i), n.args.get(i)) {
                (Some(a), Some(b)) => {
                    if a.name != b.name {
                        self.push(
                            ChangeKind::Neutral,
                            format!("{p}.name"),
                            Some(a.name.clone()),
                            Some(b.name.clone()),
                            format!(
                                "Argument a{i} of {name} was renamed from {} to {} (the wire is \
                                 unchanged).",
                                a.name, b.name
                            ),
                        );
                    }
                    if a.register != b.register {
                        self.breaking(
                            format!("{p}.register"),
                            &a.register,
                            &b.register,
                            format!(
                                "Argument {} of {name} moved from {} to {}.",
                                b.name, a.register, b.register
                            ),
                        );
                    }
                    if a.check != b.check {
                        use crate::model::CheckEntry::Mask;
                        match (a.check, b.check) {
                            (Mask { mask: m0 }, Mask { mask: m1 }) if m1 & m0 == m0 => {
                                self.push(
                                    ChangeKind::Addition,
                                    format!("{p}.check"),
                                    Some(a.check.to_string()),
                                    Some(b.check.to_string()),
                                    format!(
                                        "Argument {} of {name} now accepts bits {:#x}, which \
                                         were reserved.",
                                        b.name,
                                        m1 & !m0
                                    ),
                                );
                            }
                            _ => {
                                self.breaking(
                                    format!("{p}.check"),
                                    a.check,
                                    b.check,
                                    format!(
                                        "Argument {} of {name} is now checked as {} instead of \
                                         {}.",
                                        b.name, b.check, a.check
                                    ),
                                );
                            }
                        }
                    }
                }
                (Some(a), None) => {
                    self.push(
                        ChangeKind::Breaking,
                        p,
                        Some(format!("{} in {}", a.name, a.register)),
                        None,
                        format!(
                            "Argument {} ({}) of {name} was removed.",
                            a.name, a.register
                        ),
                    );
                }
                (None, Some(b)) => {
                    self.push(
                        ChangeKind::Breaking,
                        p,
                        None,
                        Some(format!("{} in {}", b.name, b.register)),
                        format!(
                            "{name} now reads argument {} from {}, which older guests leave \
                             unspecified.",
                            b.name, b.register
                        ),
                    );
                }
                (None, None) => {}
            }
        }
        for i in 0..o.results.len().max(n.results.len()) {
            let p = format!("{path}.results[{i}]");
            match (o.results.get(i), n.results.get(i)) {
                (Some(a), Some(b)) => {
                    if a.name != b.name {
                        self.push(
                            ChangeKind::Neutral,
                            format!("{p}.name"),
                            Some(a.name.clone()),
                            Some(b.name.clone()),
                            format!(
                                "Result r{i} of {name} was renamed from {} to {} (the wire is \
                                 unchanged).",
                                a.name, b.name
                            ),
                        );
                    }
                    if a.register != b.register {
                        self.breaking(
                            format!("{p}.register"),
                            &a.register,
                            &b.register,
                            format!(
                                "Result {} of {name} moved from {} to {}.",
                                b.name, a.register, b.register
                            ),
                        );
                    }
                }
                (Some(a), None) => {
                    self.push(
                        ChangeKind::Breaking,
                        p,
                        Some(format!("{} in {}", a.name, a.register)),
                        None,
                        format!(
                            "Result {} ({}) of {name} was removed; guests read it.",
                            a.name, a.register
                        ),
                    );
                }
                (None, Some(b)) => {
                    self.push(
                        ChangeKind::Addition,
                        p,
                        None,
                        Some(format!("{} in {}", b.name, b.register)),
                        format!(
                            "{name} now also returns {} in {}; older guests do not read it.",
                            b.name, b.register
                        ),
                    );
                }
                (None, None) => {}
            }
        }
        if o.block != n.block {
            self.breaking(
                format!("{path}.block"),
                opt(&o.block),
                opt(&n.block),
                format!(
                    "The memory block of {name} changed from {} to {}.",
                    opt(&o.block),
                    opt(&n.block)
                ),
            );
        }
        let flags = [
            ("batchable", o.batchable, n.batchable, "batchable"),
            ("sync_point", o.sync_point, n.sync_point, "a sync point"),
            ("returns", o.returns, n.returns, "returning"),
        ];
        for (field, was, is, what) in flags {
            if was != is {
                self.breaking(
                    format!("{path}.{field}"),
                    was,
                    is,
                    format!(
                        "{name} is {}{what} now.",
                        if is { "" } else { "no longer " }
                    ),
                );
            }
        }
        if o.deferral != n.deferral {
            self.breaking(
                format!("{path}.deferral"),
                o.deferral,
                n.deferral,
                format!(
                    "The deferral class of {name} changed from {} to {}.",
                    o.deferral, n.deferral
                ),
            );
        }
    }

    // ---------------------------------------------------------------- structures

    fn structs(&mut self, old: &[StructEntry], new: &[StructEntry]) {
        for o in old {
            let path = format!("structs.{}", o.name);
            match new.iter().find(|n| n.name == o.name) {
                Some(n) => self.structure(&path, o, n),
                None => {
                    self.push(
                        ChangeKind::Breaking,
                        path,
                        Some(format!("{} ({} bytes)", o.c_name, o.size)),
                        None,
                        format!("Structure {} ({}) was removed.", o.name, o.c_name),
                    );
                }
            }
        }
        for n in new.iter().filter(|n| !old.iter().any(|o| o.name == n.name)) {
            self.push(
                ChangeKind::Addition,
                format!("structs.{}", n.name),
                None,
                Some(format!("{} ({} bytes)", n.c_name, n.size)),
                format!(
                    "New structure {} ({}, {} bytes, {} fields).",
                    n.name,
                    n.c_name,
                    n.size,
                    n.fields.len()
                ),
            );
        }
    }

    fn structure(&mut self, path: &str, o: &StructEntry, n: &StructEntry) {
        let name = &o.name;
        if o.c_name != n.c_name {
            self.breaking(
                format!("{path}.c_name"),
                &o.c_name,
                &n.c_name,
                format!(
                    "The C name of {name} changed from {} to {}.",
                    o.c_name, n.c_name
                ),
            );
        }
        if o.size != n.size {
            self.breaking(
                format!("{path}.size"),
                o.size,
                n.size,
                format!(
                    "The size of {name} changed from {} to {} bytes.",
                    o.size, n.size
                ),
            );
        }
        if o.align != n.align {
            self.breaking(
                format!("{path}.align"),
                o.align,
                n.align,
                format!(
                    "The alignment of {name} changed from {} to {}.",
                    o.align, n.align
                ),
            );
        }
        let old_names: BTreeSet<&str> = o.fields.iter().map(|f| f.name.as_str()).collect();
        let old_fields: Vec<&FieldEntry> = o.fields.iter().filter(|f| !f.is_reserved()).collect();
        let old_field_names: BTreeSet<&str> = old_fields.iter().map(|f| f.name.as_str()).collect();
        let mut matched: BTreeSet<&str> = BTreeSet::new();
        // Fields whose offset changed: (name, old offset, new offset, index of the change).
        let mut moves: Vec<(&str, usize, usize, usize)> = Vec::new();
        for f in &old_fields {
            let p = format!("{path}.fields.{}", f.name);
            if let Some(g) = n.fields.iter().find(|g| g.name == f.name) {
                if g.offset != f.offset {
                    moves.push((&f.name, f.offset, g.offset, self.out.len()));
                    self.breaking(
                        format!("{p}.offset"),
                        f.offset,
                        g.offset,
                        format!(
                            "Field {name}.{} moved from offset {} to {}.",
                            f.name, f.offset, g.offset
                        ),
                    );
                }
                if g.size != f.size {
                    self.breaking(
                        format!("{p}.size"),
                        f.size,
                        g.size,
                        format!(
                            "Field {name}.{} changed size from {} to {} bytes.",
                            f.name, f.size, g.size
                        ),
                    );
                }
                if g.ty != f.ty {
                    let why = if g.is_reserved() {
                        format!("Field {name}.{} is now reserved ({}).", f.name, g.ty)
                    } else {
                        format!(
                            "Field {name}.{} changed type from {} to {}.",
                            f.name, f.ty, g.ty
                        )
                    };
                    self.breaking(format!("{p}.ty"), &f.ty, &g.ty, why);
                }
            } else if let Some(g) = n.fields.iter().find(|g| {
                g.offset == f.offset && g.size == f.size && !old_names.contains(g.name.as_str())
            }) {
                matched.insert(&g.name);
                let why = if g.is_reserved() {
                    format!(
                        "Field {name}.{} was removed (its bytes are now the reserved field {}).",
                        f.name, g.name
                    )
                } else {
                    format!(
                        "Field {name}.{} was renamed to {} (C code names it).",
                        f.name, g.name
                    )
                };
                self.breaking(p, describe_field(f), describe_field(g), why);
            } else {
                self.push(
                    ChangeKind::Breaking,
                    p,
                    Some(describe_field(f)),
                    None,
                    format!(
                        "Field {name}.{} ({} at offset {}) was removed.",
                        f.name, f.ty, f.offset
                    ),
                );
            }
        }
        // Two fields that exchanged offsets were swapped: say so.
        for &(a, a_from, a_to, idx) in &moves {
            if let Some(&(b, ..)) = moves
                .iter()
                .find(|&&(b, b_from, b_to, _)| b != a && b_from == a_to && b_to == a_from)
            {
                self.out[idx].explanation = format!(
                    "Fields {name}.{a} and {name}.{b} were swapped: {a} moved from offset {a_from} \
                     to {a_to}."
                );
            }
        }
        // Bytes that were reserved in the old layout.
        let mut reserved = vec![false; o.size];
        for f in o.fields.iter().filter(|f| f.is_reserved()) {
            for b in reserved.iter_mut().skip(f.offset).take(f.size) {
                *b = true;
            }
        }
        let within_reserved = |g: &FieldEntry| {
            g.size > 0 && (g.offset..g.offset + g.size).all(|b| reserved.get(b) == Some(&true))
        };
        let mut taken = false;
        for g in n.fields.iter().filter(|g| {
            !g.is_reserved()
                && !old_field_names.contains(g.name.as_str())
                && !matched.contains(g.name.as_str())
        }) {
            let p = format!("{path}.fields.{}", g.name);
            if within_reserved(g) {
                taken = true;
                self.push(
                    ChangeKind::Addition,
                    p,
                    None,
                    Some(describe_field(g)),
                    format!(
                        "New field {name}.{} ({}) takes bytes {}..{} that were reserved.",
                        g.name,
                        g.ty,
                        g.offset,
                        g.offset + g.size
                    ),
                );
            } else {
                self.push(
                    ChangeKind::Breaking,
                    p,
                    None,
                    Some(describe_field(g)),
                    format!(
                        "New field {name}.{} at offset {} occupies bytes that were not reserved.",
                        g.name, g.offset
                    ),
                );
            }
        }
        let reserved_of = |s: &StructEntry| -> Vec<FieldEntry> {
            s.fields
                .iter()
                .filter(|f| f.is_reserved())
                .cloned()
                .collect()
        };
        if !taken && reserved_of(o) != reserved_of(n) {
            let mut now = vec![false; n.size];
            for f in n.fields.iter().filter(|f| f.is_reserved()) {
                for b in now.iter_mut().skip(f.offset).take(f.size) {
                    *b = true;
                }
            }
            if now == reserved {
                let list = |s: &StructEntry| {
                    reserved_of(s)
                        .iter()
                        .map(describe_field)
                        .collect::<Vec<_>>()
                        .join("; ")
                };
                self.push(
                    ChangeKind::Neutral,
                    format!("{path}.reserved"),
                    Some(list(o)),
                    Some(list(n)),
                    format!("The reserved fields of {name} were rearranged over the same bytes."),
                );
            }
        }
    }

    // ---------------------------------------------------------------- named values

    /// Statuses and enumeration values: names with unique values. `reuse` lists the
    /// requirements a reused value breaks across majors, `frozen` those any breaking change
    /// breaks.
    fn values(
        &mut self,
        prefix: &str,
        what: &str,
        old: &[NamedValue],
        new: &[NamedValue],
        reuse: &[&str],
        frozen: &[&str],
    ) {
        let old_names: BTreeSet<&str> = old.iter().map(|v| v.name.as_str()).collect();
        let mut handled: BTreeSet<&str> = BTreeSet::new();
        for o in old {
            let path = format!("{prefix}.{}", o.name);
            if let Some(n) = new.iter().find(|n| n.name == o.name) {
                if n.value != o.value {
                    self.breaking(
                        format!("{path}.value"),
                        o.value,
                        n.value,
                        format!(
                            "The value of {what} {} changed from {} to {}.",
                            o.name, o.value, n.value
                        ),
                    )
                    .violate(frozen);
                }
            } else if let Some(n) = new
                .iter()
                .find(|n| n.value == o.value && !old_names.contains(n.name.as_str()))
            {
                handled.insert(&n.name);
                self.breaking(
                    path,
                    &o.name,
                    &n.name,
                    format!(
                        "{what} {} = {} is now named {}: a rename breaks C code, and a new name \
                         must not reuse an old value.",
                        o.name, o.value, n.name
                    ),
                )
                .violate(reuse)
                .violate(frozen);
            } else {
                self.push(
                    ChangeKind::Breaking,
                    path,
                    Some(format!("{} = {}", o.name, o.value)),
                    None,
                    format!("{what} {} = {} was removed.", o.name, o.value),
                )
                .violate(frozen);
            }
        }
        for n in new {
            if old_names.contains(n.name.as_str()) || handled.contains(n.name.as_str()) {
                continue;
            }
            let path = format!("{prefix}.{}", n.name);
            if let Some(o) = old.iter().find(|o| o.value == n.value) {
                self.breaking(
                    format!("{path}.value"),
                    format!("{} = {}", o.name, o.value),
                    format!("{} = {}", n.name, n.value),
                    format!(
                        "New {what} {} reuses value {} of {}.",
                        n.name, n.value, o.name
                    ),
                )
                .violate(reuse)
                .violate(frozen);
            } else {
                self.push(
                    ChangeKind::Addition,
                    path,
                    None,
                    Some(format!("{} = {}", n.name, n.value)),
                    format!("New {what} {} = {}.", n.name, n.value),
                );
            }
        }
    }

    // ---------------------------------------------------------------- features

    fn features(&mut self, old: &[FeatureEntry], new: &[FeatureEntry]) {
        let old_names: BTreeSet<&str> = old.iter().map(|f| f.name.as_str()).collect();
        let mut handled: BTreeSet<&str> = BTreeSet::new();
        for o in old {
            let path = format!("features.{}", o.name);
            if let Some(n) = new.iter().find(|n| n.name == o.name) {
                if n.bit != o.bit {
                    self.breaking(
                        format!("{path}.bit"),
                        o.bit,
                        n.bit,
                        format!(
                            "Feature {} moved from bit {} to bit {}.",
                            o.name, o.bit, n.bit
                        ),
                    );
                    if let Some(p) = old.iter().find(|p| p.bit == n.bit && p.name != n.name) {
                        self.breaking(
                            format!("{path}.bit"),
                            format!("bit {} = {}", p.bit, p.name),
                            format!("bit {} = {}", n.bit, n.name),
                            format!(
                                "Feature {} now uses bit {}, which belonged to {}.",
                                n.name, n.bit, p.name
                            ),
                        )
                        .violate(&[VER_NO_REUSE]);
                    }
                }
                if n.since != o.since {
                    self.breaking(
                        format!("{path}.since"),
                        o.since,
                        n.since,
                        format!(
                            "Feature {} now says it was introduced in {} instead of {}.",
                            o.name, n.since, o.since
                        ),
                    );
                }
            } else if let Some(n) = new
                .iter()
                .find(|n| n.bit == o.bit && !old_names.contains(n.name.as_str()))
            {
                handled.insert(&n.name);
                self.breaking(
                    path,
                    &o.name,
                    &n.name,
                    format!(
                        "Feature bit {} ({}) is now named {}: a rename breaks C code, and a new \
                         feature must not reuse an old bit.",
                        o.bit, o.name, n.name
                    ),
                )
                .violate(&[VER_NO_REUSE]);
            } else {
                self.push(
                    ChangeKind::Breaking,
                    path,
                    Some(format!("bit {} = {}", o.bit, o.name)),
                    None,
                    format!("Feature {} (bit {}) was removed.", o.name, o.bit),
                );
            }
        }
        for n in new {
            if old_names.contains(n.name.as_str()) || handled.contains(n.name.as_str()) {
                continue;
            }
            let path = format!("features.{}", n.name);
            if let Some(o) = old.iter().find(|o| o.bit == n.bit) {
                self.breaking(
                    format!("{path}.bit"),
                    format!("bit {} = {}", o.bit, o.name),
                    format!("bit {} = {}", n.bit, n.name),
                    format!("New feature {} reuses bit {} of {}.", n.name, n.bit, o.name),
                )
                .violate(&[VER_NO_REUSE]);
            } else {
                self.push(
                    ChangeKind::Addition,
                    path,
                    None,
                    Some(format!("bit {} = {}", n.bit, n.name)),
                    format!(
                        "New feature {} at bit {}, since {}.",
                        n.name, n.bit, n.since
                    ),
                );
            }
        }
    }

    // ---------------------------------------------------------------- constants

    fn constants(&mut self, old: &[ConstEntry], new: &[ConstEntry]) {
        for o in old {
            let path = format!("constants.{}", o.name);
            let frozen: &[&str] = if o.rule == ConstRule::Forever {
                &[VER_BASE_FROZEN]
            } else {
                &[]
            };
            let Some(n) = new.iter().find(|n| n.name == o.name) else {
                self.push(
                    ChangeKind::Breaking,
                    path,
                    Some(format!("{:#x}", o.value)),
                    None,
                    format!("Constant {} ({:#x}) was removed.", o.name, o.value),
                )
                .violate(frozen);
                continue;
            };
            if n.value != o.value {
                let (kind, why) = match o.rule {
                    ConstRule::ValidBits if n.value & o.value == o.value => (
                        ChangeKind::Addition,
                        format!(
                            "Constant {} gains bits {:#x} (a set of defined bits may grow).",
                            o.name,
                            n.value & !o.value
                        ),
                    ),
                    ConstRule::ValidBits => (
                        ChangeKind::Breaking,
                        format!(
                            "Constant {} loses bits {:#x}: defined bits stay defined.",
                            o.name,
                            o.value & !n.value
                        ),
                    ),
                    ConstRule::Grows if n.value > o.value => (
                        ChangeKind::Addition,
                        format!("Constant {} grows from {} to {}.", o.name, o.value, n.value),
                    ),
                    ConstRule::Version => (
                        ChangeKind::Neutral,
                        format!(
                            "Constant {} is the version: {:#x} -> {:#x}.",
                            o.name, o.value, n.value
                        ),
                    ),
                    _ => (
                        ChangeKind::Breaking,
                        format!(
                            "Constant {} changed from {:#x} to {:#x}.",
                            o.name, o.value, n.value
                        ),
                    ),
                };
                self.push(
                    kind,
                    format!("{path}.value"),
                    Some(format!("{:#x}", o.value)),
                    Some(format!("{:#x}", n.value)),
                    why,
                )
                .violate(frozen);
            } else if n.rule != o.rule {
                self.push(
                    ChangeKind::Neutral,
                    format!("{path}.rule"),
                    Some(o.rule.to_string()),
                    Some(n.rule.to_string()),
                    format!(
                        "The evolution rule of constant {} changed from {} to {} (the released \
                         rule still applies).",
                        o.name, o.rule, n.rule
                    ),
                );
            }
        }
        for n in new.iter().filter(|n| !old.iter().any(|o| o.name == n.name)) {
            self.push(
                ChangeKind::Addition,
                format!("constants.{}", n.name),
                None,
                Some(format!("{:#x}", n.value)),
                format!("New constant {} = {:#x}.", n.name, n.value),
            );
        }
    }

    // ---------------------------------------------------------------- CPUID

    fn cpuid(&mut self, old: &CpuidEntry, new: &CpuidEntry) {
        if old.signature != new.signature {
            self.breaking(
                "cpuid.signature".to_owned(),
                &old.signature,
                &new.signature,
                format!(
                    "The CPUID signature changed from \"{}\" to \"{}\".",
                    old.signature, new.signature
                ),
            )
            .violate(&[VER_BASE_FROZEN]);
        }
        // Discovery proper: the signature and version leaves (PVABI-VER-004).
        let frozen_leaf = |offset: u32| -> &'static [&'static str] {
            if offset <= 1 {
                &[VER_BASE_FROZEN]
            } else {
                &[]
            }
        };
        for o in &old.leaves {
            let path = format!("cpuid.leaves[{}]", o.offset);
            let Some(n) = new.leaves.iter().find(|n| n.offset == o.offset) else {
                self.push(
                    ChangeKind::Breaking,
                    path,
                    Some(o.name.clone()),
                    None,
                    format!("CPUID leaf B+{} ({}) was removed.", o.offset, o.name),
                )
                .violate(frozen_leaf(o.offset));
                continue;
            };
            if o.name != n.name {
                self.push(
                    ChangeKind::Neutral,
                    format!("{path}.name"),
                    Some(o.name.clone()),
                    Some(n.name.clone()),
                    format!(
                        "CPUID leaf B+{} was renamed from {} to {}.",
                        o.offset, o.name, n.name
                    ),
                );
            }
            for ((reg, a), (_, b)) in o.registers().into_iter().zip(n.registers()) {
                if a == b {
                    continue;
                }
                let (kind, why) = if a.contains("reserved") {
                    (
                        ChangeKind::Addition,
                        format!(
                            "{reg} of CPUID leaf B+{}, reserved before, now holds: {b}.",
                            o.offset
                        ),
                    )
                } else {
                    (
                        ChangeKind::Neutral,
                        format!(
                            "The description of {reg} of CPUID leaf B+{} changed (its bit layout \
                             is checked under cpuid.fields).",
                            o.offset
                        ),
                    )
                };
                self.push(
                    kind,
                    format!("{path}.{reg}"),
                    Some(a.to_owned()),
                    Some(b.to_owned()),
                    why,
                );
            }
        }
        for n in new
            .leaves
            .iter()
            .filter(|n| !old.leaves.iter().any(|o| o.offset == n.offset))
        {
            self.push(
                ChangeKind::Addition,
                format!("cpuid.leaves[{}]", n.offset),
                None,
                Some(n.name.clone()),
                format!("New CPUID leaf B+{} ({}).", n.offset, n.name),
            );
        }
        // Field locations, compared field by field.
        let by_field = |entries: &[CpuidFieldEntry]| {
            let mut m: BTreeMap<String, Vec<CpuidFieldEntry>> = BTreeMap::new();
            for e in entries {
                m.entry(e.field.clone()).or_default().push(e.clone());
            }
            m
        };
        let show = |v: &[CpuidFieldEntry]| {
            v.iter()
                .map(|e| e.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        };
        let (old_f, new_f) = (by_field(&old.fields), by_field(&new.fields));
        for (field, o) in &old_f {
            let path = format!("cpuid.fields.{field}");
            let frozen: &[&str] = if o.iter().any(|e| e.leaf.is_some_and(|l| l <= 1)) {
                &[VER_BASE_FROZEN]
            } else {
                &[]
            };
            match new_f.get(field) {
                Some(n) if n == o => {}
                Some(n) => {
                    self.breaking(
                        path,
                        show(o),
                        show(n),
                        format!(
                            "CPUID field {field} moved: it was {}, it is {}.",
                            show(o),
                            show(n)
                        ),
                    )
                    .violate(frozen);
                }
                None => {
                    self.push(
                        ChangeKind::Breaking,
                        path,
                        Some(show(o)),
                        None,
                        format!("CPUID field {field} is no longer encoded."),
                    )
                    .violate(frozen);
                }
            }
        }
        let overlaps = |a: &CpuidFieldEntry, b: &CpuidFieldEntry| {
            if a.leaf != b.leaf || a.register != b.register {
                return false;
            }
            match (
                a.at.as_deref().and_then(parse_bit_range),
                b.at.as_deref().and_then(parse_bit_range),
            ) {
                (Some((alo, ahi)), Some((blo, bhi))) => alo <= bhi && blo <= ahi,
                _ => false,
            }
        };
        for (field, n) in new_f.iter().filter(|(f, _)| !old_f.contains_key(*f)) {
            let path = format!("cpuid.fields.{field}");
            let clash = n.iter().any(|e| old.fields.iter().any(|o| overlaps(o, e)));
            if clash {
                self.push(
                    ChangeKind::Breaking,
                    path,
                    None,
                    Some(show(n)),
                    format!("New CPUID field {field} takes bits that another field used."),
                );
            } else {
                self.push(
                    ChangeKind::Addition,
                    path,
                    None,
                    Some(show(n)),
                    format!("New CPUID field {field} in unused bits: {}.", show(n)),
                );
            }
        }
    }
}
