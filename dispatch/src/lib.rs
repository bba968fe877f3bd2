//! `pvabi-dispatch`: the pvabi dispatcher, as a library any VMM can embed.
//!
//! It turns a doorbell exit (vCPU, privilege level, [`CallRegs`]) into the answer the spec
//! defines, and tells the VMM what the vCPU does next ([`Outcome`]). It knows nothing of
//! KVM: what it needs from the VMM is the [`Machine`] trait (guest RAM through any
//! [`vm_memory`] backend, interrupts, starting vCPUs, TLB flushes), so the same dispatcher
//! serves the reference host over KVM, a VMM with its own memory type, unit tests and
//! fuzzers. It never trusts a byte the guest wrote: every block is checked, copied once, and
//! parsed from the copy.
//!
//! # One call, end to end
//!
//! ```text
//! VMM exit ──► CallRegs ──► Dispatcher::call ──► checks 1-9, one copy ──► family handler
//!                                                                       │
//! VMM resumes ◄── CallRegs (status, results) ◄──────────── Outcome ◄────┘
//! ```
//!
//! 1. The VMM copies the guest's `rax, rdi, rsi, r8..r11` into a [`CallRegs`] and calls
//!    [`Dispatcher::call`] with the exit's vCPU, privilege level and access width
//!    ([`Doorbell`]). (Or it hands every port access to [`Dispatcher::port_out`] /
//!    [`Dispatcher::port_in`], which know the pvabi ports.)
//! 2. `check.rs` runs the generic checks in the spec's [`CHECK_ORDER`], driven by the call's
//!    [`CallDescriptor`] and a per-call table compiled from the [`HostConfig`]: code known
//!    and implemented, negotiated, feature granted, allowed in this context, register
//!    arguments, then the memory block: alignment, page crossing, guest RAM, not host-owned,
//!    and the one copy of its bytes. A sync-point call made directly drains the caller's
//!    deferred queue after the register checks (step 5) and before the block checks and copy
//!    (steps 6-9), whatever it returns afterwards (DEFER-003).
//! 3. The family handler (`base.rs`, `console.rs`, `time.rs`, `events.rs`, `memory.rs`,
//!    `vcpu.rs`, `system.rs`, `batch.rs`, `ring.rs`) parses the copy with zerocopy's
//!    `TryFromBytes` and checks the call-specific conditions, then acts.
//! 4. The answer is written back into the same [`CallRegs`]: the status in `rax`, and on
//!    SUCCESS (or INCOMPLETE) the results the call defines. With [`HostConfig::strict`] the
//!    result registers the guest must not read are poisoned with [`POISON`]. The VMM copies
//!    them back to the vCPU and acts on the [`Outcome`].
//!
//! MULTICALL entries, deferred-queue entries and ring submissions go through the same core
//! (steps 2 and 3) with their own context.
//!
//! # Example
//!
//! ```
//! use std::sync::Arc;
//! use pvabi_abi::calls::Call;
//! use pvabi_abi::status::Status;
//! use pvabi_abi::vcpu::VcpuStartState;
//! use pvabi_dispatch::{CallRegs, ConsoleSink, Dispatcher, Doorbell, HostConfig, Machine, Outcome};
//! use vm_memory::{GuestAddress, GuestMemoryMmap};
//!
//! /// The VMM's side: guest RAM and the vCPU operations some calls need.
//! struct MyVm {
//!     ram: GuestMemoryMmap,
//! }
//!
//! impl Machine for MyVm {
//!     type Memory = GuestMemoryMmap;
//!     fn memory(&self) -> &GuestMemoryMmap { &self.ram }
//!     fn vcpu_count(&self) -> u32 { 1 }
//!     fn raise_interrupt(&self, _vcpu: u32, _vector: u8) { /* inject it */ }
//!     fn start_vcpu(&self, _vcpu: u32, _s: &VcpuStartState) -> Result<(), Status> {
//!         Err(Status::InvalidState) // a one-vCPU VM has nothing to start
//!     }
//!     fn flush_tlb(&self, _target: Option<u32>) {}
//!     fn release_pages(&self, _gpas: &[u64]) {}
//! }
//!
//! let ram = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 4 << 20)]).unwrap();
//! let config = HostConfig { console: ConsoleSink::Discard, ..HostConfig::default() };
//! let dispatcher = Dispatcher::new(config, Arc::new(MyVm { ram })).unwrap();
//!
//! // The guest executed `out dx, eax` on the doorbell with GET_SPEC_VERSION in rax.
//! let mut regs = CallRegs::new(Call::GetSpecVersion, &[]);
//! let outcome = dispatcher.call(Doorbell::ring0(0), &mut regs);
//! assert_eq!(outcome, Outcome::Resume);
//! assert_eq!(regs.status(), Some(Status::Success));
//! ```
//!
//! # Threads and locks
//!
//! The dispatcher is shared by every vCPU thread and runs its own threads (time-page
//! refresh, one-shot timers, HOST_POLLED ring pollers), started on first use and stopped by
//! [`Dispatcher::shutdown`] (also on drop). The hot path takes no VM-wide mutex: the
//! negotiated state is set once and read without a lock, call counters are per-vCPU
//! atomics, host-owned pages are checked through a lock-free filter (and, only for a page
//! that shares its filter bit with an owned one, under a shared read lock), and recording of effects
//! is off unless [`HostConfig::record_effects`] asks for it. Lock order, outermost first: a
//! vCPU's ring, its deferred queue, a vCPU's state, then the leaf locks (VM state, timers,
//! time page, report). No lock is held across a call that could take an outer one.
//!
//! # Features
//!
//! `test-util` adds `FakeMachine`, a [`Machine`] over plain memory that logs what it was
//! asked to do, for tests of code built on the dispatcher. `fault-injection` adds
//! `faults::InjectedFault` and `HostConfig::inject`: named defects the conformance suite's
//! self-test switches on one at a time to prove it catches them. Neither is in the default
//! build.
//!
//! [`CHECK_ORDER`]: pvabi_abi::status::CHECK_ORDER
//! [`CallDescriptor`]: pvabi_abi::calls::CallDescriptor

