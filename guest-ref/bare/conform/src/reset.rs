//! Conformance test `reset`: what a reset restores (System chapter, "What a reset restores"),
//! seen by a guest that survives its own SYSTEM_REBOOT. Two vCPUs.
//!
//! The guest keeps a record in the top page of guest RAM, outside its image: a reset keeps
//! guest RAM outside the image (the reference platform's appendix, "Reset"), and RAM is zero
//! at the first start, so the record tells the boots apart.
//!
//! - First boot (no record): NEGOTIATE, then set up every piece of pvabi state the reset
//!   rules name: the time page, vCPU 0's event queue, mask, steal-time page, deferred queue
//!   and timer (armed to expire after the reset), a shared page and a released one, and vCPU 1
//!   running with a mask, a deferred queue holding a call that has not run, and a latched
//!   wake-up. vCPU 0 queues a call of its own, notes the monotonic time, and calls
//!   SYSTEM_REBOOT. It writes no channel line: a host that ends the VM instead (which
//!   PVABI-SYS-003 allows) leaves a run without a BEGIN line, which the runner reports as a
//!   SKIP (or a FAIL, if the host's profile claims that it resets).
//!   With `RING` granted, the first boot also leaves ring pairs behind: vCPU 0's in doorbell
//!   mode, with two submissions consumed by RING_ENTER and three published without a notify,
//!   and vCPU 1's host-polled, which vCPU 1 fills at CPL3 as fast as the poller consumes
//!   (its completions consumed as they come) until the reset stops it, so that submissions
//!   are likely in flight when vCPU 0 calls SYSTEM_REBOOT. Each submission is a
//!   MEM_UPDATE_PTE whose store into a page of its own is its effect.
//! - Second boot (record of one boot): checks each rule and ends with its verdict. The ring
//!   pages are RAM that survived the reset: every submission the old host consumed (below the
//!   submission `head` it published) has its completion and its effect, and none it did not
//!   consume ran (PVABI-RING-027); then the guest publishes one more submission into each old
//!   ring, writes both vCPU indices to the ring-notify port, and after a wait finds that none
//!   was consumed (PVABI-RING-023: anything consumed then was consumed after the host had
//!   begun to handle SYSTEM_REBOOT). Only SYSTEM_REBOOT with a reset lets a guest look: after
//!   a SYSTEM_SHUTDOWN or a SYSTEM_CRASH, or a reboot that ends the VM, nobody can.
//! - A later boot (the host reset again although the guest asked only once): FAIL, so that a
//!   host that loops ends the test.
//!
//! The pages it names sit at the top of RAM, outside the image, so that what the host wrote
//! before the reset can be read after it.
#![no_std]
#![no_main]

mod call;
mod channel;
mod common;

use core::sync::atomic::{AtomicU64, Ordering};

use pvabi_guest::abi::events::EventKind;
use pvabi_guest::abi::features::Features;
use pvabi_guest::abi::vcpu::WakeReason;
use pvabi_guest::discovery::discover;
use pvabi_guest::transport::Transport;
use pvabi_guest::{gpa_of, Call, PortTransport, Status};
use pvabi_guest_rt::port::outl;
use pvabi_guest_rt::{ap_launch, halt_forever, run_at_cpl3, BootInfo};

use call::raw;
use channel::{check, fail, skip};
use common::{fence, fill, now_ns, rd32, rd64, wait_ms, wr32, wr64, PAGE, SUCCESS};

const TEST: &str = "reset";
const VECTOR: u64 = 0x40;
const PATIENCE_MS: u64 = 5000;
/// "PVRESET1": the record's magic.
const MAGIC: u64 = 0x3154_4553_4552_5650;
/// An image static's initial value, changed on the first boot: the reset reloads the image.
static MARK: AtomicU64 = AtomicU64::new(0x1111);
/// How long after the reboot the first boot's timer would expire.
const TIMER_AFTER_NS: u64 = 200_000_000;
const USER: u64 = 1 << EventKind::User as u64;
const KICK: u64 = 1 << EventKind::Kick as u64;
const INVALID_STATE: u64 = Status::InvalidState as u64;
const TIMEOUT: u64 = WakeReason::Timeout as u64;

