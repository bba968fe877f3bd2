//! Spec chapter "Memory family": sharing, ballooning, page-table updates and TLB flushes.

use crate::calls::{
    arg, plain, res, ArgCheck, ArgDesc, BlockDesc, BlockKind, Call, CallDescriptor, DeferClass,
    ResultDesc,
};
use crate::features::Features;

/// The most page frame numbers one balloon call takes (one page of `u64`s).
pub const BALLOON_MAX_PFNS: u64 = 512;
/// The most pages one TLB range flush names.
pub const FLUSH_RANGE_MAX_PAGES: u64 = 512;
/// The most pages one share or unshare call names.
pub const SHARE_MAX_PAGES: u64 = 1 << 20;

const BALLOON_ARGS: &[ArgDesc] = &[
    arg(
        "list",
        ArgCheck::Any,
        "Guest-physical address of an array of u64 page frame numbers.",
    ),
    arg(
        "count",
        ArgCheck::Range {
            min: 1,
            max: BALLOON_MAX_PFNS,
        },
        "Number of entries, 1 to 512.",
    ),
];

const SHARE_ARGS: &[ArgDesc] = &[
    arg(
        "start",
        ArgCheck::Mask(!0xfff),
        "Guest-physical address of the first page (4 KiB-aligned).",
    ),
    arg(
        "pages",
        ArgCheck::Range {
            min: 1,
            max: SHARE_MAX_PAGES,
        },
        "Number of pages.",
    ),
];

const fn balloon(
    call: Call,
    name: &'static str,
    summary: &'static str,
    results: &'static [ResultDesc],
) -> CallDescriptor {
    CallDescriptor {
        feature: Some(Features::MEMORY),
        args: BALLOON_ARGS,
        results,
        block: Some(BlockDesc {
            addr_arg: 0,
            align: 8,
            kind: BlockKind::Array {
                elem: "u64",
                elem_size: 8,
                count_arg: 1,
                max: BALLOON_MAX_PFNS,
            },
        }),
        batchable: true,
        sync_point: true,
        ..plain(call, name, summary)
    }
}

const fn share(call: Call, name: &'static str, summary: &'static str) -> CallDescriptor {
    CallDescriptor {
        feature: Some(Features::MEMORY),
        args: SHARE_ARGS,
        batchable: true,
        sync_point: true,
        ..plain(call, name, summary)
    }
}

const fn flush(
    call: Call,
    name: &'static str,
    summary: &'static str,
    args: &'static [ArgDesc],
) -> CallDescriptor {
    CallDescriptor {
        feature: Some(Features::MEMORY),
        args,
        batchable: true,
        sync_point: true,
        ..plain(call, name, summary)
    }
}

/// The Memory family's calls.
pub const CALLS: &[CallDescriptor] = &[
    share(Call::MemShare, "MEM_SHARE", "Marks guest pages as shared with the host."),
    share(Call::MemUnshare, "MEM_UNSHARE", "Ends the sharing of guest pages."),
    balloon(
        Call::MemBalloonRelease,
        "MEM_BALLOON_RELEASE",
        "Gives a list of pages back to the host; the whole list is checked before any page is released.",
        &[res("pages", "Pages released.")],
    ),
    balloon(
        Call::MemBalloonReclaim,
        "MEM_BALLOON_RECLAIM",
        "Takes released pages back; they come back zeroed.",
        &[res("pages", "Pages reclaimed.")],
    ),
    CallDescriptor {
        feature: Some(Features::MEMORY),
        args: &[
            arg("entry", ArgCheck::Any, "Guest-physical address of the 8-byte entry (8-aligned)."),
            arg("value", ArgCheck::Any, "The new entry."),
            arg("level", ArgCheck::Range { min: 1, max: 4 }, "Page-table level: 1 (PTE) to 4 (PML4E)."),
        ],
        block: Some(BlockDesc { addr_arg: 0, align: 8, kind: BlockKind::Word }),
        batchable: true,
        deferral: DeferClass::Mmu,
        ..plain(Call::MemUpdatePte, "MEM_UPDATE_PTE", "Writes one page-table entry atomically (VMI's SetPxE).")
    },
    flush(Call::MemFlushTlbLocal, "MEM_FLUSH_TLB_LOCAL", "Flushes the calling vCPU's TLB.", &[]),
    flush(
        Call::MemFlushTlbRange,
        "MEM_FLUSH_TLB_RANGE",
        "Flushes a range of virtual pages on every vCPU.",
        &[
            arg("start", ArgCheck::Mask(!0xfff), "Virtual address of the first page (4 KiB-aligned)."),
            arg("pages", ArgCheck::Range { min: 1, max: FLUSH_RANGE_MAX_PAGES }, "Number of pages, 1 to 512."),
        ],
    ),
    flush(Call::MemFlushTlbAll, "MEM_FLUSH_TLB_ALL", "Flushes every vCPU's whole TLB.", &[]),
];
