//! The dispatcher of the reference host: it turns (vCPU index, call registers, guest memory)
//! into an answer. It does not depend on KVM: what it needs from the machine is the
//! [`Machine`] trait, so it runs in unit tests over a [`FakeMachine`] and can be fuzzed.
//!
//! # Data path
//!
//! [`Dispatcher::call`] decodes the registers and hands them to one core, `execute`, that
//! also serves MULTICALL entries, deferred-queue entries and ring submissions:
//!
//! 1. `check.rs`: the generic checks, in the spec's [`CHECK_ORDER`], driven by the call's
//!    [`CallDescriptor`]: code known and implemented, negotiated (Base exempt), feature
//!    granted, allowed in this context, register arguments, then the memory block:
//!    alignment, page crossing, guest RAM, not host-owned, and the one copy of its bytes.
//! 2. Sync-point calls drain the caller's deferred queue (after the register checks, before
//!    the block is copied, so deferred writes are visible to the call).
//! 3. The family handler (`base.rs`, `console.rs`, `time.rs`, `events.rs`, `memory.rs`,
//!    `vcpu.rs`, `system.rs`, `batch.rs`, `ring.rs`) parses the copy with zerocopy's `TryFromBytes`
//!    (block contents) and checks the call-specific conditions, then acts.
//!
//! Results are written to the registers only on SUCCESS (and INCOMPLETE, which carries the
//! resume index). With [`HostConfig::strict`] the result registers the guest must not read
//! are poisoned with [`POISON`].
//!
//! # Threads and locks
//!
//! The dispatcher is shared by every vCPU thread and runs its own threads (time-page
//! refresh, one-shot timers, HOST_POLLED ring pollers), started on first use and stopped by
//! [`Dispatcher::shutdown`] (also on drop). Lock order, outermost first: a vCPU's ring, its
//! deferred queue, a vCPU's state, then the leaf locks (VM state, timers, time page,
//! report). No lock is held across a call that could take an outer one.
//!
//! [`CHECK_ORDER`]: pvabi_abi::status::CHECK_ORDER
//! [`CallDescriptor`]: pvabi_abi::calls::CallDescriptor

mod base;
mod batch;
mod check;
pub mod config;
mod console;
mod events;
pub mod fake;
mod guest;
pub mod kvm_glue;
pub mod machine;
mod memory;
pub mod report;
mod ring;
mod state;
mod system;
mod time;
mod vcpu;

#[cfg(test)]
mod tests;

use std::sync::atomic::Ordering;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use pvabi_abi::calls::{Call, Family};
use pvabi_abi::features::Features;
use pvabi_abi::status::Status;
use pvabi_abi::version::Version;

use crate::vm::CallRegs;

pub use config::{
    ConfigError, ConsoleSink, FeatureOffer, HostConfig, ImplVersion, IMPL_NAME_REFERENCE, POISON,
};
pub use fake::FakeMachine;
pub use kvm_glue::PvabiHost;
pub use machine::Machine;
pub use report::Report;

use check::{Block, Ctx};
use state::Inner;

/// What the vCPU does after a call.
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

/// A handler's answer, before it is turned into registers or a batch entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Done {
    /// SUCCESS with results `r0..r3` (the ones the call does not define are 0).
    Results([u64; 4]),
    /// INCOMPLETE with results (MULTICALL's resume index and count).
    Incomplete([u64; 4]),
    /// The caller stops.
    StopVcpu,
    /// The VM ends.
    End(End),
}

/// SUCCESS with up to four results.
pub(crate) fn done(results: &[u64]) -> Result<Done, Status> {
    let mut r = [0u64; 4];
    r[..results.len()].copy_from_slice(results);
    Ok(Done::Results(r))
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

/// Locks a mutex, ignoring poisoning: the dispatcher's locks guard plain state that a
/// panicking thread cannot leave half-updated in a way later calls would trip over.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Waits on `cv` for at most `timeout`, ignoring poisoning.
pub(crate) fn wait_timeout<'a, T>(
    cv: &Condvar,
    guard: MutexGuard<'a, T>,
    timeout: Duration,
) -> MutexGuard<'a, T> {
    match cv.wait_timeout(guard, timeout) {
        Ok((g, _)) => g,
        Err(e) => e.into_inner().0,
    }
}

/// The pvabi dispatcher: one per VM, shared by all vCPU threads.
pub struct Dispatcher {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Dispatcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dispatcher")
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}

impl Dispatcher {
    /// A dispatcher serving `config` over `machine`. Fails if the configuration is incoherent
    /// or its vCPU count differs from the machine's.
    pub fn new(config: HostConfig, machine: Arc<dyn Machine>) -> Result<Self, ConfigError> {
        config.validate()?;
        if machine.vcpu_count() != config.vcpus {
            return Err(ConfigError(format!(
                "the configuration has {} vCPUs but the machine has {}",
                config.vcpus,
                machine.vcpu_count()
            )));
        }
        Ok(Dispatcher {
            inner: Inner::new(config, machine),
        })
    }

