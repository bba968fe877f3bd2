//! What the conformance tests `system-shutdown` and `system-crash` share: the guest ends the
//! VM by SYSTEM_SHUTDOWN with a code whose upper bits are set (PVABI-SYS-001), or by
//! SYSTEM_CRASH with a message (PVABI-SYS-005), announced before the call with the channel's
//! `EXPECT <check> shutdown <code>` or `EXPECT <check> crash <message>`. The runner takes the
//! check as a PASS only if the VM then ends by that call with exactly that code (all 32 bits)
//! or that message, with no channel line after the EXPECT.
//!
//! While vCPU 0 (at CPL0) makes the call, vCPU 1 (if the VM has one and the host grants VCPU
//! and TIME, which vCPU 0's bounded wait for it needs)
//! is busy at CPL3 ringing the doorbell (GET_SPEC_VERSION, which the host refuses at CPL3
//! with NOT_SUPPORTED) in a loop, so the host must end the VM with a vCPU that is running and
//! exiting to it (a host that waits for every vCPU to stop by itself
//! never ends the run: a CRASH). If the call returns, vCPU 0 reports the check as a FAIL: it
//! ran after the call. vCPU 1 writes nothing: whether it ran an instruction after the call
//! took effect cannot be seen from inside the VM (any line it wrote could have been written
//! before the call, which the rule allows).
#![allow(dead_code)]

use core::sync::atomic::{AtomicU64, Ordering};

use pvabi_guest::abi::features::Features;
use pvabi_guest::{gpa_of, Call, PortTransport};
use pvabi_guest_rt::{ap_launch, halt_forever, run_at_cpl3, BootInfo};

use crate::call::raw;
use crate::channel;
use crate::common::{start_optional, wait_ms, Pages, SUCCESS};

/// The code SYSTEM_SHUTDOWN ends the VM with: its upper bits set, so that a host that
/// reports fewer than 32 bits reports another code.
pub const CODE: u32 = 0x5eed_0007;
/// The message SYSTEM_CRASH reports (one word, as the channel's EXPECT needs).
pub const MESSAGE: &str = "conform-crash-5eed0007";

/// How vCPU 0 ends the VM.
pub enum How {
    /// SYSTEM_SHUTDOWN([`CODE`]).
    Shutdown,
    /// SYSTEM_CRASH([`MESSAGE`]).
    Crash,
}

/// The doorbell rings of vCPU 1 that returned (it counts each at CPL3).
static CALLS: AtomicU64 = AtomicU64::new(0);
/// vCPU 1's start state (VCPU_START's block).
static STATE: Pages<1> = Pages::new();
/// How long vCPU 0 waits for vCPU 1 to be ringing.
const PATIENCE_MS: u64 = 5000;
/// How many rings of vCPU 1 show that it is in its loop.
const BUSY: u64 = 16;

fn calls(port: u64) -> u64 {
    let t = PortTransport::new(port as u16);
    loop {
        // At CPL3 the doorbell is no call (the host answers NOT_SUPPORTED and changes
        // nothing, PVABI-CONV-008): each ring is still an exit the host serves.
        raw(&t, Call::GetSpecVersion, &[]);
        CALLS.fetch_add(1, Ordering::Relaxed);
    }
}

fn vcpu1(port: u64) -> ! {
    run_at_cpl3(calls, port);
    halt_forever()
}

/// Starts vCPU 1 making calls at CPL3; whether it is in its loop.
fn start_vcpu1(t: &PortTransport, boot: &BootInfo, port: u16, granted: u64) -> bool {
    let needs = (Features::VCPU | Features::TIME).bits();
    if boot.vcpu_count < 2 || granted & needs != needs {
        return false;
    }
    let Some(launch) = ap_launch(1, vcpu1, u64::from(port)) else {
        return false;
    };
    let state = STATE.page(0);
    for (k, v) in [launch.rip, launch.rsp, launch.rdi, 0, 0, 0, 0, 0]
        .iter()
        .enumerate()
    {
        crate::common::wr64(state + 8 * k as u64, *v);
    }
    raw(t, Call::VcpuStart, &[1, state]).status == SUCCESS
        && wait_ms(t, PATIENCE_MS, || CALLS.load(Ordering::Relaxed) >= BUSY)
}

/// The test: BEGIN, vCPU 1 started, EXPECT, the call; a FAIL if the call returns.
pub fn run(boot: &BootInfo, test: &str, check: &str, how: How) -> ! {
    let (t, found, granted) =
        start_optional(test, Features::empty(), Features::VCPU | Features::TIME);
    let busy = start_vcpu1(&t, boot, found.info.doorbell_port, granted);
    let with = if busy {
        "with vCPU 1 ringing the doorbell at CPL3 in a loop"
    } else {
        "with no other vCPU running (one vCPU, VCPU or TIME not granted, or vCPU 1 not ringing)"
    };
    let (rule, status) = match how {
        How::Shutdown => {
            let rule = ["PVABI-SYS-001"];
            channel::expect_end(check, &rule, "shutdown", u64::from(CODE), None, with);
            (
                rule,
                raw(&t, Call::SystemShutdown, &[u64::from(CODE)]).status,
            )
        }
        How::Crash => {
            let rule = ["PVABI-SYS-005"];
            channel::expect_end(check, &rule, "crash", 0, Some(MESSAGE), with);
            let m = MESSAGE.as_bytes();
            (
                rule,
                raw(&t, Call::SystemCrash, &[gpa_of(m), m.len() as u64]).status,
            )
        }
    };
    // The call returned: vCPU 0 ran after it.
    channel::fail(check, &rule, "the call returned to vCPU 0, status", status);
    channel::end(test)
}
