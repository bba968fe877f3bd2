//! The snapshot model: everything one version of the ABI promises, in a stable JSON form.
//!
//! A [`Snapshot`] holds the wire-relevant facts of the ABI crate and nothing else: call codes
//! and descriptors (argument and result registers, checks, memory blocks, batching, deferral,
//! sync points), structure sizes and field offsets and types, status values, feature bits, the
//! values of the ABI's enumerations, every numeric constant, and the CPUID layout. Prose
//! (summaries, descriptions) is left out, except the CPUID register descriptions, which are the
//! only statement of what a register holds besides the encoder itself.
//!
//! The JSON form is deterministic: fields in declaration order, lists in the ABI crate's order
//! (calls by code, statuses by value, features by bit), maps sorted by key, two-space
//! indentation and a trailing newline, so a snapshot file changes only when the ABI does.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use pvabi_abi::calls::{self, ArgCheck, BlockKind, CallDescriptor, DeferClass, Family};
use pvabi_abi::discovery::{self, CpuidInfo, TransportFlags};
use pvabi_abi::features::{Features, FEATURES};
use pvabi_abi::layout::{FieldLayout, StructLayout, STRUCTS};
use pvabi_abi::status::Status;
use pvabi_abi::version::{Version, VERSION_MAJOR, VERSION_MINOR};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::constants;

/// The version of the snapshot file format (the `format` field).
pub const SNAPSHOT_FORMAT: u32 = 1;

/// A spec version as `major.minor`, the form used in snapshot file names and fields.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct AbiVersion {
    /// The major number.
    pub major: u16,
    /// The minor number.
    pub minor: u16,
}

impl AbiVersion {
    /// Builds a version from its numbers.
    pub const fn new(major: u16, minor: u16) -> Self {
        AbiVersion { major, minor }
    }

    /// The version of the ABI crate (`VERSION_MAJOR.VERSION_MINOR`).
    pub const fn of_crate() -> Self {
        AbiVersion::new(VERSION_MAJOR, VERSION_MINOR)
    }

    /// The snapshot file name of this version, `<major>.<minor>.json`.
    pub fn file_name(self) -> String {
        format!("{self}.json")
    }
}

impl From<Version> for AbiVersion {
    fn from(v: Version) -> Self {
        AbiVersion::new(v.major(), v.minor())
    }
}

impl fmt::Display for AbiVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.major, self.minor)
    }
}

/// A string that is not a `major.minor` version.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not a version of the form MAJOR.MINOR (for example 1.0)")]
pub struct BadVersion(pub String);

impl FromStr for AbiVersion {
    type Err = BadVersion;

    fn from_str(s: &str) -> Result<Self, BadVersion> {
        let bad = || BadVersion(s.to_owned());
        let (major, minor) = s.split_once('.').ok_or_else(bad)?;
        let num = |t: &str| {
            if t.is_empty() || !t.bytes().all(|b| b.is_ascii_digit()) {
                return Err(bad());
            }
            t.parse::<u16>().map_err(|_| bad())
        };
        Ok(AbiVersion::new(num(major)?, num(minor)?))
    }
}

impl Serialize for AbiVersion {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for AbiVersion {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Everything one version of the ABI promises.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Snapshot {
    /// The snapshot file format ([`SNAPSHOT_FORMAT`]).
    pub format: u32,
    /// The spec version this snapshot describes.
    pub version: AbiVersion,
    /// Every call, in code order.
    pub calls: Vec<CallEntry>,
    /// Every ABI structure, in the spec's order.
    pub structs: Vec<StructEntry>,
    /// Every status code, in value order.
    pub statuses: Vec<NamedValue>,
    /// Every feature bit, in bit order.
    pub features: Vec<FeatureEntry>,
    /// The values of the ABI's enumerations (`CallState`, `EventKind`, `Family`, `RingMode`,
    /// `WakeReason`), by enumeration name.
    pub enums: BTreeMap<String, Vec<NamedValue>>,
    /// Every numeric constant of the ABI crate, in the order of its constant registry
    /// (`pvabi_abi::registry`).
    pub constants: Vec<ConstEntry>,
    /// The CPUID leaves.
    pub cpuid: CpuidEntry,
}

/// One call and its descriptor.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CallEntry {
    /// The call code (`family << 8 | function`).
    pub code: u32,
    /// The name, as after `PVABI_CALL_` in C.
    pub name: String,
    /// The family, as after `PVABI_FAMILY_` in C.
    pub family: String,
    /// The feature the call needs (`null` for Base calls).
    pub feature: Option<String>,
    /// The version that introduced the call.
    pub since: AbiVersion,
    /// Arguments, in register order.
    pub args: Vec<ArgEntry>,
    /// Results, in register order.
    pub results: Vec<ResultEntry>,
    /// The memory block the call takes.
    pub block: Option<BlockEntry>,
    /// Whether it may appear in a MULTICALL entry or a ring submission.
    pub batchable: bool,
    /// Its deferral class.
    pub deferral: Deferral,
    /// Whether the host drains the caller's deferred queue before handling it.
    pub sync_point: bool,
    /// Whether it returns to the caller on success.
    pub returns: bool,
}

/// One argument of a call.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ArgEntry {
    /// The argument's name.
    pub name: String,
    /// The register that carries it.
    pub register: String,
    /// What makes it valid.
    pub check: CheckEntry,
}