mod base;
mod batch;
mod call_table;
mod check;
pub mod config;
mod console;
mod events;
#[cfg(any(test, feature = "test-util"))]
mod fake;
#[cfg(feature = "fault-injection")]
pub mod faults;
#[cfg(not(feature = "fault-injection"))]
mod faults;
pub mod guest_check;
mod guest_mem;
pub mod host_event;
mod machine;
mod memory;
pub mod report;
mod ring;
mod state;
pub mod sync;
mod system;
mod time;
mod vcpu;
pub mod x86;

#[cfg(test)]
mod tests;

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use crate::faults::injected;
use pvabi_abi::calls::{Call, Family};
use pvabi_abi::convention::DOORBELL_WIDTH;
use pvabi_abi::events::EventKind;
use pvabi_abi::features::Features;
use pvabi_abi::status::Status;
use pvabi_abi::version::Version;

pub use config::{
    ConfigError, ConsoleSink, FeatureOffer, HostConfig, ImplVersion, OnReboot, IMPL_NAME_REFERENCE,
    POISON,
};
#[cfg(any(test, feature = "test-util"))]
pub use fake::{FakeLog, FakeMachine, MemoryHook};
pub use host_event::HostEvent;
pub use machine::{GuestTsc, Machine};
pub use report::Report;

/// Host work on rings, from [`Dispatcher::ring_work`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RingWork {
    /// Passes over a submission ring that consumed at least one submission.
    pub passes: u64,
    /// Submissions those passes consumed.
    pub entries: u64,
    /// Wall-clock time of those passes.
    pub time: std::time::Duration,
}

use check::{Block, Ctx};
use state::Inner;

/// The registers of one pvabi call in the x86-64 binding (CONV rules): the call code in
/// `rax` and up to six arguments in `rdi, rsi, r8, r9, r10, r11` going in; the status in
/// `rax` and up to four results in `rdi, rsi, r8, r9` coming out.
///
/// It is the one register type on the path from a guest's call to the host's answer: the
/// VMM fills it from the exit, the dispatcher answers in it, and the VMM writes it back.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CallRegs {
    /// Call code in, status out.
    pub rax: u64,
    /// Argument / result 1.
    pub rdi: u64,
    /// Argument / result 2.
    pub rsi: u64,
    /// Argument / result 3.
    pub r8: u64,
    /// Argument / result 4.
    pub r9: u64,
    /// Argument 5.
    pub r10: u64,
    /// Argument 6.
    pub r11: u64,
}

impl CallRegs {
    /// The registers of `call` with `args` (at most six; missing ones are 0).
    ///
    /// # Panics
    /// If more than six arguments are given.
    pub fn new(call: Call, args: &[u64]) -> Self {
        Self::raw(u64::from(call.code()), args)
    }

    /// The registers of a raw call code (defined or not) with `args` (at most six).
    ///
    /// # Panics
    /// If more than six arguments are given.
    pub fn raw(code: u64, args: &[u64]) -> Self {
        assert!(args.len() <= 6, "a pvabi call has at most six arguments");
        let mut a = [0u64; 6];
        a[..args.len()].copy_from_slice(args);
        CallRegs {
            rax: code,
            rdi: a[0],
            rsi: a[1],
            r8: a[2],
            r9: a[3],
            r10: a[4],
            r11: a[5],
        }
    }

