//! The pvabi demo guest: discovers the host, negotiates pvabi 1.0 with every family, and
//! exercises every call, printing one line per check. It is what `pvabi run` boots when
//! no image is given, and what the reference host's end-to-end tests boot.
//!
//! Output, for a newcomer reading it: a header, one section per family, one line per
//! check (`ok  time: TIME_MONOTONIC = 1234567 ns`), and a summary
//! (`demo: 74 checks passed`). A check that fails prints `FAIL: ...` and shuts the VM down
//! with code 1 ([`out::EXIT_CHECK_FAILED`]), so a broken host fails the run. A guest
//! exception or panic becomes a SYSTEM_CRASH report.
//!
//! | section | what it shows |
//! |---|---|
//! | discovery, base ([`base`]) | CPUID scan, versions, identity, PROBE_*, NEGOTIATE 1.0 (and LOCKED) |
//! | console ([`console`]) | CONSOLE_WRITE_REGS and CONSOLE_WRITE, and their checks |
//! | time ([`time`]) | clocks, the shared time page (seqlock reader), a one-shot timer taken as an interrupt |
//! | events ([`events`]) | send to itself; bursts with interrupts off and while masked, one interrupt each; bad arguments |
//! | memory ([`memory`]) | share/unshare, balloon release/reclaim, PTE updates on the guest's own page tables, TLB flushes |
//! | vcpu ([`vcpu`]) | info, yield, halt with timeout, kick; with 2+ vCPUs: start, kick, halt, stop, restart |
//! | batch ([`batch`]) | MULTICALL with per-entry status, the deferred queue, the SQ/CQ ring |
//! | system | the interrupts and events taken (the tests compare them with the host's report), SYSTEM_SHUTDOWN(0) |
//!
//! Ring-0 code is emulated on some hosts (PVM: about a million instructions per second),
//! so the demo has no long loops; everything is a handful of calls.
//!
//! # Test scenarios
//!
//! The demo reads one 32-bit value from port [`SCENARIO_PORT`] at boot (an `in`, one exit).
//! The reference host answers 0 for ports it does not know, which selects the full
//! demo; the host's tests answer other values to pick a scenario ([`Scenario`]). This port
//! is a test hook of this guest, not part of pvabi.
#![no_std]
#![no_main]

mod base;
mod batch;
mod console;
mod events;
mod irq;
mod memory;
mod out;
mod time;
mod vcpu;

use core::cell::UnsafeCell;

use pvabi_guest::Features;
use pvabi_guest_rt::{halt_forever, BootInfo, TrapFrame};

use out::{pv, section, Line};

/// The port the demo reads its scenario from (test hook; 0 = the full demo).
pub const SCENARIO_PORT: u16 = 0x5640;

/// What the demo does, chosen by the value read from [`SCENARIO_PORT`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Scenario {
    /// 0 (and any unknown value): every family, then SYSTEM_SHUTDOWN(0).
    Full,
    /// 1: negotiate, then SYSTEM_CRASH with [`CRASH_MESSAGE`].
    Crash,
    /// 2: negotiate, then SYSTEM_REBOOT.
    Reboot,
    /// 3: negotiate, then SYSTEM_SHUTDOWN([`SCENARIO_EXIT_CODE`]).
    ExitCode,
    /// 4: negotiate, then a page fault (the runtime's fatal hook reports it as a crash).
    Exception,
}

/// The crash message of [`Scenario::Crash`].
pub const CRASH_MESSAGE: &str = "demo guest: deliberate crash report (test scenario 1)";
/// The shutdown code of [`Scenario::ExitCode`].
pub const SCENARIO_EXIT_CODE: u32 = 7;

/// Every feature of pvabi 1.0.
pub const V1_0_FEATURES: Features = Features::CONSOLE
    .union(Features::TIME)
    .union(Features::EVENTS)
    .union(Features::MEMORY)
    .union(Features::VCPU)
    .union(Features::SYSTEM)
    .union(Features::MULTICALL)
    .union(Features::DEFERRED)
    .union(Features::RING);

/// A `static` the demo mutates through raw pointers, with the access rules documented
/// where each one is declared.
#[repr(transparent)]
pub struct Global<T>(UnsafeCell<T>);

// SAFETY: every `Global` documents who may touch it when; none is accessed by two vCPUs
// at once.
unsafe impl<T> Sync for Global<T> {}

impl<T> Global<T> {
    /// Wraps `value`.
    pub const fn new(value: T) -> Self {
        Global(UnsafeCell::new(value))
    }

    /// A raw pointer to the value.
    pub const fn get(&self) -> *mut T {
        self.0.get()
    }
}

/// A zeroed, page-aligned 4 KiB page.
#[repr(C, align(4096))]
pub struct Page(pub [u64; 512]);

impl Page {
    /// A zeroed page.
    pub const fn new() -> Self {
        Page([0; 512])
    }
}

