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

/// The conformance test `convention-compat-mode` (`guest-ref/bare/conform/src/compat_mode.rs`):
/// a doorbell write made in compatibility mode (a 32-bit ring-3 code segment) performs no call.
pub fn conform_convention_compat_mode() -> &'static [u8] {
    include_bytes!(env!("PVABI_GUEST_CONFORM_CONVENTION_COMPAT_MODE"))
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

/// The conformance test `version-1.0` (`guest-ref/bare/conform/src/version_1_0.rs`): the checks
/// of `version`, which the suite runs under a host acting as release 1.0.
pub fn conform_version_1_0() -> &'static [u8] {
    include_bytes!(env!("PVABI_GUEST_CONFORM_VERSION_1_0"))
}

/// The conformance test `platform` (`guest-ref/bare/conform/src/platform.rs`): guest RAM, the boot structures and zeroed RAM, the entry state and the platform's CPUID values.
pub fn conform_platform() -> &'static [u8] {
    include_bytes!(env!("PVABI_GUEST_CONFORM_PLATFORM"))
}

/// The conformance test `reset` (`guest-ref/bare/conform/src/reset.rs`): a guest that survives its own SYSTEM_REBOOT and checks, on its second boot, what a reset restores.
pub fn conform_reset() -> &'static [u8] {
    include_bytes!(env!("PVABI_GUEST_CONFORM_RESET"))
}

/// The conformance test `timer` (`guest-ref/bare/conform/src/timer.rs`): TIME_FREQUENCY, the one-shot timer and the steal-time page.
pub fn conform_timer() -> &'static [u8] {
    include_bytes!(env!("PVABI_GUEST_CONFORM_TIMER"))
}

/// The conformance test `platform-fault` (`guest-ref/bare/conform/src/platform_fault.rs`): an
/// access past guest RAM, announced over the channel, which must end the VM by a fault.
pub fn conform_platform_fault() -> &'static [u8] {
    include_bytes!(env!("PVABI_GUEST_CONFORM_PLATFORM_FAULT"))
}

/// The conformance test `system-shutdown` (`guest-ref/bare/conform/src/shutdown.rs`):
/// SYSTEM_SHUTDOWN with a code whose upper bits are set, announced over the channel, while
/// vCPU 1 makes calls at CPL3.
pub fn conform_system_shutdown() -> &'static [u8] {
    include_bytes!(env!("PVABI_GUEST_CONFORM_SYSTEM_SHUTDOWN"))
}

/// The conformance test `system-crash` (`guest-ref/bare/conform/src/crash.rs`): SYSTEM_CRASH
/// with a message, announced over the channel, while vCPU 1 makes calls at CPL3.
pub fn conform_system_crash() -> &'static [u8] {
    include_bytes!(env!("PVABI_GUEST_CONFORM_SYSTEM_CRASH"))
}

/// The conformance test `compat-1.x` (`guest-ref/bare/conform/src/compat_1.rs`): under a host
/// serving two majors, a guest of major 1 sees the time page in the 1.x layout.
pub fn conform_compat_1() -> &'static [u8] {
    include_bytes!(env!("PVABI_GUEST_CONFORM_COMPAT_1"))
}

/// The conformance test `compat-2.0` (`guest-ref/bare/conform/src/compat_2.rs`): under a host
/// serving two majors, a guest of the 2.0 preview sees the time page in its layout.
pub fn conform_compat_2() -> &'static [u8] {
    include_bytes!(env!("PVABI_GUEST_CONFORM_COMPAT_2"))
}

/// The conformance test `migrate` (`guest-ref/bare/conform/src/migrate.rs`): asks the host
/// for a change of the TSC offset and for a migration, and checks the time page and the
/// negotiated state after each.
pub fn conform_migrate() -> &'static [u8] {
    include_bytes!(env!("PVABI_GUEST_CONFORM_MIGRATE"))
}

/// The deliberately careless guest (`guest-ref/bare/careless`): the negative case of
/// `pvabi conform --guest` (an ungranted call, an ignored INCOMPLETE, a time-page read without
/// the sequence lock, and a mistake for each shared-page protocol the checking host watches).
pub fn careless() -> &'static [u8] {
    include_bytes!(env!("PVABI_GUEST_CARELESS"))
}

/// The second careless guest (`guest-ref/bare/careless/src/bin/careless_discovery.rs`): it
/// skips discovery and calls at the default doorbell port.
pub fn careless_discovery() -> &'static [u8] {
    include_bytes!(env!("PVABI_GUEST_CARELESS_DISCOVERY"))
}

/// The third careless guest (`guest-ref/bare/careless/src/bin/careless_identity.rs`): it
/// negotiates TIME and calls TIME_FREQUENCY only when GET_IMPL_ID names the reference host
/// (PVABI-BASE-005, which shows only by comparing two runs).
pub fn careless_identity() -> &'static [u8] {
    include_bytes!(env!("PVABI_GUEST_CARELESS_IDENTITY"))
}

/// The fourth careless guest (`guest-ref/bare/careless/src/bin/careless_cpuid.rs`): it reads
/// the pvabi leaf above the signature leaf's eax (PVABI-DISC-004) and executes `vmcall`
/// (PVABI-CONV-010), which only the checking host's discovery trace sees.
pub fn careless_cpuid() -> &'static [u8] {
    include_bytes!(env!("PVABI_GUEST_CARELESS_CPUID"))
}