    /// The six argument registers, in order.
    pub fn args(&self) -> [u64; 6] {
        [self.rdi, self.rsi, self.r8, self.r9, self.r10, self.r11]
    }

    /// The four result registers, in order.
    pub fn results(&self) -> [u64; 4] {
        [self.rdi, self.rsi, self.r8, self.r9]
    }

    /// `rax` as a status (after a call), if it is a defined one.
    pub fn status(&self) -> Option<Status> {
        Status::from_raw(self.rax)
    }

    fn result_mut(&mut self) -> [&mut u64; 4] {
        [&mut self.rdi, &mut self.rsi, &mut self.r8, &mut self.r9]
    }
}

/// Who made a port access, as the VMM knows it from the exit: the vCPU and the mode it ran in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Caller {
    /// The vCPU that made the access (0-based index).
    pub vcpu: u32,
    /// Its privilege level (0 to 3; SS.DPL in 64-bit mode). Only ring 0 may call (CONV-013),
    /// unless [`HostConfig::allow_user_mode_calls`] is set.
    pub cpl: u8,
    /// Whether it ran in 64-bit mode (EFER.LMA and CS.L): a call from compatibility mode
    /// performs nothing (CONV-032).
    pub long_mode: bool,
}

impl Caller {
    /// Ring 0 of `vcpu` in 64-bit mode: where every call comes from.
    pub const fn kernel(vcpu: u32) -> Self {
        Caller {
            vcpu,
            cpl: 0,
            long_mode: true,
        }
    }
}

/// What the VMM knows about a doorbell access from the exit itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Doorbell {
    /// Who made it.
    pub caller: Caller,
    /// The access width in bytes (only [`DOORBELL_WIDTH`] performs a call: CONV-008).
    pub width: u8,
    /// Whether the VMM saw this write as one element of a string output, not an `out`: of a
    /// `rep outs` (however many elements), or one of several elements a single exit carried.
    /// A guest makes its calls with `out dx, eax` (CONV-030, which a checking host reports).
    /// An `outs` without `rep` looks like an `out` to a VMM, so it is `false` for one; the
    /// call is performed either way (CONV-031).
    pub string_element: bool,
}

impl Doorbell {
    /// A 32-bit doorbell write (`out dx, eax`) from ring 0 of `vcpu` in 64-bit mode: the
    /// access every call is.
    pub const fn ring0(vcpu: u32) -> Self {
        Doorbell {
            caller: Caller::kernel(vcpu),
            width: DOORBELL_WIDTH as u8,
            string_element: false,
        }
    }
}

/// A vCPU's state at an exit, as the VMM read it, for the checking host
/// ([`Dispatcher::check_exit`]): its interrupt state (RFLAGS.IF and the IDTR, for
/// PVABI-PLAT-008) and its paging state (CR3, CR4 and EFER, for PVABI-MEM-022).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ExitState {
    /// RFLAGS.IF.
    pub interrupt_flag: bool,
    /// The IDTR's base.
    pub idt_base: u64,
    /// The IDTR's limit.
    pub idt_limit: u16,
    /// CR3, as the vCPU holds it (the root table's address in bits 51:12, a PCID or the
    /// PWT/PCD bits in bits 11:0).
    pub cr3: u64,
    /// CR4 (bit 12 is LA57: 5-level paging).
    pub cr4: u64,
    /// EFER (bit 10 is LMA: long mode is active).
    pub efer: u64,
}

/// CR4.LA57: 57-bit linear addresses, with 5-level paging in long mode.
const CR4_LA57: u64 = 1 << 12;
/// EFER.LMA: long mode (paging enabled, IA-32e) is active.
const EFER_LMA: u64 = 1 << 10;
/// The bits of CR3 that hold the root table's address (51:12); bits 11:0 hold a PCID (with
/// CR4.PCIDE) or PWT and PCD, and the bits above 51 are no part of the address either.
const CR3_TABLE: u64 = 0x000f_ffff_ffff_f000;

impl ExitState {
    /// The guest-physical address of the PML5 table, if the vCPU uses 5-level paging (EFER.LMA
    /// and CR4.LA57 set): the page CR3 names. `None` with 4-level paging, or outside long mode.
    pub fn pml5_table(&self) -> Option<u64> {
        (self.efer & EFER_LMA != 0 && self.cr4 & CR4_LA57 != 0).then_some(self.cr3 & CR3_TABLE)
    }
}

