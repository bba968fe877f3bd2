//! The registry of the ABI's named constants: one entry per constant, read by every tool that
//! needs the list.
//!
//! [`CONSTANTS`] is the only list of the ABI's named numbers. Two tools read it:
//!
//! - the spec (`pvabi-spec`) replaces `{{pvabi:NAME}}` in the chapters with an entry's value,
//!   written in its [`Format`], and renders one constants table per [`Module`] that has a
//!   chapter table, with [`Constant::doc`] as the meaning column;
//! - the ABI snapshots (`pvabi-versioning`) record every entry of kind [`Kind::Abi`], in
//!   registry order, with its [`Evolution`], and `pvabi abi check` holds each new version to
//!   that rule.
//!
//! Each value is read from its constant by path, so the compiler keeps values right; the
//! registry's own tests (`abi/tests/registry.rs`) keep the list complete:
//!
//! - every `pub const NAME: <integer type>` in `abi/src` (at any depth of the directory, at any
//!   indentation) must have an entry named `NAME` (or `Type::NAME`), under the module whose
//!   file defines it. Constants of other types (`SIGNATURE: [u8; 12]`, the `Version` values
//!   `V1_0`..., tables such as `CALLS`) are not counted: they are not numbers, or they are
//!   recorded elsewhere;
//! - every flag of a `bitflags!` type must be defined by one registered constant
//!   (`const PIO = TRANSPORT_PIO;`), so a flag cannot bring a number the registry lacks;
//! - no name appears twice.
//!
//! Enumerations (`CallState`, `EventKind`, ...) need no entries: the snapshots record them in
//! their own section, from the enumerations themselves. The registry lists the enumerators the
//! spec quotes, as [`Kind::Quoted`] entries named `Type::Variant`.
//!
//! # Order
//!
//! Entries are grouped by module. The snapshots list constants in registry order, and a
//! released snapshot is compared with the crate byte for byte, so do not reorder the
//! [`Kind::Abi`] entries of a released version; add a new constant at the end of its module's
//! entries. The spec's tables follow registry order within a module, except where the spec
//! puts an entry first (see `pvabi-spec`'s `constants` module).
//!
//! # The C header
//!
//! cbindgen writes the header's constants (`include/pvabi.h`) from the `pub const`s of the
//! chapter modules; `pvabi header` then writes each in its [`Format`] (hex for
//! [`Format::Hex`], [`Format::Mask`] and [`Format::Version`] entries) and adds the
//! [`Format::Text`] entries as strings, and `tests/header.rs` checks that every entry is in the
//! header with its value. A value the spec quotes is therefore best a `pub const` of its
//! chapter module, even when derived (`CPUID_LAST_BASE`); its entry stays [`Kind::Quoted`].
//! cbindgen writes a blank line for each `pub const` it cannot translate, so a non-integer
//! `pub const` of this module carries `cbindgen:ignore` (as [`Module::ALL`] does).
//!
//! # Adding a constant
//!
//! Define it in its chapter module, then add one line here: [`Kind::Abi`] with the rule it
//! evolves by if it is part of the released ABI (the snapshot of the next version records it),
//! [`Kind::Preview`] if it belongs to the 2.0 preview. The spec can quote it at once.
//!
//! ```
//! use pvabi_abi::registry::{self, Evolution, Format, Module};
//! let port = registry::get("DOORBELL_PORT").unwrap();
//! assert_eq!(port.value, u64::from(pvabi_abi::convention::DOORBELL_PORT));
//! assert_eq!(port.module, Module::Convention);
//! assert_eq!(port.format, Format::Hex);
//! assert_eq!(port.evolution(), Some(Evolution::Exact));
//! // An enumerator the spec quotes is not a snapshot constant.
//! assert_eq!(registry::get("CallState::Ready").unwrap().evolution(), None);
//! ```

use crate::discovery::SIGNATURE;