    /// Handles one doorbell call of `vcpu`: `regs.rax` holds the code and `rdi..r11` the
    /// arguments; on return `rax` holds the status and, on SUCCESS, `rdi, rsi, r8, r9` the
    /// results the call defines (other registers are left alone, or poisoned when strict).
    /// May block (VCPU_HALT) until an event, the timeout, or [`shutdown`](Self::shutdown).
    pub fn call(&self, vcpu: u32, regs: &mut CallRegs) -> Outcome {
        let inner = &self.inner;
        if vcpu >= inner.vcpu_count() {
            // A host bug (the KVM layer passes real indices), answered without panicking.
            regs.rax = Status::InvalidState.raw();
            return Outcome::Resume;
        }
        let started = Instant::now();
        let code = regs.rax;
        let args = [regs.rdi, regs.rsi, regs.r8, regs.r9, regs.r10, regs.r11];
        let call = Call::from_code(code);
        let defined = call.map_or(0, |c| c.descriptor().results.len());
        let strict = inner.config.strict;
        let (status, results, outcome) = match inner.execute(vcpu, Ctx::Direct, code, args) {
            Ok(Done::Results(r)) => (Status::Success, Some(r), Outcome::Resume),
            Ok(Done::Incomplete(r)) => (Status::Incomplete, Some(r), Outcome::Resume),
            Ok(Done::StopVcpu) => (Status::Success, None, Outcome::StopVcpu),
            Ok(Done::End(end)) => (Status::Success, None, Outcome::End(end)),
            Err(status) => (status, None, Outcome::Resume),
        };
        // Time spent waiting at the guest's request is not stolen from it, and a steal page
        // starts at zero after the call that registers it.
        if !matches!(
            call,
            Some(Call::VcpuHalt | Call::VcpuYield | Call::TimeSetStealPage)
        ) {
            inner.account_steal(vcpu, started.elapsed());
        }
        regs.rax = status.raw();
        let result_regs = [&mut regs.rdi, &mut regs.rsi, &mut regs.r8, &mut regs.r9];
        for (i, reg) in result_regs.into_iter().enumerate() {
            match results {
                Some(r) if i < defined => *reg = r[i],
                _ if strict && outcome == Outcome::Resume => *reg = POISON,
                _ => {}
            }
        }
        outcome
    }

    /// A write of `vcpu`'s index to the ring-notify port: process that vCPU's submission
    /// ring (DOORBELL mode) or wake its poller (HOST_POLLED). Ignored for a vCPU without a
    /// ring or an index out of range. Never blocks on the guest.
    pub fn ring_notify(&self, vcpu: u32) {
        self.inner.ring_notify(vcpu);
    }

    /// The CPUID leaves to expose (see [`HostConfig::cpuid_leaves`]).
    pub fn cpuid_leaves(&self) -> Vec<(u32, u32, [u32; 4])> {
        self.inner.config.cpuid_leaves()
    }

    /// The configuration served.
    pub fn config(&self) -> &HostConfig {
        &self.inner.config
    }

    /// The version and features NEGOTIATE settled on, if it succeeded.
    pub fn negotiated(&self) -> Option<(Version, Features)> {
        self.inner.negotiated().map(|n| (n.version, n.granted))
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

    /// Whether [`shutdown`](Self::shutdown) was called.
    pub fn is_shut_down(&self) -> bool {
        self.inner.stopping.load(Ordering::SeqCst)
    }
}

impl Drop for Dispatcher {
    fn drop(&mut self) {
        self.inner.shutdown();
    }
}

impl Inner {
    /// The one core of every path (direct, MULTICALL entry, deferred entry, ring
    /// submission): the generic checks, the sync-point drain, then the family handler.
    /// Records the call and its status in the report.
    pub(crate) fn execute(
        &self,
        vcpu: u32,
        ctx: Ctx,
        code: u64,
        args: [u64; 6],
    ) -> Result<Done, Status> {
        let result = self.check_and_handle(vcpu, ctx, code, args);
        let status = match &result {
            Ok(Done::Incomplete(_)) => Status::Incomplete,
            Ok(_) => Status::Success,
            Err(s) => *s,
        };
        lock(&self.report).record_call(code, status);
        result
    }

    fn check_and_handle(
        &self,
        vcpu: u32,
        ctx: Ctx,
        code: u64,
        args: [u64; 6],
    ) -> Result<Done, Status> {
        let d = self.gate(code, ctx)?; // checks 1-4
        check::register_args(d, &args, self.vcpu_count())?; // check 5
        if d.sync_point && ctx != Ctx::Deferred && d.call != Call::DeferFlush {
            // DEFER_FLUSH drains in its handler, to count what it ran.
            self.drain_deferred(vcpu);
        }
        let block = self.fetch_block(d, &args)?; // checks 6-9 and the one copy
        let req = Req {
            vcpu,
            call: d.call,
            args,
            block,
        };
        // Checks 10 (block contents) and 11 (call-specific) are the handlers'.
        match d.family() {
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
        }
    }
}