/// What the vCPU does after a call: the one outcome type from the dispatcher to the VMM.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Return to the guest (the registers hold the answer).
    Resume,
    /// The calling vCPU stopped (VCPU_STOP): park it until VCPU_START.
    StopVcpu,
    /// The guest ended the VM.
    End(End),
}

/// How the guest ended the VM.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum End {
    /// SYSTEM_SHUTDOWN with this exit code.
    Shutdown(u32),
    /// SYSTEM_REBOOT.
    Reboot,
    /// SYSTEM_CRASH with this message (lossy UTF-8, at most 4096 bytes).
    Crash(String),
}

/// Calls whose time is spent waiting at the guest's request (or that register the steal page):
/// their exits are not charged as stolen time.
const NOT_STOLEN: [Call; 3] = [Call::VcpuHalt, Call::VcpuYield, Call::TimeSetStealPage];

/// A handler's answer to a call that succeeded (or was preempted): its results and what the
/// vCPU does next.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Reply {
    /// SUCCESS, or INCOMPLETE (MULTICALL's resume index and count in the results).
    pub status: Status,
    /// `r0..r3` (the ones the call does not define are 0).
    pub results: [u64; 4],
    /// How many of `results` the call defines (set by the core from the call's descriptor,
    /// so that the direct path writes only those registers without decoding the call again).
    pub defined: usize,
    /// What the vCPU does next.
    pub then: Outcome,
}

impl Reply {
    /// SUCCESS with no results, then `then`.
    pub fn then(then: Outcome) -> Self {
        Reply {
            status: Status::Success,
            results: [0; 4],
            defined: 0,
            then,
        }
    }
}

/// SUCCESS with up to four results.
pub(crate) fn done(results: &[u64]) -> Result<Reply, Status> {
    let mut r = [0u64; 4];
    r[..results.len()].copy_from_slice(results);
    Ok(Reply {
        status: Status::Success,
        results: r,
        defined: 0,
        then: Outcome::Resume,
    })
}

/// A call that passed the generic checks, with the one copy of its memory block.
#[derive(Debug)]
pub(crate) struct Req {
    /// The vCPU the call runs for (the caller, or the owner of a ring or deferred queue).
    pub vcpu: u32,
    /// The call.
    pub call: Call,
    /// `a0..a5`.
    pub args: [u64; 6],
    /// The checked (and, for structures, byte buffers and arrays, copied) memory block.
    pub block: Block,
}

/// The pvabi dispatcher: one per VM, shared by all vCPU threads.
pub struct Dispatcher<M: Machine> {
    inner: Arc<Inner<M>>,
}

impl<M: Machine> std::fmt::Debug for Dispatcher<M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dispatcher")
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}

impl<M: Machine> Dispatcher<M> {
    /// A dispatcher serving `config` over `machine`. Fails if the configuration is incoherent
    /// or its vCPU count differs from the machine's. This is the one place a configuration
    /// is validated.
    pub fn new(config: HostConfig, machine: Arc<M>) -> Result<Self, ConfigError> {
        config.validate()?;
        if machine.vcpu_count() != config.vcpus {
            return Err(ConfigError::VcpuMismatch {
                config: config.vcpus,
                machine: machine.vcpu_count(),
            });
        }
        Ok(Dispatcher {
            inner: Inner::new(config, machine, std::time::Instant::now()),
        })
    }

    /// The dispatcher of the next boot after a reset of the VM (PVABI-SYS-004 to SYS-012):
    /// the same configuration over `machine` (the reset VM), with every pvabi state of this
    /// one forgotten (NEGOTIATE unlocked, no host-owned page, no sharing, no released page,
    /// no deferred call, every vCPU's timer, mask and wake latch fresh) except monotonic
    /// time, which goes on from where it was (PVABI-TIME-034). Call
    /// [`shutdown`](Self::shutdown) on this one first: its threads stop writing guest RAM.
    pub fn after_reset(&self, machine: Arc<M>) -> Result<Self, ConfigError> {
        let config = self.inner.config.clone();
        if machine.vcpu_count() != config.vcpus {
            return Err(ConfigError::VcpuMismatch {
                config: config.vcpus,
                machine: machine.vcpu_count(),
            });
        }
        let inner = Inner::new(config, machine, self.inner.epoch);
        if injected!(self.inner, RingsCarriedOverReset) {
            // The fault: the old boot's ring pairs go on in the new one, pollers and all.
            for (vcpu, (old, new)) in (0u32..).zip(self.inner.vcpus.iter().zip(&inner.vcpus)) {
                let Some(ring) = *sync::lock(&old.ring) else {
                    continue;
                };
                *sync::lock(&new.ring) = Some(ring);
                if ring.mode == pvabi_abi::batch::RingMode::HostPolled {
                    let generation = ring.generation;
                    let _ = inner.spawn_worker(
                        &format!("pvabi-ring{vcpu}"),
                        |_| true,
                        move |h| ring::poller(h, vcpu, generation),
                    );
                }
            }
        }
        if injected!(self.inner, NegotiateNotUnlockedOnReset) {
            if let Some(n) = self.inner.negotiated() {
                let _ = inner.negotiated.set(n);
            }
        }
        Ok(Dispatcher { inner })
    }

