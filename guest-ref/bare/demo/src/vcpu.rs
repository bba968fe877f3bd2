//! vCPU family: info, yield, halt with a timeout, kick; and with two or more vCPUs the SMP
//! demo: vCPU 0 starts vCPU 1 with VCPU_START, vCPU 1 sends to vCPU 0 (halted in
//! VCPU_HALT), vCPU 0 kicks it back, vCPU 1 stops with VCPU_STOP; then vCPU 0 starts it
//! again (its pvabi state is fresh: it registers its queue page again) and it kicks
//! vCPU 0 before it stops for good.

use core::sync::atomic::Ordering;

use pvabi_guest::abi::vcpu::{VcpuStartState, WakeReason};
use pvabi_guest::{Block, Status};
use pvabi_guest_rt::{ap_launch, halt_forever, BootInfo};

use crate::irq::{self, Seen, SEEN};
use crate::out::{expect_status, fail_exit, must, pv, section, Line};
use crate::time::EVENT_TIMEOUT_NS;

/// vCPU 1's first run.
const PHASE_FIRST: u64 = 1;
/// vCPU 1's second run, after it stopped.
const PHASE_AGAIN: u64 = 2;
/// Pause between two VCPU_START attempts while vCPU 1 is still stopping.
const RETRY_NS: u64 = 500_000;
/// USER data vCPU 1 sends when it is up.
const HELLO: u64 = 0x4845_4c4c_4f00_0001;
/// USER data vCPU 1 sends just before it stops.
const BYE: u64 = 0x4259_4500_0000_0001;

pub fn run(boot: &BootInfo) {
    section("vcpu");
    let pv = pv();
    let info = must("vcpu", "VCPU_INFO", pv.vcpu_info());
    Line::check("vcpu", info.index == 0 && info.count == boot.vcpu_count)
        .s("VCPU_INFO: this is vCPU ")
        .dec(u64::from(info.index))
        .s(" of ")
        .dec(u64::from(info.count))
        .end();
    must("vcpu", "VCPU_YIELD", pv.vcpu_yield());
    Line::check("vcpu", true).s("VCPU_YIELD returned").end();

    let t0 = must("time", "TIME_MONOTONIC", pv.time_monotonic());
    let reason = must("vcpu", "VCPU_HALT", pv.vcpu_halt(1_000_000));
    let t1 = must("time", "TIME_MONOTONIC", pv.time_monotonic());
    Line::check(
        "vcpu",
        reason == WakeReason::Timeout && t1 - t0 >= 1_000_000,
    )
    .s("VCPU_HALT(1 ms) with nothing pending -> TIMEOUT after ")
    .ms(t1 - t0)
    .end();

    let seen = &SEEN[0];
    let kicks = Seen::get(&seen.kick);
    must("vcpu", "VCPU_KICK", pv.vcpu_kick(0));
    let reason = must("vcpu", "VCPU_HALT", pv.vcpu_halt(EVENT_TIMEOUT_NS));
    let got = irq::wait_for(0, EVENT_TIMEOUT_NS, || Seen::get(&seen.kick) > kicks);
    Line::check("vcpu", reason == WakeReason::Event && got)
        .s("VCPU_KICK(0) to itself: VCPU_HALT returns EVENT at once, KICK event from vCPU ")
        .dec(u64::from(seen.kick_source.load(Ordering::Relaxed)))
        .end();

    expect_status(
        "vcpu",
        "VCPU_STOP on vCPU 0",
        Err::<(), _>(pv.try_vcpu_stop()),
        Status::InvalidState,
    );
    let state = Block::new(VcpuStartState::default());
    expect_status(
        "vcpu",
        "VCPU_START of a vCPU that does not exist",
        // SAFETY: the host refuses the index before it looks at the state.
        unsafe { pv.vcpu_start(info.count, state.gpa()) },
        Status::InvalidParameter,
    );
    expect_status(
        "vcpu",
        "VCPU_START of vCPU 0 (running)",
        // SAFETY: the host refuses: vCPU 0 is running.
        unsafe { pv.vcpu_start(0, state.gpa()) },
        Status::InvalidState,
    );

    if info.count < 2 {
        Line::info()
            .s("(SMP demo skipped: 1 vCPU; run with --vcpus 2 to see VCPU_START, KICK and STOP)")
            .print();
        return;
    }
    smp();
}