/// One result of a call.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResultEntry {
    /// The result's name.
    pub name: String,
    /// The register that carries it.
    pub register: String,
}

/// How a host validates a register argument.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum CheckEntry {
    /// Any value.
    Any,
    /// A value in `min..=max`.
    Range {
        /// Smallest valid value.
        min: u64,
        /// Largest valid value.
        max: u64,
    },
    /// Only the bits of `mask` may be set.
    Mask {
        /// The valid bits.
        mask: u64,
    },
    /// A vCPU index below the number of vCPUs.
    VcpuIndex,
}

impl fmt::Display for CheckEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CheckEntry::Any => f.write_str("any value"),
            CheckEntry::Range { min, max } => write!(f, "{min}..={max}"),
            CheckEntry::Mask { mask } => write!(f, "bits {mask:#x} only"),
            CheckEntry::VcpuIndex => f.write_str("a vCPU index"),
        }
    }
}

/// A call's memory block.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BlockEntry {
    /// The argument that holds the block's guest-physical address.
    pub addr_arg: usize,
    /// The required alignment in bytes.
    pub align: u64,
    /// What the block is.
    pub kind: BlockKindEntry,
}

impl fmt::Display for BlockEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            BlockKindEntry::Struct { name } => write!(f, "a {name}"),
            BlockKindEntry::Bytes { len_arg, max } => {
                write!(f, "bytes, length in a{len_arg}, at most {max}")
            }
            BlockKindEntry::Array {
                elem,
                elem_size,
                count_arg,
                max,
            } => write!(
                f,
                "an array of {elem} ({elem_size} bytes each), count in a{count_arg}, at most {max}"
            ),
            BlockKindEntry::Word => f.write_str("one 64-bit word"),
            BlockKindEntry::SharedPage { header } => {
                write!(f, "a shared page starting with a {header}")
            }
        }?;
        write!(f, " at a{}, aligned to {}", self.addr_arg, self.align)
    }
}

/// The kinds of memory block.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum BlockKindEntry {
    /// One structure.
    Struct {
        /// The structure's name.
        name: String,
    },
    /// A byte buffer.
    Bytes {
        /// The argument that holds the length.
        len_arg: usize,
        /// The largest length.
        max: u64,
    },
    /// An array.
    Array {
        /// The element type.
        elem: String,
        /// The element size in bytes.
        elem_size: u64,
        /// The argument that holds the count.
        count_arg: usize,
        /// The largest count.
        max: u64,
    },
    /// One 64-bit word the call writes.
    Word,
    /// A 4 KiB page registered as a host-owned shared area.
    SharedPage {
        /// The structure at the start of the page.
        header: String,
    },
}

/// A call's deferral class.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Deferral {
    /// May not be deferred.
    None,
    /// Page-table updates.
    Mmu,
    /// Per-vCPU state.
    Cpu,
}

impl fmt::Display for Deferral {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Deferral::None => "none",
            Deferral::Mmu => "MMU",
            Deferral::Cpu => "CPU",
        })
    }
}

/// One ABI structure.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StructEntry {
    /// The Rust name.
    pub name: String,
    /// The C name.
    pub c_name: String,
    /// Size in bytes.
    pub size: usize,
    /// Alignment in bytes.
    pub align: usize,
    /// Fields in offset order.
    pub fields: Vec<FieldEntry>,
}