// The pages at the top of RAM, by index from the top (0 is the last page).
const RECORD: u64 = 0;
const DEFER0: u64 = 1;
const DEFER1: u64 = 2;
const WORDS: u64 = 3;
const BALLOON: u64 = 4;
const SHARED: u64 = 5;
const TIME_PAGE: u64 = 6;
const STEAL: u64 = 7;
const QUEUE0: u64 = 8;
const SCRATCH: u64 = 9;
/// The first boot's ring pairs (vCPU 0's in doorbell mode, vCPU 1's host-polled) and the
/// page their submissions store into.
const SQ0: u64 = 10;
const CQ0: u64 = 11;
const SQ1: u64 = 12;
const CQ1: u64 = 13;
const EFFECTS: u64 = 14;

// Offsets into the SCRATCH page: the balloon list at 0, the RingSetup blocks of vCPU 0 and
// vCPU 1, vCPU 1's parameters at CPL3, the start state at 2048.
const SETUP0: u64 = 1024;
const SETUP1: u64 = 1088;
const PARAMS1: u64 = 1536;

// The record's words.
const R_MAGIC: u64 = 0;
const R_BOOTS: u64 = 1;
const R_BEFORE: u64 = 2;
const R_STEAL_STATUS: u64 = 3;
const R_GRANTED: u64 = 4;
const R_READY1: u64 = 5;
const R_SPIN1: u64 = 6;
const R_DEADLINE: u64 = 7;
/// vCPU 1's answers on the second boot: its previous mask, its HALT, done.
const R_MASK1: u64 = 8;
const R_HALT1: u64 = 9;
const R_DONE1: u64 = 10;
const R_ACCEPTED: u64 = 11;
/// RING_SETUP's status for vCPU 0's and vCPU 1's rings ([`NO_RING`] if not made).
const R_RING0: u64 = 12;
const R_RING1: u64 = 13;
/// The ring-notify port.
const R_NOTIFY: u64 = 14;
/// Completions vCPU 1 found out of order (not the next `user_data`) on the first boot.
const R_BAD1: u64 = 15;
const NO_RING: u64 = u64::MAX;

// The ring layout (the ABI's RingHeader, SubmissionEntry and CompletionEntry).
const SQ_CAP: u32 = 32;
const CQ_CAP: u32 = 64;
const HEAD: u64 = 0;
const TAIL: u64 = 4;
const FLAGS: u64 = 12;
const NEED_WAKEUP: u32 = 1;
const ENTRIES: u64 = 64;
const SQE: u64 = 64;
const CQE: u64 = 48;
/// Submissions of vCPU 0's ring consumed by RING_ENTER, then published without a notify.
const RING0_ENTERED: u32 = 2;
const RING0_LEFT: u32 = 3;

/// The values the deferred calls write (MEM_UPDATE_PTE) into the words page.
const W0_VALUE: u64 = 0xd0;
const W1_VALUE: u64 = 0xd1;

static TOP: AtomicU64 = AtomicU64::new(0);

/// Page `k` from the top of RAM.
fn top(k: u64) -> u64 {
    TOP.load(Ordering::Relaxed) - (k + 1) * PAGE
}

fn record(word: u64) -> u64 {
    rd64(top(RECORD) + 8 * word)
}

fn set_record(word: u64, value: u64) {
    wr64(top(RECORD) + 8 * word, value);
}

/// Queues MEM_UPDATE_PTE(`target`, `value`) as entry 0 of the deferred queue at `q` (a
/// store of the tail, no exit).
fn queue_update(q: u64, target: u64, value: u64) {
    let entry = q + 64;
    wr32(entry, Call::MemUpdatePte.code());
    wr32(entry + 4, 0);
    wr64(entry + 8, target);
    wr64(entry + 16, value);
    wr64(entry + 24, 1);
    common::fence();
    wr32(q + 4, 1);
}

/// Submission `i` of ring `r` (0 or 1): its `user_data`, also the value it stores.
fn tag(r: u64, i: u32) -> u64 {
    0x7269_0000_0000_0000 | r << 40 | u64::from(i)
}

/// Where submission `i` of ring `r` stores its tag, in the page `effects`: vCPU 1's ring in
/// words 0 to 127, vCPU 0's in words 128 to 255.
fn effect(effects: u64, r: u64, i: u32) -> u64 {
    if r == 0 {
        effects + 8 * (128 + u64::from(i % 128))
    } else {
        effects + 8 * u64::from(i % 128)
    }
}

