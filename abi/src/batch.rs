//! Spec chapter "Batching, deferral and rings".
//!
//! - MULTICALL runs an array of [`MulticallEntry`]s with per-entry status and results. It
//!   returns a resume index and a processed count, so a host may preempt a long batch
//!   (`INCOMPLETE`) and the guest re-issues it from where it stopped. Batches do not nest.
//! - MULTICALL_PAGES (since 1.3) runs the same entries, up to
//!   [`MULTICALL_PAGES_MAX_ENTRIES`] of them, laid out [`MULTICALL_PAGE_ENTRIES`] to a page
//!   ([`MulticallPage`]) on pages named by a page list, so that one exit carries a batch
//!   larger than a page while no structure the host reads crosses a page.
//! - The per-vCPU deferred queue ([`DeferredQueueHeader`] + [`DeferredEntry`]s) holds calls of
//!   a deferral class. The host drains it on DEFER_FLUSH and before it handles any sync-point
//!   call of that vCPU, so deferred calls take effect in queue order, before the next sync point.
//! - The submission/completion ring pair ([`RingHeader`], [`SubmissionEntry`],
//!   [`CompletionEntry`]) carries asynchronous calls without an exit per call, with a doorbell
//!   mode and a host-polled mode.

use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, TryFromBytes};

use crate::calls::{arg, plain, res, ArgCheck, BlockDesc, BlockKind, Call, CallDescriptor};
use crate::convention::{ReservedU32, ReservedU64};
use crate::features::Features;

/// The most entries one MULTICALL takes (one page of entries, rounded down to a power of two).
pub const MULTICALL_MAX_ENTRIES: u64 = 32;
/// MULTICALL flag: stop at the first entry whose status is not SUCCESS.
pub const MULTICALL_STOP_ON_ERROR: u64 = 1 << 0;
/// The MULTICALL flags this version defines.
pub const MULTICALL_FLAGS_VALID: u64 = MULTICALL_STOP_ON_ERROR;

/// The entries on one page of a MULTICALL_PAGES batch: as many 96-byte entries as fit in
/// 4096 bytes (since 1.3).
pub const MULTICALL_PAGE_ENTRIES: u64 = 42;
/// The most entries one MULTICALL_PAGES takes (since 1.3).
pub const MULTICALL_PAGES_MAX_ENTRIES: u64 = 4096;
/// The most pages one MULTICALL_PAGES batch is spread over: the pages that
/// [`MULTICALL_PAGES_MAX_ENTRIES`] entries fill, [`MULTICALL_PAGE_ENTRIES`] to a page
/// (since 1.3).
pub const MULTICALL_PAGES_MAX_PAGES: u64 = 98;

/// The number of pages a MULTICALL_PAGES batch of `count` entries is spread over: entry `i`
/// lies on page `i / 42`, at byte offset `96 * (i % 42)`.
///
/// ```
/// use pvabi_abi::batch::multicall_pages_for;
/// assert_eq!(multicall_pages_for(1), 1);
/// assert_eq!(multicall_pages_for(42), 1);
/// assert_eq!(multicall_pages_for(43), 2);
/// assert_eq!(multicall_pages_for(1024), 25);
/// assert_eq!(multicall_pages_for(4096), 98);
/// ```
pub const fn multicall_pages_for(count: u64) -> u64 {
    count.div_ceil(MULTICALL_PAGE_ENTRIES)
}

/// Number of entries in a deferred queue.
pub const DEFERRED_QUEUE_CAPACITY: u32 = 64;
/// Offset of the first entry in the deferred-queue page.
pub const DEFERRED_ENTRIES_OFFSET: u64 = 64;

/// Number of entries in a submission ring.
pub const SQ_CAPACITY: u32 = 32;
/// Number of entries in a completion ring.
pub const CQ_CAPACITY: u32 = 64;
/// Offset of the first entry in a ring page.
pub const RING_ENTRIES_OFFSET: u64 = 64;
/// `RingHeader::flags` of the submission ring: the polling host is asleep; ring the doorbell.
pub const SQ_NEED_WAKEUP: u32 = 1 << 0;
/// `RingSetup::flags`: post a RING_COMPLETION event when completions are written.
pub const RING_COMPLETION_EVENTS: u32 = 1 << 0;
/// The `RingSetup::flags` this version defines.
pub const RING_FLAGS_VALID: u32 = RING_COMPLETION_EVENTS;

