//! The KVM layer of the reference host: one VM, its guest RAM and its vCPU threads.
//!
//! The layer knows nothing of pvabi call semantics. It boots a bare-metal x86-64 ELF
//! straight into 64-bit mode, runs each vCPU on its own thread, and hands every port
//! access (`in`/`out`) to the [`PortBus`] it runs with, whose devices decide what the
//! ports mean (for pvabi: the doorbell at 0x5650, the ring-notify port at 0x5654). The
//! devices steer the VM through a cloneable [`VmCtl`]: guest memory, interrupts, starting
//! secondary vCPUs, TLB flushes and ending the VM.
//!
//! The order of construction is the order of dependence: [`Vm::new`] creates the VM (RAM,
//! image, vCPUs, CPUID); [`Vm::ctl`] hands out its control handle, from which the host
//! builds what serves the guest (the pvabi dispatcher over a `KvmMachine`) and the devices
//! on a [`PortBus`]; [`Vm::run`] runs the guest with that bus until it ends.
//!
//! # The boot contract
//!
//! How this layer lays out guest memory and starts a vCPU (load address, entry registers,
//! GDT, identity map, CPUID, interrupt delivery) is the *reference platform*, written down
//! in the spec's appendix "The reference platform" (`spec/text/reference-platform.md`).
//! Its numbers live in [`pvabi_abi::platform`], which this layer and the spec both read.
//! Guest RAM is one region from guest-physical address 0 (default 64 MiB, see
//! [`VmConfig`]), always accessed through `vm_memory` ([`VmCtl::memory`]).
//!
//! # CPUID
//!
//! Each vCPU gets KVM's supported CPUID set with the host's leaves
//! ([`VmConfig::cpuid`]) merged over it, and its index as APIC ID (leaf 1
//! `EBX[31:24]`, leaves 0xB/0x1F EDX). Leaf 1 reports a hypervisor (`ECX[31]`) and no local
//! APIC (`EDX[9]` and the x2APIC bit `ECX[21]` clear). If the host supplies any leaf in the
//! hypervisor range 0x4000_0000..=0x4000_00FF, KVM's own hypervisor leaves are dropped.
//!
//! # Interrupts: `KVM_INTERRUPT`, no in-kernel irqchip
//!
//! [`VmCtl::raise_interrupt`] queues a vector for a vCPU and kicks it: a real-time
//! signal (`SIGRTMIN`) whose handler sets `kvm_run.immediate_exit`, so that a vCPU
//! inside `KVM_RUN` (or about to enter it) returns to its thread at once. Before each
//! `KVM_RUN` the thread injects the highest queued vector with `KVM_INTERRUPT` when the
//! guest can take it (`ready_for_interrupt_injection` and IF), and otherwise sets
//! `request_interrupt_window` so KVM exits as soon as it can. There is no interrupt
//! controller in the guest's view: no LAPIC programming and no EOI; a vector is
//! delivered once per `raise_interrupt` (raising one that is still queued merges).
//!
//! Both mechanisms were measured on this project's PVM host (KVM's page-table-based
//! virtualisation, where ring-0 guest code is emulated). `KVM_INTERRUPT` works: a
//! vector raised from another thread reaches a vCPU spinning at CPL3 (kicked out of
//! `KVM_RUN`) or halted, and the guest's handler reports it within about 0.4 ms
//! (`vm_boot.rs`, `measure_exit_costs`). The in-kernel irqchip also works there: an MSI
//! (`KVM_SIGNAL_MSI`) to an x2APIC guest arrives within 0.2-0.45 ms, the guest's emulated
//! CPL0 handler included (`irqchip_probe.rs`, an ignored test). `KVM_INTERRUPT` is used because (1) with the
//! irqchip `HLT` is handled inside the kernel, so the layer could no longer see a vCPU
//! that halts with interrupts disabled and would hang instead of reporting it, (2)
//! guests would need APIC set-up and an EOI per interrupt (an MSR or MMIO write, each
//! emulated at CPL0 on PVM), and (3) the irqchip adds a PIC/IOAPIC/APIC the ABI has no
//! use for. The price: one vector is injected per exit (KVM has a single slot), so
//! bursts of different vectors are delivered one window at a time.
//!
//! # Exits that stay in the kernel, and KVM's own counts
//!
//! [`VmCtl::ioeventfd`] binds writes to a port (optionally only 32-bit writes of one value)
//! to an event file descriptor: KVM signals it and resumes the vCPU without returning to this
//! layer (the host uses it for the ring-notify port). [`VmCtl::vmm_exits`] counts every
//! return from `KVM_RUN` per vCPU, and [`VmCtl::kvm_exit_stats`] reads KVM's own per-vCPU
//! counters (`exits`, `io_exits`, `signal_exits`, ...) from the binary stats file descriptor,
//! from any thread. On the project's PVM host `exits` counts every exit into KVM (those it
//! answers itself, such as an ioeventfd write, included) while `io_exits` stays 0.
//!
//! # Watched pages
//!
//! [`VmCtl::watch_pages`] takes guest pages out of KVM's memory slots (this layer keeps its
//! mapping of them, which the host's threads go on using): every guest access to one then
//! exits as `KVM_EXIT_MMIO`, which the vCPU thread serves from guest RAM and reports to the
//! exit watcher ([`ExitWatcher::watched_access`]) before the vCPU goes on. The checking host
//! uses it to see the order of a guest's reads and stores on the pages it consumes from. Each
//! change of the slots holds every vCPU out of `KVM_RUN` for a moment (module `watch.rs`
//! says why and what an access looks like on PVM).
//!
//! # Halting and faults
//!
//! A `HLT` with IF=1 blocks the vCPU thread until an interrupt is raised for it (or
//! the VM ends). A `HLT` with IF=0 can never wake: the VM ends with
//! [`VmEnd::Fault`]. So do a triple fault (`KVM_EXIT_SHUTDOWN`), `KVM_EXIT_INTERNAL_ERROR`,
//! `KVM_EXIT_FAIL_ENTRY`, MMIO to an address without RAM, any other unexpected exit,
//! the last running vCPU stopping, and a panic in a port device. Fault reports carry the
//! vCPU index, the [`Fault`] and the vCPU's registers.
//!
//! # Threads
//!
//! [`Vm::run`] creates one thread per vCPU, waits until the VM ends, calls
//! [`PortBus::vm_ending`], kicks every vCPU and joins the threads. A device that blocks
//! (e.g. "halt until an event") must return once the VM has ended ([`VmCtl::is_ended`],
//! [`PortDevice::vm_ending`](crate::bus::PortDevice::vm_ending)), or `run` cannot return.
//!
//! The kick signal handler is installed process-wide on first use (`SIGRTMIN`, with
//! `SA_RESTART`); it only touches the `kvm_run` of the thread it interrupts.