/// One field of an ABI structure.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FieldEntry {
    /// The name (the same in Rust and C).
    pub name: String,
    /// Offset in bytes.
    pub offset: usize,
    /// Size in bytes.
    pub size: usize,
    /// The Rust type.
    pub ty: String,
}

impl FieldEntry {
    /// Whether the field is reserved: named `reserved*`, or of a `Reserved*` type (only 0 is
    /// valid). A later minor version may give a reserved field, or part of it, a meaning.
    pub fn is_reserved(&self) -> bool {
        self.name.starts_with("reserved") || self.ty.contains("Reserved")
    }
}

/// A named value: a status code or an enumeration value.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NamedValue {
    /// The name, as after the C prefix (`PVABI_STATUS_`, `PVABI_EVENT_KIND_`, ...).
    pub name: String,
    /// The value.
    pub value: u64,
}

/// One feature bit.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FeatureEntry {
    /// The name, as after `PVABI_FEATURE_` in C.
    pub name: String,
    /// The bit number.
    pub bit: u32,
    /// The version that introduced it.
    pub since: AbiVersion,
}

/// How a constant may evolve within a major version.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ConstRule {
    /// Fixed: any change is breaking.
    Exact,
    /// A set of defined bits: a minor version may add bits; removing one is breaking.
    ValidBits,
    /// A highest value (such as the highest CPUID leaf): a minor version may raise it.
    Grows,
    /// The version itself: it changes with every release.
    Version,
    /// Discovery: never changes, not even in a new major version (PVABI-VER-004).
    Forever,
}

impl fmt::Display for ConstRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ConstRule::Exact => "exact",
            ConstRule::ValidBits => "valid_bits",
            ConstRule::Grows => "grows",
            ConstRule::Version => "version",
            ConstRule::Forever => "forever",
        })
    }
}

/// One numeric constant.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConstEntry {
    /// The Rust name (the C name is `PVABI_` + this).
    pub name: String,
    /// The value.
    pub value: u64,
    /// How it may evolve.
    pub rule: ConstRule,
}

/// The CPUID leaves.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CpuidEntry {
    /// The 12-byte signature in `ebx:ecx:edx` of leaf `B + 0`.
    pub signature: String,
    /// Each leaf and what its registers hold, as the spec states it.
    pub leaves: Vec<LeafEntry>,
    /// Where each field of the decoded CPUID information sits, measured by running the ABI
    /// crate's encoder (`CpuidInfo::leaves`) one bit at a time.
    pub fields: Vec<CpuidFieldEntry>,
}

/// One CPUID leaf.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LeafEntry {
    /// Offset from the base.
    pub offset: u32,
    /// The leaf's name.
    pub name: String,
    /// What `eax` holds.
    pub eax: String,
    /// What `ebx` holds.
    pub ebx: String,
    /// What `ecx` holds.
    pub ecx: String,
    /// What `edx` holds.
    pub edx: String,
}

impl LeafEntry {
    /// The four register descriptions with their names.
    pub fn registers(&self) -> [(&'static str, &str); 4] {
        [
            ("eax", &self.eax),
            ("ebx", &self.ebx),
            ("ecx", &self.ecx),
            ("edx", &self.edx),
        ]
    }
}

/// Where a run of bits of one CPUID field sits.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CpuidFieldEntry {
    /// The field of `CpuidInfo`.
    pub field: String,
    /// The field's bits, `hi:lo` (or one bit number).
    pub bits: String,
    /// The leaf offset that carries them (`null`: not encoded).
    pub leaf: Option<u32>,
    /// The register (`null`: not encoded).
    pub register: Option<String>,
    /// The register's bits, `hi:lo`.
    pub at: Option<String>,
}

impl fmt::Display for CpuidFieldEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.leaf, &self.register, &self.at) {
            (Some(leaf), Some(reg), Some(at)) => {
                write!(f, "bits {} in leaf B+{leaf} {reg}[{at}]", self.bits)
            }
            _ => write!(f, "bits {} not encoded", self.bits),
        }
    }
}

/// Errors reading or writing snapshots.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory.
        path: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A snapshot file is not valid snapshot JSON.
    #[error("{path}: not a valid snapshot: {source}")]
    Parse {
        /// The file.
        path: String,
        /// The cause.
        #[source]
        source: serde_json::Error,
    },
    /// A snapshot uses a format this tool does not know.
    #[error("{path}: snapshot format {found} is not supported (this tool reads format {SNAPSHOT_FORMAT})")]
    Format {
        /// The file.
        path: String,
        /// The format it declares.
        found: u32,
    },
}

