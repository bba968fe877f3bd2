//! The discovery trace ([`VmCtl::trace_discovery`]): vCPU 0 single-stepped
//! (`KVM_SET_GUEST_DEBUG` with `KVM_GUESTDBG_SINGLESTEP`) from its entry until its first port
//! write, decoding the instruction at each stop ([`pvabi_dispatch::x86::special`], over
//! iced-x86), so that a checking host sees the guest's CPUID reads and any
//! `vmcall`/`vmmcall`, which KVM would otherwise handle without an exit (PVABI-DISC-004,
//! PVABI-CONV-010).
//!
//! What it covers, measured on this PVM machine: ring-0 code only (a step exits at every CPL0
//! instruction, ~40-50 µs each; code at CPL3 runs natively and takes no step), and only up to
//! the first port write, which is where a guest makes its first call (discovery comes first).
//! The demo guest takes 7931 steps (~0.35 s) to its first call, the C guest 99 (~5 ms). The
//! trace gives up after [`STEP_LIMIT`] steps (a few seconds), so that a guest with a long
//! ring-0 prologue runs at full speed after that.
//!
//! The checking host's step windows (PVABI-DEFER-001, PVABI-RING-001: `vcpu_thread.rs` with
//! [`ExitWatcher`](super::ExitWatcher)) turn stepping on and off with the same
//! `KVM_SET_GUEST_DEBUG`; the two never overlap (a window opens only after a port write, and
//! the trace ends at vCPU 0's first). At the windows' stops where the checker asks for them
//! (PVABI-MEM-013, PVABI-DEFER-008), [`window_state`] hands it the vCPU's registers.
//!
//! Measured on PVM, with stepping turned on at CPL0 (as the trace and the windows do):
//! - an exception or interrupt handler entered at CPL0 is stepped too, its `iretq` included,
//!   and stepping goes on after it; but the handler's first instruction runs in the same step
//!   as the delivery, and the instruction the `iretq` returns to in the same step as the
//!   `iretq`, so neither is ever decoded (a CPUID or `vmcall` there is missed);
//! - a return to CPL3 runs there natively, without steps;
//! - `int n` and `int3` at CPL0 end the VM with an emulation error, stepped or not.
//!
//! Stepping must never be turned on while the vCPU is at CPL3: it then sets TF in the vCPU's
//! own RFLAGS, and each CPL3 instruction raises a `#DB` in the guest. A `#DB` the guest raises
//! itself while it is stepped at CPL0 reaches the VMM as one more step and is not delivered.

use kvm_bindings::{kvm_guest_debug, KVM_GUESTDBG_ENABLE, KVM_GUESTDBG_SINGLESTEP};
use kvm_ioctls::VcpuFd;
use vm_memory::{Bytes, GuestAddress};

use super::VmCtl;
use pvabi_dispatch::guest_check::StepState;
use pvabi_dispatch::sync::lock;
use pvabi_dispatch::x86::{special, Special};

/// The most instructions the trace steps (at ~40-50 µs a step here, 4-5 s).
pub const STEP_LIMIT: u64 = 100_000;

/// A CPUID the guest executed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CpuidRead {
    /// `eax`: the leaf.
    pub leaf: u32,
    /// `ecx`: the subleaf.
    pub subleaf: u32,
    /// Where.
    pub rip: u64,
}

/// What the discovery trace saw.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DiscoveryTrace {
    /// Whether single-stepping could be turned on (`KVM_SET_GUEST_DEBUG` succeeded).
    pub stepping: bool,
    /// Instructions stepped.
    pub steps: u64,
    /// Whether the trace reached vCPU 0's first port write (else the VM ended before).
    pub reached_port_write: bool,
    /// Every CPUID executed, in order.
    pub cpuid: Vec<CpuidRead>,
    /// Where a `vmcall` (false) or `vmmcall` (true) was about to execute.
    pub hypercalls: Vec<(u64, bool)>,
    /// Stops whose instruction could not be read (RIP not mapped).
    pub unread: u64,
    /// Whether the trace gave up at [`STEP_LIMIT`] steps before the first port write.
    pub limited: bool,
}

/// Turns single-stepping of `fd` on or off; whether KVM accepted it.
pub(super) fn set_stepping(fd: &VcpuFd, on: bool) -> bool {
    let control = if on {
        KVM_GUESTDBG_ENABLE | KVM_GUESTDBG_SINGLESTEP
    } else {
        0
    };
    fd.set_guest_debug(&kvm_guest_debug {
        control,
        ..Default::default()
    })
    .is_ok()
}

/// Turns stepping on for vCPU 0's first start when the trace was asked for; whether it is on.
/// A step exit comes after an instruction, so the instruction at the entry is decoded here,
/// before it runs (it could be a `vmcall`).
pub(super) fn start(ctl: &VmCtl, fd: &VcpuFd) -> bool {
    let stepping = {
        let mut trace = lock(&ctl.shared.discovery);
        match trace.as_mut() {
            Some(t) if !t.stepping && t.steps == 0 && !t.reached_port_write => {
                t.stepping = set_stepping(fd, true);
                t.stepping
            }
            _ => false,
        }
    };
    stepping && on_step(ctl, fd)
}