    /// Handles one doorbell access: `regs.rax` holds the code and `rdi..r11` the arguments;
    /// on return `rax` holds the status and, on SUCCESS, `rdi, rsi, r8, r9` the results the
    /// call defines (other registers are left alone, or poisoned when strict).
    ///
    /// An access of another width than [`DOORBELL_WIDTH`] (CONV-008), or from outside ring 0
    /// (CONV-013), performs no call and answers NOT_SUPPORTED. May block (VCPU_HALT) until an
    /// event, the timeout, or [`shutdown`](Self::shutdown).
    pub fn call(&self, exit: Doorbell, regs: &mut CallRegs) -> Outcome {
        let inner = &self.inner;
        let Caller {
            vcpu,
            cpl,
            long_mode,
        } = exit.caller;
        if vcpu >= inner.vcpu_count() {
            // A VMM bug (it passes real indices), answered without panicking.
            regs.rax = Status::InvalidState.raw();
            return Outcome::Resume;
        }
        if let Some(c) = &inner.checker {
            // What the VMM can tell about string outputs (HostConfig::vmm_marks_string_outputs).
            let seen = (inner.config.vmm_marks_string_outputs || exit.string_element)
                .then_some(exit.string_element);
            c.doorbell(vcpu, cpl, long_mode, seen);
            inner.check_before_call(c, vcpu, regs.rax);
        }
        let user_mode = cpl != 0 && !inner.config.allow_user_mode_calls;
        let outside_long_mode = !long_mode && !injected!(inner, DoorbellOutsideLongModeIsACall);
        if user_mode || outside_long_mode || u32::from(exit.width) != DOORBELL_WIDTH {
            // No call, and nothing else changes (CONV-008, CONV-013, CONV-032).
            regs.rax = Status::NotSupported.raw();
            return Outcome::Resume;
        }
        // The call's time is stolen from the vCPU: measured only when it has a steal page
        // (two clock reads are a large part of a trivial call's host work).
        let started = inner.vcpus[vcpu as usize]
            .steal_on
            .load(Ordering::Relaxed)
            .then(Instant::now);
        let code = regs.rax;
        let answer = inner.execute(vcpu, Ctx::Direct, code, regs.args());
        // Time spent waiting at the guest's request is not stolen from it, and a steal page
        // starts at zero after the call that registers it.
        if let Some(started) = started {
            if !NOT_STOLEN.iter().any(|c| u64::from(c.code()) == code) {
                inner.account_steal(vcpu, started.elapsed());
            }
        }
        if let Some(c) = &inner.checker {
            let (status, results) = match &answer {
                Ok(reply) => (reply.status, reply.results),
                Err(s) => (*s, [0; 4]),
            };
            inner.check_after_call(c, vcpu, code, &regs.args(), status, &results);
        }
        let strict = inner.config.strict;
        match answer {
            Ok(reply) => {
                regs.rax = reply.status.raw();
                let resumes = reply.then == Outcome::Resume;
                for (i, reg) in regs.result_mut().into_iter().enumerate() {
                    if i < reply.defined {
                        *reg = reply.results[i];
                    } else if strict && resumes {
                        *reg = POISON;
                    }
                }
                reply.then
            }
            Err(status) => {
                regs.rax = status.raw();
                if strict {
                    regs.result_mut().into_iter().for_each(|r| *r = POISON);
                }
                Outcome::Resume
            }
        }
    }

    /// A write of `vcpu`'s index to the ring-notify port: process that vCPU's submission
    /// ring (DOORBELL mode) or wake its poller (HOST_POLLED). Ignored for a vCPU without a
    /// ring or an index out of range. Never blocks on the guest.
    pub fn ring_notify(&self, vcpu: u32) {
        self.inner.ring_notify(vcpu);
    }

    /// An `out` of `data` to `port` by `caller`, for a VMM that hands every port write to the
    /// dispatcher: the doorbell port performs a [`call`](Self::call), a 32-bit write to the
    /// ring-notify port a [`ring_notify`](Self::ring_notify) (other widths there are
    /// ignored). `None`: the port is not one of pvabi's.
    pub fn port_out(
        &self,
        caller: Caller,
        port: u16,
        data: &[u8],
        regs: &mut CallRegs,
    ) -> Option<Outcome> {
        self.port_write(caller, port, data, regs, false)
    }