impl Snapshot {
    /// The snapshot of the ABI crate as compiled into this program.
    pub fn current() -> Snapshot {
        Snapshot {
            format: SNAPSHOT_FORMAT,
            version: AbiVersion::of_crate(),
            calls: calls::all().map(call_entry).collect(),
            structs: STRUCTS.iter().map(|l| struct_entry(l)).collect(),
            statuses: Status::ALL
                .iter()
                .map(|s| named(s.name(), s.raw()))
                .collect(),
            features: FEATURES
                .iter()
                .map(|f| FeatureEntry {
                    name: f.name.to_owned(),
                    bit: f.flag.bits().trailing_zeros(),
                    since: f.since.into(),
                })
                .collect(),
            enums: enums(),
            constants: constants::recorded().collect(),
            cpuid: cpuid_entry(),
        }
    }

    /// Parses a snapshot from its JSON text; `origin` names it in errors.
    pub fn from_json(text: &str, origin: &str) -> Result<Snapshot, Error> {
        // Read the format first, so a future format gets a clear message rather than a
        // complaint about an unknown field.
        #[derive(Deserialize)]
        struct Header {
            format: u32,
        }
        let header: Header = serde_json::from_str(text).map_err(|source| Error::Parse {
            path: origin.to_owned(),
            source,
        })?;
        if header.format != SNAPSHOT_FORMAT {
            return Err(Error::Format {
                path: origin.to_owned(),
                found: header.format,
            });
        }
        serde_json::from_str(text).map_err(|source| Error::Parse {
            path: origin.to_owned(),
            source,
        })
    }

    /// The deterministic JSON text of the snapshot (pretty, with a trailing newline).
    pub fn to_json(&self) -> String {
        let mut s = serde_json::to_string_pretty(self).expect("a snapshot always serializes");
        s.push('\n');
        s
    }

    /// The call with this name.
    pub fn call(&self, name: &str) -> Option<&CallEntry> {
        self.calls.iter().find(|c| c.name == name)
    }

    /// The structure with this name.
    pub fn structure(&self, name: &str) -> Option<&StructEntry> {
        self.structs.iter().find(|s| s.name == name)
    }
}

fn named(name: &str, value: u64) -> NamedValue {
    NamedValue {
        name: name.to_owned(),
        value,
    }
}

/// `RingCompletion` -> `RING_COMPLETION` (the C and spec spelling).
pub(crate) fn screaming_snake(camel: &str) -> String {
    let mut out = String::new();
    for (i, c) in camel.chars().enumerate() {
        if c.is_ascii_uppercase() && i > 0 {
            out.push('_');
        }
        out.push(c.to_ascii_uppercase());
    }
    out
}

fn feature_name(f: Features) -> String {
    FEATURES
        .iter()
        .find(|i| i.flag == f)
        .map(|i| i.name.to_owned())
        .unwrap_or_else(|| format!("BITS_{:#x}", f.bits()))
}

fn family_name(f: Family) -> String {
    screaming_snake(&format!("{f:?}"))
}

fn check_entry(c: ArgCheck) -> CheckEntry {
    match c {
        ArgCheck::Any => CheckEntry::Any,
        ArgCheck::Range { min, max } => CheckEntry::Range { min, max },
        ArgCheck::Mask(mask) => CheckEntry::Mask { mask },
        ArgCheck::VcpuIndex => CheckEntry::VcpuIndex,
    }
}