/// VCPU_START of vCPU 1 in `phase`.
fn start_vcpu1(phase: u64) -> pvabi_guest::Result<()> {
    let Some(launch) = ap_launch(1, vcpu1_main, phase) else {
        fail_exit()
    };
    let state = Block::new(VcpuStartState {
        rip: launch.rip,
        rsp: launch.rsp,
        arg: launch.rdi,
        cr3: 0,
        ..VcpuStartState::default()
    });
    // SAFETY: vCPU 1 runs the runtime's AP entry on its own stack with the boot page
    // tables; it only touches its own statics and makes pvabi calls.
    unsafe { pv().vcpu_start(1, state.gpa()) }
}

fn smp() {
    section("vcpu: SMP (2 vCPUs)");
    let pv = pv();
    let seen = &SEEN[0];
    let users = Seen::get(&seen.user);
    must("vcpu", "VCPU_START", start_vcpu1(PHASE_FIRST));
    Line::check("vcpu", true)
        .s("VCPU_START(1): vCPU 1 runs; vCPU 0 waits in VCPU_HALT")
        .end();
    let got = irq::wait_for(0, EVENT_TIMEOUT_NS, || {
        Seen::get(&seen.user) > users && seen.user_data.load(Ordering::Relaxed) == HELLO
    });
    Line::check("vcpu", got && seen.user_source.load(Ordering::Relaxed) == 1)
        .s("vCPU 0 woke with a USER event from vCPU ")
        .dec(u64::from(seen.user_source.load(Ordering::Relaxed)))
        .s(" (hello)")
        .end();
    must("vcpu", "VCPU_KICK", pv.vcpu_kick(1));
    Line::check("vcpu", true)
        .s("VCPU_KICK(1): vCPU 0 kicks vCPU 1 out of its VCPU_HALT")
        .end();
    let got = irq::wait_for(0, EVENT_TIMEOUT_NS, || {
        seen.user_data.load(Ordering::Relaxed) == BYE
    });
    Line::check("vcpu", got)
        .s("vCPU 1 said goodbye before VCPU_STOP")
        .end();

    // Start it again once it has stopped (VCPU_START says INVALID_STATE until then; wait
    // a little between attempts rather than spin on exits).
    let kicks = Seen::get(&seen.kick);
    let mut tries = 0u64;
    loop {
        tries += 1;
        match start_vcpu1(PHASE_AGAIN) {
            Ok(()) => break,
            Err(e) if e.is(Status::InvalidState) && tries < 2000 => {
                let _ = pv.vcpu_halt(RETRY_NS);
            }
            Err(e) => {
                Line::check("vcpu", false)
                    .s("VCPU_START(1) after its VCPU_STOP: ")
                    .err(e)
                    .end();
            }
        }
    }
    let got = irq::wait_for(0, EVENT_TIMEOUT_NS, || Seen::get(&seen.kick) > kicks);
    Line::check("vcpu", got && seen.kick_source.load(Ordering::Relaxed) == 1)
        .s("VCPU_START(1) again after VCPU_STOP (")
        .dec(tries)
        .s(if tries == 1 { " attempt" } else { " attempts" })
        .s("): it kicked vCPU 0")
        .end();
}

/// vCPU 1's entry (`arg` = the phase).
fn vcpu1_main(phase: u64) -> ! {
    let pv = pv();
    let info = match pv.vcpu_info() {
        Ok(info) => info,
        Err(_) => fail_exit(),
    };
    // A stopped vCPU restarts with fresh pvabi state: its queue page is free again.
    let registered = irq::register(1);
    Line::check("vcpu1", info.index == 1 && registered.is_ok())
        .s(if phase == PHASE_FIRST {
            "started by VCPU_START: "
        } else {
            "started again: "
        })
        .s("VCPU_INFO says vCPU ")
        .dec(u64::from(info.index))
        .s(", EVENTS_SET_QUEUE -> ")
        .outcome(&registered)
        .end();
    if phase != PHASE_FIRST {
        must("vcpu1", "VCPU_KICK", pv.vcpu_kick(0));
        stop()
    }
    let seen = &SEEN[1];
    let kicks = Seen::get(&seen.kick);
    must("vcpu1", "EVENTS_SEND", pv.events_send(0, HELLO));
    let got = irq::wait_for(1, EVENT_TIMEOUT_NS, || Seen::get(&seen.kick) > kicks);
    Line::check(
        "vcpu1",
        got && seen.kick_source.load(Ordering::Relaxed) == 0,
    )
    .s("sent hello to vCPU 0, halted, woke with a KICK from vCPU ")
    .dec(u64::from(seen.kick_source.load(Ordering::Relaxed)))
    .end();
    must("vcpu1", "EVENTS_SEND", pv.events_send(0, BYE));
    stop()
}

fn stop() -> ! {
    let e = pv().try_vcpu_stop();
    Line::check("vcpu1", false)
        .s("VCPU_STOP returned: ")
        .err(e)
        .end();
    halt_forever()
}