/// Publishes submission `i` of ring `r` into the submission ring `sq` (PVABI-RING-001: the
/// entry, then `tail` with release order, then a full barrier before any look at the
/// flags): MEM_UPDATE_PTE storing its tag. Runs at CPL0 and CPL3 (no statics).
fn submit(sq: u64, effects: u64, r: u64, i: u32) {
    let e = sq + ENTRIES + u64::from(i % SQ_CAP) * SQE;
    let args = [effect(effects, r, i), tag(r, i), 1, 0, 0, 0];
    wr64(e, tag(r, i));
    wr32(e + 8, Call::MemUpdatePte.code());
    wr32(e + 12, 0);
    for (k, a) in (0..).zip(args) {
        wr64(e + 16 + 8 * k, a);
    }
    fence();
    wr32(sq + TAIL, i.wrapping_add(1));
    fence();
}

/// RING_SETUP of the ring pair (`sq`, `cq`) in `mode`, with the block at `block`.
fn ring_setup(t: &PortTransport, block: u64, sq: u64, cq: u64, mode: u32) -> u64 {
    wr64(block, sq);
    wr64(block + 8, cq);
    wr32(block + 16, mode);
    wr32(block + 20, 0);
    wr64(block + 24, 0);
    raw(t, Call::RingSetup, &[block]).status
}

fn negotiate(t: &PortTransport, optional: Features) -> pvabi_guest::transport::RawResult {
    let required = Features::CONSOLE
        | Features::SYSTEM
        | Features::TIME
        | Features::EVENTS
        | Features::MEMORY
        | Features::VCPU
        | Features::DEFERRED;
    raw(
        t,
        Call::Negotiate,
        &[0x0001_0000, required.bits(), optional.bits()],
    )
}

/// A free-form console line (not part of the channel).
fn log(t: &PortTransport, line: &'static [u8]) {
    // SAFETY: CONSOLE_WRITE only reads the line.
    unsafe {
        t.call(
            Call::ConsoleWrite.code(),
            [gpa_of(line), line.len() as u64, 0, 0, 0, 0],
        );
    }
}

fn main(boot: &BootInfo) -> ! {
    TOP.store(boot.mem_bytes, Ordering::Relaxed);
    let boots = if record(R_MAGIC) == MAGIC {
        record(R_BOOTS)
    } else {
        0
    };
    if boots == 0 {
        first_boot(boot)
    }
    set_record(R_BOOTS, boots + 1);
    second_boot(boot, boots)
}