/// One MULTICALL entry.
#[repr(C)]
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, TryFromBytes, IntoBytes, KnownLayout, Immutable,
)]
pub struct MulticallEntry {
    /// The call code.
    pub call: u32,
    /// Written by the host: the entry's status.
    pub status: u32,
    /// Reserved, must be 0.
    pub flags: ReservedU32,
    /// Reserved, must be 0.
    pub reserved: ReservedU32,
    /// Arguments `a0` to `a5`.
    pub args: [u64; 6],
    /// Written by the host: results `r0` to `r3` (unspecified unless `status` is SUCCESS).
    pub results: [u64; 4],
}

crate::abi_layout!(MulticallEntry as "pvabi_multicall_entry", size 96, align 8 {
    [0] call: u32,
    [4] status: u32,
    [8] flags: ReservedU32,
    [12] reserved: ReservedU32,
    [16] args: [u64; 6],
    [64] results: [u64; 4],
});

/// One page of a MULTICALL_PAGES batch (since 1.3): [`MULTICALL_PAGE_ENTRIES`] entries from
/// offset 0, then 64 bytes the host neither reads nor writes. The page is at a 4096-aligned
/// guest-physical address; a batch's last page may hold fewer entries, and the host reads
/// only the entries the batch has.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, TryFromBytes, IntoBytes, KnownLayout, Immutable)]
pub struct MulticallPage {
    /// Entries `42 * k` to `42 * k + 41` of the batch, for the page at position `k` of the
    /// page list.
    pub entries: [MulticallEntry; 42],
    /// Not part of the batch: the host neither reads nor writes these bytes.
    pub unused: [u8; 64],
}

crate::abi_layout!(MulticallPage as "pvabi_multicall_page", size 4096, align 8 {
    [0] entries: [MulticallEntry; 42],
    [4032] unused: [u8; 64],
});

/// The header of a deferred-queue page.
#[repr(C)]
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
pub struct DeferredQueueHeader {
    /// Host-written: index of the next entry the host will run.
    pub head: u32,
    /// Guest-written: index of the next entry the guest will write.
    pub tail: u32,
    /// Host-written: number of entries ([`DEFERRED_QUEUE_CAPACITY`]).
    pub capacity: u32,
    /// Host-written: entries that failed since registration.
    pub error_count: u32,
    /// Host-written: queue index of the first entry that failed.
    pub first_error_index: u32,
    /// Host-written: status of the first entry that failed.
    pub first_error_status: u32,
    /// Reserved.
    pub reserved: [u32; 10],
}

crate::abi_layout!(DeferredQueueHeader as "pvabi_deferred_queue_header", size 64, align 4 {
    [0] head: u32,
    [4] tail: u32,
    [8] capacity: u32,
    [12] error_count: u32,
    [16] first_error_index: u32,
    [20] first_error_status: u32,
    [24] reserved: [u32; 10],
});

/// One deferred-queue entry (a call of a deferral class; its results are discarded).
#[repr(C)]
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, TryFromBytes, IntoBytes, KnownLayout, Immutable,
)]
pub struct DeferredEntry {
    /// The call code.
    pub call: u32,
    /// Reserved, must be 0.
    pub flags: ReservedU32,
    /// Arguments `a0` to `a2`.
    pub args: [u64; 3],
}

crate::abi_layout!(DeferredEntry as "pvabi_deferred_entry", size 32, align 8 {
    [0] call: u32,
    [4] flags: ReservedU32,
    [8] args: [u64; 3],
});

/// How the host learns of new submissions.
#[repr(u32)]
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, TryFromBytes, IntoBytes, KnownLayout, Immutable,
)]
pub enum RingMode {
    /// The guest calls RING_ENTER or writes the ring-notify port.
    Doorbell = 0,
    /// A host thread polls the submission ring; the guest rings only when `SQ_NEED_WAKEUP`.
    HostPolled = 1,
}

/// RING_SETUP's memory block.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, TryFromBytes, IntoBytes, KnownLayout, Immutable)]
pub struct RingSetup {
    /// Guest-physical address of the submission-ring page (4 KiB-aligned).
    pub sq_page: u64,
    /// Guest-physical address of the completion-ring page (4 KiB-aligned).
    pub cq_page: u64,
    /// A [`RingMode`].
    pub mode: RingMode,
    /// `RING_*` flags.
    pub flags: u32,
    /// Reserved, must be 0.
    pub reserved: ReservedU64,
}

crate::abi_layout!(RingSetup as "pvabi_ring_setup", size 32, align 8 {
    [0] sq_page: u64,
    [8] cq_page: u64,
    [16] mode: RingMode,
    [20] flags: u32,
    [24] reserved: ReservedU64,
});