/// The fifth careless guest (`guest-ref/bare/careless/src/bin/careless_order.rs`): it stores a
/// deferred queue's and a submission ring's `tail` before it writes the entry there
/// (PVABI-DEFER-001, PVABI-RING-001), which only the checking host's step windows see, and an
/// event queue's and a completion ring's `head` before it reads the entries it passes
/// (PVABI-EVT-010, PVABI-RING-006), which only its watched pages show.
pub fn careless_order() -> &'static [u8] {
    include_bytes!(env!("PVABI_GUEST_CARELESS_ORDER"))
}

/// The sixth careless guest (`guest-ref/bare/careless/src/bin/careless_pte.rs`): it reads
/// through a page-table entry whose MEM_UPDATE_PTE waits in its deferred queue, before a drain
/// point (PVABI-MEM-013, PVABI-DEFER-008), which only the checking host's step windows see.
pub fn careless_pte() -> &'static [u8] {
    include_bytes!(env!("PVABI_GUEST_CARELESS_PTE"))
}

/// The hostile guest (`guest-ref/bare/hostile`): table-driven malformed inputs, double-fetch
/// races, load and fault scenarios, run by the host's hostile, load and fault tests.
pub fn hostile() -> &'static [u8] {
    include_bytes!(env!("PVABI_GUEST_HOSTILE"))
}

/// The conformance test `multicall` (`guest-ref/bare/conform/src/multicall.rs`): MULTICALL's
/// entries, statuses, results, refusals, STOP_ON_ERROR, the one copy and resumption.
pub fn conform_multicall() -> &'static [u8] {
    include_bytes!(env!("PVABI_GUEST_CONFORM_MULTICALL"))
}

/// The conformance test `multicall-preempt` (`guest-ref/bare/conform/src/multicall_preempt.rs`):
/// the checks of `multicall`, run under a host that preempts after every entry.
pub fn conform_multicall_preempt() -> &'static [u8] {
    include_bytes!(env!("PVABI_GUEST_CONFORM_MULTICALL_PREEMPT"))
}

/// The conformance test `deferred` (`guest-ref/bare/conform/src/deferred.rs`): the deferred
/// queue's header, drain points, order, failure records, malformed and wrapping indices.
pub fn conform_deferred() -> &'static [u8] {
    include_bytes!(env!("PVABI_GUEST_CONFORM_DEFERRED"))
}

/// The conformance test `ring` (`guest-ref/bare/conform/src/ring.rs`):
/// the rings in doorbell and host-polled mode.
pub fn conform_ring() -> &'static [u8] {
    include_bytes!(env!("PVABI_GUEST_CONFORM_RING"))
}

/// The conformance test `events` (`guest-ref/bare/conform/src/events.rs`):
/// the event queue, posting, masking, coalescing and the wake latch.
pub fn conform_events() -> &'static [u8] {
    include_bytes!(env!("PVABI_GUEST_CONFORM_EVENTS"))
}

/// The conformance test `vcpu` (`guest-ref/bare/conform/src/vcpu.rs`):
/// the vCPU family and per-vCPU state, on two vCPUs.
pub fn conform_vcpu() -> &'static [u8] {
    include_bytes!(env!("PVABI_GUEST_CONFORM_VCPU"))
}

/// The conformance test `system` (`guest-ref/bare/conform/src/system.rs`):
/// the console and system calls, as far as the VM survives them.
pub fn conform_system() -> &'static [u8] {
    include_bytes!(env!("PVABI_GUEST_CONFORM_SYSTEM"))
}

/// A function that returns an embedded guest image.
pub type GuestImage = fn() -> &'static [u8];

/// The built-in guests by name.
pub const ALL: &[(&str, GuestImage)] = &[
    ("demo", demo),
    ("smoke", smoke),
    ("probe", probe),
    ("hostile", hostile),
    ("bench", bench),
    ("matrix", matrix),
    ("conform-base", conform_base),
    ("conform-time", conform_time),
    ("conform-memory", conform_memory),
    ("conform-multicall", conform_multicall),
    ("conform-multicall-preempt", conform_multicall_preempt),
    ("conform-deferred", conform_deferred),
    ("conform-ring", conform_ring),
    ("conform-events", conform_events),
    ("conform-vcpu", conform_vcpu),
    ("conform-system", conform_system),
    ("careless", careless),
    ("careless-discovery", careless_discovery),
    ("careless-identity", careless_identity),
    ("careless-cpuid", careless_cpuid),
    ("careless-order", careless_order),
    ("careless-pte", careless_pte),
    ("conform-convention", conform_convention),
    (
        "conform-convention-compat-mode",
        conform_convention_compat_mode,
    ),
    ("conform-status", conform_status),
    ("conform-version", conform_version),
    ("conform-version-1-0", conform_version_1_0),
    ("conform-platform", conform_platform),
    ("conform-reset", conform_reset),
    ("conform-timer", conform_timer),
    ("conform-platform-fault", conform_platform_fault),
    ("conform-system-shutdown", conform_system_shutdown),
    ("conform-system-crash", conform_system_crash),
    ("conform-compat-1", conform_compat_1),
    ("conform-compat-2", conform_compat_2),
    ("conform-migrate", conform_migrate),
];

/// A built-in guest image by name (see [`ALL`]).
pub fn by_name(name: &str) -> Option<&'static [u8]> {
    ALL.iter()
        .find(|(n, _)| *n == name)
        .map(|(_, image)| image())
}