fn first_boot(boot: &BootInfo) -> ! {
    let Some(found) = discover() else {
        halt_forever()
    };
    let port = found.info.doorbell_port;
    let t = PortTransport::new(port);
    // Not STEAL_TIME: the second boot asks for it, and gets it.
    let n = negotiate(&t, Features::MULTICALL | Features::RING);
    if n.status != SUCCESS {
        halt_forever()
    }
    set_record(R_MAGIC, MAGIC);
    set_record(R_BOOTS, 1);
    set_record(R_GRANTED, n.results[1]);
    MARK.store(0x2222, Ordering::Relaxed);

    // vCPU 0's state.
    raw(&t, Call::TimeSetPage, &[top(TIME_PAGE)]);
    raw(&t, Call::EventsSetQueue, &[top(QUEUE0), VECTOR]);
    raw(&t, Call::EventsSetMask, &[USER]);
    // Ungranted: NOT_GRANTED, or NOT_SUPPORTED where 1.0 was accepted (TIME-032).
    set_record(
        R_STEAL_STATUS,
        raw(&t, Call::TimeSetStealPage, &[top(STEAL)]).status,
    );
    set_record(R_ACCEPTED, n.results[0]);
    raw(&t, Call::MemShare, &[top(SHARED), 1]);
    let list = top(SCRATCH);
    wr64(list, top(BALLOON) / PAGE);
    raw(&t, Call::MemBalloonRelease, &[list, 1]);
    raw(&t, Call::DeferSetQueue, &[top(DEFER0), 0]);
    let rings = Features::from_bits_retain(n.results[1]).contains(Features::RING);
    set_record(R_NOTIFY, u64::from(found.info.ring_notify_port));
    set_record(R_RING1, NO_RING);
    set_record(
        R_RING0,
        if rings {
            ring_setup(&t, top(SCRATCH) + SETUP0, top(SQ0), top(CQ0), 0)
        } else {
            NO_RING
        },
    );

    // vCPU 1: a mask, a deferred call that has not run, then a spin at CPL3 (no exit).
    if boot.vcpu_count >= 2 {
        if let Some(launch) = ap_launch(1, vcpu1_first, u64::from(port)) {
            let state = top(SCRATCH) + 2048;
            for (k, v) in [launch.rip, launch.rsp, launch.rdi, 0, 0, 0, 0, 0]
                .iter()
                .enumerate()
            {
                wr64(state + 8 * k as u64, *v);
            }
            raw(&t, Call::VcpuStart, &[1, state]);
            wait_ms(&t, PATIENCE_MS, || record(R_READY1) == 1);
            // vCPU 1 has no event queue: the kick latches its wake-up.
            raw(&t, Call::VcpuKick, &[1]);
            if record(R_RING1) == SUCCESS {
                // Until the poller keeps up with vCPU 1, so that the reboot finds it busy.
                wait_ms(&t, 200, || rd32(top(SQ1) + HEAD) >= 1024);
            }
        }
    }

    let before = now_ns(&t);
    let deadline = before + TIMER_AFTER_NS;
    raw(&t, Call::TimeSetTimer, &[deadline]);
    set_record(R_DEADLINE, deadline);
    log(
        &t,
        b"pvabi-conform reset guest: first boot set up, calling SYSTEM_REBOOT\n",
    );
    set_record(R_BEFORE, now_ns(&t));
    if record(R_RING0) == SUCCESS {
        // Two submissions consumed now, three left without a notify.
        let effects = top(EFFECTS);
        for i in 0..RING0_ENTERED {
            submit(top(SQ0), effects, 0, i);
        }
        raw(&t, Call::RingEnter, &[]);
        for i in RING0_ENTERED..RING0_ENTERED + RING0_LEFT {
            submit(top(SQ0), effects, 0, i);
        }
    }
    // A call of vCPU 0's own, queued: SYSTEM_REBOOT runs it before it takes effect.
    queue_update(top(DEFER0), top(WORDS), W0_VALUE);
    raw(&t, Call::SystemReboot, &[]);
    // SYSTEM_REBOOT does not return on success.
    halt_forever()
}

/// At CPL3: counts forever in the record (a vCPU that goes on running shows in the count).
fn spin(word: u64) -> u64 {
    loop {
        wr64(word, rd64(word).wrapping_add(1));
        core::hint::spin_loop();
    }
}

/// vCPU 1 at CPL3 on the first boot, with its host-polled ring: submits as fast as the ring
/// has room, consumes each completion as it comes (counting in the record those out of order)
/// and notifies when the poller sleeps (PVABI-RING-010), and counts in the record as `spin`
/// does. The reset stops it, most likely with submissions in flight. `params`: the SQ and CQ
/// pages, the effects page, the ring-notify port, the count's and the bad count's words.
fn hammer(params: u64) -> u64 {
    let [sq, cq, effects, port, count, bad] = core::array::from_fn(|k| rd64(params + 8 * k as u64));
    // Submission k's completion is completion k: both run from 0.
    let (mut tail, mut head) = (0u32, 0u32);
    loop {
        wr64(count, rd64(count).wrapping_add(1));
        let done = rd32(cq + TAIL);
        let freed = done != head;
        while head != done {
            // PVABI-RING-006: the entry read, then the index past it stored.
            if rd64(cq + ENTRIES + u64::from(head % CQ_CAP) * CQE) != tag(1, head) {
                wr64(bad, rd64(bad) + 1);
            }
            head = head.wrapping_add(1);
        }
        if freed {
            wr32(cq + HEAD, head);
            fence();
        }
        let room = tail.wrapping_sub(rd32(sq + HEAD)) < SQ_CAP;
        if room {
            submit(sq, effects, 1, tail);
            tail = tail.wrapping_add(1);
        }
        if (room || freed) && rd32(sq + FLAGS) & NEED_WAKEUP != 0 {
            // SAFETY: a 32-bit write of this vCPU's index to the ring-notify port.
            unsafe { outl(port as u16, 1) };
        }
        core::hint::spin_loop();
    }
}

