//! Events family: EVENTS_SEND to itself, masking, and the coalesced interrupt: a burst of
//! events sent while the kind is masked costs one interrupt when it is unmasked.

use core::sync::atomic::Ordering;

use pvabi_guest::abi::events::EventKind;
use pvabi_guest::Status;

use crate::irq::{self, Seen, SEEN};
use crate::out::{expect_status, must, pv, section, Line};
use crate::time::EVENT_TIMEOUT_NS;

/// Events in the masked burst.
pub const BURST: u64 = 8;
/// Data of the single USER event.
const PING: u64 = 0xfeed_0001;

pub fn run() {
    section("events");
    let pv = pv();
    let seen = &SEEN[0];

    // One USER event to ourselves: one interrupt, the handler drains it.
    let (users, interrupts) = (Seen::get(&seen.user), Seen::get(&seen.interrupts));
    must("events", "EVENTS_SEND", pv.events_send(0, PING));
    let got = irq::wait_for(0, EVENT_TIMEOUT_NS, || Seen::get(&seen.user) > users);
    let took = Seen::get(&seen.interrupts) - interrupts;
    Line::check(
        "events",
        got && seen.user_data.load(Ordering::Relaxed) == PING
            && seen.user_source.load(Ordering::Relaxed) == 0
            && took == 1,
    )
    .s("EVENTS_SEND(vCPU 0, ")
    .hex(PING)
    .s("): USER event from vCPU 0 with that data, ")
    .dec(u64::from(took))
    .s(" interrupt")
    .end();

    // A burst with interrupts disabled: the first event raises the interrupt and sets
    // interrupt_pending; the host raises no more until the guest has drained and re-armed.
    let (users, interrupts, sum) = (
        Seen::get(&seen.user),
        Seen::get(&seen.interrupts),
        seen.user_sum.load(Ordering::Relaxed),
    );
    for i in 1..=BURST {
        must("events", "EVENTS_SEND", pv.events_send(0, i));
    }
    let (queued, pending) = (irq::queued(0), irq::interrupt_pending(0));
    let got = irq::wait_for(0, EVENT_TIMEOUT_NS, || {
        u64::from(Seen::get(&seen.user) - users) >= BURST
    });
    let took = Seen::get(&seen.interrupts) - interrupts;
    let drained = Seen::get(&seen.user) - users;
    Line::check(
        "events",
        got && u64::from(queued) == BURST
            && pending
            && u64::from(drained) == BURST
            && seen.user_sum.load(Ordering::Relaxed) - sum == BURST * (BURST + 1) / 2
            && took == 1,
    )
    .dec(BURST)
    .s(" EVENTS_SENDs with interrupts off: ")
    .dec(u64::from(queued))
    .s(" queued, interrupt_pending = ")
    .dec(u64::from(pending))
    .s("; ")
    .dec(u64::from(drained))
    .s(" drained by ")
    .dec(u64::from(took))
    .s(" interrupt")
    .end();

    // Mask USER, send a burst: the events queue up, no interrupt is raised.
    let user_bit = EventKind::User.mask_bit();
    let previous = must("events", "EVENTS_SET_MASK", pv.events_set_mask(user_bit));
    Line::check("events", previous == 0)
        .s("EVENTS_SET_MASK(USER) -> previous mask ")
        .hex(previous)
        .end();
    let (users, interrupts, sum) = (
        Seen::get(&seen.user),
        Seen::get(&seen.interrupts),
        seen.user_sum.load(Ordering::Relaxed),
    );
    // Masked events leave `interrupt_pending` as it was (0, unless a host raised a spurious
    // interrupt that this vCPU, with interrupts off, has not taken yet).
    let before = irq::interrupt_pending(0);
    for i in 1..=BURST {
        must("events", "EVENTS_SEND", pv.events_send(0, i));
    }
    let queued = irq::queued(0);
    let pending = irq::interrupt_pending(0);
    Line::check("events", u64::from(queued) == BURST && pending == before)
        .dec(BURST)
        .s(" EVENTS_SENDs while USER is masked: ")
        .dec(u64::from(queued))
        .s(" events queued, interrupt_pending = ")
        .dec(u64::from(pending))
        .s(" (before: ")
        .dec(u64::from(before))
        .s(")")
        .end();
    // Unmask: the host raises one interrupt for the whole queue.
    let previous = must("events", "EVENTS_SET_MASK", pv.events_set_mask(0));
    let burst_sum = BURST * (BURST + 1) / 2;
    let got = irq::wait_for(0, EVENT_TIMEOUT_NS, || {
        u64::from(Seen::get(&seen.user) - users) >= BURST
    });
    let took = Seen::get(&seen.interrupts) - interrupts;
    let drained = Seen::get(&seen.user) - users;
    Line::check(
        "events",
        got && previous == user_bit
            && u64::from(drained) == BURST
            && seen.user_sum.load(Ordering::Relaxed) - sum == burst_sum
            && took == 1,
    )
    .s("EVENTS_SET_MASK(0): ")
    .dec(u64::from(drained))
    .s(" events drained by ")
    .dec(u64::from(took))
    .s(" interrupt (coalesced)")
    .end();

    let info = must("events", "VCPU_INFO", pv.vcpu_info());
    expect_status(
        "events",
        "EVENTS_SEND to a vCPU that does not exist",
        pv.events_send(info.count, 1),
        Status::InvalidParameter,
    );
    expect_status(
        "events",
        "EVENTS_SET_QUEUE with vector 16 (below 32)",
        // SAFETY: the host refuses the vector before it looks at the page.
        unsafe { pv.events_set_queue(irq::queue_gpa(0), 16) },
        Status::InvalidParameter,
    );
}
