//! Fault injection (feature `fault-injection`, never in a default build): named defects of
//! the kinds real implementations have, switched on one at a time through
//! [`HostConfig::inject`](crate::HostConfig::inject), so that the conformance suite can prove
//! it catches each (`pvabi conform --self-test`).

/// A defect the dispatcher can be told to have.
#[cfg(feature = "fault-injection")]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum InjectedFault {
    /// GET_SPEC_VERSION keeps answering `negotiated` 0 after NEGOTIATE (a stale field).
    SpecVersionForgetsNegotiated,
    /// PROBE_FEATURES reports every offered feature as granted before NEGOTIATE.
    ProbeFeaturesGrantsBeforeNegotiate,
    /// PROBE_CALL reports an unknown code as AVAILABLE instead of ABSENT.
    ProbeCallUnknownIsAvailable,
    /// An unknown call code gets INVALID_PARAMETER instead of NOT_SUPPORTED (a wrong status).
    UnknownCodeIsInvalidParameter,
    /// A second NEGOTIATE succeeds again instead of LOCKED.
    NegotiateNotLocked,
    /// NEGOTIATE grants every offered feature, whatever `optional` asked for.
    NegotiateGrantsEverythingOffered,
    /// NEGOTIATE accepts the requested minimum minor instead of the highest it serves.
    NegotiateAcceptsTheMinimumMinor,
    /// GET_IMPL_ID's name has bytes after its NUL terminator.
    ImplNameNotPadded,
    /// GET_IMPL_VERSION packs its version as a spec version (`major << 16 | minor`), not as
    /// `major << 32 | minor << 16 | patch` (only a profile's claimed version can catch it).
    ImplVersionPackedAsSpecVersion,
    /// Feature calls are performed before NEGOTIATE (the feature gate is missing).
    UngatedBeforeNegotiate,
    /// TIME_SET_PAGE leaves the rest of the page as the guest had it.
    TimePageRestNotZeroed,
    /// TIME_WALLCLOCK's nanoseconds run past one second (an off-by-one bound).
    WallclockNanosecondsOverflow,
    /// The time page is written in the 1.x layout whatever major NEGOTIATE accepted (a host
    /// serving two majors with one layout).
    TimePageIgnoresMajor,
    /// The time page is written once and never refreshed.
    TimePageNotRefreshed,
    /// A time page that was unregistered (address 0) or replaced by another goes on being
    /// written by the refresh thread.
    TimePageWrittenAfterUnregister,
    /// MEM_SHARE of pages outside guest RAM succeeds (an unchecked bound).
    ShareIgnoresRamBounds,
    /// MEM_BALLOON_RELEASE of an already released page succeeds.
    BalloonDoubleReleaseAccepted,
    /// A released page reads back with data that is not the guest's (stale bytes of another
    /// owner, as a host that hands the frame to someone else and back without clearing it).
    ReleasedPageLeaksData,
    /// MEM_UPDATE_PTE clears bit 63 (NX) of the value it writes.
    UpdatePteDropsNx,
    /// An INCOMPLETE MULTICALL returns a resume index one past the entries it processed (an off-by-one continuation: the guest skips an entry).
    MulticallResumeIndexOffByOne,
    /// A MULTICALL entry of a call that is not batchable runs instead of getting NOT_ALLOWED_HERE.
    MulticallAcceptsNonBatchable,
    /// A failed MULTICALL entry gets its `results` overwritten with zeros (only SUCCESS writes them).
    MulticallWritesFailedResults,
    /// The context check (step 4) comes before the feature check (step 3): an ungranted call that is not allowed in its context gets NOT_ALLOWED_HERE instead of NOT_GRANTED (checks out of precedence order).
    ContextCheckedBeforeFeature,
    /// A drain runs the deferred entries newest first (out of queue order).
    DeferredRunsNewestFirst,
    /// A sync-point call other than DEFER_FLUSH does not drain the caller's deferred queue (a missed drain point).
    SyncPointDoesNotDrain,
    /// A deferred queue whose occupancy exceeds its capacity is not treated as malformed: a capacity's worth of its entries run.
    DeferredMalformedTailRuns,
    /// In doorbell mode, a write of the vCPU's index to the ring-notify port does not process its ring.
    RingNotifyIgnored,
    /// A host-polled ring's poller goes to sleep without setting SQ_NEED_WAKEUP, so a guest that follows the protocol never wakes it.
    PollerSleepsWithoutNeedWakeup,
    /// Each ring completion is written twice (two slots, the completion-ring tail advanced by two).
    RingCompletionDuplicated,
    /// A full completion ring does not stop consumption: completions the guest has not consumed are overwritten (no back-pressure).
    RingFullCompletionRingOverwritten,
    /// Every unmasked event raises the interrupt and stores 1 to `interrupt_pending`, even while an interrupt is pending (events not coalesced).
    EventsNotCoalesced,
    /// An event of a masked kind raises the interrupt (the mask is ignored).
    MaskedEventRaisesInterrupt,
    /// A full event queue is written anyway: the new event overwrites one the guest has not consumed instead of being dropped and counted.
    EventsFullQueueOverwrites,
    /// EVENTS_SET_MASK sets and returns vCPU 0's mask whichever vCPU calls (per-vCPU state leaking between vCPUs).
    EventMaskSharedByAllVcpus,
    /// VCPU_HALT with a timeout returns TIMEOUT at once, without waiting for it to pass.
    HaltTimesOutEarly,
    /// VCPU_KICK of a stopped vCPU succeeds (and latches a wake-up) instead of INVALID_STATE.
    KickOfStoppedVcpuAccepted,
    /// CONSOLE_WRITE_REGS emits all 32 bytes of its registers, not the first `length`.
    ConsoleWriteRegsIgnoresLength,
    /// CONSOLE_WRITE emits nothing during the call and, at the start of the vCPU's next call, the
    /// buffer as guest memory then holds it (an asynchronous console that keeps the guest's
    /// address instead of the copy it took).
    ConsoleEmitsTheBufferLater,
    /// The register arguments of the System family are not checked (step 5 skipped): SYSTEM_SHUTDOWN with reserved code bits ends the VM.
    SystemArgumentsUnchecked,
    /// An INCOMPLETE MULTICALL_PAGES preempted at the first entry of a page returns as `next` the last entry of the page before (a continuation index broken across a page boundary: that entry runs twice).
    MulticallPagesResumeBackAcrossPage,
    /// MULTICALL_PAGES checks only the pages from the one that holds entry `start` on, not the pages before it (a missed check of the list).
    MulticallPagesSkipsPagesBeforeStart,
    /// MEM_UPDATE_PTE writes its value as two 32-bit halves, not with one atomic 64-bit store (a concurrent reader sees a mix).
    UpdatePteTornStore,
    /// MEM_FLUSH_TLB_RANGE of a range whose end passes 2^64 gets INVALID_PARAMETER instead of SUCCESS (an overflow treated as an error).
    FlushRangePastTheTopRefused,
    /// The time page's update makes `sequence` odd and even again before it writes the fields
    /// (the fields change under an even sequence: the seqlock's write order broken).
    TimePageSequenceEvenBeforeData,
    /// A reset keeps the result of NEGOTIATE: after SYSTEM_REBOOT resets the VM, NEGOTIATE is
    /// still locked.
    NegotiateNotUnlockedOnReset,
    /// SYSTEM_SHUTDOWN reports only the low 8 bits of `code` (a host that passes the code on
    /// as a process exit status).
    ShutdownCodeTruncated,
    /// SYSTEM_CRASH reports only the first 8 bytes of its message (a cut copy).
    CrashMessageCut,
    /// A reset keeps the ring pairs of the boot before: after SYSTEM_REBOOT resets the VM,
    /// the old rings are still served (their pollers too), and consume what the guest writes
    /// into their pages.
    RingsCarriedOverReset,
    /// When the VM ends (SYSTEM_SHUTDOWN, SYSTEM_REBOOT, SYSTEM_CRASH), the host runs what is
    /// still queued in each submission ring and moves its `head`, but writes no completion
    /// for it ("nobody will read them").
    RingsRunWithoutCompletionsAtEnd,
    /// A doorbell access made outside 64-bit mode (in compatibility mode) is performed as a
    /// call instead of being answered with NOT_SUPPORTED (a host that never looks at `CS.L`).
    DoorbellOutsideLongModeIsACall,
    /// After a migration the host grants every feature it offers, not the ones NEGOTIATE
    /// granted (a migration target that re-derives the grant instead of carrying it over).
    MigrationGrantsEverythingOffered,
    /// After a migration the time page is written once, at the migration, and never again (a
    /// migration target that brings the page up to date but does not start refreshing it).
    TimePageFrozenAfterMigration,
}