fn vcpu1_first(port: u64) -> ! {
    let t = PortTransport::new(port as u16);
    raw(&t, Call::EventsSetMask, &[USER | KICK]);
    raw(&t, Call::DeferSetQueue, &[top(DEFER1), 0]);
    let count = top(RECORD) + 8 * R_SPIN1;
    // RING_SETUP is a sync point: made before the call is queued, so that it does not run it.
    let setup = if record(R_RING0) == NO_RING {
        NO_RING
    } else {
        ring_setup(&t, top(SCRATCH) + SETUP1, top(SQ1), top(CQ1), 1)
    };
    set_record(R_RING1, setup);
    queue_update(top(DEFER1), top(WORDS) + 8, W1_VALUE);
    if setup == SUCCESS {
        let params = top(SCRATCH) + PARAMS1;
        let bad = top(RECORD) + 8 * R_BAD1;
        let words = [
            top(SQ1),
            top(CQ1),
            top(EFFECTS),
            record(R_NOTIFY),
            count,
            bad,
        ];
        for (k, v) in (0..).zip(words) {
            wr64(params + 8 * k, v);
        }
        set_record(R_READY1, 1);
        run_at_cpl3(hammer, params);
    }
    set_record(R_READY1, 1);
    run_at_cpl3(spin, count);
    halt_forever()
}

fn vcpu1_second(port: u64) -> ! {
    let t = PortTransport::new(port as u16);
    set_record(R_MASK1, raw(&t, Call::EventsSetMask, &[0]).results[0]);
    let h = raw(&t, Call::VcpuHalt, &[1_000_000]);
    set_record(
        R_HALT1,
        if h.status == SUCCESS {
            h.results[0]
        } else {
            h.status << 32
        },
    );
    set_record(R_DONE1, 1);
    raw(&t, Call::VcpuStop, &[]);
    halt_forever()
}