/// The 16 bytes of guest code at the guest-virtual `rip`, translated with `KVM_TRANSLATE` a
/// page at a time (the vCPU's own paging mode, whatever it is), and how many of them could be
/// read: fewer where the code runs into a page that is not mapped.
pub(super) fn code_at(ctl: &VmCtl, fd: &VcpuFd, rip: u64) -> ([u8; 16], usize) {
    let mut bytes = [0u8; 16];
    let first = (0x1000 - (rip & 0xfff)).min(16) as usize;
    let read = |va: u64, buf: &mut [u8]| -> bool {
        match fd.translate_gva(va) {
            Ok(t) if t.valid != 0 => ctl
                .memory()
                .read_slice(buf, GuestAddress(t.physical_address))
                .is_ok(),
            _ => false,
        }
    };
    let (head, tail) = bytes.split_at_mut(first);
    let n = if !read(rip, head) {
        0
    } else if tail.is_empty() || read((rip & !0xfff).wrapping_add(0x1000), tail) {
        16
    } else {
        first
    };
    (bytes, n)
}

/// One step: decodes the instruction at RIP (translated with `KVM_TRANSLATE`). A `vmcall` or
/// `vmmcall` never returns on this KVM, so the trace ends the VM there with a fault that
/// names it. Returns whether to go on stepping (not after [`STEP_LIMIT`] steps, nor once the
/// VM has ended).
pub(super) fn on_step(ctl: &VmCtl, fd: &VcpuFd) -> bool {
    let Ok(regs) = fd.get_regs() else {
        return true;
    };
    let (bytes, read) = code_at(ctl, fd, regs.rip);
    let ok = read == bytes.len();
    let mut guard = lock(&ctl.shared.discovery);
    let Some(t) = guard.as_mut() else {
        return false;
    };
    t.steps += 1;
    if t.steps >= STEP_LIMIT {
        t.limited = true;
        set_stepping(fd, false);
        return false;
    }
    if !ok {
        t.unread += 1;
        return true;
    }
    match special(&bytes) {
        Some(Special::Cpuid) => t.cpuid.push(CpuidRead {
            leaf: regs.rax as u32,
            subleaf: regs.rcx as u32,
            rip: regs.rip,
        }),
        Some(w @ (Special::Vmcall | Special::Vmmcall)) => {
            t.hypercalls.push((regs.rip, w == Special::Vmmcall));
            drop(guard);
            let name = if w == Special::Vmcall {
                "vmcall"
            } else {
                "vmmcall"
            };
            ctl.end(super::VmEnd::Fault(super::FaultReport {
                vcpu: 0,
                fault: super::Fault::UnexpectedExit(format!(
                    "{name} at rip {:#x} before the first call, which no advertised binding \
                     allows and this KVM never returns from (seen by the discovery trace)",
                    regs.rip
                )),
                regs: None,
            }));
            return false;
        }
        Some(Special::RepOuts) | None => {}
    }
    true
}

/// At a stop of a step window that goes on: hands the checking host the vCPU's registers if
/// it wants them ([`ExitWatcher::step_window_wants_state`](super::ExitWatcher): a
/// MEM_UPDATE_PTE waits in the vCPU's deferred queue, PVABI-MEM-013). With `sync_regs` they
/// come from `kvm_run` at no cost, else from two ioctls; the checker reads the code at RIP
/// through the vCPU's page tables itself.
pub(super) fn window_state(ctl: &VmCtl, fd: &VcpuFd, vcpu: u32, sync_regs: bool) {
    let Some(watcher) = ctl.exit_watcher() else {
        return;
    };
    if !watcher.step_window_wants_state(vcpu) {
        return;
    }
    let (r, s) = if sync_regs {
        let synced = fd.sync_regs();
        (synced.regs, synced.sregs)
    } else {
        match (fd.get_regs(), fd.get_sregs()) {
            (Ok(r), Ok(s)) => (r, s),
            _ => return,
        }
    };
    let state = StepState {
        rip: r.rip,
        gprs: [
            r.rax, r.rcx, r.rdx, r.rbx, r.rsp, r.rbp, r.rsi, r.rdi, r.r8, r.r9, r.r10, r.r11,
            r.r12, r.r13, r.r14, r.r15,
        ],
        fs_base: s.fs.base,
        gs_base: s.gs.base,
        cr3: s.cr3,
        cr4: s.cr4,
        efer: s.efer,
        cpl: s.ss.dpl,
        long_mode: s.cs.l != 0,
    };
    watcher.step_window_state(vcpu, &state);
}

/// The first port write: the trace ends.
pub(super) fn stop(ctl: &VmCtl, fd: &VcpuFd) {
    if let Some(t) = lock(&ctl.shared.discovery).as_mut() {
        t.reached_port_write = true;
    }
    set_stepping(fd, false);
}

impl VmCtl {
    /// Asks for the discovery trace (before [`Vm::run`](super::Vm::run)): vCPU 0 is
    /// single-stepped from its entry to its first port write ([`DiscoveryTrace`]).
    pub fn trace_discovery(&self) {
        let mut t = lock(&self.shared.discovery);
        if t.is_none() {
            *t = Some(DiscoveryTrace::default());
        }
    }

    /// The discovery trace so far (`None` if it was not asked for).
    pub fn discovery_trace(&self) -> Option<DiscoveryTrace> {
        lock(&self.shared.discovery).clone()
    }
}
