//! Spec chapter "Events family": the per-vCPU shared event queue, masking and coalesced
//! interrupts.
//!
//! The queue page starts with an [`EventQueueHeader`]; [`EVENT_QUEUE_CAPACITY`] [`Event`]
//! entries follow at [`EVENT_QUEUE_ENTRIES_OFFSET`]. Indices are free-running `u32`s; entry
//! `i` lives in slot `i % capacity`. The host raises the queue's interrupt only when it appends
//! an unmasked event while `interrupt_pending` is 0, and then sets it to 1, so a burst of
//! events costs one interrupt. The guest drains, writes 0 to `interrupt_pending`, then checks
//! `tail` once more and drains again if it moved. No end-of-interrupt exit is needed.

use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, TryFromBytes};

use crate::calls::{
    arg, plain, res, ArgCheck, BlockDesc, BlockKind, Call, CallDescriptor, DeferClass,
};
use crate::features::Features;

/// Number of entries in an event queue.
pub const EVENT_QUEUE_CAPACITY: u32 = 128;
/// Offset of the first entry in the queue page.
pub const EVENT_QUEUE_ENTRIES_OFFSET: u64 = 64;
/// Lowest interrupt vector EVENTS_SET_QUEUE accepts (0 to 31 are CPU exceptions).
pub const EVENT_VECTOR_MIN: u64 = 32;
/// Highest interrupt vector.
pub const EVENT_VECTOR_MAX: u64 = 255;
/// The mask bits EVENTS_SET_MASK accepts: one bit per [`EventKind`] (bit `kind`).
pub const EVENT_MASK_VALID: u64 = 0x1e;

/// The kinds of event.
#[repr(u32)]
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, TryFromBytes, IntoBytes, KnownLayout, Immutable,
)]
pub enum EventKind {
    /// The vCPU's one-shot timer expired (`data`: the deadline).
    Timer = 1,
    /// Another vCPU kicked this one (`source`: the kicker).
    Kick = 2,
    /// EVENTS_SEND from vCPU `source` with `data`.
    User = 3,
    /// Ring completions are waiting (`data`: the completion-ring tail).
    RingCompletion = 4,
}

impl EventKind {
    /// The bit of this kind in an event mask.
    pub const fn mask_bit(self) -> u64 {
        1 << self as u32
    }
}

/// The header of an event-queue page.
#[repr(C)]
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
pub struct EventQueueHeader {
    /// Guest-written: index of the next entry the guest will consume.
    pub head: u32,
    /// Host-written: index of the next entry the host will write.
    pub tail: u32,
    /// Host-written: number of entries ([`EVENT_QUEUE_CAPACITY`]).
    pub capacity: u32,
    /// 1 after the host raised the interrupt; the guest writes 0 to re-arm it.
    pub interrupt_pending: u32,
    /// Host-written: events dropped because the queue was full.
    pub dropped: u32,
    /// Reserved.
    pub reserved: [u32; 11],
}

crate::abi_layout!(EventQueueHeader as "pvabi_event_queue_header", size 64, align 4 {
    [0] head: u32,
    [4] tail: u32,
    [8] capacity: u32,
    [12] interrupt_pending: u32,
    [16] dropped: u32,
    [20] reserved: [u32; 11],
});

/// One event-queue entry.
#[repr(C)]
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
pub struct Event {
    /// An [`EventKind`] value.
    pub kind: u32,
    /// The vCPU the event came from (or the index of the vCPU that owns the timer).
    pub source: u32,
    /// Kind-specific data.
    pub data: u64,
}

crate::abi_layout!(Event as "pvabi_event", size 16, align 8 {
    [0] kind: u32,
    [4] source: u32,
    [8] data: u64,
});

static_assertions::const_assert!(
    EVENT_QUEUE_ENTRIES_OFFSET + EVENT_QUEUE_CAPACITY as u64 * 16 <= crate::convention::PAGE_SIZE
);

/// The Events family's calls.
pub const CALLS: &[CallDescriptor] = &[
    CallDescriptor {
        feature: Some(Features::EVENTS),
        args: &[
            arg(
                "page",
                ArgCheck::Any,
                "Guest-physical address of a 4 KiB-aligned page, or 0 to unregister.",
            ),
            arg(
                "vector",
                ArgCheck::Range {
                    min: EVENT_VECTOR_MIN,
                    max: EVENT_VECTOR_MAX,
                },
                "Interrupt vector, 32 to 255.",
            ),
        ],
        block: Some(BlockDesc {
            addr_arg: 0,
            align: 4096,
            kind: BlockKind::SharedPage {
                header: &EventQueueHeader::ABI_LAYOUT,
            },
        }),
        ..plain(
            Call::EventsSetQueue,
            "EVENTS_SET_QUEUE",
            "Registers the calling vCPU's event queue and its interrupt vector.",
        )
    },
    CallDescriptor {
        feature: Some(Features::EVENTS),
        args: &[arg(
            "mask",
            ArgCheck::Mask(EVENT_MASK_VALID),
            "Bit k set masks event kind k.",
        )],
        results: &[res("previous", "The previous mask.")],
        batchable: true,
        deferral: DeferClass::Cpu,
        ..plain(
            Call::EventsSetMask,
            "EVENTS_SET_MASK",
            "Sets which event kinds may raise the queue's interrupt.",
        )
    },
    CallDescriptor {
        feature: Some(Features::EVENTS),
        args: &[
            arg("vcpu", ArgCheck::VcpuIndex, "The target vCPU."),
            arg("data", ArgCheck::Any, "Data carried by the event."),
        ],
        batchable: true,
        ..plain(
            Call::EventsSend,
            "EVENTS_SEND",
            "Posts a USER event to a vCPU.",
        )
    },
];