fn second_boot(boot: &BootInfo, boots: u64) -> ! {
    channel::begin(TEST);
    let Some(found) = discover() else {
        halt_forever()
    };
    let port = found.info.doorbell_port;
    channel::set_doorbell(port);
    let t = PortTransport::new(port);
    let spec = raw(&t, Call::GetSpecVersion, &[]);
    // A different feature set from the first boot's (no MULTICALL asked for).
    let n = negotiate(&t, Features::STEAL_TIME);
    // A host that kept the first boot's NEGOTIATE answers LOCKED; its old grant still lets
    // the channel write (if it does not, the run has no verdict: a CRASH, never a PASS).
    channel::go_live();
    check(
        "reset.the_host_resets_on_reboot",
        &["PVABI-SYS-003"],
        true,
        boots,
        1,
    );
    channel::info("resets_on_reboot", 1);
    if boots > 1 {
        check(
            "reset.the_vm_is_reset_once_per_reboot",
            &["PVABI-SYS-003", "PVABI-SYS-004"],
            false,
            boots,
            1,
        );
        channel::end(TEST)
    }
    check(
        "reset.negotiate_is_unlocked_and_forgotten",
        &["PVABI-SYS-008", "PVABI-SYS-004"],
        spec.status == SUCCESS && spec.results[2] == 0 && n.status == SUCCESS,
        spec.results[2] << 32 | n.status,
        SUCCESS,
    );
    let granted = Features::from_bits_retain(n.results[1]);
    let first = Features::from_bits_retain(record(R_GRANTED));
    check(
        "reset.a_new_negotiate_grants_anew",
        &["PVABI-SYS-008"],
        n.status == SUCCESS && !granted.intersects(Features::MULTICALL | Features::RING),
        n.results[1],
        first.bits() & !(Features::MULTICALL | Features::RING).bits(),
    );
    let now = now_ns(&t);
    let before = record(R_BEFORE);
    check(
        "reset.monotonic_time_goes_on_across_the_reset",
        &["PVABI-TIME-034", "PVABI-TIME-001"],
        now >= before,
        now,
        before,
    );
    check(
        "reset.vcpu_0_begins_in_the_entry_state",
        &["PVABI-SYS-012", "PVABI-PLAT-016"],
        boot.vcpu == 0
            && u64::from(boot.vcpu_count) == u64::from(found.info.vcpus)
            && boot.mem_bytes == TOP.load(Ordering::Relaxed)
            && MARK.load(Ordering::Relaxed) == 0x1111,
        MARK.load(Ordering::Relaxed),
        0x1111,
    );
    // SYS-013: the reboot ran vCPU 0's queued call; SYS-010: it did not run vCPU 1's.
    let w0 = rd64(top(WORDS));
    let w1 = rd64(top(WORDS) + 8);
    check(
        "reset.reboot_runs_the_callers_deferred_calls_first",
        &["PVABI-SYS-013"],
        w0 == W0_VALUE,
        w0,
        W0_VALUE,
    );
    // The first boot's rings, as the old host left them, before anything else runs.
    let old = [OldRing::of(0), OldRing::of(1)];
    rings_complete(&old, boot.vcpu_count);
    // One more submission into each old ring, and a notify of each: a host that still
    // serves them consumes it (checked at the end, after the waits).
    for o in old.iter().filter(|o| o.made()) {
        if o.tail.wrapping_sub(o.head) < SQ_CAP {
            submit(o.sq, top(EFFECTS), o.r, o.tail);
        }
    }
    if old[0].made() {
        let notify = record(R_NOTIFY) as u16;
        // SAFETY: 32-bit writes of vCPU indices to the ring-notify port (harmless when the
        // vCPU has no rings, PVABI-RING-022).
        unsafe {
            outl(notify, 0);
            outl(notify, 1);
        }
    }

    // SYS-009: no page is host-owned any more: each registers again.
    for k in [TIME_PAGE, QUEUE0, DEFER0, STEAL] {
        fill(top(k), PAGE, 0);
    }
    let time = raw(&t, Call::TimeSetPage, &[top(TIME_PAGE)]).status;
    let queue = raw(&t, Call::EventsSetQueue, &[top(QUEUE0), VECTOR]).status;
    let defer = raw(&t, Call::DeferSetQueue, &[top(DEFER0), 0]).status;
    check(
        "reset.no_page_is_host_owned",
        &["PVABI-SYS-009", "PVABI-SYS-004"],
        time == SUCCESS && queue == SUCCESS && defer == SUCCESS,
        time << 32 | queue << 16 | defer,
        SUCCESS,
    );
    // The first boot did not ask for STEAL_TIME, this one does: a fresh grant, and a fresh
    // steal-time page.
    let accepted = record(R_ACCEPTED);
    let want = if accepted & 0xffff == 0 {
        Status::NotSupported as u64
    } else {
        Status::NotGranted as u64
    };
    check(
        "reset.steal_page_is_refused_when_steal_time_is_not_granted",
        &["PVABI-TIME-032"],
        record(R_STEAL_STATUS) == want,
        record(R_STEAL_STATUS),
        want,
    );
    if granted.contains(Features::STEAL_TIME) {
        let s = raw(&t, Call::TimeSetStealPage, &[top(STEAL)]).status;
        check(
            "reset.features_not_granted_before_the_reset_can_be_granted_after",
            &["PVABI-SYS-008"],
            s == SUCCESS,
            s,
            SUCCESS,
        );
    } else {
        skip(
            "reset.features_not_granted_before_the_reset_can_be_granted_after",
            &["PVABI-SYS-008"],
            "STEAL_TIME not offered",
        );
    }
    let mask = raw(&t, Call::EventsSetMask, &[0]).results[0];
    check(
        "reset.vcpu_0_has_mask_0",
        &["PVABI-SYS-010", "PVABI-EVT-021"],
        mask == 0,
        mask,
        0,
    );
    // SYS-011: the shared page is no longer shared (a release of it succeeds), the released
    // one is RAM again (a reclaim of it is refused, a store to it reads back).
    let list = top(SCRATCH);
    wr64(list, top(SHARED) / PAGE);
    let release_shared = raw(&t, Call::MemBalloonRelease, &[list, 1]).status;
    raw(&t, Call::MemBalloonReclaim, &[list, 1]);
    wr64(list, top(BALLOON) / PAGE);
    let reclaim = raw(&t, Call::MemBalloonReclaim, &[list, 1]).status;
    wr64(top(BALLOON), 0x00c0_ffee);
    let back = rd64(top(BALLOON));
    check(
        "reset.the_balloon_and_sharing_are_forgotten",
        &["PVABI-SYS-011", "PVABI-SYS-004"],
        release_shared == SUCCESS && reclaim == INVALID_STATE && back == 0x00c0_ffee,
        release_shared << 32 | reclaim,
        INVALID_STATE,
    );

    // vCPU 1 was stopped: its count stands still, VCPU_START starts it, and it is fresh.
    if boot.vcpu_count >= 2 {
        let count = record(R_SPIN1);
        raw(&t, Call::VcpuHalt, &[5_000_000]);
        let still = record(R_SPIN1) == count;
        let mut start = u64::MAX;
        if let Some(launch) = ap_launch(1, vcpu1_second, u64::from(port)) {
            let state = top(SCRATCH) + 2048;
            for (k, v) in [launch.rip, launch.rsp, launch.rdi, 0, 0, 0, 0, 0]
                .iter()
                .enumerate()
            {
                wr64(state + 8 * k as u64, *v);
            }
            start = raw(&t, Call::VcpuStart, &[1, state]).status;
        }
        let done = wait_ms(&t, PATIENCE_MS, || record(R_DONE1) == 1);
        check(
            "reset.other_vcpus_are_stopped",
            &["PVABI-SYS-010", "PVABI-SYS-004"],
            still && start == SUCCESS,
            u64::from(still) << 32 | start,
            1 << 32 | SUCCESS,
        );
        check(
            "reset.deferred_calls_that_had_not_run_are_discarded",
            &["PVABI-SYS-010", "PVABI-SYS-013"],
            w1 == 0,
            w1,
            0,
        );
        check(
            "reset.every_vcpu_has_fresh_state",
            &["PVABI-SYS-010", "PVABI-VCPU-016"],
            done && record(R_MASK1) == 0 && record(R_HALT1) == TIMEOUT,
            record(R_MASK1) << 32 | record(R_HALT1),
            TIMEOUT,
        );
    } else {
        for name in [
            "reset.other_vcpus_are_stopped",
            "reset.deferred_calls_that_had_not_run_are_discarded",
            "reset.every_vcpu_has_fresh_state",
        ] {
            skip(name, &["PVABI-SYS-010"], "one vCPU: run the test with two");
        }
    }

    // The first boot's timer is disarmed: past its deadline, no TIMER event and no wake-up.
    let deadline = record(R_DEADLINE);
    wait_ms(&t, PATIENCE_MS, || now_ns(&t) > deadline + 20_000_000);
    let tail = rd32(top(QUEUE0) + 4);
    let halt = raw(&t, Call::VcpuHalt, &[1_000_000]);
    check(
        "reset.timers_are_disarmed",
        &["PVABI-TIME-020", "PVABI-SYS-010"],
        tail == 0 && halt.status == SUCCESS && halt.results[0] == TIMEOUT,
        u64::from(tail) << 32 | halt.results[0],
        TIMEOUT,
    );
    no_ring_consumes_after_the_reboot(&t, &old);
    channel::end(TEST)
}

