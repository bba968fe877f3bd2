//! Conformance test `events`: the event queue, its header, posting, the interrupt protocol
//! (`interrupt_pending`: raised on the transition, coalesced while pending, never for a
//! masked kind, raised again by unmasking a queued kind), KICK and USER events, a full queue,
//! a `head` past the `tail`, the host's own fields, re-registering, replacing, and the wake
//! latch without a queue. Interrupts stay disabled: what the host raises shows in
//! `interrupt_pending`. Runs on vCPU 0 at CPL0.
#![no_std]
#![no_main]

mod call;
mod channel;
mod common;

use pvabi_guest::abi::events::EventKind;
use pvabi_guest::abi::features::Features;
use pvabi_guest::abi::vcpu::WakeReason;
use pvabi_guest::{Call, PortTransport, Status};
use pvabi_guest_rt::{halt_forever, BootInfo};

use call::raw;
use channel::check;
use common::{fill, rd32, rd64, start, wr32, Pages, PAGE, SUCCESS};

const TEST: &str = "events";
const CAPACITY: u32 = 128;
const HEAD: u64 = 0;
const TAIL: u64 = 4;
const CAP: u64 = 8;
const PENDING: u64 = 12;
const DROPPED: u64 = 16;
const VECTOR: u64 = 0x40;
const USER: u64 = 1 << EventKind::User as u64;
const KICK: u64 = 1 << EventKind::Kick as u64;
const INVALID_PARAMETER: u64 = Status::InvalidParameter as u64;
const ACCESS_DENIED: u64 = Status::AccessDenied as u64;

/// Pages 0 and 1: event queues.
static PAGES: Pages<2> = Pages::new();

/// An event `(kind, source, data)`.
type Event = (u32, u32, u64);

fn event_at(q: u64, index: u32) -> Event {
    let e = q + 64 + u64::from(index % CAPACITY) * 16;
    (rd32(e), rd32(e + 4), rd64(e + 8))
}

fn field(q: u64, offset: u64) -> u32 {
    rd32(q + offset)
}

fn send(t: &PortTransport, data: u64) -> u64 {
    raw(t, Call::EventsSend, &[0, data]).status
}

fn set_mask(t: &PortTransport, mask: u64) -> (u64, u64) {
    let r = raw(t, Call::EventsSetMask, &[mask]);
    (r.status, r.results[0])
}

/// Consumes everything queued (the guest's `head` := the host's `tail`).
fn consume_all(q: u64) {
    wr32(q + HEAD, field(q, TAIL));
}

fn halt(t: &PortTransport, ns: u64) -> u64 {
    let r = raw(t, Call::VcpuHalt, &[ns]);
    if r.status == SUCCESS {
        r.results[0]
    } else {
        r.status << 32
    }
}