/// The header of a submission-ring or completion-ring page. In the submission ring the guest
/// writes `tail` and the host writes `head`; in the completion ring it is the other way round.
#[repr(C)]
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
pub struct RingHeader {
    /// Consumer index.
    pub head: u32,
    /// Producer index.
    pub tail: u32,
    /// Host-written: number of entries.
    pub capacity: u32,
    /// Host-written flags (`SQ_NEED_WAKEUP`).
    pub flags: u32,
    /// Host-written: submissions rejected as malformed.
    pub dropped: u32,
    /// Reserved.
    pub reserved: [u32; 11],
}

crate::abi_layout!(RingHeader as "pvabi_ring_header", size 64, align 4 {
    [0] head: u32,
    [4] tail: u32,
    [8] capacity: u32,
    [12] flags: u32,
    [16] dropped: u32,
    [20] reserved: [u32; 11],
});

/// One submission.
#[repr(C)]
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, TryFromBytes, IntoBytes, KnownLayout, Immutable,
)]
pub struct SubmissionEntry {
    /// Copied to the completion.
    pub user_data: u64,
    /// The call code.
    pub call: u32,
    /// Reserved, must be 0.
    pub flags: ReservedU32,
    /// Arguments `a0` to `a5`.
    pub args: [u64; 6],
}

crate::abi_layout!(SubmissionEntry as "pvabi_submission_entry", size 64, align 8 {
    [0] user_data: u64,
    [8] call: u32,
    [12] flags: ReservedU32,
    [16] args: [u64; 6],
});

/// One completion.
#[repr(C)]
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
pub struct CompletionEntry {
    /// The submission's `user_data`.
    pub user_data: u64,
    /// The call's status.
    pub status: u32,
    /// Reserved, written as 0.
    pub reserved: u32,
    /// Results `r0` to `r3`.
    pub results: [u64; 4],
}

crate::abi_layout!(CompletionEntry as "pvabi_completion_entry", size 48, align 8 {
    [0] user_data: u64,
    [8] status: u32,
    [12] reserved: u32,
    [16] results: [u64; 4],
});

static_assertions::const_assert!(MULTICALL_MAX_ENTRIES * 96 <= crate::convention::PAGE_SIZE);
static_assertions::const_assert_eq!(
    MULTICALL_PAGE_ENTRIES,
    crate::convention::PAGE_SIZE / size_of::<MulticallEntry>() as u64
);
static_assertions::const_assert_eq!(
    MULTICALL_PAGE_ENTRIES as usize,
    MulticallPage::ABI_LAYOUT.fields[0].size / size_of::<MulticallEntry>()
);
static_assertions::const_assert_eq!(
    MULTICALL_PAGES_MAX_PAGES,
    MULTICALL_PAGES_MAX_ENTRIES.div_ceil(MULTICALL_PAGE_ENTRIES)
);
// The page list is one memory block of 8-byte page addresses within one page.
static_assertions::const_assert!(MULTICALL_PAGES_MAX_PAGES * 8 <= crate::convention::PAGE_SIZE);
static_assertions::const_assert!(MULTICALL_PAGES_MAX_ENTRIES <= u32::MAX as u64);
static_assertions::const_assert!(
    DEFERRED_ENTRIES_OFFSET + DEFERRED_QUEUE_CAPACITY as u64 * 32 <= crate::convention::PAGE_SIZE
);
static_assertions::const_assert!(
    RING_ENTRIES_OFFSET + SQ_CAPACITY as u64 * 64 <= crate::convention::PAGE_SIZE
);
static_assertions::const_assert!(
    RING_ENTRIES_OFFSET + CQ_CAPACITY as u64 * 48 <= crate::convention::PAGE_SIZE
);