mod boot;
mod cpuid;
mod error;
#[cfg(test)]
mod irqchip_probe;
mod loader;
mod migrate;
#[cfg(test)]
mod mmio_probe;
mod stats;
mod step;
#[cfg(any(test, feature = "test-util"))]
pub mod testing;
mod tsc;
#[cfg(test)]
mod tsc_probe;
mod vcpu_thread;
mod watch;

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};

use kvm_ioctls::{Cap, IoEventAddress, Kvm, NoDatamatch, VcpuFd, VmFd};
use pvabi_dispatch::sync::{lock, wait};
use pvabi_dispatch::End;
use vm_memory::GuestMemoryMmap;
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use crate::bus::PortBus;
use loader as memory;
use vcpu_thread as vcpu;

pub use cpuid::HYPERVISOR_LEAVES;
pub use error::{Fault, VmError};
pub use stats::{KvmExitStats, STAT_NAMES};
pub use step::{CpuidRead, DiscoveryTrace, STEP_LIMIT};
pub use tsc::TscLink;
pub use watch::MAX_WATCHED_PAGES;

/// One mebibyte.
pub const MIB: u64 = 1 << 20;
/// One gibibyte.
pub const GIB: u64 = 1 << 30;
/// Guest RAM when the configuration does not say otherwise.
pub const DEFAULT_MEM_BYTES: u64 = 64 * MIB;
pub use pvabi_abi::platform::{
    BOOT_GDT_ADDR, BOOT_STACK_TOP, IMAGE_BASE, IMAGE_MIN_ADDR, MAX_MEM_BYTES, MAX_VCPUS,
    MIN_MEM_BYTES, PDPT_ADDR, PD_ADDR, PML4_ADDR,
};

/// Size and shape of a VM.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VmConfig {
    /// Number of vCPUs (1..=[`MAX_VCPUS`]); vCPU 0 boots, the others wait for
    /// [`VmCtl::start_vcpu`].
    pub vcpus: u32,
    /// Guest RAM in bytes (a multiple of 4 KiB, at most [`MAX_MEM_BYTES`]).
    pub mem_bytes: u64,
    /// CPUID leaves `(function, index, [eax, ebx, ecx, edx])` merged over KVM's supported
    /// set (for pvabi: `HostConfig::cpuid_leaves`).
    pub cpuid: Vec<(u32, u32, [u32; 4])>,
    /// Log the guest's writes to its RAM (`KVM_MEM_LOG_DIRTY_PAGES` on every memory slot),
    /// for [`VmCtl::guest_written_pages`]: the checking host's view of writes to released
    /// pages (PVABI-MEM-006). Off by default: KVM then write-protects every page again after
    /// each look, which costs the guest a fault per page written.
    pub log_guest_writes: bool,
}

impl Default for VmConfig {
    fn default() -> Self {
        Self {
            vcpus: 1,
            mem_bytes: DEFAULT_MEM_BYTES,
            cpuid: Vec::new(),
            log_guest_writes: false,
        }
    }
}

