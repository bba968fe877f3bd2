//! Conformance test `ring`: the submission and completion rings in both modes. Doorbell mode:
//! RING_SETUP's refusals and headers, RING_ENTER, the ring-notify port (and the writes it
//! ignores), completions (order, `user_data`, every field), back-pressure from a full
//! completion ring, a malformed submission `tail`, a completion `head` past the `tail`, the
//! host's own indices, submission indices past 2^32, unregistering. Host-polled mode: the
//! wake-up protocol, SQ_NEED_WAKEUP, completion events, RING_ENTER beside the poller, and no
//! consumption after unregistering. Runs on vCPU 0 at CPL0; waits sleep in VCPU_HALT.
#![no_std]
#![no_main]

mod call;
mod channel;
mod common;

use pvabi_guest::abi::events::{EventKind, EVENT_MASK_VALID};
use pvabi_guest::abi::features::Features;
use pvabi_guest::{Call, PortTransport, Status};
use pvabi_guest_rt::port::{inl, outl, outw};
use pvabi_guest_rt::{halt_forever, BootInfo};

use call::raw;
use channel::{check, observe, skip};
use common::{fence, fill, rd32, rd64, start, wait_ms, wr32, wr64, Pages, PAGE, SUCCESS};

const TEST: &str = "ring";
const SQ_CAP: u32 = 32;
const CQ_CAP: u32 = 64;
const HEAD: u64 = 0;
const TAIL: u64 = 4;
const CAPACITY: u64 = 8;
const FLAGS: u64 = 12;
const DROPPED: u64 = 16;
const NEED_WAKEUP: u32 = 1;
const VECTOR: u64 = 0x40;
/// How long a wait for the host may take before the check fails.
const PATIENCE_MS: u64 = 5000;

const NOT_SUPPORTED: u64 = Status::NotSupported as u64;
const INVALID_PARAMETER: u64 = Status::InvalidParameter as u64;
const NOT_ALLOWED_HERE: u64 = Status::NotAllowedHere as u64;
const INVALID_ADDRESS: u64 = Status::InvalidAddress as u64;
const ACCESS_DENIED: u64 = Status::AccessDenied as u64;
const INVALID_STATE: u64 = Status::InvalidState as u64;
const NO_RESOURCES: u64 = Status::NoResources as u64;

/// Pages 0, 1: the doorbell-mode rings; 2: the RingSetup block and scratch; 3: the event
/// queue; 4, 5: the host-polled rings.
static PAGES: Pages<6> = Pages::new();

/// A completion as read: `(user_data, status, reserved, results)`.
type Completion = (u64, u64, u32, [u64; 4]);

/// A ring pair, from the guest's side: it produces at the SQ `tail` and consumes at the CQ
/// `head`, and keeps both itself.
struct Rings {
    sq: u64,
    cq: u64,
    sq_tail: u32,
    cq_head: u32,
}

impl Rings {
    /// Submits `code(args)` (PVABI-RING-001: the entry, then `tail` with release order).
    fn submit(&mut self, user_data: u64, code: u32, flags: u32, args: &[u64]) {
        let e = self.sq + 64 + u64::from(self.sq_tail % SQ_CAP) * 64;
        wr64(e, user_data);
        wr32(e + 8, code);
        wr32(e + 12, flags);
        for k in 0..6 {
            wr64(e + 16 + 8 * k, args.get(k as usize).copied().unwrap_or(0));
        }
        self.sq_tail = self.sq_tail.wrapping_add(1);
        fence();
        wr32(self.sq + TAIL, self.sq_tail);
        // A full barrier between the tail store and the look at the flag (PVABI-RING-010).
        fence();
    }

    /// The next completion, consumed (PVABI-RING-006).
    fn pop(&mut self) -> Option<Completion> {
        if self.cq_head == rd32(self.cq + TAIL) {
            return None;
        }
        let e = self.cq + 64 + u64::from(self.cq_head % CQ_CAP) * 48;
        let results = [rd64(e + 16), rd64(e + 24), rd64(e + 32), rd64(e + 40)];
        let c = (rd64(e), u64::from(rd32(e + 8)), rd32(e + 12), results);
        self.cq_head = self.cq_head.wrapping_add(1);
        wr32(self.cq + HEAD, self.cq_head);
        Some(c)
    }