/// A ring pair of the first boot as the second boot finds it in RAM: the guest's submission
/// `tail`, and the submission `head` and completion `tail` the old host published.
struct OldRing {
    r: u64,
    setup: u64,
    sq: u64,
    cq: u64,
    tail: u32,
    head: u32,
    done: u32,
}

impl OldRing {
    fn of(r: u64) -> OldRing {
        let (sq, cq) = if r == 0 {
            (top(SQ0), top(CQ0))
        } else {
            (top(SQ1), top(CQ1))
        };
        OldRing {
            r,
            setup: record(if r == 0 { R_RING0 } else { R_RING1 }),
            sq,
            cq,
            tail: rd32(sq + TAIL),
            head: rd32(sq + HEAD),
            done: rd32(cq + TAIL),
        }
    }

    /// Whether RING_SETUP made it on the first boot.
    fn made(&self) -> bool {
        self.setup == SUCCESS
    }

    /// PVABI-RING-027: what is wrong with what the old host left, if anything: a message and
    /// the value it names.
    fn fault(&self) -> Option<(&'static str, u64)> {
        let (head, done, tail) = (self.head, self.done, self.tail);
        if done != head {
            return Some((
                "the reboot ended the VM with consumed submissions uncompleted or extra completions: SQ head (high half) != CQ tail (low half); complete every consumed submission before the VM ends",
                u64::from(head) << 32 | u64::from(done),
            ));
        }
        if tail.wrapping_sub(head) > SQ_CAP {
            return Some((
                "the old host's SQ head is past the guest's tail: head (high half), tail (low half)",
                u64::from(head) << 32 | u64::from(tail),
            ));
        }
        // The last completions (at most a ring's worth) are still in their slots.
        for i in head.wrapping_sub(head.min(CQ_CAP))..head {
            let c = self.cq + ENTRIES + u64::from(i % CQ_CAP) * CQE;
            if rd64(c) != tag(self.r, i) || rd32(c + 8) != 0 || rd32(c + 12) != 0 {
                return Some((
                    "a consumed submission's completion has the wrong user_data, status or reserved field; submission",
                    u64::from(i),
                ));
            }
            if rd64(effect(top(EFFECTS), self.r, i)) != tag(self.r, i) {
                return Some((
                    "a consumed submission was completed without its effect (its MEM_UPDATE_PTE store); submission",
                    u64::from(i),
                ));
            }
        }
        for i in head..tail {
            if rd64(effect(top(EFFECTS), self.r, i)) == tag(self.r, i) {
                return Some((
                    "a submission the old host did not consume (at or past its SQ head) ran; submission",
                    u64::from(i),
                ));
            }
        }
        None
    }
}