/// The module of the ABI crate that defines a constant; each module is a chapter of the spec,
/// or part of one (`version` and `features` are both in "Versioning and negotiation").
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Module {
    /// [`crate::discovery`]: CPUID bases, leaves, signature, transport flags.
    Discovery,
    /// [`crate::convention`]: ports, register counts, block limits.
    Convention,
    /// [`crate::version`]: this release.
    Version,
    /// [`crate::features`]: the feature bits.
    Features,
    /// [`crate::base`]: the Base family.
    Base,
    /// [`crate::console`]: the console family.
    Console,
    /// [`crate::time`]: the time family.
    Time,
    /// [`crate::events`]: the events family.
    Events,
    /// [`crate::memory`]: the memory family.
    Memory,
    /// [`crate::vcpu`]: the vCPU family.
    Vcpu,
    /// [`crate::system`]: the system family.
    System,
    /// [`crate::batch`]: batching, deferral and rings.
    Batch,
    /// [`crate::preview2`]: the major-2 preview (not released).
    Preview2,
    /// [`crate::platform`]: the reference platform's boot contract (not part of the ABI).
    Platform,
}

impl Module {
    /// Every module that defines constants, in book order.
    ///
    /// cbindgen:ignore
    pub const ALL: [Module; 14] = [
        Module::Discovery,
        Module::Convention,
        Module::Version,
        Module::Features,
        Module::Base,
        Module::Console,
        Module::Time,
        Module::Events,
        Module::Memory,
        Module::Vcpu,
        Module::System,
        Module::Batch,
        Module::Preview2,
        Module::Platform,
    ];

    /// The module's name in the crate, which is also its file name: `discovery` for
    /// `abi/src/discovery.rs`.
    pub const fn name(self) -> &'static str {
        match self {
            Module::Discovery => "discovery",
            Module::Convention => "convention",
            Module::Version => "version",
            Module::Features => "features",
            Module::Base => "base",
            Module::Console => "console",
            Module::Time => "time",
            Module::Events => "events",
            Module::Memory => "memory",
            Module::Vcpu => "vcpu",
            Module::System => "system",
            Module::Batch => "batch",
            Module::Preview2 => "preview2",
            Module::Platform => "platform",
        }
    }
}

/// How the spec writes a constant's value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// Decimal: `128`.
    Dec,
    /// Hexadecimal: `0x5650`.
    Hex,
    /// A single-bit flag, by bit number: `bit 0`.
    Bit,
    /// A bit mask, by the bits it allows: `bits 4:1`.
    Mask,
    /// A version: `1.0`.
    Version,
    /// This text, not the value (the signature).
    Text(&'static str),
}

/// How a constant may evolve within a major version (and across majors).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Evolution {
    /// Fixed: any change is breaking.
    Exact,
    /// A set of defined bits: a minor version may add bits (a reserved bit taking a meaning);
    /// removing one is breaking.
    ValidBits,
    /// A highest value (such as the highest CPUID leaf): a minor version may raise it.
    Grows,
    /// The version itself: it changes with every release.
    Version,
    /// Part of discovery: never changes, not even in a new major version (PVABI-VER-004).
    Forever,
}

/// What an entry is, which decides whether the ABI snapshots record it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A named constant of the released ABI. The snapshots record it; a new version may change
    /// it only as the rule allows.
    Abi(Evolution),
    /// A value the spec quotes that is not a constant of its own, so no snapshot records it as
    /// one: a value derived from constants (`CPUID_LAST_BASE`), another spelling of one
    /// (`SPEC_VERSION_RAW`, the `SIGNATURE` text), or an enumerator (the snapshots record
    /// enumerations in their own section).
    Quoted,
    /// A constant of the major-2 preview ([`crate::preview2`]): not part of any released 1.x
    /// ABI, so no 1.x snapshot records it.
    Preview,
    /// A constant of the reference platform ([`crate::platform`]): the boot contract of one
    /// host, not part of the ABI, so no snapshot records it.
    Platform,
}

