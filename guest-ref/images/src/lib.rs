//! The built-in bare-metal pvabi guests, embedded as ELF images.
//!
//! The guests live in `guest-ref/bare` (a cargo workspace of its own, built without SSE and
//! linked freestanding at 0x200000); this crate's build script builds all of them with one
//! nested `cargo build` and embeds the results. Only what runs guests depends on this crate,
//! so a VMM that links `pvabi-dispatch` or `pvabi-host` alone never builds a guest.
//!
//! ```
//! let demo = pvabi_guest_images::demo();
//! assert_eq!(&demo[..4], b"\x7fELF");
//! assert!(pvabi_guest_images::by_name("smoke").is_some());
//! ```

/// The demo guest (`guest-ref/bare/demo`): exercises every pvabi call family.
pub fn demo() -> &'static [u8] {
    include_bytes!(env!("PVABI_GUEST_DEMO"))
}

/// The VM layer's bring-up guest (`guest-ref/bare/smoke`; raw test protocol, not pvabi).
pub fn smoke() -> &'static [u8] {
    include_bytes!(env!("PVABI_GUEST_SMOKE"))
}

/// The probe guest (`guest-ref/bare/probe`): checks of the host's answers, run by the
/// host's end-to-end tests.
pub fn probe() -> &'static [u8] {
    include_bytes!(env!("PVABI_GUEST_PROBE"))
}

/// The benchmark guest (`guest-ref/bare/bench`), driven by `pvabi bench`.
pub fn bench() -> &'static [u8] {
    include_bytes!(env!("PVABI_GUEST_BENCH"))
}

/// The cross-version matrix guest (`guest-ref/bare/matrix`).
pub fn matrix() -> &'static [u8] {
    include_bytes!(env!("PVABI_GUEST_MATRIX"))
}

/// The conformance test `base` (`guest-ref/bare/conform/src/base.rs`): discovery and the Base
/// family, reported over the conformance suite's verdict channel.
pub fn conform_base() -> &'static [u8] {
    include_bytes!(env!("PVABI_GUEST_CONFORM_BASE"))
}

/// The conformance test `time` (`guest-ref/bare/conform/src/time.rs`): the clocks and the
/// shared time page.
pub fn conform_time() -> &'static [u8] {
    include_bytes!(env!("PVABI_GUEST_CONFORM_TIME"))
}

/// The conformance test `memory` (`guest-ref/bare/conform/src/memory.rs`): sharing, the
/// balloon, MEM_UPDATE_PTE and the flushes.
pub fn conform_memory() -> &'static [u8] {
    include_bytes!(env!("PVABI_GUEST_CONFORM_MEMORY"))
}

/// The conformance test `convention` (`guest-ref/bare/conform/src/convention.rs`): the
/// calling convention, register by register, and the accesses that perform no call.
pub fn conform_convention() -> &'static [u8] {
    include_bytes!(env!("PVABI_GUEST_CONFORM_CONVENTION"))
}

/// The conformance test `status` (`guest-ref/bare/conform/src/status.rs`): the precedence
/// order with calls wrong in several ways at once, and what a failed call leaves.
pub fn conform_status() -> &'static [u8] {
    include_bytes!(env!("PVABI_GUEST_CONFORM_STATUS"))
}

/// The conformance test `version` (`guest-ref/bare/conform/src/version.rs`): NOT_NEGOTIATED, NOT_GRANTED and PROBE_CALL over the whole call table, the served majors, the limits leaf, and CPUID leaves unchanged by NEGOTIATE.
pub fn conform_version() -> &'static [u8] {
    include_bytes!(env!("PVABI_GUEST_CONFORM_VERSION"))
}

/// The conformance test `platform` (`guest-ref/bare/conform/src/platform.rs`): guest RAM, the boot structures and zeroed RAM, the entry state and the platform's CPUID values.
pub fn conform_platform() -> &'static [u8] {
    include_bytes!(env!("PVABI_GUEST_CONFORM_PLATFORM"))
}

/// The deliberately careless guest (`guest-ref/bare/careless`): the negative case of
/// `pvabi conform --guest` (an ungranted call, an ignored INCOMPLETE, a time-page read without
/// the sequence lock).
pub fn careless() -> &'static [u8] {
    include_bytes!(env!("PVABI_GUEST_CARELESS"))
}

/// A function that returns an embedded guest image.
pub type GuestImage = fn() -> &'static [u8];

/// The built-in guests by name.
pub const ALL: &[(&str, GuestImage)] = &[
    ("demo", demo),
    ("smoke", smoke),
    ("probe", probe),
    ("bench", bench),
    ("matrix", matrix),
    ("conform-base", conform_base),
    ("conform-time", conform_time),
    ("conform-memory", conform_memory),
    ("careless", careless),
    ("conform-convention", conform_convention),
    ("conform-status", conform_status),
    ("conform-version", conform_version),
    ("conform-platform", conform_platform),
];

/// A built-in guest image by name (see [`ALL`]).
pub fn by_name(name: &str) -> Option<&'static [u8]> {
    ALL.iter()
        .find(|(n, _)| *n == name)
        .map(|(_, image)| image())
}