#[cfg(feature = "fault-injection")]
impl InjectedFault {
    /// Every fault.
    pub const ALL: [InjectedFault; 52] = [
        InjectedFault::SpecVersionForgetsNegotiated,
        InjectedFault::ProbeFeaturesGrantsBeforeNegotiate,
        InjectedFault::ProbeCallUnknownIsAvailable,
        InjectedFault::UnknownCodeIsInvalidParameter,
        InjectedFault::NegotiateNotLocked,
        InjectedFault::NegotiateGrantsEverythingOffered,
        InjectedFault::NegotiateAcceptsTheMinimumMinor,
        InjectedFault::ImplNameNotPadded,
        InjectedFault::ImplVersionPackedAsSpecVersion,
        InjectedFault::UngatedBeforeNegotiate,
        InjectedFault::TimePageRestNotZeroed,
        InjectedFault::WallclockNanosecondsOverflow,
        InjectedFault::TimePageNotRefreshed,
        InjectedFault::TimePageWrittenAfterUnregister,
        InjectedFault::ShareIgnoresRamBounds,
        InjectedFault::BalloonDoubleReleaseAccepted,
        InjectedFault::ReleasedPageLeaksData,
        InjectedFault::TimePageIgnoresMajor,
        InjectedFault::UpdatePteDropsNx,
        InjectedFault::MulticallResumeIndexOffByOne,
        InjectedFault::MulticallAcceptsNonBatchable,
        InjectedFault::MulticallWritesFailedResults,
        InjectedFault::ContextCheckedBeforeFeature,
        InjectedFault::DeferredRunsNewestFirst,
        InjectedFault::SyncPointDoesNotDrain,
        InjectedFault::DeferredMalformedTailRuns,
        InjectedFault::RingNotifyIgnored,
        InjectedFault::PollerSleepsWithoutNeedWakeup,
        InjectedFault::RingCompletionDuplicated,
        InjectedFault::RingFullCompletionRingOverwritten,
        InjectedFault::EventsNotCoalesced,
        InjectedFault::MaskedEventRaisesInterrupt,
        InjectedFault::EventsFullQueueOverwrites,
        InjectedFault::EventMaskSharedByAllVcpus,
        InjectedFault::HaltTimesOutEarly,
        InjectedFault::KickOfStoppedVcpuAccepted,
        InjectedFault::ConsoleWriteRegsIgnoresLength,
        InjectedFault::ConsoleEmitsTheBufferLater,
        InjectedFault::SystemArgumentsUnchecked,
        InjectedFault::MulticallPagesResumeBackAcrossPage,
        InjectedFault::MulticallPagesSkipsPagesBeforeStart,
        InjectedFault::UpdatePteTornStore,
        InjectedFault::FlushRangePastTheTopRefused,
        InjectedFault::TimePageSequenceEvenBeforeData,
        InjectedFault::NegotiateNotUnlockedOnReset,
        InjectedFault::ShutdownCodeTruncated,
        InjectedFault::CrashMessageCut,
        InjectedFault::RingsCarriedOverReset,
        InjectedFault::RingsRunWithoutCompletionsAtEnd,
        InjectedFault::DoorbellOutsideLongModeIsACall,
        InjectedFault::MigrationGrantsEverythingOffered,
        InjectedFault::TimePageFrozenAfterMigration,
    ];