fn main(_boot: &BootInfo) -> ! {
    let (t, _) = start(TEST, Features::EVENTS | Features::VCPU);
    let (q, q2) = (PAGES.page(0), PAGES.page(1));
    let user = EventKind::User as u32;

    let low = raw(&t, Call::EventsSetQueue, &[0, 31]).status;
    let high = raw(&t, Call::EventsSetQueue, &[q, 256]).status;
    check(
        "events.set_queue_vector_outside_32_to_255_is_invalid_parameter",
        &["PVABI-STAT-001"],
        low == INVALID_PARAMETER && high == INVALID_PARAMETER,
        low << 32 | high,
        INVALID_PARAMETER << 32 | INVALID_PARAMETER,
    );
    fill(q, PAGE, 0xa5);
    let s = raw(&t, Call::EventsSetQueue, &[q, VECTOR]).status;
    let fresh = [HEAD, TAIL, PENDING, DROPPED]
        .iter()
        .all(|&f| field(q, f) == 0)
        && field(q, CAP) == CAPACITY
        && (20..64).step_by(4).all(|o| field(q, o) == 0);
    check(
        "events.set_queue_writes_a_fresh_header",
        &["PVABI-EVT-012"],
        s == SUCCESS && fresh,
        s << 32 | u64::from(field(q, CAP)),
        u64::from(CAPACITY),
    );
    let (s, previous) = set_mask(&t, 0);
    check(
        "events.the_mask_starts_at_zero",
        &["PVABI-EVT-021"],
        s == SUCCESS && previous == 0,
        previous,
        0,
    );

    // Posting, and the interrupt on the transition.
    let s = send(&t, 0x11);
    check(
        "events.send_posts_one_user_event",
        &["PVABI-EVT-016", "PVABI-EVT-001", "PVABI-EVT-004"],
        s == SUCCESS && field(q, TAIL) == 1 && event_at(q, 0) == (user, 0, 0x11),
        u64::from(field(q, TAIL)) << 32 | event_at(q, 0).2,
        1 << 32 | 0x11,
    );
    check(
        "events.an_unmasked_event_raises_the_interrupt",
        &["PVABI-EVT-005"],
        field(q, PENDING) == 1,
        u64::from(field(q, PENDING)),
        1,
    );
    // While the interrupt is pending (any value but 0), the host leaves it alone.
    wr32(q + PENDING, 7);
    let s = send(&t, 0x12);
    check(
        "events.a_pending_interrupt_coalesces_the_next_event",
        &["PVABI-EVT-005"],
        s == SUCCESS && field(q, TAIL) == 2 && field(q, PENDING) == 7,
        u64::from(field(q, PENDING)),
        7,
    );

    // Masked: queued, no interrupt; unmasking a queued kind raises it.
    let (_, previous) = set_mask(&t, USER);
    wr32(q + PENDING, 0);
    let s = send(&t, 0x22);
    check(
        "events.a_masked_event_is_queued_without_an_interrupt",
        &["PVABI-EVT-024", "PVABI-EVT-007"],
        previous == 0
            && s == SUCCESS
            && field(q, TAIL) == 3
            && event_at(q, 2) == (user, 0, 0x22)
            && field(q, PENDING) == 0,
        u64::from(field(q, TAIL)) << 32 | u64::from(field(q, PENDING)),
        3 << 32,
    );
    let (s, previous) = set_mask(&t, 0);
    check(
        "events.unmasking_a_queued_kind_raises_the_interrupt",
        &["PVABI-EVT-015", "PVABI-EVT-014"],
        s == SUCCESS && previous == USER && field(q, PENDING) == 1,
        previous << 32 | u64::from(field(q, PENDING)),
        USER << 32 | 1,
    );
    // A USER event is queued and nothing is pending; unmasking KICK must raise nothing.
    set_mask(&t, KICK);
    wr32(q + PENDING, 0);
    let (_, previous) = set_mask(&t, 0);
    check(
        "events.unmasking_a_kind_that_is_not_queued_raises_nothing",
        &["PVABI-EVT-023"],
        previous == KICK && field(q, PENDING) == 0,
        u64::from(field(q, PENDING)),
        0,
    );

    // KICK to itself.
    consume_all(q);
    let s = raw(&t, Call::VcpuKick, &[0]).status;
    let tail = field(q, TAIL);
    let kick = event_at(q, tail.wrapping_sub(1));
    check(
        "events.kick_posts_a_kick_event_with_data_0",
        &["PVABI-EVT-022", "PVABI-VCPU-014"],
        s == SUCCESS && tail == 4 && kick == (EventKind::Kick as u32, 0, 0),
        u64::from(kick.0) << 32 | kick.2,
        u64::from(EventKind::Kick as u32) << 32,
    );

    // Each call's event is posted before the call returns, so calls that follow one another
    // post in their order (the tail has moved on when each returns).
    consume_all(q);
    let first = field(q, TAIL);
    let mut posted = true;
    for i in 0..8u32 {
        send(&t, 0x400 + u64::from(i));
        posted &= field(q, TAIL) == first.wrapping_add(i + 1);
    }
    let ordered = (0..8u32).all(|i| event_at(q, first.wrapping_add(i)).2 == 0x400 + u64::from(i));
    check(
        "events.each_event_is_posted_before_its_call_returns_in_call_order",
        &["PVABI-EVT-004"],
        posted && ordered,
        u64::from(posted) << 1 | u64::from(ordered),
        3,
    );

    // A full queue: the next event is dropped and counted; nothing is overwritten.
    consume_all(q);
    let head = field(q, HEAD);
    for i in 0..u64::from(CAPACITY) {
        send(&t, 0x1000 + i);
    }
    let full_tail = field(q, TAIL);
    let s = send(&t, 0x9999);
    let intact =
        (0..CAPACITY).all(|i| event_at(q, head.wrapping_add(i)).2 == 0x1000 + u64::from(i));
    check(
        "events.a_full_queue_drops_and_counts_the_event",
        &["PVABI-EVT-002"],
        s == SUCCESS
            && full_tail == head.wrapping_add(CAPACITY)
            && field(q, TAIL) == full_tail
            && field(q, DROPPED) == 1
            && intact,
        u64::from(field(q, DROPPED)) << 32 | u64::from(intact),
        1 << 32 | 1,
    );

    // A head past the tail counts as full.
    consume_all(q);
    let tail = field(q, TAIL);
    wr32(q + HEAD, tail.wrapping_add(5));
    send(&t, 0x77);
    check(
        "events.a_head_past_the_tail_counts_as_full",
        &["PVABI-EVT-003"],
        field(q, TAIL) == tail && field(q, DROPPED) == 2,
        u64::from(field(q, TAIL).wrapping_sub(tail)) << 32 | u64::from(field(q, DROPPED)),
        2,
    );
    // The host's own tail and dropped count, whatever the page says.
    wr32(q + DROPPED, 1000);
    send(&t, 0x78);
    let dropped = field(q, DROPPED);
    wr32(q + HEAD, tail);
    wr32(q + TAIL, tail.wrapping_add(50));
    send(&t, 0x79);
    check(
        "events.the_host_keeps_its_own_tail_and_dropped_count",
        &["PVABI-EVT-027"],
        dropped == 3 && field(q, TAIL) == tail.wrapping_add(1) && event_at(q, tail).2 == 0x79,
        u64::from(dropped) << 32 | u64::from(field(q, TAIL).wrapping_sub(tail)),
        3 << 32 | 1,
    );

    // Registering the queue's own page again: ACCESS_DENIED, and the queue stays.
    consume_all(q);
    let tail = field(q, TAIL);
    let s = raw(&t, Call::EventsSetQueue, &[q, VECTOR]).status;
    send(&t, 0x80);
    check(
        "events.registering_the_queue_page_again_is_access_denied",
        &["PVABI-EVT-020"],
        s == ACCESS_DENIED && field(q, TAIL) == tail.wrapping_add(1) && event_at(q, tail).2 == 0x80,
        s,
        ACCESS_DENIED,
    );
    // Replacing: the old page is not written any more.
    let s = raw(&t, Call::EventsSetQueue, &[q2, VECTOR]).status;
    let old_tail = field(q, TAIL);
    send(&t, 0x81);
    check(
        "events.a_replaced_queue_is_not_written",
        &["PVABI-EVT-013", "PVABI-EVT-012"],
        s == SUCCESS
            && field(q, TAIL) == old_tail
            && field(q2, TAIL) == 1
            && event_at(q2, 0) == (user, 0, 0x81),
        u64::from(field(q, TAIL).wrapping_sub(old_tail)) << 32 | u64::from(field(q2, TAIL)),
        1,
    );

    // Without a queue: the wake latch.
    let s = raw(&t, Call::EventsSetQueue, &[0, VECTOR]).status;
    send(&t, 0x90);
    let first = halt(&t, 1_000_000_000);
    let second = halt(&t, 1_000_000);
    check(
        "events.without_a_queue_an_event_sets_the_wake_latch",
        &["PVABI-EVT-017", "PVABI-VCPU-010"],
        s == SUCCESS && first == WakeReason::Event as u64,
        first,
        WakeReason::Event as u64,
    );
    check(
        "events.halt_that_returns_for_the_latch_clears_it",
        &["PVABI-EVT-018", "PVABI-VCPU-013"],
        second == WakeReason::Timeout as u64,
        second,
        WakeReason::Timeout as u64,
    );
    send(&t, 0x91);
    fill(q, PAGE, 0xa5);
    let s = raw(&t, Call::EventsSetQueue, &[q, VECTOR]).status;
    let after = halt(&t, 1_000_000);
    check(
        "events.a_queue_registered_later_starts_empty",
        &["PVABI-EVT-026", "PVABI-EVT-018"],
        s == SUCCESS && field(q, TAIL) == 0 && after == WakeReason::Timeout as u64,
        u64::from(field(q, TAIL)) << 32 | after,
        WakeReason::Timeout as u64,
    );
    channel::end(TEST)
}

pvabi_guest_rt::entry!(main);

#[panic_handler]
fn panic(_info: &core::panic::PanicInfo<'_>) -> ! {
    halt_forever()
}