/// PVABI-RING-027, on the second boot: every submission the old host consumed before the
/// reset (below the SQ head it published) has its completion and its effect, and none it
/// did not consume ran; for vCPU 0's doorbell ring (some consumed by RING_ENTER, some never
/// notified) and vCPU 1's host-polled ring (submitting when the reset stopped it).
fn rings_complete(old: &[OldRing; 2], vcpus: u32) {
    let names = [
        "reset.consumed_doorbell_ring_submissions_are_complete_at_the_reboot",
        "reset.host_polled_submissions_in_flight_at_the_reboot_are_complete",
    ];
    for (o, name) in old.iter().zip(names) {
        let rules: &[&str] = if o.r == 0 {
            &["PVABI-RING-027"]
        } else {
            &["PVABI-RING-027", "PVABI-RING-003"]
        };
        if o.setup == NO_RING {
            skip(
                name,
                rules,
                if o.r == 1 && vcpus < 2 {
                    "one vCPU: run the test with two"
                } else {
                    "RING not granted"
                },
            );
            continue;
        }
        if !o.made() {
            // A host may refuse HOST_POLLED (PVABI-RING-014); a doorbell ring must be made.
            if o.r == 1 && o.setup == Status::NoResources as u64 {
                skip(name, rules, "HOST_POLLED refused with NO_RESOURCES");
            } else {
                fail(
                    name,
                    rules,
                    "RING_SETUP on the first boot returned",
                    o.setup,
                );
            }
            continue;
        }
        if o.r == 1 {
            // How far vCPU 1 got: what the poller had consumed, and what was left queued.
            channel::info("ring_polled_consumed", u64::from(o.head));
            channel::info("ring_polled_queued", u64::from(o.tail.wrapping_sub(o.head)));
        }
        let bad = record(R_BAD1);
        match o.fault() {
            Some((what, value)) => fail(name, rules, what, value),
            None if o.r == 1 && bad != 0 => fail(
                name,
                rules,
                "completions vCPU 1 read on the first boot not in submission order (user_data not the next):",
                bad,
            ),
            None => check(name, rules, true, 0, 0),
        }
    }
}

/// PVABI-RING-023, on the second boot: the submissions published into the old rings after
/// the reset (and notified) are not consumed within a generous wait (100 ms): the old host's
/// rings ended when it began to handle SYSTEM_REBOOT, and the reset ended their registration
/// (PVABI-SYS-009).
fn no_ring_consumes_after_the_reboot(t: &PortTransport, old: &[OldRing; 2]) {
    let name = "reset.no_ring_submission_is_consumed_after_the_reboot";
    // A host that serves the old rings after the reset also kept their registration.
    let rules = &["PVABI-RING-023", "PVABI-SYS-009"];
    if !old[0].made() {
        skip(name, rules, "no ring was made on the first boot");
        return;
    }
    let consumed = |o: &OldRing| {
        o.made()
            && (rd32(o.sq + HEAD) != o.head
                || rd32(o.cq + TAIL) != o.done
                || rd64(effect(top(EFFECTS), o.r, o.tail)) == tag(o.r, o.tail))
    };
    wait_ms(t, 100, || old.iter().any(consumed));
    match old.iter().find(|o| consumed(o)) {
        Some(o) => fail(
            name,
            rules,
            "a submission published into an old ring after the reset was consumed (the ring of vCPU, then its SQ head as the host left it and now): stop every ring when SYSTEM_REBOOT begins and serve none after the reset;",
            o.r << 60 | u64::from(o.head) << 32 | u64::from(rd32(o.sq + HEAD)),
        ),
        None => check(name, rules, true, 0, 0),
    }
}

pvabi_guest_rt::entry!(main);

#[panic_handler]
fn panic(_info: &core::panic::PanicInfo<'_>) -> ! {
    halt_forever()
}