/// Sees every vCPU exit's state (interrupt and paging state), runs the checking host's step
/// windows, and sees every access to a watched page ([`VmCtl::watch_exits`]).
pub trait ExitWatcher: Send + Sync {
    /// vCPU `vcpu` exited (for any reason) with `state`; called on its thread, before the
    /// exit is handled.
    fn exit(&self, vcpu: u32, state: pvabi_dispatch::ExitState);

    /// After a port write of `vcpu` was handled (and it resumes): whether to single-step it
    /// from here (a step window, [`pvabi_dispatch::Dispatcher::step_window_open`]), until its
    /// next exit of another kind. The default never steps.
    fn step_window_open(&self, vcpu: u32) -> bool {
        let _ = vcpu;
        false
    }

    /// One single-stepped instruction of `vcpu` later in its step window: whether to go on.
    fn step_window_step(&self, vcpu: u32) -> bool {
        let _ = vcpu;
        false
    }

    /// Any other exit of `vcpu` during its step window, before it is handled: the window ends.
    fn step_window_close(&self, vcpu: u32) {
        let _ = vcpu;
    }

    /// An access of `vcpu` to a watched page ([`VmCtl::watch_pages`]) at `gpa`, already
    /// served: `data` is what a read returned or what a write stored (its length is the
    /// access's width). Called on the vCPU's thread, in the order of its accesses, before the
    /// vCPU resumes. The default ignores it.
    fn watched_access(&self, vcpu: u32, gpa: u64, data: &[u8], write: bool) {
        let _ = (vcpu, gpa, data, write);
    }

    /// At a stop of `vcpu`'s step window that goes on (after `step_window_open` or
    /// `step_window_step` returned true): whether to hand in its state there
    /// ([`pvabi_dispatch::Dispatcher::step_window_wants_state`]). The default never does.
    fn step_window_wants_state(&self, vcpu: u32) -> bool {
        let _ = vcpu;
        false
    }

    /// `vcpu`'s state at that stop ([`pvabi_dispatch::Dispatcher::step_window_state`]).
    fn step_window_state(&self, vcpu: u32, state: &pvabi_dispatch::guest_check::StepState) {
        let _ = (vcpu, state);
    }
}

/// How a VM ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum VmEnd {
    /// The guest shut down with this code.
    Shutdown(u32),
    /// The guest asked for a reboot.
    Reboot,
    /// The guest reported a crash with this message.
    Crash(String),
    /// The guest could not go on: triple fault, unexpected exit, internal error,
    /// stuck vCPU, or a host callback that panicked.
    Fault(FaultReport),
}

impl From<End> for VmEnd {
    fn from(end: End) -> Self {
        match end {
            End::Shutdown(code) => VmEnd::Shutdown(code),
            End::Reboot => VmEnd::Reboot,
            End::Crash(message) => VmEnd::Crash(message),
        }
    }
}

impl fmt::Display for VmEnd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            VmEnd::Shutdown(code) => write!(f, "shutdown with code {code} ({code:#x})"),
            VmEnd::Reboot => write!(f, "reboot requested"),
            VmEnd::Crash(message) => write!(f, "guest crash: {message}"),
            VmEnd::Fault(report) => write!(f, "fault: {report}"),
        }
    }
}

/// Why a vCPU could not go on, with its registers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FaultReport {
    /// The vCPU that faulted.
    pub vcpu: u32,
    /// What happened.
    pub fault: Fault,
    /// The vCPU's registers at that point, when they could be read.
    pub regs: Option<Box<GuestRegs>>,
}

impl fmt::Display for FaultReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "vCPU {}: {}", self.vcpu, self.fault)?;
        if let Some(regs) = &self.regs {
            write!(f, "\n{regs}")?;
        }
        Ok(())
    }
}

/// A snapshot of a vCPU's registers (for fault reports).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[allow(missing_docs)]
pub struct GuestRegs {
    pub rip: u64,
    pub rsp: u64,
    pub rflags: u64,
    pub rax: u64,
    pub rbx: u64,
    pub rcx: u64,
    pub rdx: u64,
    pub rsi: u64,
    pub rdi: u64,
    pub rbp: u64,
    pub r8: u64,
    pub r9: u64,
    pub r10: u64,
    pub r11: u64,
    pub r12: u64,
    pub r13: u64,
    pub r14: u64,
    pub r15: u64,
    pub cs: u16,
    pub ss: u16,
    pub cr0: u64,
    pub cr2: u64,
    pub cr3: u64,
    pub cr4: u64,
    pub efer: u64,
}

impl GuestRegs {
    /// The privilege level the vCPU ran at (CS.RPL).
    pub fn cpl(&self) -> u16 {
        self.cs & 3
    }
}