/// The calls of the batching chapter.
pub const CALLS: &[CallDescriptor] = &[
    CallDescriptor {
        feature: Some(Features::MULTICALL),
        args: &[
            arg(
                "entries",
                ArgCheck::Any,
                "Guest-physical address of the MulticallEntry array.",
            ),
            arg(
                "count",
                ArgCheck::Range {
                    min: 1,
                    max: MULTICALL_MAX_ENTRIES,
                },
                "Number of entries, 1 to 32.",
            ),
            arg(
                "start",
                ArgCheck::Range {
                    min: 0,
                    max: MULTICALL_MAX_ENTRIES,
                },
                "Index of the first entry to run (resume index); at most count.",
            ),
            arg(
                "flags",
                ArgCheck::Mask(MULTICALL_FLAGS_VALID),
                "Bit 0 STOP_ON_ERROR.",
            ),
        ],
        results: &[
            res(
                "next",
                "Index after the last processed entry (count when all are done).",
            ),
            res("processed", "Entries processed by this call."),
        ],
        block: Some(BlockDesc {
            addr_arg: 0,
            align: 8,
            kind: BlockKind::Array {
                elem: "MulticallEntry",
                elem_size: 96,
                count_arg: 1,
                max: MULTICALL_MAX_ENTRIES,
            },
        }),
        sync_point: true,
        ..plain(
            Call::Multicall,
            "MULTICALL",
            "Runs a batch of calls with per-entry status; preemptible with a resume index.",
        )
    },
    CallDescriptor {
        feature: Some(Features::DEFERRED),
        args: &[
            arg(
                "page",
                ArgCheck::Any,
                "Guest-physical address of a 4 KiB-aligned page, or 0 to unregister.",
            ),
            arg("flags", ArgCheck::Mask(0), "Reserved, must be 0."),
        ],
        block: Some(BlockDesc {
            addr_arg: 0,
            align: 4096,
            kind: BlockKind::SharedPage {
                header: &DeferredQueueHeader::ABI_LAYOUT,
            },
        }),
        sync_point: true,
        ..plain(
            Call::DeferSetQueue,
            "DEFER_SET_QUEUE",
            "Registers the calling vCPU's deferred queue (draining the old one).",
        )
    },
    CallDescriptor {
        feature: Some(Features::DEFERRED),
        results: &[
            res("processed", "Entries run by this flush."),
            res("failed", "Entries of this flush that failed."),
        ],
        sync_point: true,
        ..plain(
            Call::DeferFlush,
            "DEFER_FLUSH",
            "Runs every entry of the calling vCPU's deferred queue now.",
        )
    },
    CallDescriptor {
        feature: Some(Features::RING),
        args: &[arg(
            "setup",
            ArgCheck::Any,
            "Guest-physical address of a RingSetup block.",
        )],
        block: Some(BlockDesc {
            addr_arg: 0,
            align: 8,
            kind: BlockKind::Struct(&RingSetup::ABI_LAYOUT),
        }),
        sync_point: true,
        ..plain(
            Call::RingSetup,
            "RING_SETUP",
            "Registers the calling vCPU's submission and completion rings.",
        )
    },
    CallDescriptor {
        feature: Some(Features::RING),
        results: &[res("consumed", "Submissions consumed by this call.")],
        ..plain(
            Call::RingEnter,
            "RING_ENTER",
            "Processes the calling vCPU's submission ring now.",
        )
    },
    CallDescriptor {
        feature: Some(Features::MULTICALL_PAGES),
        since: crate::version::V1_3,
        args: &[
            arg(
                "list",
                ArgCheck::Any,
                "Guest-physical address of the page list: `pages` 64-bit addresses of 4 KiB-aligned MulticallPages.",
            ),
            arg(
                "pages",
                ArgCheck::Range {
                    min: 1,
                    max: MULTICALL_PAGES_MAX_PAGES,
                },
                "Number of pages on the list, 1 to 98: exactly the pages `count` entries fill, 42 to a page.",
            ),
            arg(
                "count",
                ArgCheck::Range {
                    min: 1,
                    max: MULTICALL_PAGES_MAX_ENTRIES,
                },
                "Number of entries, 1 to 4096.",
            ),
            arg(
                "start",
                ArgCheck::Range {
                    min: 0,
                    max: MULTICALL_PAGES_MAX_ENTRIES,
                },
                "Index of the first entry to run (resume index); at most count.",
            ),
            arg(
                "flags",
                ArgCheck::Mask(MULTICALL_FLAGS_VALID),
                "Bit 0 STOP_ON_ERROR.",
            ),
        ],
        results: &[
            res(
                "next",
                "Index after the last processed entry (count when all are done).",
            ),
            res("processed", "Entries processed by this call."),
        ],
        block: Some(BlockDesc {
            addr_arg: 0,
            align: 8,
            kind: BlockKind::Array {
                elem: "u64",
                elem_size: 8,
                count_arg: 1,
                max: MULTICALL_PAGES_MAX_PAGES,
            },
        }),
        sync_point: true,
        ..plain(
            Call::MulticallPages,
            "MULTICALL_PAGES",
            "Runs a batch of up to 4096 calls whose entries lie on a list of pages; per-entry status, preemptible with a resume index.",
        )
    },
];