    /// Consumes completions while their `user_data` runs `first, first + 1, ...`, `n` of
    /// them: whether all `n` came in that order (and no more).
    fn pop_run(&mut self, first: u64, n: u64) -> (bool, u64) {
        for i in 0..n {
            match self.pop() {
                Some((ud, ..)) if ud == first + i => {}
                Some((ud, ..)) => return (false, ud),
                None => return (false, u64::MAX),
            }
        }
        match self.pop() {
            None => (true, 0),
            Some((ud, ..)) => (false, ud),
        }
    }

    fn cq_tail(&self) -> u32 {
        rd32(self.cq + TAIL)
    }

    fn sq_head(&self) -> u32 {
        rd32(self.sq + HEAD)
    }
}

/// RING_SETUP of the block at `block`.
fn setup(t: &PortTransport, block: u64, sq: u64, cq: u64, mode: u32, flags: u32) -> u64 {
    wr64(block, sq);
    wr64(block + 8, cq);
    wr32(block + 16, mode);
    wr32(block + 20, flags);
    wr64(block + 24, 0);
    raw(t, Call::RingSetup, &[block]).status
}

/// RING_ENTER: `(status, consumed)`.
fn enter(t: &PortTransport) -> (u64, u64) {
    let r = raw(t, Call::RingEnter, &[]);
    (r.status, r.results[0])
}

fn fresh_header(page: u64, capacity: u32) -> bool {
    [HEAD, TAIL, FLAGS, DROPPED]
        .iter()
        .all(|&f| rd32(page + f) == 0)
        && rd32(page + CAPACITY) == capacity
        && (20..64).step_by(4).all(|o| rd32(page + o) == 0)
}

/// The event queue (consumed by this guest).
struct Events {
    page: u64,
    head: u32,
}

impl Events {
    fn pop(&mut self) -> Option<(u32, u32, u64)> {
        if self.head == rd32(self.page + 4) {
            return None;
        }
        let e = self.page + 64 + u64::from(self.head % 128) * 16;
        let event = (rd32(e), rd32(e + 4), rd64(e + 8));
        self.head = self.head.wrapping_add(1);
        wr32(self.page, self.head);
        Some(event)
    }
}