impl fmt::Display for GuestRegs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "  rip={:#018x} rsp={:#018x} rflags={:#010x} cs={:#06x} ss={:#06x} (CPL{})",
            self.rip,
            self.rsp,
            self.rflags,
            self.cs,
            self.ss,
            self.cpl()
        )?;
        writeln!(
            f,
            "  rax={:#018x} rbx={:#018x} rcx={:#018x} rdx={:#018x}",
            self.rax, self.rbx, self.rcx, self.rdx
        )?;
        writeln!(
            f,
            "  rsi={:#018x} rdi={:#018x} rbp={:#018x} r8 ={:#018x}",
            self.rsi, self.rdi, self.rbp, self.r8
        )?;
        writeln!(
            f,
            "  r9 ={:#018x} r10={:#018x} r11={:#018x} r12={:#018x}",
            self.r9, self.r10, self.r11, self.r12
        )?;
        writeln!(
            f,
            "  r13={:#018x} r14={:#018x} r15={:#018x}",
            self.r13, self.r14, self.r15
        )?;
        write!(
            f,
            "  cr0={:#010x} cr2={:#018x} cr3={:#018x} cr4={:#08x} efer={:#06x}",
            self.cr0, self.cr2, self.cr3, self.cr4, self.efer
        )
    }
}

/// Which vCPUs [`VmCtl::flush_tlb`] flushes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FlushTarget {
    /// One vCPU.
    Vcpu(u32),
    /// Every vCPU.
    All,
}

/// Why [`VmCtl::start_vcpu`] refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum StartError {
    /// There is no such vCPU.
    #[error("vCPU {vcpu} does not exist: the VM has {count} vCPUs (indices 0..{count})")]
    NoSuchVcpu {
        /// The index asked for.
        vcpu: u32,
        /// How many vCPUs the VM has.
        count: u32,
    },
    /// The vCPU is running (or already being started).
    #[error("vCPU {0} is already running; stop it first")]
    AlreadyRunning(u32),
    /// The page table root is not page-aligned or lies outside guest RAM.
    #[error("cr3 {0:#x} is not a page-aligned address inside guest RAM")]
    BadCr3(u64),
    /// The VM has ended.
    #[error("the VM has ended")]
    Ended,
}

/// State shared by the VM, its vCPU threads and every [`VmCtl`].
struct Shared {
    // Field order matters: the VM file is closed before guest RAM is unmapped.
    /// The KVM VM (replaced by a new one when the VM migrates, [`VmCtl::request_migration`]).
    vm: std::sync::RwLock<VmFd>,
    /// Each vCPU's binary stats file (`None`: this KVM has none).
    stats: Vec<Mutex<Option<stats::StatsFile>>>,
    memory: GuestMemoryMmap,
    mem_bytes: u64,
    vcpus: Vec<vcpu::VcpuShared>,
    end: Mutex<Option<VmEnd>>,
    end_cv: Condvar,
    ended: AtomicBool,
    /// vCPUs running or being started; the VM ends when this drops to zero.
    active: Mutex<u32>,
    /// The guest TSC from the host's, or why it could not be established at creation (or
    /// after the last migration).
    tsc: std::sync::RwLock<Result<TscLink, &'static str>>,
    /// Each vCPU's CPUID, as set at creation (a migration sets it on the new vCPUs).
    cpuids: Vec<kvm_bindings::CpuId>,
    /// The ioeventfds bound ([`VmCtl::ioeventfd`]), to bind again on a new VM.
    ioevents: Mutex<Vec<(EventFd, u16, Option<u32>)>>,
    /// The rendezvous of a migration.
    migration: migrate::Migration,
    /// Called once a migration is done, before any vCPU runs guest code again.
    on_migrated: std::sync::OnceLock<Arc<dyn Fn(u32) + Send + Sync>>,
    /// Whether the memory slots log the guest's writes (`VmConfig::log_guest_writes`).
    log_guest_writes: bool,
    /// Sees every exit, if set ([`VmCtl::watch_exits`]).
    exit_watcher: std::sync::OnceLock<Arc<dyn ExitWatcher>>,
    /// The discovery trace, when asked for ([`VmCtl::trace_discovery`]).
    discovery: Mutex<Option<DiscoveryTrace>>,
    /// The memory slots and the watched pages ([`VmCtl::watch_pages`]).
    layout: Mutex<watch::Layout>,
    /// Holds the vCPUs out of `KVM_RUN` while the slots change.
    gate: watch::Gate,
}

/// A cloneable handle the host uses, from any thread, to act on a VM.
#[derive(Clone)]
pub struct VmCtl {
    shared: Arc<Shared>,
}

impl fmt::Debug for VmCtl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VmCtl")
            .field("vcpus", &self.vcpu_count())
            .field("mem_bytes", &self.shared.mem_bytes)
            .field("ended", &self.is_ended())
            .finish()
    }
}