    /// [`port_out`](Self::port_out) of one element of a string output
    /// ([`Doorbell::string_element`]): the same, and a checking host reports a doorbell call
    /// made that way (CONV-030).
    pub fn string_element_port_out(
        &self,
        caller: Caller,
        port: u16,
        data: &[u8],
        regs: &mut CallRegs,
    ) -> Option<Outcome> {
        self.port_write(caller, port, data, regs, true)
    }

    fn port_write(
        &self,
        caller: Caller,
        port: u16,
        data: &[u8],
        regs: &mut CallRegs,
        string_element: bool,
    ) -> Option<Outcome> {
        let c = &self.inner.config;
        if port == c.doorbell_port {
            let width = u8::try_from(data.len()).unwrap_or(u8::MAX);
            let exit = Doorbell {
                caller,
                width,
                string_element,
            };
            return Some(self.call(exit, regs));
        }
        if port == c.ring_notify_port {
            if let Ok(index) = <[u8; 4]>::try_from(data) {
                self.ring_notify(u32::from_le_bytes(index));
            }
            return Some(Outcome::Resume);
        }
        None
    }

    /// An `in` from `port`: no pvabi port is readable, so a read of one performs no call and
    /// completes with all bits set, as for a port no device claims (CONV-009). Returns
    /// whether the port is one of pvabi's (`data` is untouched otherwise).
    pub fn port_in(&self, port: u16, data: &mut [u8]) -> bool {
        let c = &self.inner.config;
        let ours = port == c.doorbell_port || port == c.ring_notify_port;
        if ours {
            data.fill(0xff);
        }
        ours
    }

    /// The CPUID leaves to expose (see [`HostConfig::cpuid_leaves`]).
    pub fn cpuid_leaves(&self) -> Vec<(u32, u32, [u32; 4])> {
        self.inner.config.cpuid_leaves()
    }

    /// The configuration served.
    pub fn config(&self) -> &HostConfig {
        &self.inner.config
    }

    /// Host work on rings so far: passes over a submission ring that consumed something,
    /// the submissions they consumed, and the wall-clock time those passes took (on the
    /// poller, a notify worker or the vCPU's own thread). For benchmarks: `time / entries`
    /// is the host's work per ring entry.
    pub fn ring_work(&self) -> RingWork {
        let [passes, entries, ns] = &self.inner.ring_work;
        RingWork {
            passes: passes.load(Ordering::Relaxed),
            entries: entries.load(Ordering::Relaxed),
            time: std::time::Duration::from_nanos(ns.load(Ordering::Relaxed)),
        }
    }

    /// Posts an event from a host-side producer (a device model, a benchmark) to vCPU
    /// `target`'s queue, as the host's own sources do: masked kinds raise no interrupt,
    /// `interrupt_pending` coalesces interrupts (PVABI-EVT-005), a full queue counts a drop,
    /// a vCPU without a queue latches a wake-up. The caller gives `source` and `data` the
    /// meaning the kind's row of the spec's table defines. Ignored for an index out of range.
    pub fn post_event(&self, target: u32, kind: EventKind, source: u32, data: u64) {
        self.inner.post_event(target, kind, source, data);
    }

    /// The machine served.
    pub fn machine(&self) -> &Arc<M> {
        &self.inner.machine
    }

    /// The version and features NEGOTIATE settled on, if it succeeded.
    pub fn negotiated(&self) -> Option<(Version, Features)> {
        self.inner.negotiated().map(|n| (n.version, n.granted))
    }

    /// A vCPU's state at an exit (any exit, whatever its reason): in checking mode
    /// ([`HostConfig::check_guest`]) the host reports an exit with RFLAGS.IF set while the
    /// IDTR's limit is 0, the reference platform's "no IDT" (PVABI-PLAT-008), and remembers the
    /// vCPU's paging state, against which it checks each MEM_UPDATE_PTE made for the vCPU until
    /// its next exit (PVABI-MEM-022); otherwise it does nothing. A VMM that calls it only in
    /// checking mode pays nothing elsewhere.
    pub fn check_exit(&self, vcpu: u32, state: ExitState) {
        if let Some(c) = &self.inner.checker {
            c.exit_state(vcpu, state);
        }
    }

