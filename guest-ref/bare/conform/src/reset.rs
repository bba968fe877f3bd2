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
//! - Second boot (record of one boot): checks each rule and ends with its verdict.
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
use pvabi_guest_rt::{ap_launch, halt_forever, run_at_cpl3, BootInfo};

use call::raw;
use channel::{check, skip};
use common::{fill, now_ns, rd32, rd64, wait_ms, wr32, wr64, PAGE, SUCCESS};

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
    let n = negotiate(&t, Features::MULTICALL);
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

fn vcpu1_first(port: u64) -> ! {
    let t = PortTransport::new(port as u16);
    raw(&t, Call::EventsSetMask, &[USER | KICK]);
    raw(&t, Call::DeferSetQueue, &[top(DEFER1), 0]);
    queue_update(top(DEFER1), top(WORDS) + 8, W1_VALUE);
    set_record(R_READY1, 1);
    run_at_cpl3(spin, top(RECORD) + 8 * R_SPIN1);
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
        n.status == SUCCESS && !granted.contains(Features::MULTICALL),
        n.results[1],
        first.bits() & !Features::MULTICALL.bits(),
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
    channel::end(TEST)
}

pvabi_guest_rt::entry!(main);

#[panic_handler]
fn panic(_info: &core::panic::PanicInfo<'_>) -> ! {
    halt_forever()
}