impl VmCtl {
    /// Guest RAM. Access it only through `vm_memory` (`Bytes`, volatile slices): the
    /// vCPUs write it concurrently.
    pub fn memory(&self) -> &GuestMemoryMmap {
        &self.shared.memory
    }

    /// Size of guest RAM in bytes.
    pub fn mem_bytes(&self) -> u64 {
        self.shared.mem_bytes
    }

    /// Number of vCPUs.
    pub fn vcpu_count(&self) -> u32 {
        self.shared.vcpus.len() as u32
    }

    /// How to compute every vCPU's TSC from the host's (`None`: not known, see
    /// [`TscLink`]).
    pub fn tsc(&self) -> Option<TscLink> {
        (*pvabi_dispatch::sync::read_lock(&self.shared.tsc)).ok()
    }

    /// Why [`tsc`](Self::tsc) is `None` (for diagnostics), or `None` if it is not.
    pub fn tsc_unavailable(&self) -> Option<&'static str> {
        pvabi_dispatch::sync::read_lock(&self.shared.tsc).err()
    }

    /// Which of the pages at `gpas` (4 KiB-aligned guest-physical addresses) the guest wrote
    /// since the previous call (the first call: since the VM was created), from KVM's
    /// dirty-page log (`KVM_GET_DIRTY_LOG`, which also starts the next interval for every
    /// page). `None` unless the VM logs guest writes ([`VmConfig::log_guest_writes`]) and
    /// KVM answered. Only the vCPUs' writes count: the host's own, through the mapping of
    /// guest RAM, set no bit (measured on PVM).
    pub fn guest_written_pages(&self, gpas: &[u64]) -> Option<Vec<u64>> {
        if !self.shared.log_guest_writes {
            return None;
        }
        // Under the layout's lock, so that the slots do not change meanwhile; the pages whose
        // bits a slot change carried over (and the stores to watched pages) count too.
        let mut layout = lock(&self.shared.layout);
        let mut bits: Vec<(u64, Vec<u64>)> = Vec::new();
        let vm = pvabi_dispatch::sync::read_lock(&self.shared.vm);
        for (slot, start, len) in layout.registered() {
            let size = usize::try_from(len).ok()?;
            let log = vm.get_dirty_log(slot, size).ok()?;
            bits.push((start, log));
        }
        let carried = layout.take_written();
        let written = |gpa: u64| {
            carried.contains(&gpa)
                || bits.iter().any(|(start, log)| {
                    let Some(page) = gpa.checked_sub(*start).map(|o| o >> 12) else {
                        return false;
                    };
                    log.get((page / 64) as usize)
                        .is_some_and(|w| w & (1 << (page % 64)) != 0)
                })
        };
        Some(gpas.iter().copied().filter(|&g| written(g)).collect())
    }

    /// Has `watcher` see every vCPU exit's state from now on (the checking host's
    /// PVABI-PLAT-008 and PVABI-MEM-022), and every access to a watched page
    /// ([`watch_pages`](Self::watch_pages)). At most one watcher: `false` if one was set
    /// before. Without one, an exit costs nothing more.
    pub fn watch_exits(&self, watcher: Arc<dyn ExitWatcher>) -> bool {
        self.shared.exit_watcher.set(watcher).is_ok()
    }

    /// Whether an exit watcher was set ([`watch_exits`](Self::watch_exits)).
    pub fn exit_watcher_set(&self) -> bool {
        self.shared.exit_watcher.get().is_some()
    }

    /// The exit watcher, if one was set.
    pub(crate) fn exit_watcher(&self) -> Option<&Arc<dyn ExitWatcher>> {
        self.shared.exit_watcher.get()
    }

    /// The boot page table root (the CR3 `start_vcpu` uses for `cr3 == 0`).
    pub fn boot_cr3(&self) -> u64 {
        PML4_ADDR
    }

    /// Asks vCPU `vcpu` to take interrupt `vector` as soon as it can (IF=1). Safe from
    /// any thread, including while that vCPU is inside `KVM_RUN`, halted, or inside a
    /// host port handler (then the vector is injected when the handler returns).
    /// Ignored for a vCPU index that does not exist or once the VM has ended.
    pub fn raise_interrupt(&self, vcpu: u32, vector: u8) {
        if let Some(v) = self.shared.vcpus.get(vcpu as usize) {
            v.raise(vector);
        }
    }

    /// Starts vCPU `vcpu` (parked: never started, or stopped) in 64-bit mode at
    /// `rip`/`rsp` with `rdi = arg` and page tables at `cr3` (0 = the boot tables).
    pub fn start_vcpu(
        &self,
        vcpu: u32,
        rip: u64,
        rsp: u64,
        arg: u64,
        cr3: u64,
    ) -> Result<(), StartError> {
        let count = self.vcpu_count();
        let v = self
            .shared
            .vcpus
            .get(vcpu as usize)
            .ok_or(StartError::NoSuchVcpu { vcpu, count })?;
        let cr3 = if cr3 == 0 { PML4_ADDR } else { cr3 };
        if cr3 & 0xfff != 0 || cr3 >= self.shared.mem_bytes {
            return Err(StartError::BadCr3(cr3));
        }
        if self.is_ended() {
            return Err(StartError::Ended);
        }
        let regs = vcpu::StartRegs {
            rip,
            rsp,
            rdi: arg,
            rsi: 0,
            rdx: 0,
            cr3,
        };
        v.request_start(regs, || *lock(&self.shared.active) += 1)
    }

    /// Flushes the TLB of `target` before it next runs guest code (CR3 is reloaded
    /// through `KVM_SET_SREGS`). A vCPU inside `KVM_RUN` is kicked out first. This
    /// does not wait for the flush to happen.
    pub fn flush_tlb(&self, target: FlushTarget) {
        match target {
            FlushTarget::Vcpu(i) => {
                if let Some(v) = self.shared.vcpus.get(i as usize) {
                    v.request_flush();
                }
            }
            FlushTarget::All => self.shared.vcpus.iter().for_each(|v| v.request_flush()),
        }
    }

    /// Ends the VM from any thread: all vCPUs stop and [`Vm::run`] returns `how`. The
    /// first end wins; later calls are ignored.
    pub fn end(&self, how: VmEnd) {
        {
            let mut end = lock(&self.shared.end);
            if end.is_some() {
                return;
            }
            *end = Some(how);
            self.shared.ended.store(true, Ordering::SeqCst);
        }
        self.shared.end_cv.notify_all();
        for v in &self.shared.vcpus {
            v.kick();
        }
    }

    /// Exits of vCPU `vcpu` to this VMM so far: every return from `KVM_RUN` (port I/O the
    /// VMM answers, kicks, interrupt windows, halts, ...), counted by the VM layer. 0 for an
    /// index that does not exist.
    pub fn vmm_exits(&self, vcpu: u32) -> u64 {
        self.shared
            .vcpus
            .get(vcpu as usize)
            .map_or(0, |v| v.exits.load(Ordering::Relaxed))
    }

    /// KVM's own exit counters of vCPU `vcpu` now (`None`: no such vCPU, or this KVM has no
    /// binary stats). Safe from any thread while the vCPU runs.
    pub fn kvm_exit_stats(&self, vcpu: u32) -> Option<KvmExitStats> {
        self.shared
            .stats
            .get(vcpu as usize)
            .and_then(|s| lock(s).as_ref().map(stats::StatsFile::read))
    }

    /// Binds `out`s to `port` to a new event file descriptor inside KVM (an ioeventfd): such
    /// a write signals the descriptor and the vCPU goes on without returning to this VMM.
    /// With `datamatch`, only 32-bit writes of that value are bound (others still exit as
    /// before); without, writes of any width and value. The descriptor is non-blocking.
    pub fn ioeventfd(&self, port: u16, datamatch: Option<u32>) -> Result<EventFd, VmError> {
        let fd = EventFd::new(EFD_NONBLOCK).map_err(VmError::EventFd)?;
        // The list and the VM under one lock order: a migration binds the list again.
        let mut ioevents = lock(&self.shared.ioevents);
        migrate::bind_ioevent(
            &pvabi_dispatch::sync::read_lock(&self.shared.vm),
            &fd,
            port,
            datamatch,
        )
        .map_err(kvm_err("KVM_IOEVENTFD"))?;
        ioevents.push((fd.try_clone().map_err(VmError::EventFd)?, port, datamatch));
        Ok(fd)
    }

    /// Undoes [`ioeventfd`](Self::ioeventfd) for `fd` (same `port` and `datamatch`): such
    /// writes exit to the VMM again.
    pub fn remove_ioeventfd(
        &self,
        fd: &EventFd,
        port: u16,
        datamatch: Option<u32>,
    ) -> Result<(), VmError> {
        let mut ioevents = lock(&self.shared.ioevents);
        let addr = IoEventAddress::Pio(u64::from(port));
        let vm = pvabi_dispatch::sync::read_lock(&self.shared.vm);
        match datamatch {
            Some(value) => vm.unregister_ioevent(fd, &addr, value),
            None => vm.unregister_ioevent(fd, &addr, NoDatamatch),
        }
        .map_err(kvm_err("KVM_IOEVENTFD"))?;
        // KVM holds at most one binding per port and datamatch (it refused a second one), and
        // it has just removed that one: forget it by port and datamatch.
        ioevents.retain(|(_, p, d)| !(*p == port && *d == datamatch));
        Ok(())
    }

    /// Whether the VM has ended (or is ending).
    pub fn is_ended(&self) -> bool {
        self.shared.ended.load(Ordering::SeqCst)
    }

    /// Called by a vCPU thread that parks for good (Outcome::StopVcpu): ends the VM when
    /// no vCPU is left running.
    fn vcpu_stopped(&self, vcpu: u32) {
        let last = {
            let mut active = lock(&self.shared.active);
            *active = active.saturating_sub(1);
            *active == 0
        };
        if last {
            self.end(VmEnd::Fault(FaultReport {
                vcpu,
                fault: Fault::AllStopped(vcpu),
                regs: None,
            }));
        }
    }
}