    /// The part of the ABI the fault breaks, as the name of the conformance test that covers
    /// it (`pvabi conform --self-test` runs that test first).
    pub const fn area(self) -> &'static str {
        match self {
            InjectedFault::SpecVersionForgetsNegotiated => "base",
            InjectedFault::ProbeCallUnknownIsAvailable => "base",
            InjectedFault::UnknownCodeIsInvalidParameter => "base",
            InjectedFault::NegotiateNotLocked => "base",
            InjectedFault::NegotiateAcceptsTheMinimumMinor => "base",
            InjectedFault::ImplNameNotPadded => "base",
            InjectedFault::ImplVersionPackedAsSpecVersion => "base",
            InjectedFault::UngatedBeforeNegotiate => "base",
            InjectedFault::TimePageRestNotZeroed => "time",
            InjectedFault::WallclockNanosecondsOverflow => "time",
            InjectedFault::TimePageNotRefreshed => "time",
            InjectedFault::TimePageWrittenAfterUnregister => "time",
            InjectedFault::ShareIgnoresRamBounds => "memory",
            InjectedFault::BalloonDoubleReleaseAccepted => "memory",
            InjectedFault::ReleasedPageLeaksData => "memory",
            InjectedFault::TimePageIgnoresMajor => "compat",
            InjectedFault::UpdatePteDropsNx => "memory",
            InjectedFault::MulticallResumeIndexOffByOne => "multicall",
            InjectedFault::MulticallAcceptsNonBatchable => "multicall",
            InjectedFault::MulticallWritesFailedResults => "multicall",
            InjectedFault::ContextCheckedBeforeFeature => "multicall",
            InjectedFault::DeferredRunsNewestFirst => "deferred",
            InjectedFault::SyncPointDoesNotDrain => "deferred",
            InjectedFault::DeferredMalformedTailRuns => "deferred",
            InjectedFault::RingNotifyIgnored => "ring",
            InjectedFault::PollerSleepsWithoutNeedWakeup => "ring",
            InjectedFault::RingCompletionDuplicated => "ring",
            InjectedFault::EventsNotCoalesced => "events",
            InjectedFault::MaskedEventRaisesInterrupt => "events",
            InjectedFault::EventsFullQueueOverwrites => "events",
            InjectedFault::EventMaskSharedByAllVcpus => "vcpu",
            InjectedFault::HaltTimesOutEarly => "vcpu",
            InjectedFault::KickOfStoppedVcpuAccepted => "vcpu",
            InjectedFault::ConsoleWriteRegsIgnoresLength => "system",
            InjectedFault::ConsoleEmitsTheBufferLater => "system",
            InjectedFault::SystemArgumentsUnchecked => "system",
            InjectedFault::ProbeFeaturesGrantsBeforeNegotiate => "base",
            InjectedFault::NegotiateGrantsEverythingOffered => "base",
            InjectedFault::RingFullCompletionRingOverwritten => "ring",
            InjectedFault::MulticallPagesResumeBackAcrossPage => "multicall",
            InjectedFault::MulticallPagesSkipsPagesBeforeStart => "multicall",
            InjectedFault::UpdatePteTornStore => "vcpu",
            InjectedFault::FlushRangePastTheTopRefused => "memory",
            InjectedFault::TimePageSequenceEvenBeforeData => "time",
            InjectedFault::NegotiateNotUnlockedOnReset => "reset",
            InjectedFault::ShutdownCodeTruncated => "system",
            InjectedFault::CrashMessageCut => "system",
            InjectedFault::RingsCarriedOverReset => "reset",
            InjectedFault::RingsRunWithoutCompletionsAtEnd => "reset",
            InjectedFault::DoorbellOutsideLongModeIsACall => "convention",
            InjectedFault::MigrationGrantsEverythingOffered => "migrate",
            InjectedFault::TimePageFrozenAfterMigration => "migrate",
        }
    }

    /// A short name (kebab case).
    pub const fn name(self) -> &'static str {
        match self {
            InjectedFault::SpecVersionForgetsNegotiated => "spec-version-forgets-negotiated",
            InjectedFault::ProbeFeaturesGrantsBeforeNegotiate => {
                "probe-features-grants-before-negotiate"
            }
            InjectedFault::ProbeCallUnknownIsAvailable => "probe-call-unknown-is-available",
            InjectedFault::UnknownCodeIsInvalidParameter => "unknown-code-is-invalid-parameter",
            InjectedFault::NegotiateNotLocked => "negotiate-not-locked",
            InjectedFault::NegotiateGrantsEverythingOffered => {
                "negotiate-grants-everything-offered"
            }
            InjectedFault::NegotiateAcceptsTheMinimumMinor => "negotiate-accepts-the-minimum-minor",
            InjectedFault::ImplNameNotPadded => "impl-name-not-padded",
            InjectedFault::ImplVersionPackedAsSpecVersion => "impl-version-packed-as-spec-version",
            InjectedFault::UngatedBeforeNegotiate => "ungated-before-negotiate",
            InjectedFault::TimePageRestNotZeroed => "time-page-rest-not-zeroed",
            InjectedFault::WallclockNanosecondsOverflow => "wallclock-nanoseconds-overflow",
            InjectedFault::TimePageNotRefreshed => "time-page-not-refreshed",
            InjectedFault::TimePageWrittenAfterUnregister => "time-page-written-after-unregister",
            InjectedFault::ShareIgnoresRamBounds => "share-ignores-ram-bounds",
            InjectedFault::BalloonDoubleReleaseAccepted => "balloon-double-release-accepted",
            InjectedFault::ReleasedPageLeaksData => "released-page-leaks-data",
            InjectedFault::TimePageIgnoresMajor => "time-page-ignores-major",
            InjectedFault::UpdatePteDropsNx => "update-pte-drops-nx",
            InjectedFault::MulticallResumeIndexOffByOne => "multicall-resume-index-off-by-one",
            InjectedFault::MulticallAcceptsNonBatchable => "multicall-accepts-non-batchable",
            InjectedFault::MulticallWritesFailedResults => "multicall-writes-failed-results",
            InjectedFault::ContextCheckedBeforeFeature => "context-checked-before-feature",
            InjectedFault::DeferredRunsNewestFirst => "deferred-runs-newest-first",
            InjectedFault::SyncPointDoesNotDrain => "sync-point-does-not-drain",
            InjectedFault::DeferredMalformedTailRuns => "deferred-malformed-tail-runs",
            InjectedFault::RingNotifyIgnored => "ring-notify-ignored",
            InjectedFault::PollerSleepsWithoutNeedWakeup => "poller-sleeps-without-need-wakeup",
            InjectedFault::RingCompletionDuplicated => "ring-completion-duplicated",
            InjectedFault::RingFullCompletionRingOverwritten => {
                "ring-full-completion-ring-overwritten"
            }
            InjectedFault::EventsNotCoalesced => "events-not-coalesced",
            InjectedFault::MaskedEventRaisesInterrupt => "masked-event-raises-interrupt",
            InjectedFault::EventsFullQueueOverwrites => "events-full-queue-overwrites",
            InjectedFault::EventMaskSharedByAllVcpus => "event-mask-shared-by-all-vcpus",
            InjectedFault::HaltTimesOutEarly => "halt-times-out-early",
            InjectedFault::KickOfStoppedVcpuAccepted => "kick-of-stopped-vcpu-accepted",
            InjectedFault::ConsoleWriteRegsIgnoresLength => "console-write-regs-ignores-length",
            InjectedFault::ConsoleEmitsTheBufferLater => "console-emits-the-buffer-later",
            InjectedFault::SystemArgumentsUnchecked => "system-arguments-unchecked",
            InjectedFault::MulticallPagesResumeBackAcrossPage => {
                "multicall-pages-resume-back-across-page"
            }
            InjectedFault::MulticallPagesSkipsPagesBeforeStart => {
                "multicall-pages-skips-pages-before-start"
            }
            InjectedFault::UpdatePteTornStore => "update-pte-torn-store",
            InjectedFault::FlushRangePastTheTopRefused => "flush-range-past-the-top-refused",
            InjectedFault::TimePageSequenceEvenBeforeData => "time-page-sequence-even-before-data",
            InjectedFault::NegotiateNotUnlockedOnReset => "negotiate-not-unlocked-on-reset",
            InjectedFault::ShutdownCodeTruncated => "shutdown-code-truncated",
            InjectedFault::CrashMessageCut => "crash-message-cut",
            InjectedFault::RingsCarriedOverReset => "rings-carried-over-reset",
            InjectedFault::RingsRunWithoutCompletionsAtEnd => {
                "rings-run-without-completions-at-end"
            }
            InjectedFault::DoorbellOutsideLongModeIsACall => "doorbell-outside-long-mode-is-a-call",
            InjectedFault::MigrationGrantsEverythingOffered => {
                "migration-grants-everything-offered"
            }
            InjectedFault::TimePageFrozenAfterMigration => "time-page-frozen-after-migration",
        }
    }
}

/// Whether fault `$f` is injected into the dispatcher behind `$h` (always false without the
/// feature, so the check costs nothing in a default build).
#[cfg(feature = "fault-injection")]
macro_rules! injected {
    ($h:expr, $f:ident) => {
        $h.config.inject == Some($crate::faults::InjectedFault::$f)
    };
}

#[cfg(not(feature = "fault-injection"))]
macro_rules! injected {
    ($h:expr, $f:ident) => {
        false
    };
}

pub(crate) use injected;