    /// Step windows, for the checking host's PVABI-DEFER-001 and PVABI-RING-001, and
    /// PVABI-MEM-013 and PVABI-DEFER-008 with [`step_window_state`](Self::step_window_state)
    /// (see [`guest_check`]): after the VMM has handled a port write of `vcpu`, whether it should
    /// single-step `vcpu` from here on. True opens a window (the checker has taken its first
    /// look at the vCPU's queues); then call [`step_window_step`](Self::step_window_step)
    /// after each instruction and [`step_window_close`](Self::step_window_close) at any other
    /// exit. False outside checking mode, when no queue of the vCPU is watched (a watch starts
    /// when DEFER_SET_QUEUE or RING_SETUP registers one), and once the run's step budget
    /// ([`guest_check::STEP_BUDGET`], [`guest_check::STEP_TIME_BUDGET`]) is spent. A VMM
    /// should end a window at every exit that is not a step (a raised interrupt's kick
    /// included), so that stepping never holds an interrupt back for long.
    pub fn step_window_open(&self, vcpu: u32) -> bool {
        self.inner
            .checker
            .as_ref()
            .is_some_and(|c| self.inner.step_window_open(c, vcpu))
    }

    /// One single-stepped instruction of `vcpu` later, in an open step window: the checker
    /// looks again; whether to go on stepping (false: the window is closed; stop stepping).
    pub fn step_window_step(&self, vcpu: u32) -> bool {
        self.inner
            .checker
            .as_ref()
            .is_some_and(|c| self.inner.step_window_step(c, vcpu))
    }

    /// An exit of `vcpu` other than a single-step while its step window is open, before the
    /// VMM handles it (the call a port write makes has not run yet): the checker's last look;
    /// the window is closed (stop stepping). Does nothing if no window is open.
    pub fn step_window_close(&self, vcpu: u32) {
        if let Some(c) = &self.inner.checker {
            self.inner.step_window_close(c, vcpu);
        }
    }

    /// A guest access to a page the dispatcher asked the machine to watch
    /// ([`Machine::watch_pages`]): `vcpu` loaded `data` from `gpa`, or stored `data` there
    /// (`write`), and the access has been performed. In checking mode the checker sees from
    /// these the order of the guest's reads of an event-queue or completion-ring entry and its
    /// store of `head` (PVABI-EVT-010, PVABI-RING-006: see [`guest_check`]); otherwise it does
    /// nothing. Call it on the vCPU's thread, before the vCPU goes on.
    pub fn watched_access(&self, vcpu: u32, gpa: u64, data: &[u8], write: bool) {
        if let Some(c) = &self.inner.checker {
            self.inner.watched_access(c, vcpu, gpa, data, write);
        }
    }

    /// Whether the checker wants `vcpu`'s state ([`Self::step_window_state`]) at this stop of
    /// its open step window, right after [`step_window_open`](Self::step_window_open) or
    /// [`step_window_step`](Self::step_window_step) returned true: a MEM_UPDATE_PTE waits in
    /// its deferred queue, and the checker looks for accesses through its entry
    /// (PVABI-MEM-013, PVABI-DEFER-008; see [`guest_check`]). False outside checking mode and
    /// outside a window. One lock and a flag: cheap enough for every stop.
    pub fn step_window_wants_state(&self, vcpu: u32) -> bool {
        self.inner
            .checker
            .as_ref()
            .is_some_and(|c| self.inner.step_window_wants_state(c, vcpu))
    }

    /// `vcpu`'s state at this stop of its open step window (after
    /// [`step_window_wants_state`](Self::step_window_wants_state) said it is wanted): its RIP,
    /// its general registers, FS and GS bases and paging registers. At the next stop the
    /// checker reads and decodes the instruction at this RIP ([`x86`]), and, if the stop shows
    /// that it ran, walks the page tables for its accesses. Does nothing outside checking mode
    /// or a window.
    pub fn step_window_state(&self, vcpu: u32, state: &guest_check::StepState) {
        if let Some(c) = &self.inner.checker {
            self.inner.step_window_state(c, vcpu, state);
        }
    }

    /// What the guest checker saw (`None` unless [`HostConfig::check_guest`] is set): the
    /// guest rules the guest broke, and how often it exercised each. A batch still waiting to
    /// be resumed counts as abandoned.
    pub fn guest_check(&self) -> Option<guest_check::GuestCheckReport> {
        let inner = &self.inner;
        inner.checker.as_ref().map(|c| inner.guest_check_report(c))
    }

    /// A snapshot of what the host recorded.
    pub fn report(&self) -> Report {
        self.inner.report_snapshot()
    }

    /// Stops the dispatcher's threads and wakes every blocked VCPU_HALT (it returns TIMEOUT).
    /// Call it when the VM ends; later calls still get answers, but HALT no longer blocks and
    /// calls that need a host thread answer NO_RESOURCES. Idempotent.
    pub fn shutdown(&self) {
        self.inner.shutdown();
    }