/// A created VM, ready to run: guest RAM allocated, image loaded, vCPUs configured.
pub struct Vm {
    ctl: VmCtl,
    vcpu_fds: Vec<VcpuFd>,
    sync_regs: bool,
}

impl fmt::Debug for Vm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Vm")
            .field("ctl", &self.ctl)
            .finish_non_exhaustive()
    }
}

fn open_kvm() -> Result<Kvm, VmError> {
    if !std::path::Path::new("/dev/kvm").exists() {
        return Err(VmError::KvmMissing);
    }
    let kvm = Kvm::new().map_err(|e| match e.errno() {
        libc::EACCES | libc::EPERM => VmError::KvmPermission,
        libc::ENOENT | libc::ENXIO | libc::ENODEV => VmError::KvmMissing,
        _ => VmError::KvmOpen(e),
    })?;
    let version = kvm.get_api_version();
    if version != 12 {
        return Err(VmError::KvmApiVersion { found: version });
    }
    Ok(kvm)
}

/// Whether KVM can hand the general registers over in `kvm_run` (KVM_CAP_SYNC_REGS).
fn vm_sync_regs(kvm: &Kvm) -> bool {
    kvm.check_extension_int(Cap::SyncRegs) as u32 & kvm_bindings::KVM_SYNC_X86_REGS != 0
}