fn call_entry(d: &CallDescriptor) -> CallEntry {
    CallEntry {
        code: d.call.code(),
        name: d.name.to_owned(),
        family: family_name(d.family()),
        feature: d.feature.map(feature_name),
        since: d.since.into(),
        args: d
            .arg_registers()
            .map(|(r, a)| ArgEntry {
                name: a.name.to_owned(),
                register: r.name().to_owned(),
                check: check_entry(a.check),
            })
            .collect(),
        results: d
            .result_registers()
            .map(|(r, res)| ResultEntry {
                name: res.name.to_owned(),
                register: r.name().to_owned(),
            })
            .collect(),
        block: d.block.map(|b| BlockEntry {
            addr_arg: b.addr_arg,
            align: b.align,
            kind: match b.kind {
                BlockKind::Struct(l) => BlockKindEntry::Struct {
                    name: l.name.to_owned(),
                },
                BlockKind::Bytes { len_arg, max } => BlockKindEntry::Bytes { len_arg, max },
                BlockKind::Array {
                    elem,
                    elem_size,
                    count_arg,
                    max,
                } => BlockKindEntry::Array {
                    elem: elem.to_owned(),
                    elem_size,
                    count_arg,
                    max,
                },
                BlockKind::Word => BlockKindEntry::Word,
                BlockKind::SharedPage { header } => BlockKindEntry::SharedPage {
                    header: header.name.to_owned(),
                },
            },
        }),
        batchable: d.batchable,
        deferral: match d.deferral {
            DeferClass::None => Deferral::None,
            DeferClass::Mmu => Deferral::Mmu,
            DeferClass::Cpu => Deferral::Cpu,
        },
        sync_point: d.sync_point,
        returns: d.returns,
    }
}

fn field_entry(f: &FieldLayout) -> FieldEntry {
    FieldEntry {
        name: f.name.to_owned(),
        offset: f.offset,
        size: f.size,
        ty: f.ty.to_owned(),
    }
}

fn struct_entry(l: &StructLayout) -> StructEntry {
    StructEntry {
        name: l.name.to_owned(),
        c_name: l.c_name.to_owned(),
        size: l.size,
        align: l.align,
        fields: l.fields.iter().map(field_entry).collect(),
    }
}

/// Lists an enumeration's variants with their values. The closure's `match` has no wildcard,
/// so a variant added to the ABI crate fails to compile here until it is listed.
macro_rules! enum_values {
    ($ty:ident: $($v:ident),+ $(,)?) => {{
        let _exhaustive = |v: $ty| match v {
            $($ty::$v => ()),+
        };
        vec![$(named(&screaming_snake(stringify!($v)), $ty::$v as u64)),+]
    }};
}

/// The enumerations of the ABI crate that reach the wire or the C header (besides calls and
/// statuses, which have their own lists).
fn enums() -> BTreeMap<String, Vec<NamedValue>> {
    use pvabi_abi::base::CallState;
    use pvabi_abi::batch::RingMode;
    use pvabi_abi::events::EventKind;
    use pvabi_abi::vcpu::WakeReason;
    let mut m = BTreeMap::new();
    m.insert(
        "CallState".to_owned(),
        enum_values!(CallState: Absent, Available, Ready),
    );
    m.insert(
        "EventKind".to_owned(),
        enum_values!(EventKind: Timer, Kick, User, RingCompletion),
    );
    m.insert(
        "Family".to_owned(),
        enum_values!(Family: Base, Console, Time, Events, Memory, Vcpu, System, Batch),
    );
    m.insert(
        "RingMode".to_owned(),
        enum_values!(RingMode: Doorbell, HostPolled),
    );
    m.insert(
        "WakeReason".to_owned(),
        enum_values!(WakeReason: Event, Timeout),
    );
    m
}

const REGISTER_NAMES: [&str; 4] = ["eax", "ebx", "ecx", "edx"];

/// Sets one field of the CPUID information from a raw value (truncated to the field's width).
type Setter = fn(&mut CpuidInfo, u64);