/// One named constant.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Constant {
    /// The Rust name, also the name in `{{pvabi:NAME}}` and in the snapshots (the C name is
    /// `PVABI_` + this). Enumerators are written `Type::Variant`.
    pub name: &'static str,
    /// The value, widened to 64 bits (0 for a [`Format::Text`] entry).
    pub value: u64,
    /// The module that defines it.
    pub module: Module,
    /// How the spec writes the value.
    pub format: Format,
    /// Whether the snapshots record it, and how it may evolve.
    pub kind: Kind,
    /// What it is, in one line (the spec's tables print this).
    pub doc: &'static str,
}

impl Constant {
    /// The evolution rule of a constant the snapshots record; `None` for [`Kind::Quoted`] and
    /// [`Kind::Preview`] entries.
    pub const fn evolution(&self) -> Option<Evolution> {
        match self.kind {
            Kind::Abi(rule) => Some(rule),
            Kind::Quoted | Kind::Preview | Kind::Platform => None,
        }
    }
}

/// The entry with this name.
pub fn get(name: &str) -> Option<&'static Constant> {
    CONSTANTS.iter().find(|c| c.name == name)
}

/// The signature as text (a compile error if it is not UTF-8).
const SIGNATURE_TEXT: &str = match core::str::from_utf8(&SIGNATURE) {
    Ok(s) => s,
    Err(_) => panic!("the signature is not UTF-8"),
};

/// The [`Module`] variant of a module of the crate.
macro_rules! module {
    (discovery) => {
        Module::Discovery
    };
    (convention) => {
        Module::Convention
    };
    (version) => {
        Module::Version
    };
    (features) => {
        Module::Features
    };
    (base) => {
        Module::Base
    };
    (console) => {
        Module::Console
    };
    (time) => {
        Module::Time
    };
    (events) => {
        Module::Events
    };
    (memory) => {
        Module::Memory
    };
    (vcpu) => {
        Module::Vcpu
    };
    (system) => {
        Module::System
    };
    (batch) => {
        Module::Batch
    };
    (preview2) => {
        Module::Preview2
    };
    (platform) => {
        Module::Platform
    };
}

/// A constant of the released ABI: `abi!(module::NAME, Format, Evolution, "doc")`.
macro_rules! abi {
    ($module:ident :: $name:ident, $format:ident, $rule:ident, $doc:literal $(,)?) => {
        Constant {
            name: stringify!($name),
            value: crate::$module::$name as u64,
            module: module!($module),
            format: Format::$format,
            kind: Kind::Abi(Evolution::$rule),
            doc: $doc,
        }
    };
}

/// An enumerator the spec quotes: `enumerator!(module::Type::Variant, Format, "doc")`.
macro_rules! enumerator {
    ($module:ident :: $ty:ident :: $variant:ident, $format:ident, $doc:literal $(,)?) => {
        Constant {
            name: concat!(stringify!($ty), "::", stringify!($variant)),
            value: crate::$module::$ty::$variant as u64,
            module: module!($module),
            format: Format::$format,
            kind: Kind::Quoted,
            doc: $doc,
        }
    };
}

/// A value the spec quotes that is not a constant of its own:
/// `quoted!(module, "NAME", value, Format, "doc")`.
macro_rules! quoted {
    ($module:ident, $name:literal, $value:expr, $format:expr, $doc:literal $(,)?) => {
        Constant {
            name: $name,
            value: $value as u64,
            module: module!($module),
            format: $format,
            kind: Kind::Quoted,
            doc: $doc,
        }
    };
}

/// A constant of the 2.0 preview: `preview!(preview2::NAME, Format, "doc")`.
macro_rules! preview {
    ($module:ident :: $name:ident, $format:ident, $doc:literal $(,)?) => {
        Constant {
            name: stringify!($name),
            value: crate::$module::$name as u64,
            module: module!($module),
            format: Format::$format,
            kind: Kind::Preview,
            doc: $doc,
        }
    };
}