fn kvm_err(op: &'static str) -> impl FnOnce(kvm_ioctls::Error) -> VmError {
    move |source| VmError::Kvm { op, source }
}

impl Vm {
    /// Creates the VM: checks the configuration, allocates guest RAM, writes the boot
    /// tables, loads `elf_image` and configures every vCPU (with `config.cpuid`). Nothing
    /// runs yet: [`ctl`](Self::ctl) gives the handle to build the host from, then
    /// [`run`](Self::run) runs it.
    pub fn new(config: &VmConfig, elf_image: &[u8]) -> Result<Self, VmError> {
        Self::create(config, elf_image, None)
    }

    /// The VM after a reset of the one behind `previous` (which has ended: its vCPUs have
    /// stopped): a new VM for `elf_image` whose guest RAM starts as `previous`'s, except what
    /// the reference platform's entry writes again (its appendix, "Reset"): the boot GDT and
    /// page tables, and the image's range from `IMAGE_MIN_ADDR` to the end of its highest
    /// segment, zeroed and loaded again. vCPU 0 begins in the entry state, every other vCPU
    /// parked, as at the first start; pages the balloon released read as zero and are RAM.
    pub fn after_reset(
        config: &VmConfig,
        elf_image: &[u8],
        previous: &VmCtl,
    ) -> Result<Self, VmError> {
        Self::create(config, elf_image, Some(previous.memory()))
    }

