//! vCPU family: info, start, stop, yield, halt and kick.

use std::time::{Duration, Instant};

use pvabi_abi::calls::Call;
use pvabi_abi::convention::PAGE_SIZE;
use pvabi_abi::events::EventKind;
use pvabi_abi::status::Status;
use pvabi_abi::vcpu::{VcpuStartState, WakeReason};

use crate::faults::injected;
use crate::guest_mem;
use crate::machine::Machine;
use crate::report::Report;
use crate::state::{Inner, Owner};
use crate::sync::{lock, wait_timeout, write_lock};
use crate::{done, Outcome, Reply, Req};

/// HALT without a timeout still wakes this often to notice a shutdown it was not told of.
const HALT_RECHECK: Duration = Duration::from_millis(100);

pub(crate) fn handle<M: Machine>(h: &Inner<M>, r: &Req) -> Result<Reply, Status> {
    match r.call {
        Call::VcpuInfo => done(&[u64::from(r.vcpu), u64::from(h.vcpu_count())]),
        Call::VcpuStart => start(h, r),
        Call::VcpuStop => stop(h, r.vcpu),
        Call::VcpuYield => {
            std::thread::yield_now();
            done(&[])
        }
        Call::VcpuHalt => halt(h, r.vcpu, r.args[0]),
        Call::VcpuKick => {
            // `vcpu` is a valid index (check 5); a stopped target is refused (VCPU-015).
            let target = r.args[0] as u32;
            if !h.is_running(target) && !injected!(h, KickOfStoppedVcpuAccepted) {
                return Err(Status::InvalidState);
            }
            h.post_event(target, EventKind::Kick, r.vcpu, 0);
            h.record(|rep| rep.kicks += 1);
            done(&[])
        }
        _ => Err(Status::NotSupported),
    }
}

/// Whether `va` is a canonical 48-bit virtual address (bits 63:47 all equal).
fn canonical(va: u64) -> bool {
    (((va << 16) as i64) >> 16) as u64 == va
}

/// CR3 bits no x86-64 processor implements (above the largest physical address width, 52).
const CR3_RESERVED: u64 = 0xfff0_0000_0000_0000;

/// VCPU_START: the state is parsed from the one copy (reserved fields: INVALID_PARAMETER);
/// `rip` and `rsp` must be canonical and `cr3` must not set reserved bits (VCPU-004) and must
/// be page-aligned (INVALID_PARAMETER, step 10) and, if not 0, RAM (INVALID_ADDRESS); the
/// target must not be vCPU 0 nor running (INVALID_STATE).
fn start<M: Machine>(h: &Inner<M>, r: &Req) -> Result<Reply, Status> {
    let target = r.args[0] as u32;
    let state: VcpuStartState = r.block.parse()?;
    if !canonical(state.rip)
        || !canonical(state.rsp)
        || state.cr3 & CR3_RESERVED != 0
        || !state.cr3.is_multiple_of(PAGE_SIZE)
    {
        return Err(Status::InvalidParameter);
    }
    if state.cr3 != 0 && !guest_mem::in_ram(h.machine.memory(), state.cr3, PAGE_SIZE) {
        return Err(Status::InvalidAddress);
    }
    let slot = &h.vcpus[target as usize];
    {
        let mut st = lock(&slot.state);
        if target == 0 || st.running {
            return Err(Status::InvalidState);
        }
        st.running = true;
    }
    if let Some(c) = &h.checker {
        // Before the vCPU runs, so that its page tables are the ones it starts with.
        h.check_vcpu_start(c, r.vcpu, state.rip, state.rsp, state.cr3);
    }
    if let Err(s) = h.machine.start_vcpu(target, &state) {
        lock(&slot.state).running = false;
        return Err(s);
    }
    h.record(|rep| Report::push_capped(&mut rep.vcpu_starts, (target, state)));
    done(&[])
}

/// VCPU_STOP: vCPU 0 cannot stop. The deferred queue was drained (VCPU_STOP is a sync
/// point); then the vCPU's shared areas are unregistered, so that their pages stop being
/// host-owned, and its timer is disarmed (PVABI-VCPU-008): a later VCPU_START begins with
/// fresh pvabi state (PVABI-VCPU-005).
fn stop<M: Machine>(h: &Inner<M>, vcpu: u32) -> Result<Reply, Status> {
    if vcpu == 0 {
        return Err(Status::InvalidState);
    }
    let slot = &h.vcpus[vcpu as usize];
    // Outer locks first (ring, deferred queue, state), one at a time.
    let ring = lock(&slot.ring).take();
    // A HOST_POLLED poller sees its ring gone and exits.
    slot.ring_wake.notify_all();
    let deferred = lock(&slot.deferred).take();
    let queue = {
        let mut st = lock(&slot.state);
        st.running = false;
        st.mask = 0;
        st.latched = false;
        st.queue.take()
    };
    let steal = {
        let mut reg = lock(&slot.steal);
        slot.steal_on
            .store(false, std::sync::atomic::Ordering::Relaxed);
        reg.take()
    };
    if let Some(t) = lock(&h.timers).get_mut(vcpu as usize) {
        *t = None;
    }
    {
        let mut vm = write_lock(&h.vm);
        if let Some(r) = ring {
            vm.release(r.sq, Owner::SubmissionRing(vcpu));
            vm.release(r.cq, Owner::CompletionRing(vcpu));
        }
        if let Some(d) = deferred {
            vm.release(d.gpa, Owner::DeferredQueue(vcpu));
        }
        if let Some(q) = queue {
            vm.release(q.gpa, Owner::EventQueue(vcpu));
        }
        if let Some(p) = steal {
            vm.release(p.gpa, Owner::StealPage(vcpu));
        }
    }
    h.record(|rep| Report::push_capped(&mut rep.vcpu_stops, vcpu));
    Ok(Reply::then(Outcome::StopVcpu))
}

/// VCPU_HALT: returns EVENT at once if an event is pending, else waits for one, the timeout
/// (`0` = none), or the dispatcher's shutdown (then TIMEOUT).
fn halt<M: Machine>(h: &Inner<M>, vcpu: u32, timeout_ns: u64) -> Result<Reply, Status> {
    let deadline = match timeout_ns {
        0 => None,
        // A timeout too far to represent is no timeout.
        _ if injected!(h, HaltTimesOutEarly) => Some(Instant::now()),
        ns => Instant::now().checked_add(Duration::from_nanos(ns)),
    };
    let slot = &h.vcpus[vcpu as usize];
    let mut st = lock(&slot.state);
    let reason = loop {
        if h.take_pending(&mut st) {
            break WakeReason::Event;
        }
        if h.stopping() {
            break WakeReason::Timeout;
        }
        let wait = match deadline {
            Some(d) => {
                let now = Instant::now();
                if now >= d {
                    break WakeReason::Timeout;
                }
                (d - now).min(HALT_RECHECK)
            }
            None => HALT_RECHECK,
        };
        st = wait_timeout(&slot.wake, st, wait);
    };
    drop(st);
    h.record(|rep| {
        rep.halts += 1;
        match reason {
            WakeReason::Event => rep.halt_events += 1,
            WakeReason::Timeout => rep.halt_timeouts += 1,
        }
    });
    done(&[reason as u64])
}