    /// The VMM performed host event `event`, which vCPU `vcpu` asked for over the verdict
    /// channel ([`host_event`], [`Machine::request_host_event`]). Call it with every vCPU
    /// paused, after the event and before any vCPU runs guest code again: it brings the time
    /// page up to date for the counters as they now are (PVABI-TIME-010) and writes the
    /// channel's `DONE` line for the event to the console. A migration keeps everything else
    /// the dispatcher holds, the negotiated version and granted features included
    /// (PVABI-VER-013): a VMM that migrates within one process hands the same dispatcher to
    /// the new VM's vCPUs.
    pub fn host_event_performed(&self, vcpu: u32, event: HostEvent) {
        let inner = &self.inner;
        if event == HostEvent::Migrate {
            inner.migrations.fetch_add(1, Ordering::Relaxed);
        }
        inner.time_page_after_host_event();
        inner.console_out(vcpu, event.done_line().as_bytes());
    }

    /// Migrations the VMM reported ([`host_event_performed`](Self::host_event_performed)).
    pub fn migrations(&self) -> u64 {
        self.inner.migrations.load(Ordering::Relaxed)
    }

    /// Whether [`shutdown`](Self::shutdown) was called.
    pub fn is_shut_down(&self) -> bool {
        self.inner.stopping.load(Ordering::SeqCst)
    }
}

impl<M: Machine> Drop for Dispatcher<M> {
    fn drop(&mut self) {
        self.inner.shutdown();
    }
}

impl<M: Machine> Inner<M> {
    /// The one core of every path (direct, MULTICALL entry, deferred entry, ring
    /// submission): the generic checks, the sync-point drain, then the family handler.
    /// Counts the call and its status.
    pub(crate) fn execute(
        &self,
        vcpu: u32,
        ctx: Ctx,
        code: u64,
        args: [u64; 6],
    ) -> Result<Reply, Status> {
        if let Some(c) = &self.checker {
            c.made(vcpu, code, &args); // PVABI-BASE-005's record, in every context
        }
        let result = self.check_and_handle(vcpu, ctx, code, &args);
        let status = match &result {
            Ok(reply) => reply.status,
            Err(s) => *s,
        };
        self.count_call(vcpu, code, status);
        result
    }

    fn check_and_handle(
        &self,
        vcpu: u32,
        ctx: Ctx,
        code: u64,
        args: &[u64; 6],
    ) -> Result<Reply, Status> {
        #[cfg(feature = "fault-injection")]
        if injected!(self, ConsoleEmitsTheBufferLater) {
            console::emit_later(self, vcpu);
        }
        let d = self.gate(code, ctx)?; // checks 1-4
        let unchecked = d.family() == Family::System && injected!(self, SystemArgumentsUnchecked);
        if !unchecked {
            check::register_args(d, args, self.vcpu_count())?; // check 5
        }
        // The drain point (DEFER-003): a sync-point call made directly drains the
        // caller's queue once it has passed step 5, before step 6 and the block copy, whatever
        // status it then returns; a call that fails at steps 1-5 does not drain. MULTICALL
        // entries, ring submissions and deferred entries are never drain points (DEFER-011).
        let drains = !injected!(self, SyncPointDoesNotDrain);
        if d.sync_point && ctx == Ctx::Direct && d.call != Call::DeferFlush && drains {
            // DEFER_FLUSH drains in its handler, to count what it ran.
            self.drain_deferred(vcpu);
        }
        let block = self.fetch_block(d, args)?; // checks 6-9 and the one copy
        let req = Req {
            vcpu,
            call: d.call,
            args: *args,
            block,
        };
        // Checks 10 (block contents) and 11 (call-specific) are the handlers'.
        let mut reply = match d.family() {
            Family::Base => base::handle(self, &req),
            Family::Console => console::handle(self, &req),
            Family::Time => time::handle(self, &req),
            Family::Events => events::handle(self, &req),
            Family::Memory => memory::handle(self, &req),
            Family::Vcpu => vcpu::handle(self, &req),
            Family::System => system::handle(self, &req),
            Family::Batch => match d.call {
                Call::RingSetup | Call::RingEnter => ring::handle(self, &req),
                _ => batch::handle(self, &req),
            },
        }?;
        // Result slots the call does not define are 0 (BATCH-003, RING-019), whatever the handler left.
        reply.defined = d.results.len();
        reply
            .results
            .iter_mut()
            .skip(reply.defined)
            .for_each(|r| *r = 0);
        Ok(reply)
    }
}