    fn create(
        config: &VmConfig,
        elf_image: &[u8],
        previous: Option<&GuestMemoryMmap>,
    ) -> Result<Self, VmError> {
        let mem_bytes = config.mem_bytes;
        if !mem_bytes.is_multiple_of(4096) || !(MIN_MEM_BYTES..=MAX_MEM_BYTES).contains(&mem_bytes)
        {
            return Err(VmError::MemorySize {
                bytes: mem_bytes,
                max_gib: MAX_MEM_BYTES / GIB,
            });
        }
        if config.vcpus == 0 || config.vcpus > MAX_VCPUS {
            return Err(VmError::VcpuCount {
                requested: config.vcpus,
                max: MAX_VCPUS,
            });
        }
        // Check the image before touching KVM, so a bad image is reported as such on
        // any machine.
        memory::check(elf_image, mem_bytes)?;

        let kvm = open_kvm()?;
        let max_vcpus = (kvm.check_extension_int(Cap::MaxVcpus).max(1) as u32).min(MAX_VCPUS);
        if config.vcpus == 0 || config.vcpus > max_vcpus {
            return Err(VmError::VcpuCount {
                requested: config.vcpus,
                max: max_vcpus,
            });
        }
        let vm = kvm.create_vm().map_err(kvm_err("KVM_CREATE_VM"))?;

        let memory = memory::create(mem_bytes)?;
        if let Some(previous) = previous {
            memory::carry_over(previous, &memory, mem_bytes, elf_image)?;
        }
        boot::write_tables(&memory, mem_bytes)?;
        let entry = memory::load(&memory, mem_bytes, elf_image)?;

        // Guest RAM in one slot, through the layout that later cuts watched pages out of it.
        let layout = watch::Layout::new(&memory, mem_bytes)?;
        layout.register_in(&vm, config.log_guest_writes)?;

        let supported = kvm
            .get_supported_cpuid(kvm_bindings::KVM_MAX_CPUID_ENTRIES)
            .map_err(kvm_err("KVM_GET_SUPPORTED_CPUID"))?;
        let mut base_cpuid = cpuid::merge(supported.as_slice(), &config.cpuid);
        cpuid::platform_leaves(&mut base_cpuid);

        let mut vcpu_fds = Vec::with_capacity(config.vcpus as usize);
        let mut cpuids = Vec::with_capacity(config.vcpus as usize);
        for i in 0..config.vcpus {
            let fd = vm
                .create_vcpu(u64::from(i))
                .map_err(kvm_err("KVM_CREATE_VCPU"))?;
            let leaves = cpuid::for_vcpu(&base_cpuid, i)?;
            fd.set_cpuid2(&leaves).map_err(kvm_err("KVM_SET_CPUID2"))?;
            vcpu_fds.push(fd);
            cpuids.push(leaves);
        }
        vcpu::install_kick_handler()?;
        let tsc = tsc::link(&vcpu_fds);

        let vcpus = (0..config.vcpus)
            .map(vcpu::VcpuShared::new)
            .collect::<Vec<_>>();
        // The boot vCPU starts right away.
        let boot_regs = vcpu::StartRegs {
            rip: entry,
            rsp: BOOT_STACK_TOP,
            rdi: 0,
            rsi: mem_bytes,
            rdx: u64::from(config.vcpus),
            cr3: PML4_ADDR,
        };
        vcpus[0]
            .request_start(boot_regs, || {})
            .expect("a fresh vCPU is parked");
        let stats = vcpu_fds
            .iter()
            .map(|fd| Mutex::new(stats::StatsFile::open(fd)))
            .collect();
        let shared = Arc::new(Shared {
            vm: std::sync::RwLock::new(vm),
            stats,
            memory,
            mem_bytes,
            vcpus,
            end: Mutex::new(None),
            end_cv: Condvar::new(),
            ended: AtomicBool::new(false),
            active: Mutex::new(1),
            tsc: std::sync::RwLock::new(tsc),
            cpuids,
            ioevents: Mutex::new(Vec::new()),
            migration: migrate::Migration::new(config.vcpus),
            on_migrated: std::sync::OnceLock::new(),
            log_guest_writes: config.log_guest_writes,
            exit_watcher: std::sync::OnceLock::new(),
            discovery: Mutex::new(None),
            layout: Mutex::new(layout),
            gate: watch::Gate::default(),
        });
        let sync_regs = vm_sync_regs(&kvm);
        Ok(Self {
            ctl: VmCtl { shared },
            vcpu_fds,
            sync_regs,
        })
    }

    /// A handle to this VM (for other threads, before or while it runs).
    pub fn ctl(&self) -> VmCtl {
        self.ctl.clone()
    }

    /// Runs the VM with `bus` answering its port accesses until it ends, and returns how it
    /// ended. Guest failures are [`VmEnd::Fault`]s, not errors; an error means the VM could
    /// not run at all.
    pub fn run(self, bus: Arc<PortBus>) -> Result<VmEnd, VmError> {
        let Vm {
            ctl,
            vcpu_fds,
            sync_regs,
        } = self;
        let mut threads = Vec::with_capacity(vcpu_fds.len());
        for (index, fd) in vcpu_fds.into_iter().enumerate() {
            let thread_ctl = ctl.clone();
            let thread_bus = bus.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("vcpu{index}"))
                .spawn(move || {
                    vcpu::thread_main(thread_ctl, thread_bus, index as u32, fd, sync_regs)
                });
            match spawned {
                Ok(handle) => threads.push(handle),
                Err(e) => {
                    ctl.end(VmEnd::Fault(FaultReport {
                        vcpu: index as u32,
                        fault: Fault::Thread {
                            vcpu: index as u32,
                            error: e.to_string(),
                        },
                        regs: None,
                    }));
                    for t in threads {
                        let _ = t.join();
                    }
                    return Err(VmError::Thread(e));
                }
            }
        }

        let end = {
            let mut end = lock(&ctl.shared.end);
            while end.is_none() {
                end = wait(&ctl.shared.end_cv, end);
            }
            end.clone().expect("checked above")
        };
        bus.vm_ending();
        for v in &ctl.shared.vcpus {
            v.kick();
        }
        for t in threads {
            // vCPU threads catch panics themselves; a join error cannot carry news.
            let _ = t.join();
        }
        Ok(end)
    }
}

/// Creates a VM for `elf_image` and runs it with `bus` until it ends (see [`Vm::new`] and
/// [`Vm::run`]).
pub fn run(config: &VmConfig, elf_image: &[u8], bus: Arc<PortBus>) -> Result<VmEnd, VmError> {
    Vm::new(config, elf_image)?.run(bus)
}