/// A constant of the reference platform: `platform!(NAME, Format, "doc")`.
macro_rules! platform {
    ($name:ident, $format:ident, $doc:literal $(,)?) => {
        Constant {
            name: stringify!($name),
            value: crate::platform::$name as u64,
            module: Module::Platform,
            format: Format::$format,
            kind: Kind::Platform,
            doc: $doc,
        }
    };
}

/// Every named constant of the ABI crate, module by module (see the [module](self) docs for
/// what must be here and in which order).
pub static CONSTANTS: &[Constant] = &[
    // Discovery.
    abi!(
        discovery::CPUID_FIRST_BASE,
        Hex,
        Forever,
        "The first candidate base leaf."
    ),
    abi!(
        discovery::CPUID_BASE_STRIDE,
        Hex,
        Forever,
        "The distance between candidate bases."
    ),
    abi!(
        discovery::CPUID_BASE_COUNT,
        Dec,
        Forever,
        "The number of candidate bases."
    ),
    quoted!(
        discovery,
        "CPUID_LAST_BASE",
        crate::discovery::CPUID_LAST_BASE,
        Format::Hex,
        "The last candidate base leaf."
    ),
    abi!(
        discovery::CPUID_LEAF_SIGNATURE,
        Dec,
        Forever,
        "Offset of the signature leaf from the base."
    ),
    abi!(
        discovery::CPUID_LEAF_VERSION,
        Dec,
        Forever,
        "Offset of the version leaf."
    ),
    abi!(
        discovery::CPUID_LEAF_TRANSPORT,
        Dec,
        Exact,
        "Offset of the transport leaf."
    ),
    abi!(
        discovery::CPUID_LEAF_LIMITS,
        Dec,
        Exact,
        "Offset of the limits leaf."
    ),
    abi!(
        discovery::CPUID_LEAF_MAX,
        Dec,
        Grows,
        "The highest leaf offset this version defines."
    ),
    quoted!(
        discovery,
        "SIGNATURE",
        0,
        Format::Text(SIGNATURE_TEXT),
        "The interface signature, in ebx, ecx, edx of the signature leaf."
    ),
    abi!(
        discovery::SIGNATURE_EBX,
        Hex,
        Forever,
        "Signature bytes 0 to 3, as read from ebx."
    ),
    abi!(
        discovery::SIGNATURE_ECX,
        Hex,
        Forever,
        "Signature bytes 4 to 7, as read from ecx."
    ),
    abi!(
        discovery::SIGNATURE_EDX,
        Hex,
        Forever,
        "Signature bytes 8 to 11, as read from edx."
    ),
    abi!(
        discovery::TRANSPORT_PIO,
        Bit,
        Exact,
        "Transport flag: the port-I/O doorbell binding (always set)."
    ),
    abi!(
        discovery::TRANSPORT_VMCALL,
        Bit,
        Exact,
        "Transport flag: the vmcall binding."
    ),
    abi!(
        discovery::TRANSPORT_VMMCALL,
        Bit,
        Exact,
        "Transport flag: the vmmcall binding."
    ),
    // Calling convention.
    abi!(
        convention::DOORBELL_PORT,
        Hex,
        Exact,
        "The default doorbell port."
    ),
    abi!(
        convention::RING_NOTIFY_PORT,
        Hex,
        Exact,
        "The default ring-notify port."
    ),
    abi!(
        convention::DOORBELL_WIDTH,
        Dec,
        Exact,
        "The width of the doorbell access, in bytes."
    ),
    abi!(
        convention::MAX_ARGS,
        Dec,
        Exact,
        "The number of argument registers."
    ),
    abi!(
        convention::MAX_RESULTS,
        Dec,
        Exact,
        "The number of result registers besides the status."
    ),
    abi!(
        convention::PAGE_SIZE,
        Dec,
        Exact,
        "The page size, in bytes; the unit of the page-crossing rule."
    ),
    abi!(
        convention::MAX_BLOCK_SIZE,
        Dec,
        Exact,
        "The largest memory block a call takes, in bytes."
    ),
    // Versioning: this release.
    abi!(
        version::VERSION_MAJOR,
        Dec,
        Version,
        "The major number of this release."
    ),
    abi!(
        version::VERSION_MINOR,
        Dec,
        Version,
        "The minor number of this release."
    ),
    abi!(
        version::SPEC_VERSION,
        Version,
        Version,
        "This release of the specification."
    ),
    quoted!(
        version,
        "SPEC_VERSION_RAW",
        crate::version::SPEC_VERSION,
        Format::Hex,
        "This release, encoded as a version value."
    ),
    // Versioning: the feature bits.
    abi!(
        features::FEATURE_CONSOLE,
        Bit,
        Exact,
        "Feature bit: the console family."
    ),
    abi!(
        features::FEATURE_TIME,
        Bit,
        Exact,
        "Feature bit: the time family."
    ),
    abi!(
        features::FEATURE_EVENTS,
        Bit,
        Exact,
        "Feature bit: the events family."
    ),
    abi!(
        features::FEATURE_MEMORY,
        Bit,
        Exact,
        "Feature bit: the memory family."
    ),
    abi!(
        features::FEATURE_VCPU,
        Bit,
        Exact,
        "Feature bit: the vCPU family."
    ),
    abi!(
        features::FEATURE_SYSTEM,
        Bit,
        Exact,
        "Feature bit: the system family."
    ),
    abi!(
        features::FEATURE_MULTICALL,
        Bit,
        Exact,
        "Feature bit: MULTICALL."
    ),
    abi!(
        features::FEATURE_DEFERRED,
        Bit,
        Exact,
        "Feature bit: the per-vCPU deferred queue."
    ),
    abi!(
        features::FEATURE_RING,
        Bit,
        Exact,
        "Feature bit: the submission/completion ring pair."
    ),
    abi!(
        features::FEATURE_STEAL_TIME,
        Bit,
        Exact,
        "Feature bit: the per-vCPU steal-time page (since 1.1)."
    ),
    abi!(
        features::FEATURE_MULTICALL_PAGES,
        Bit,
        Exact,
        "Feature bit: MULTICALL_PAGES, batches on a list of pages (since 1.3)."
    ),
    // Base.
    abi!(
        base::IMPL_ID_REFERENCE,
        Hex,
        Forever,
        "The implementation id of the pvabi reference host."
    ),
    abi!(
        base::IMPL_ID_VENDOR_FIRST,
        Hex,
        Forever,
        "The first implementation id free for vendors."
    ),
    abi!(
        base::NEGOTIATE_REQUESTED_MASK,
        Mask,
        ValidBits,
        "The bits of NEGOTIATE's requested argument that are defined."
    ),
    abi!(
        base::NEGOTIATE_FLAGS_MASK,
        Mask,
        ValidBits,
        "The NEGOTIATE flags defined by this version."
    ),
    enumerator!(
        base::CallState::Absent,
        Dec,
        "PROBE_CALL: the call is not implemented."
    ),
    enumerator!(
        base::CallState::Available,
        Dec,
        "PROBE_CALL: implemented, but its feature is not granted (or NEGOTIATE has not run)."
    ),
    enumerator!(
        base::CallState::Ready,
        Dec,
        "PROBE_CALL: the call may be made now."
    ),
    // Console.
    abi!(
        console::CONSOLE_REGS_MAX,
        Dec,
        Exact,
        "The most bytes CONSOLE_WRITE_REGS carries."
    ),
    abi!(
        console::CONSOLE_WRITE_MAX,
        Dec,
        Exact,
        "The most bytes one CONSOLE_WRITE takes."
    ),
    // Time.
    abi!(
        time::TIME_PAGE_TSC_VALID,
        Bit,
        Exact,
        "Time page flag: the TSC fields may be used to interpolate."
    ),
    // Events.
    abi!(
        events::EVENT_QUEUE_CAPACITY,
        Dec,
        Exact,
        "Entries in an event queue."
    ),
    abi!(
        events::EVENT_QUEUE_ENTRIES_OFFSET,
        Dec,
        Exact,
        "Byte offset of the first entry in the queue page."
    ),
    abi!(
        events::EVENT_VECTOR_MIN,
        Dec,
        Exact,
        "The lowest interrupt vector a queue may use."
    ),
    abi!(
        events::EVENT_VECTOR_MAX,
        Dec,
        Exact,
        "The highest interrupt vector."
    ),
    abi!(
        events::EVENT_MASK_VALID,
        Mask,
        ValidBits,
        "The bits of an event mask that are defined."
    ),
    enumerator!(
        events::EventKind::Timer,
        Dec,
        "The vCPU's one-shot timer expired; data is the deadline."
    ),
    enumerator!(
        events::EventKind::Kick,
        Dec,
        "Another vCPU kicked this one; source is the kicker."
    ),
    enumerator!(
        events::EventKind::User,
        Dec,
        "EVENTS_SEND from vCPU source, carrying data."
    ),
    enumerator!(
        events::EventKind::RingCompletion,
        Dec,
        "Ring completions are waiting; data is the completion-ring tail."
    ),
    // Memory.
    abi!(
        memory::BALLOON_MAX_PFNS,
        Dec,
        Exact,
        "The most page frame numbers one balloon call takes."
    ),
    abi!(
        memory::FLUSH_RANGE_MAX_PAGES,
        Dec,
        Exact,
        "The most pages one MEM_FLUSH_TLB_RANGE names."
    ),
    abi!(
        memory::SHARE_MAX_PAGES,
        Dec,
        Exact,
        "The most pages one MEM_SHARE or MEM_UNSHARE names."
    ),
    // vCPU.
    enumerator!(
        vcpu::WakeReason::Event,
        Dec,
        "VCPU_HALT returned because an event is pending."
    ),
    enumerator!(
        vcpu::WakeReason::Timeout,
        Dec,
        "VCPU_HALT returned because its timeout passed."
    ),
    // System.
    abi!(
        system::CRASH_MESSAGE_MAX,
        Dec,
        Exact,
        "The most bytes of a crash message."
    ),
    // Batching, deferral and rings.
    abi!(
        batch::MULTICALL_MAX_ENTRIES,
        Dec,
        Exact,
        "The most entries one MULTICALL takes."
    ),
    abi!(
        batch::MULTICALL_STOP_ON_ERROR,
        Bit,
        Exact,
        "MULTICALL flag: stop at the first entry that fails."
    ),
    abi!(
        batch::MULTICALL_FLAGS_VALID,
        Mask,
        ValidBits,
        "The MULTICALL flags this version defines."
    ),
    abi!(
        batch::DEFERRED_QUEUE_CAPACITY,
        Dec,
        Exact,
        "Entries in a deferred queue."
    ),
    abi!(
        batch::DEFERRED_ENTRIES_OFFSET,
        Dec,
        Exact,
        "Byte offset of the first entry in the deferred-queue page."
    ),
    abi!(
        batch::SQ_CAPACITY,
        Dec,
        Exact,
        "Entries in a submission ring."
    ),
    abi!(
        batch::CQ_CAPACITY,
        Dec,
        Exact,
        "Entries in a completion ring."
    ),
    abi!(
        batch::RING_ENTRIES_OFFSET,
        Dec,
        Exact,
        "Byte offset of the first entry in a ring page."
    ),
    abi!(
        batch::SQ_NEED_WAKEUP,
        Bit,
        Exact,
        "Submission-ring flag: the polling host sleeps; notify it."
    ),
    abi!(
        batch::RING_COMPLETION_EVENTS,
        Bit,
        Exact,
        "RingSetup flag: post RING_COMPLETION events."
    ),
    abi!(
        batch::RING_FLAGS_VALID,
        Mask,
        ValidBits,
        "The RingSetup flags this version defines."
    ),
    abi!(
        batch::MULTICALL_PAGE_ENTRIES,
        Dec,
        Exact,
        "Entries on one page of a MULTICALL_PAGES batch (since 1.3)."
    ),
    abi!(
        batch::MULTICALL_PAGES_MAX_ENTRIES,
        Dec,
        Exact,
        "The most entries one MULTICALL_PAGES takes (since 1.3)."
    ),
    abi!(
        batch::MULTICALL_PAGES_MAX_PAGES,
        Dec,
        Exact,
        "The most pages on a MULTICALL_PAGES page list (since 1.3)."
    ),
    enumerator!(
        batch::RingMode::Doorbell,
        Dec,
        "The guest notifies the host of submissions."
    ),
    enumerator!(
        batch::RingMode::HostPolled,
        Dec,
        "A host thread polls the submission ring."
    ),
    // The 2.0 preview.
    preview!(
        preview2::TIME_PAGE_V2_TSC_VALID,
        Bit,
        "Version-2 time page flag: the TSC fields are valid."
    ),
    // The reference platform (not ABI: no snapshot records these).
    platform!(
        BOOT_GDT_ADDR,
        Hex,
        "Guest-physical address of the boot GDT."
    ),
    platform!(BOOT_GDT_LIMIT, Hex, "The boot GDT's limit (GDTR.limit)."),
    platform!(CODE_SELECTOR, Hex, "CS at entry: the 64-bit code segment."),
    platform!(
        DATA_SELECTOR,
        Hex,
        "DS, ES, FS, GS and SS at entry: the data segment."
    ),
    platform!(
        TSS_SELECTOR,
        Hex,
        "TR at entry: a busy 64-bit TSS at base 0, limit 0x67."
    ),
    platform!(
        BOOT_STACK_TOP,
        Hex,
        "`rsp` of the boot vCPU at entry (a scratch stack below it)."
    ),
    platform!(
        PML4_ADDR,
        Hex,
        "Guest-physical address of the PML4: CR3 at entry."
    ),
    platform!(PDPT_ADDR, Hex, "Guest-physical address of the PDPT."),
    platform!(
        PD_ADDR,
        Hex,
        "Guest-physical address of the first page directory (one per GiB mapped)."
    ),
    platform!(
        IMAGE_MIN_ADDR,
        Hex,
        "The lowest address a loadable segment of the image may occupy."
    ),
    platform!(
        IMAGE_BASE,
        Hex,
        "Where the project's guest images are linked."
    ),
    platform!(
        MIN_MAPPED_BYTES,
        Hex,
        "The boot page tables map at least this many bytes."
    ),
    platform!(
        BOOT_MAP_PAGE_SIZE,
        Hex,
        "The page size of the boot identity map."
    ),
    platform!(
        BOOT_PTE_FLAGS,
        Hex,
        "Flags of every boot page-table entry: present, writable, user."
    ),
    platform!(
        BOOT_PTE_PS,
        Hex,
        "Page-size bit of the boot page-directory entries."
    ),
    platform!(
        MIN_MEM_BYTES,
        Hex,
        "The smallest guest RAM the reference host runs with."
    ),
    platform!(
        MAX_MEM_BYTES,
        Hex,
        "The largest guest RAM the reference host runs with."
    ),
    platform!(MAX_VCPUS, Dec, "The most vCPUs of one virtual machine."),
    platform!(BOOT_CR0, Hex, "CR0 at entry: PE, MP, ET, NE, WP, PG."),
    platform!(BOOT_CR4, Hex, "CR4 at entry: PAE, OSFXSR, OSXMMEXCPT."),
    platform!(BOOT_EFER, Hex, "EFER at entry: LME, LMA."),
    platform!(BOOT_RFLAGS, Hex, "RFLAGS at entry: interrupts disabled."),
    platform!(BOOT_XCR0, Hex, "XCR0 at entry: x87 state only."),
    platform!(BOOT_FCW, Hex, "The x87 control word at entry."),
    platform!(BOOT_MXCSR, Hex, "MXCSR at entry."),
    platform!(
        BOOT_APIC_BASE,
        Hex,
        "IA32_APIC_BASE at entry: the local APIC is disabled."
    ),
];