fn main(boot: &BootInfo) -> ! {
    let features = Features::RING | Features::EVENTS | Features::VCPU | Features::TIME;
    let (t, found) = start(TEST, features);
    let port = found.info.ring_notify_port;
    let (sq, cq, block, q) = (PAGES.page(0), PAGES.page(1), PAGES.page(2), PAGES.page(3));
    let (sq2, cq2) = (PAGES.page(4), PAGES.page(5));
    // The event queue receives EVENTS_SEND submissions and completion events; all masked.
    raw(&t, Call::EventsSetQueue, &[q, VECTOR]);
    raw(&t, Call::EventsSetMask, &[EVENT_MASK_VALID]);
    let mut events = Events { page: q, head: 0 };

    let (s, _) = enter(&t);
    check(
        "ring.enter_without_rings_is_invalid_state",
        &["PVABI-RING-018"],
        s == INVALID_STATE,
        s,
        INVALID_STATE,
    );

    // Blocks RING_SETUP refuses, whatever else is right.
    let bad = [
        setup(&t, block, sq, cq, 2, 0),
        setup(&t, block, sq, cq, 0, 2),
        setup(&t, block, sq, sq, 0, 0),
        setup(&t, block, sq + 8, cq, 0, 0),
        setup(&t, block, 0, cq, 0, 0),
        // A page outside RAM with an undefined flag: the flag's step 10 comes first, as the
        // page is a field of the block, checked at step 11 (not a block of its own, step 8).
        setup(&t, block, boot.mem_bytes, cq, 0, 2),
    ];
    let worst = bad.iter().copied().find(|&s| s != INVALID_PARAMETER);
    check(
        "ring.setup_refuses_a_bad_block",
        &["PVABI-RING-012", "PVABI-CONV-036"],
        worst.is_none(),
        worst.unwrap_or(0),
        INVALID_PARAMETER,
    );
    let s = setup(&t, block, boot.mem_bytes, cq, 0, 0);
    check(
        "ring.setup_refuses_a_page_outside_ram",
        &["PVABI-RING-013"],
        s == INVALID_ADDRESS,
        s,
        INVALID_ADDRESS,
    );

    // Doorbell mode.
    fill(sq, PAGE, 0xa5);
    fill(cq, PAGE, 0xa5);
    let s = setup(&t, block, sq, cq, 0, 0);
    check(
        "ring.setup_writes_fresh_headers",
        &["PVABI-RING-015"],
        s == SUCCESS && fresh_header(sq, SQ_CAP) && fresh_header(cq, CQ_CAP),
        s << 32 | u64::from(rd32(cq + CAPACITY)),
        u64::from(CQ_CAP),
    );
    let again = setup(&t, block, sq2, cq2, 0, 0);
    let owned = setup(&t, block, sq, cq2, 0, 0);
    check(
        "ring.setup_while_registered_is_refused",
        &["PVABI-RING-013"],
        again == INVALID_STATE && owned == ACCESS_DENIED,
        again << 32 | owned,
        INVALID_STATE << 32 | ACCESS_DENIED,
    );
    let mut r = Rings {
        sq,
        cq,
        sq_tail: 0,
        cq_head: 0,
    };

    // Five submissions of every outcome; RING_ENTER consumes them all.
    let direct = raw(&t, Call::GetSpecVersion, &[]);
    let defined = Call::GetSpecVersion.descriptor().results.len();
    r.submit(0x100, Call::GetSpecVersion.code(), 0, &[]);
    r.submit(0x101, 0xffff, 0, &[]);
    r.submit(0x102, Call::GetSpecVersion.code(), 1, &[]);
    r.submit(0x103, Call::Negotiate.code(), 0, &[0x0001_0000, 0]);
    r.submit(0x104, Call::EventsSend.code(), 0, &[0, 0x55]);
    let (s, consumed) = enter(&t);
    check(
        "ring.enter_consumes_every_submission",
        &["PVABI-RING-017"],
        s == SUCCESS && consumed == 5 && r.sq_head() == 5,
        s << 32 | consumed,
        5,
    );
    let want = [
        (0x100, SUCCESS),
        (0x101, NOT_SUPPORTED),
        (0x102, INVALID_PARAMETER),
        (0x103, NOT_ALLOWED_HERE),
        (0x104, SUCCESS),
    ];
    let mut in_order = true;
    let mut fields = true;
    let mut seen = 0;
    for (i, &(ud, status)) in want.iter().enumerate() {
        match r.pop() {
            Some((got_ud, got_status, reserved, results)) => {
                if (got_ud, got_status) != (ud, status) {
                    in_order = false;
                    seen = got_ud << 32 | got_status;
                }
                let results_ok = (0..4).all(|k| {
                    let want = if i == 0 && k < defined {
                        direct.results[k]
                    } else {
                        0
                    };
                    results[k] == want
                });
                fields &= reserved == 0 && results_ok;
            }
            None => {
                in_order = false;
                seen = u64::MAX;
            }
        }
    }
    in_order &= r.pop().is_none();
    check(
        "ring.one_completion_per_submission_in_order",
        &[
            "PVABI-RING-002",
            "PVABI-RING-003",
            "PVABI-STAT-011",
            "PVABI-STAT-004",
        ],
        in_order,
        seen,
        0,
    );
    check(
        "ring.every_field_of_a_completion_is_written",
        &["PVABI-RING-019"],
        fields,
        0,
        0,
    );
    let ran = events.pop();
    check(
        "ring.a_submission_runs_as_its_call",
        &["PVABI-RING-002", "PVABI-RING-020"],
        ran == Some((EventKind::User as u32, 0, 0x55)) && events.pop().is_none(),
        ran.map_or(u64::MAX, |e| e.2),
        0x55,
    );

    // The ring-notify port: a 32-bit write of this vCPU's index processes the ring.
    r.submit(0x200, Call::GetSpecVersion.code(), 0, &[]);
    // SAFETY: a write to the ring-notify port; the one submission is sound to run.
    unsafe { outl(port, 0) };
    let done = wait_ms(&t, PATIENCE_MS, || r.cq_tail() != r.cq_head);
    let (ok, seen) = r.pop_run(0x200, 1);
    check(
        "ring.notify_port_processes_the_ring",
        &["PVABI-RING-007"],
        done && ok,
        seen,
        0,
    );
    // Writes of another width or of an index that is not a vCPU do nothing.
    r.submit(0x300, Call::GetSpecVersion.code(), 0, &[]);
    // SAFETY: writes the host must ignore.
    unsafe {
        outw(port, 0);
        outl(port, boot.vcpu_count + 7);
    }
    let moved = wait_ms(&t, 20, || {
        r.cq_tail() != r.cq_head || r.sq_head() != r.sq_tail - 1
    });
    let (s, consumed) = enter(&t);
    let (ok, seen) = r.pop_run(0x300, 1);
    check(
        "ring.other_notify_port_writes_do_nothing",
        &["PVABI-RING-022"],
        !moved && s == SUCCESS && consumed == 1 && ok,
        u64::from(moved) << 32 | seen,
        0,
    );
    // SAFETY: a read of the ring-notify port, which has no effect.
    let v = unsafe { inl(port) };
    check(
        "ring.notify_port_reads_as_all_ones",
        &["PVABI-RING-024"],
        v == u32::MAX,
        u64::from(v),
        u64::from(u32::MAX),
    );

    // Back-pressure: fill the completion ring, then submit more.
    for i in 0..32 {
        r.submit(0x1000 + i, Call::GetSpecVersion.code(), 0, &[]);
    }
    let (_, first) = enter(&t);
    for i in 32..64 {
        r.submit(0x1000 + i, Call::GetSpecVersion.code(), 0, &[]);
    }
    let (_, second) = enter(&t);
    let (tail, head) = (r.cq_tail(), r.sq_head());
    for i in 64..67 {
        r.submit(0x1000 + i, Call::GetSpecVersion.code(), 0, &[]);
    }
    let (s, third) = enter(&t);
    check(
        "ring.a_full_completion_ring_stops_consumption",
        &["PVABI-RING-004", "PVABI-RING-017"],
        first == 32
            && second == 32
            && s == SUCCESS
            && third == 0
            && r.cq_tail() == tail
            && r.sq_head() == head,
        first << 16 | second << 8 | third,
        32 << 16 | 32 << 8,
    );
    let (ok, seen) = r.pop_run(0x1000, 64);
    let (_, fourth) = enter(&t);
    let (ok2, seen2) = r.pop_run(0x1000 + 64, 3);
    check(
        "ring.completions_keep_submission_order_across_slot_wraps",
        &["PVABI-RING-003"],
        ok && fourth == 3 && ok2,
        seen | seen2,
        0,
    );

    // A malformed submission tail (occupancy 33): nothing runs, dropped says so, head := tail.
    r.sq_tail = r.sq_tail.wrapping_add(SQ_CAP + 1);
    wr32(sq + TAIL, r.sq_tail);
    let (s, consumed) = enter(&t);
    check(
        "ring.a_malformed_submission_tail_runs_nothing_and_resynchronises",
        &["PVABI-RING-005", "PVABI-BATCH-013"],
        s == SUCCESS
            && consumed == 0
            && r.sq_head() == r.sq_tail
            && rd32(sq + DROPPED) == SQ_CAP + 1
            && r.cq_tail() == r.cq_head,
        consumed << 32 | u64::from(rd32(sq + DROPPED)),
        u64::from(SQ_CAP + 1),
    );

    // A completion head past the tail: the ring counts as full until the head is sane.
    wr32(cq + HEAD, r.cq_head.wrapping_add(1));
    r.submit(0x400, Call::GetSpecVersion.code(), 0, &[]);
    let (_, blocked) = enter(&t);
    let tail_kept = r.cq_tail() == r.cq_head;
    wr32(cq + HEAD, r.cq_head);
    let (_, unblocked) = enter(&t);
    let (ok, seen) = r.pop_run(0x400, 1);
    check(
        "ring.a_completion_head_past_the_tail_counts_as_full",
        &["PVABI-BATCH-014", "PVABI-RING-004"],
        blocked == 0 && tail_kept && unblocked == 1 && ok,
        blocked << 32 | seen,
        0,
    );

    // The host keeps its own copies of the indices it writes.
    wr32(sq + HEAD, r.sq_tail.wrapping_add(9));
    wr32(cq + TAIL, r.cq_head.wrapping_add(5));
    let cq_tail_before = r.cq_head;
    r.submit(0x500, Call::GetSpecVersion.code(), 0, &[]);
    let (_, consumed) = enter(&t);
    let restored = r.sq_head() == r.sq_tail && r.cq_tail() == cq_tail_before.wrapping_add(1);
    let (ok, seen) = r.pop_run(0x500, 1);
    check(
        "ring.the_host_keeps_its_own_indices",
        &["PVABI-BATCH-012"],
        consumed == 1 && restored && ok,
        consumed << 32 | seen,
        1 << 32,
    );

    // Submission indices past 2^32: resynchronise just below, then submit across.
    r.sq_tail = 0xffff_fff8;
    wr32(sq + TAIL, r.sq_tail);
    let (_, none) = enter(&t);
    for i in 0..16 {
        r.submit(0x600 + i, Call::GetSpecVersion.code(), 0, &[]);
    }
    let (_, consumed) = enter(&t);
    let (ok, seen) = r.pop_run(0x600, 16);
    check(
        "ring.submission_indices_wrap_past_2_32",
        &["PVABI-RING-002", "PVABI-BATCH-013"],
        none == 0 && consumed == 16 && ok && r.sq_head() == 8,
        consumed << 32 | seen,
        16 << 32,
    );

    // Unregistering, twice.
    let s1 = setup(&t, block, 0, 0, 0, 0);
    let (s2, _) = enter(&t);
    let s3 = setup(&t, block, 0, 0, 0, 0);
    check(
        "ring.unregistering_succeeds_even_without_rings",
        &["PVABI-RING-026", "PVABI-RING-018"],
        s1 == SUCCESS && s2 == INVALID_STATE && s3 == SUCCESS,
        s1 << 16 | s2 << 8 | s3,
        INVALID_STATE << 8,
    );

    // Host-polled mode, with completion events.
    while events.pop().is_some() {}
    let s = setup(&t, block, sq2, cq2, 1, 1);
    if s == NO_RESOURCES {
        for name in [
            "ring.host_polled_consumes_by_the_wakeup_protocol",
            "ring.an_idle_poller_sets_need_wakeup",
            "ring.a_notified_poller_consumes",
            "ring.completion_events_carry_the_completion_tail",
            "ring.enter_works_beside_the_poller",
            "ring.nothing_is_consumed_after_unregistering",
        ] {
            skip(
                name,
                &["PVABI-RING-014"],
                "the host cannot poll (NO_RESOURCES)",
            );
        }
        channel::end(TEST)
    }
    observe(
        "ring.host_polled_mode_is_offered",
        &["PVABI-RING-014"],
        "RING_SETUP in host-polled mode answered (0 SUCCESS; 15 NO_RESOURCES, allowed for a host that cannot poll):",
        s,
    );
    let mut r = Rings {
        sq: sq2,
        cq: cq2,
        sq_tail: 0,
        cq_head: 0,
    };
    let notify_if_asleep = |r: &Rings| {
        if rd32(r.sq + FLAGS) & NEED_WAKEUP != 0 {
            // SAFETY: a write to the ring-notify port; the submissions are sound to run.
            unsafe { outl(port, 0) };
        }
    };
    r.submit(0x700, Call::GetSpecVersion.code(), 0, &[]);
    notify_if_asleep(&r);
    let done = wait_ms(&t, PATIENCE_MS, || r.cq_tail() != r.cq_head);
    let (ok, seen) = r.pop_run(0x700, 1);
    check(
        "ring.host_polled_consumes_by_the_wakeup_protocol",
        &["PVABI-RING-009"],
        s == SUCCESS && done && ok,
        s << 32 | seen,
        0,
    );
    let asleep = wait_ms(&t, PATIENCE_MS, || rd32(sq2 + FLAGS) & NEED_WAKEUP != 0);
    // A poller that never announced its sleep gets no more patience: the checks that
    // follow look once (and fail at once if it does not run).
    let patience = if asleep { PATIENCE_MS } else { 0 };
    check(
        "ring.an_idle_poller_sets_need_wakeup",
        &["PVABI-RING-009"],
        asleep,
        u64::from(rd32(sq2 + FLAGS)),
        u64::from(NEED_WAKEUP),
    );
    r.submit(0x701, Call::GetSpecVersion.code(), 0, &[]);
    notify_if_asleep(&r);
    let at_once = r.cq_tail() != r.cq_head;
    let done = wait_ms(&t, patience, || r.cq_tail() != r.cq_head);
    observe(
        "ring.a_notification_may_return_before_the_ring_is_processed",
        &["PVABI-RING-021"],
        "the completion was there when the notification returned (1) or came later (0):",
        u64::from(at_once),
    );
    let (ok, seen) = r.pop_run(0x701, 1);
    check(
        "ring.a_notified_poller_consumes",
        &["PVABI-RING-009", "PVABI-RING-007"],
        done && ok,
        seen,
        0,
    );
    // Every completion event is RING_COMPLETION from this vCPU with a tail the ring had;
    // the last one carries the tail after the last completion.
    // (A poller posts the event after the completion it announces: wait for it.)
    let mut last = None;
    let mut well_formed = true;
    let mut posted = 0;
    wait_ms(&t, patience, || {
        while let Some((kind, source, data)) = events.pop() {
            well_formed &= kind == EventKind::RingCompletion as u32 && source == 0 && data <= 2;
            last = Some(data);
            posted += 1;
        }
        last == Some(2)
    });
    observe(
        "ring.completion_events_per_completion",
        &["PVABI-RING-030"],
        "RING_COMPLETION events posted for 2 completions (one event may cover several):",
        posted,
    );
    check(
        "ring.completion_events_carry_the_completion_tail",
        &["PVABI-RING-011"],
        well_formed && last == Some(2),
        last.unwrap_or(u64::MAX),
        2,
    );
    r.submit(0x702, Call::GetSpecVersion.code(), 0, &[]);
    let (s, _) = enter(&t);
    let (ok, seen) = r.pop_run(0x702, 1);
    check(
        "ring.enter_works_beside_the_poller",
        &["PVABI-RING-017"],
        s == SUCCESS && ok,
        s << 32 | seen,
        0,
    );
    // Unregistering while the poller works: every submission it has consumed is complete,
    // its effect (an event) and its completion, when the unregistering call returns.
    while events.pop().is_some() {}
    let (head0, cq0) = (r.sq_head(), r.cq_tail());
    for i in 0..16 {
        r.submit(0x800 + i, Call::EventsSend.code(), 0, &[0, 0x800 + i]);
    }
    // SAFETY: a write to the ring-notify port; the submissions are sound to run.
    unsafe { outl(port, 0) };
    let s = setup(&t, block, 0, 0, 0, 0);
    let consumed = r.sq_head().wrapping_sub(head0);
    let completed = r.cq_tail().wrapping_sub(cq0);
    let mut effects = 0;
    let mut in_order = true;
    while let Some((kind, _, data)) = events.pop() {
        if kind == EventKind::User as u32 {
            in_order &= data == 0x800 + effects;
            effects += 1;
        }
    }
    check(
        "ring.unregistering_completes_every_consumed_submission",
        &["PVABI-RING-016"],
        s == SUCCESS && completed == consumed && effects == u64::from(consumed) && in_order,
        u64::from(consumed) << 32 | u64::from(completed) << 16 | effects,
        u64::from(consumed) << 32 | u64::from(consumed) << 16 | u64::from(consumed),
    );
    observe(
        "ring.submissions_consumed_before_unregistering",
        &["PVABI-RING-016"],
        "of 16 submissions made just before unregistering, the poller had consumed:",
        u64::from(consumed),
    );
    // Once unregistered, the pages are the guest's again and nothing more is consumed.
    let s = setup(&t, block, 0, 0, 0, 0);
    let (tail, head) = (r.cq_tail(), r.sq_head());
    r.submit(0x703, Call::GetSpecVersion.code(), 0, &[]);
    // SAFETY: the host must ignore it: the vCPU has no rings.
    unsafe { outl(port, 0) };
    let moved = wait_ms(&t, 20, || r.cq_tail() != tail || r.sq_head() != head);
    check(
        "ring.nothing_is_consumed_after_unregistering",
        &["PVABI-RING-025"],
        s == SUCCESS && !moved,
        s << 32 | u64::from(moved),
        0,
    );
    channel::end(TEST)
}

pvabi_guest_rt::entry!(main);

#[panic_handler]
fn panic(_info: &core::panic::PanicInfo<'_>) -> ! {
    halt_forever()
}