impl Default for Page {
    fn default() -> Self {
        Page::new()
    }
}

fn read_scenario() -> Scenario {
    // SAFETY: reading a port has no effect on the reference host (it answers 0 for ports
    // it does not know); the test hosts answer the scenario number.
    match unsafe { pvabi_guest_rt::port::inl(SCENARIO_PORT) } {
        1 => Scenario::Crash,
        2 => Scenario::Reboot,
        3 => Scenario::ExitCode,
        4 => Scenario::Exception,
        _ => Scenario::Full,
    }
}

fn main(boot: &BootInfo) -> ! {
    pvabi_guest_rt::set_fatal_hook(on_fatal);
    irq::install();
    let scenario = read_scenario();

    out::say("");
    out::say("pvabi demo guest: every call family of pvabi 1.0, one check per line");
    Line::info()
        .s("vCPU ")
        .dec(u64::from(boot.vcpu))
        .s(" of ")
        .dec(u64::from(boot.vcpu_count))
        .s(", ")
        .dec(boot.mem_bytes >> 20)
        .s(" MiB of RAM")
        .print();

    // Discovery, Base, NEGOTIATE: afterwards the console works and the lines kept so far
    // are printed.
    let negotiated = base::run(boot);

    match scenario {
        Scenario::Full => {}
        Scenario::Crash => {
            out::say("demo: test scenario 1: SYSTEM_CRASH");
            let e = pv().try_crash_message(CRASH_MESSAGE.as_bytes());
            Line::check("system", false)
                .s("SYSTEM_CRASH returned: ")
                .err(e)
                .end();
        }
        Scenario::Reboot => {
            out::say("demo: test scenario 2: SYSTEM_REBOOT");
            let e = pv().try_reboot();
            Line::check("system", false)
                .s("SYSTEM_REBOOT returned: ")
                .err(e)
                .end();
        }
        Scenario::ExitCode => {
            out::say("demo: test scenario 3: SYSTEM_SHUTDOWN(7)");
            let e = pv().try_shutdown(SCENARIO_EXIT_CODE);
            Line::check("system", false)
                .s("SYSTEM_SHUTDOWN returned: ")
                .err(e)
                .end();
        }
        Scenario::Exception => {
            out::say("demo: test scenario 4: a page fault at CPL0");
            // SAFETY: deliberately reads a non-canonical address: #GP, which the runtime
            // treats as fatal and our fatal hook reports with SYSTEM_CRASH.
            unsafe { core::ptr::read_volatile(0x8000_0000_0000_0000 as *const u64) };
        }
    }

    console::run();
    time::run();
    events::run();
    memory::run(boot);
    vcpu::run(boot);
    batch::run();

    section("system");
    // The totals the host's report must match (interrupts raised, events posted).
    let mut l = Line::new();
    l.s("demo: event interrupts taken:");
    for (cpu, seen) in irq::SEEN.iter().enumerate().take(boot.vcpu_count as usize) {
        let events = irq::Seen::get(&seen.timer)
            + irq::Seen::get(&seen.kick)
            + irq::Seen::get(&seen.user)
            + irq::Seen::get(&seen.ring)
            + irq::Seen::get(&seen.unknown);
        l.s(if cpu == 0 { " " } else { ", " })
            .s("vCPU ")
            .dec(cpu as u64)
            .s(" ")
            .dec(u64::from(irq::Seen::get(&seen.interrupts)))
            .s(" for ")
            .dec(u64::from(events))
            .s(" events (")
            .dec(u64::from(irq::Seen::get(&seen.timer)))
            .s(" TIMER)");
    }
    l.print();
    Line::new()
        .s("demo: ")
        .dec(u64::from(out::passed()))
        .s(" checks passed: every family of pvabi 1.0 works on this host (negotiated ")
        .ver(negotiated)
        .s(")")
        .print();
    out::say("demo: SYSTEM_SHUTDOWN(0)");
    let e = pv().try_shutdown(0);
    Line::check("system", false)
        .s("SYSTEM_SHUTDOWN returned: ")
        .err(e)
        .end();
    halt_forever()
}

pvabi_guest_rt::entry!(main);

/// A CPU exception: report it as a crash (if the host listens), then the runtime halts.
fn on_fatal(frame: &TrapFrame) {
    let mut l = Line::new();
    l.s("demo guest: CPU exception ")
        .dec(frame.vector)
        .s(" at rip ")
        .hex(frame.rip)
        .s(" (error code ")
        .hex(frame.error_code)
        .s(", vCPU ")
        .dec(u64::from(pvabi_guest_rt::current_vcpu()))
        .s(")");
    let _ = pv().try_crash_message(l.text());
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
    let mut l = Line::new();
    l.s("demo guest panicked");
    if let Some(location) = info.location() {
        l.s(" at ")
            .s(location.file())
            .s(":")
            .dec(u64::from(location.line()));
    }
    let _ = pv().try_crash_message(l.text());
    halt_forever()
}