/// The fields of [`CpuidInfo`] with their widths. [`zero_info`] destructures the structure
/// exhaustively, so a field added to it fails to compile there until it is listed here too.
fn cpuid_fields() -> [(&'static str, u32, Setter); 10] {
    [
        ("highest_version", 32, |i, v| i.highest_version = v as u32),
        ("lowest_version", 32, |i, v| i.lowest_version = v as u32),
        ("offered_features", 64, |i, v| i.offered_features = v),
        ("doorbell_port", 16, |i, v| i.doorbell_port = v as u16),
        ("ring_notify_port", 16, |i, v| i.ring_notify_port = v as u16),
        ("transport", 32, |i, v| {
            i.transport = TransportFlags::from_bits_retain(v as u32)
        }),
        ("max_multicall_entries", 32, |i, v| {
            i.max_multicall_entries = v as u32
        }),
        ("deferred_capacity", 32, |i, v| {
            i.deferred_capacity = v as u32
        }),
        ("ring_capacity", 32, |i, v| i.ring_capacity = v as u32),
        ("vcpus", 32, |i, v| i.vcpus = v as u32),
    ]
}

fn zero_info() -> CpuidInfo {
    let info = CpuidInfo {
        highest_version: 0,
        lowest_version: 0,
        offered_features: 0,
        doorbell_port: 0,
        ring_notify_port: 0,
        transport: TransportFlags::empty(),
        max_multicall_entries: 0,
        deferred_capacity: 0,
        ring_capacity: 0,
        vcpus: 0,
    };
    // Every field is listed in `cpuid_fields` (keep the two in step).
    let CpuidInfo {
        highest_version: _,
        lowest_version: _,
        offered_features: _,
        doorbell_port: _,
        ring_notify_port: _,
        transport: _,
        max_multicall_entries: _,
        deferred_capacity: _,
        ring_capacity: _,
        vcpus: _,
    } = info;
    info
}

fn bit_range(hi: u32, lo: u32) -> String {
    if hi == lo {
        lo.to_string()
    } else {
        format!("{hi}:{lo}")
    }
}

/// Parses `hi:lo` or a single bit number into `(lo, hi)`.
pub(crate) fn parse_bit_range(s: &str) -> Option<(u32, u32)> {
    match s.split_once(':') {
        Some((hi, lo)) => Some((lo.parse().ok()?, hi.parse().ok()?)),
        None => {
            let b = s.parse().ok()?;
            Some((b, b))
        }
    }
}

/// Measures where each bit of each `CpuidInfo` field lands in the leaves, by encoding one bit
/// at a time, and merges contiguous runs.
fn cpuid_field_map() -> Vec<CpuidFieldEntry> {
    let base = discovery::CPUID_FIRST_BASE;
    let reference = zero_info().leaves(base);
    let mut out = Vec::new();
    for (field, width, set) in cpuid_fields() {
        // For each bit of the field, where it landed: (leaf, register, bit).
        let mut hits: Vec<Vec<(u32, usize, u32)>> = Vec::new();
        for bit in 0..width {
            let mut info = zero_info();
            set(&mut info, 1u64 << bit);
            let leaves = info.leaves(base);
            let mut h = Vec::new();
            for (l, (got, want)) in leaves.iter().zip(reference.iter()).enumerate() {
                for r in 0..4 {
                    let changed = got[r] ^ want[r];
                    for b in 0..32 {
                        if changed & (1 << b) != 0 {
                            h.push((l as u32, r, b));
                        }
                    }
                }
            }
            hits.push(h);
        }
        // Merge runs of field bits that land, one each, on consecutive register bits.
        let mut bit = 0usize;
        while bit < hits.len() {
            match hits[bit].as_slice() {
                [(leaf, reg, at)] => {
                    let mut end = bit;
                    while end + 1 < hits.len()
                        && hits[end + 1].as_slice() == [(*leaf, *reg, at + (end + 1 - bit) as u32)]
                    {
                        end += 1;
                    }
                    out.push(CpuidFieldEntry {
                        field: field.to_owned(),
                        bits: bit_range(end as u32, bit as u32),
                        leaf: Some(*leaf),
                        register: Some(REGISTER_NAMES[*reg].to_owned()),
                        at: Some(bit_range(at + (end - bit) as u32, *at)),
                    });
                    bit = end + 1;
                }
                [] => {
                    out.push(CpuidFieldEntry {
                        field: field.to_owned(),
                        bits: bit.to_string(),
                        leaf: None,
                        register: None,
                        at: None,
                    });
                    bit += 1;
                }
                many => {
                    for (leaf, reg, at) in many {
                        out.push(CpuidFieldEntry {
                            field: field.to_owned(),
                            bits: bit.to_string(),
                            leaf: Some(*leaf),
                            register: Some(REGISTER_NAMES[*reg].to_owned()),
                            at: Some(at.to_string()),
                        });
                    }
                    bit += 1;
                }
            }
        }
    }
    out
}

fn cpuid_entry() -> CpuidEntry {
    CpuidEntry {
        signature: String::from_utf8_lossy(&discovery::SIGNATURE).into_owned(),
        leaves: discovery::LEAVES
            .iter()
            .map(|l| LeafEntry {
                offset: l.offset,
                name: l.name.to_owned(),
                eax: l.registers[0].to_owned(),
                ebx: l.registers[1].to_owned(),
                ecx: l.registers[2].to_owned(),
                edx: l.registers[3].to_owned(),
            })
            .collect(),
        fields: cpuid_field_map(),
    }
}
