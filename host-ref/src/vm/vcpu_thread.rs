//! vCPU threads: parking and starting, the `KVM_RUN` loop, interrupt injection,
//! kicks, and turning exits into host calls or fault reports.

use std::cell::Cell;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::ptr::{addr_of, addr_of_mut, null_mut};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock};

use kvm_bindings::{kvm_interrupt, kvm_regs, kvm_run, KVMIO};
use kvm_ioctls::{SyncReg, VcpuExit, VcpuFd};
use pvabi_dispatch::sync::{lock, wait};
use pvabi_dispatch::{CallRegs, End, Outcome};
use vmm_sys_util::ioctl::ioctl_with_ref;

use super::{boot, Fault, FaultReport, GuestRegs, StartError, VmCtl, VmEnd, VmError};
use crate::bus::{PortAccess, PortBus};

vmm_sys_util::ioctl_iow_nr!(KVM_INTERRUPT, KVMIO, 0x86, kvm_interrupt);

const RFLAGS_IF: u64 = 1 << 9;

/// Register values a vCPU starts with.
#[derive(Clone, Copy, Debug)]
pub(super) struct StartRegs {
    pub rip: u64,
    pub rsp: u64,
    pub rdi: u64,
    pub rsi: u64,
    pub rdx: u64,
    pub cr3: u64,
}

#[derive(Clone, Copy, Debug)]
enum State {
    /// Never started, or stopped: waiting for a start request.
    Parked,
    /// A start request is waiting for the thread.
    Start(StartRegs),
    /// Running guest code (or in a host callback, or halted waiting for an interrupt).
    Running,
    /// The thread has finished; the vCPU can never run again.
    Exited,
}

/// The part of a vCPU other threads can see.
pub(super) struct VcpuShared {
    index: u32,
    state: Mutex<State>,
    /// Signalled on a start request, a raised interrupt and the end of the VM.
    wake: Condvar,
    /// Raised, not yet injected vectors (a 256-bit set).
    pending: [AtomicU64; 4],
    flush: AtomicBool,
    /// True while the thread is in (or about to enter) `KVM_RUN`.
    in_run: AtomicBool,
    /// Incremented by every kick; the thread compares it around entering `KVM_RUN`.
    kicks: AtomicU64,
    /// The thread to signal; `None` before it starts and after it has finished.
    thread: Mutex<Option<libc::pthread_t>>,
    /// Returns from `KVM_RUN` (every exit to this VMM, whatever its reason).
    pub(super) exits: AtomicU64,
}

impl VcpuShared {
    pub(super) fn new(index: u32) -> Self {
        Self {
            index,
            state: Mutex::new(State::Parked),
            wake: Condvar::new(),
            pending: Default::default(),
            flush: AtomicBool::new(false),
            in_run: AtomicBool::new(false),
            kicks: AtomicU64::new(0),
            thread: Mutex::new(None),
            exits: AtomicU64::new(0),
        }
    }

    /// Queues a start; `on_accept` runs (under the state lock) if it is accepted.
    pub(super) fn request_start(
        &self,
        regs: StartRegs,
        on_accept: impl FnOnce(),
    ) -> Result<(), StartError> {
        let mut state = lock(&self.state);
        match *state {
            State::Parked => {
                on_accept();
                *state = State::Start(regs);
                drop(state);
                self.wake.notify_all();
                Ok(())
            }
            State::Start(_) | State::Running => Err(StartError::AlreadyRunning(self.index)),
            State::Exited => Err(StartError::Ended),
        }
    }

    pub(super) fn raise(&self, vector: u8) {
        self.pending[usize::from(vector / 64)].fetch_or(1 << (vector % 64), Ordering::SeqCst);
        self.kick();
    }

    pub(super) fn request_flush(&self) {
        self.flush.store(true, Ordering::SeqCst);
        self.kick();
    }

    fn any_pending(&self) -> bool {
        self.pending.iter().any(|w| w.load(Ordering::SeqCst) != 0)
    }

    fn highest_pending(&self) -> Option<u8> {
        (0..4).rev().find_map(|i| {
            let word = self.pending[i].load(Ordering::SeqCst);
            (word != 0).then(|| (i * 64 + 63 - word.leading_zeros() as usize) as u8)
        })
    }

    fn clear_pending(&self, vector: u8) {
        self.pending[usize::from(vector / 64)].fetch_and(!(1 << (vector % 64)), Ordering::SeqCst);
    }

    /// Makes the thread notice new work: wakes it if it waits, and interrupts
    /// `KVM_RUN` if it is in (or entering) it.
    pub(super) fn kick(&self) {
        self.kicks.fetch_add(1, Ordering::SeqCst);
        {
            let thread = lock(&self.thread);
            if let (Some(t), true) = (*thread, self.in_run.load(Ordering::SeqCst)) {
                // SAFETY: `t` is a live thread: the vCPU thread clears this slot
                // (under this lock) before it finishes, and the handle is joined only
                // after that. The signal's handler is installed before any vCPU runs.
                unsafe { libc::pthread_kill(t, kick_signal()) };
            }
        }
        // Taking the state lock orders this notification after a waiter's check.
        drop(lock(&self.state));
        self.wake.notify_all();
    }
}

fn kick_signal() -> libc::c_int {
    vmm_sys_util::signal::SIGRTMIN()
}

thread_local! {
    /// This thread's `kvm_run`, for the kick signal handler.
    static KVM_RUN: Cell<*mut kvm_run> = const { Cell::new(null_mut()) };
}

extern "C" fn on_kick(_: libc::c_int, _: *mut libc::siginfo_t, _: *mut libc::c_void) {
    let run = KVM_RUN.with(Cell::get);
    if !run.is_null() {
        // SAFETY: the pointer is this thread's own mapped `kvm_run`, set while its
        // `VcpuFd` lives and cleared before it is dropped; the handler runs on this
        // thread, so nothing else writes the byte concurrently. A volatile write is
        // what KVM reads at the next `KVM_RUN`.
        unsafe { addr_of_mut!((*run).immediate_exit).write_volatile(1) };
    }
}

/// Installs the kick signal handler (once per process).
pub(super) fn install_kick_handler() -> Result<(), VmError> {
    static INSTALLED: OnceLock<Result<(), i32>> = OnceLock::new();
    let result = INSTALLED.get_or_init(|| {
        // SAFETY: a zeroed sigaction is a valid starting point; we set the handler,
        // flags and an empty mask before passing it to sigaction(2). The handler only
        // does an async-signal-safe volatile store.
        unsafe {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = on_kick as *const () as usize;
            action.sa_flags = libc::SA_SIGINFO | libc::SA_RESTART;
            libc::sigemptyset(&mut action.sa_mask);
            if libc::sigaction(kick_signal(), &action, null_mut()) != 0 {
                return Err(std::io::Error::last_os_error().raw_os_error().unwrap_or(0));
            }
        }
        Ok(())
    });
    result.map_err(|errno| VmError::Signal(std::io::Error::from_raw_os_error(errno)))
}

/// How the run loop ended.
enum LoopEnd {
    /// A device stopped the vCPU (Outcome::StopVcpu): park.
    Stopped,
    /// The VM has ended.
    Ended,
}

/// The body of vCPU thread `index`. With `sync_regs`, KVM copies the general and segment
/// registers into `kvm_run` on every exit (KVM_CAP_SYNC_REGS), which saves a `KVM_GET_REGS`
/// and a `KVM_GET_SREGS` (for the privilege level) per port exit.
pub(super) fn thread_main(
    ctl: VmCtl,
    bus: Arc<PortBus>,
    index: u32,
    mut fd: VcpuFd,
    sync_regs: bool,
) {
    let shared = &ctl.shared.vcpus[index as usize];
    // SAFETY: pthread_self has no preconditions.
    *lock(&shared.thread) = Some(unsafe { libc::pthread_self() });
    if sync_regs {
        fd.set_sync_valid_reg(SyncReg::Register);
        // The segment registers tell the privilege level of a port exit (the host must not
        // perform a call made outside ring 0). Having KVM copy them on each exit costs
        // nothing measurable here, unlike a KVM_GET_SREGS per exit (~7 us on PVM).
        fd.set_sync_valid_reg(SyncReg::SystemRegister);
    }
    // Threads inherit the creator's signal mask; the kick must get through. (Fails only
    // for an invalid signal number, which SIGRTMIN is not.)
    let _ = vmm_sys_util::signal::unblock_signal(kick_signal());
    let mut vcpu = Vcpu {
        ctl: ctl.clone(),
        bus,
        index,
        fd,
        sync_regs,
        stepping: false,
        window: false,
        window_stepping: false,
    };
    KVM_RUN.with(|p| p.set(vcpu.fd.get_kvm_run() as *mut kvm_run));

    let outcome = catch_unwind(AssertUnwindSafe(|| vcpu.thread_body()));
    if let Err(panic) = outcome {
        let message = panic
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "a non-string panic".into());
        ctl.end(VmEnd::Fault(FaultReport {
            vcpu: index,
            fault: Fault::HostPanic {
                vcpu: index,
                message,
            },
            regs: vcpu.snapshot(),
        }));
    }

    // Stop being a signal target before the VcpuFd (and its kvm_run) goes away.
    shared.in_run.store(false, Ordering::SeqCst);
    *lock(&shared.thread) = None;
    KVM_RUN.with(|p| p.set(null_mut()));
    *lock(&shared.state) = State::Exited;
}

struct Vcpu {
    ctl: VmCtl,
    bus: Arc<PortBus>,
    index: u32,
    fd: VcpuFd,
    sync_regs: bool,
    /// Single-stepping for the discovery trace (super::step).
    stepping: bool,
    /// A step window of the checking host is open ([`super::ExitWatcher::step_window_open`]).
    window: bool,
    /// Single-stepping is on in KVM for a step window.
    window_stepping: bool,
}

impl Vcpu {
    fn shared(&self) -> &VcpuShared {
        &self.ctl.shared.vcpus[self.index as usize]
    }

    fn thread_body(&mut self) {
        loop {
            let regs = match self.wait_for_start() {
                Ok(Some(regs)) => regs,
                Ok(None) => return,
                Err(fault) => {
                    self.fault(fault);
                    return;
                }
            };
            if let Err(fault) = self.apply_start(&regs) {
                self.fault(fault);
                return;
            }
            match self.run_loop() {
                LoopEnd::Ended => return,
                LoopEnd::Stopped => {
                    for w in &self.shared().pending {
                        w.store(0, Ordering::SeqCst);
                    }
                    *lock(&self.shared().state) = State::Parked;
                    self.ctl.vcpu_stopped(self.index);
                }
            }
        }
    }

    /// Parks until a start request arrives (`None`: the VM ended), joining a migration while
    /// parked.
    fn wait_for_start(&mut self) -> Result<Option<StartRegs>, Fault> {
        loop {
            {
                let shared = self.shared();
                let mut state = lock(&shared.state);
                loop {
                    if self.ctl.is_ended() {
                        return Ok(None);
                    }
                    if let State::Start(regs) = *state {
                        *state = State::Running;
                        return Ok(Some(regs));
                    }
                    if self.ctl.shared.migration.pending() {
                        break;
                    }
                    state = wait(&shared.wake, state);
                }
            }
            self.migration_point()?;
        }
    }

    /// Joins a pending migration (see [`super::migrate`]): afterwards this thread runs the
    /// new VM's vCPU, with this one's state.
    fn migration_point(&mut self) -> Result<(), Fault> {
        let Some(mut new) =
            super::migrate::migration_point(&self.ctl, self.index, &mut self.fd, self.sync_regs)?
        else {
            return Ok(());
        };
        // The kick handler runs on this thread, so once the pointer is replaced it never
        // touches the old `kvm_run` again.
        KVM_RUN.with(|p| p.set(new.get_kvm_run() as *mut kvm_run));
        drop(std::mem::replace(&mut self.fd, new));
        if self.sync_regs {
            self.fd.set_sync_valid_reg(SyncReg::Register);
            self.fd.set_sync_valid_reg(SyncReg::SystemRegister);
        }
        if self.stepping || self.window_stepping {
            super::step::set_stepping(&self.fd, true);
        }
        if let Some(stats) = self.ctl.shared.stats.get(self.index as usize) {
            *lock(stats) = super::stats::StatsFile::open(&self.fd);
        }
        Ok(())
    }

    /// The general registers after an exit.
    fn exit_regs(&self) -> Result<kvm_regs, Fault> {
        if self.sync_regs {
            Ok(self.fd.sync_regs().regs)
        } else {
            self.fd.get_regs().map_err(kvm_fault("KVM_GET_REGS"))
        }
    }

    /// Sets the general registers for the next `KVM_RUN`.
    fn set_exit_regs(&mut self, regs: &kvm_regs) -> Result<(), Fault> {
        if self.sync_regs {
            self.fd.sync_regs_mut().regs = *regs;
            self.fd.set_sync_dirty_reg(SyncReg::Register);
            Ok(())
        } else {
            self.fd.set_regs(regs).map_err(kvm_fault("KVM_SET_REGS"))
        }
    }

    fn apply_start(&mut self, start: &StartRegs) -> Result<(), Fault> {
        // Registers a port handler left for a stopped vCPU must not override these.
        self.fd.clear_sync_dirty_reg(SyncReg::Register);
        let mut sregs = self.fd.get_sregs().map_err(kvm_fault("KVM_GET_SREGS"))?;
        boot::long_mode_sregs(&mut sregs, start.cr3);
        self.fd
            .set_sregs(&sregs)
            .map_err(kvm_fault("KVM_SET_SREGS"))?;
        let regs = boot::entry_regs(start.rip, start.rsp, start.rdi, start.rsi, start.rdx);
        self.fd.set_regs(&regs).map_err(kvm_fault("KVM_SET_REGS"))?;
        // A vCPU started again after VCPU_STOP gets the entry state, not what it had
        // (PVABI-VCPU-016): x87/SSE, XCR0 and the system-call MSRs are reset too.
        self.fd
            .set_fpu(&boot::entry_fpu())
            .map_err(kvm_fault("KVM_SET_FPU"))?;
        if self.fd.get_xcrs().is_ok() {
            self.fd
                .set_xcrs(&boot::entry_xcrs())
                .map_err(kvm_fault("KVM_SET_XCRS"))?;
        }
        self.fd
            .set_msrs(&boot::entry_msrs())
            .map_err(kvm_fault("KVM_SET_MSRS"))?;
        let run = self.fd.get_kvm_run();
        run.request_interrupt_window = 0;
        run.ready_for_interrupt_injection = 0;
        run.if_flag = 0;
        // Without an in-kernel local APIC, KVM loads the TPR (cr8) from `kvm_run.cr8` at every
        // KVM_RUN, and that field holds what the vCPU had at its last exit: left alone, a
        // restarted vCPU would get its old TPR back over the sregs' 0 (PVABI-PLAT-007).
        run.cr8 = 0;
        // A step window never outlives the run of guest code it watched.
        self.window = false;
        self.sync_window_stepping();
        if self.index == 0 {
            self.stepping = super::step::start(&self.ctl, &self.fd);
        }
        Ok(())
    }

    /// Reads the registers for a fault report.
    fn snapshot(&self) -> Option<Box<GuestRegs>> {
        let r = self.fd.get_regs().ok()?;
        let s = self.fd.get_sregs().ok()?;
        Some(Box::new(GuestRegs {
            rip: r.rip,
            rsp: r.rsp,
            rflags: r.rflags,
            rax: r.rax,
            rbx: r.rbx,
            rcx: r.rcx,
            rdx: r.rdx,
            rsi: r.rsi,
            rdi: r.rdi,
            rbp: r.rbp,
            r8: r.r8,
            r9: r.r9,
            r10: r.r10,
            r11: r.r11,
            r12: r.r12,
            r13: r.r13,
            r14: r.r14,
            r15: r.r15,
            cs: s.cs.selector,
            ss: s.ss.selector,
            cr0: s.cr0,
            cr2: s.cr2,
            cr3: s.cr3,
            cr4: s.cr4,
            efer: s.efer,
        }))
    }

    /// Ends the VM with a fault report for this vCPU.
    fn fault(&self, fault: Fault) -> LoopEnd {
        let regs = self.snapshot();
        self.ctl.end(VmEnd::Fault(FaultReport {
            vcpu: self.index,
            fault,
            regs,
        }));
        LoopEnd::Ended
    }

    /// Injects the highest raised vector if the guest can take it now, otherwise asks
    /// KVM to exit when it can.
    fn prepare_injection(&mut self) -> Result<(), Fault> {
        let Some(vector) = self.shared().highest_pending() else {
            self.fd.get_kvm_run().request_interrupt_window = 0;
            return Ok(());
        };
        let run = self.fd.get_kvm_run();
        if run.ready_for_interrupt_injection != 0 && run.if_flag != 0 {
            let irq = kvm_interrupt {
                irq: u32::from(vector),
            };
            // SAFETY: KVM_INTERRUPT reads a `kvm_interrupt` from the pointer, which is
            // a live local of exactly that type; the fd is a vCPU fd.
            let ret = unsafe { ioctl_with_ref(&self.fd, KVM_INTERRUPT(), &irq) };
            if ret == 0 {
                self.shared().clear_pending(vector);
            } else {
                let err = std::io::Error::last_os_error();
                // EEXIST: a vector is still queued in KVM; try again at the next window.
                if err.raw_os_error() != Some(libc::EEXIST) {
                    return Err(Fault::Kvm {
                        op: "KVM_INTERRUPT",
                        errno: format!("{err} (vector {vector:#x})"),
                    });
                }
            }
        }
        let more = self.shared().any_pending();
        self.fd.get_kvm_run().request_interrupt_window = u8::from(more);
        Ok(())
    }

    /// Flushes this vCPU's TLB. KVM resets the MMU and flushes the guest TLB on
    /// `KVM_SET_SREGS` only when CR0, CR3, CR4 or EFER change, so this sets the state
    /// twice: once with CR4.PGE toggled (a flush of every translation, global ones
    /// included, as on hardware) and once as it was.
    fn flush_tlb(&mut self) -> Result<(), Fault> {
        const CR4_PGE: u64 = 1 << 7;
        let sregs = self.fd.get_sregs().map_err(kvm_fault("KVM_GET_SREGS"))?;
        let mut toggled = sregs;
        toggled.cr4 ^= CR4_PGE;
        self.fd
            .set_sregs(&toggled)
            .and_then(|()| self.fd.set_sregs(&sregs))
            .map_err(kvm_fault("KVM_SET_SREGS"))
    }

    fn run_loop(&mut self) -> LoopEnd {
        loop {
            if self.ctl.is_ended() {
                return LoopEnd::Ended;
            }
            if let Err(fault) = self.migration_point() {
                return self.fault(fault);
            }
            self.fd.set_kvm_immediate_exit(0);
            let kicks = self.shared().kicks.load(Ordering::SeqCst);
            if self.shared().flush.swap(false, Ordering::SeqCst) {
                if let Err(fault) = self.flush_tlb() {
                    return self.fault(fault);
                }
            }
            if let Err(fault) = self.prepare_injection() {
                return self.fault(fault);
            }
            // Held back while the memory slots change (watched pages): a vCPU must not run
            // while part of its RAM is missing from them.
            self.ctl.shared.gate.enter();
            // Pairs with `kick`: either the kicker sees `in_run` and signals, or we see
            // its increment here and go round again.
            self.shared().in_run.store(true, Ordering::SeqCst);
            if self.shared().kicks.load(Ordering::SeqCst) != kicks {
                self.shared().in_run.store(false, Ordering::SeqCst);
                self.ctl.shared.gate.leave();
                continue;
            }
            let exit = self.fd.run();
            // Field-disjoint from `self.fd`, which `exit` borrows.
            let shared = &self.ctl.shared.vcpus[self.index as usize];
            shared.in_run.store(false, Ordering::SeqCst);
            self.ctl.shared.gate.leave();
            shared.exits.fetch_add(1, Ordering::Relaxed);
            if let (Some(watcher), true) = (self.ctl.exit_watcher(), self.sync_regs) {
                if exit.is_ok() {
                    watcher.exit(self.index, synced_exit_state());
                }
            }
            // A step window ends at any exit other than one of its steps, before the exit is
            // handled (so the call a port write makes has not run when the checker looks).
            let single_step = matches!(exit, Ok(VcpuExit::Debug(_)));
            let port_write = matches!(exit, Ok(VcpuExit::IoOut(..)));
            // An access to a watched page is served here and the instruction goes on: it
            // leaves a step window open.
            let mmio = matches!(exit, Ok(VcpuExit::MmioRead(..) | VcpuExit::MmioWrite(..)));
            if self.window && !single_step && !mmio {
                self.window = false;
                if let Some(watcher) = self.ctl.exit_watcher() {
                    watcher.step_window_close(self.index);
                }
            }
            let step = match exit {
                Ok(VcpuExit::Debug(_)) if self.stepping => {
                    self.stepping = super::step::on_step(&self.ctl, &self.fd);
                    Ok(Outcome::Resume)
                }
                Ok(VcpuExit::Debug(_)) if self.window => {
                    self.window = self
                        .ctl
                        .exit_watcher()
                        .is_some_and(|w| w.step_window_step(self.index));
                    if self.window {
                        super::step::window_state(&self.ctl, &self.fd, self.index, self.sync_regs);
                    }
                    Ok(Outcome::Resume)
                }
                Ok(VcpuExit::IoOut(port, data)) => {
                    let mut small = [0u8; 8];
                    let data_copy;
                    let data: &[u8] = if data.len() <= small.len() {
                        small[..data.len()].copy_from_slice(data);
                        &small[..data.len()]
                    } else {
                        data_copy = data.to_vec();
                        &data_copy
                    };
                    if std::mem::take(&mut self.stepping) {
                        super::step::stop(&self.ctl, &self.fd);
                    }
                    self.port_out_elements(port, data)
                }
                Ok(VcpuExit::IoIn(port, data)) => {
                    // `data` borrows the vCPU file, so the level comes from `kvm_run` directly.
                    let (cpl, long_mode) = if self.sync_regs {
                        synced_mode()
                    } else {
                        UNKNOWN_MODE
                    };
                    let access = PortAccess {
                        vcpu: self.index,
                        cpl,
                        long_mode,
                        port,
                        string_element: false,
                    };
                    Ok(self.bus.read(&access, data))
                }
                Ok(VcpuExit::Hlt) => self.halt().map(|()| Outcome::Resume),
                Ok(VcpuExit::IrqWindowOpen) | Ok(VcpuExit::Intr) => Ok(Outcome::Resume),
                Ok(VcpuExit::Shutdown) => Err(Fault::TripleFault),
                Ok(VcpuExit::InternalError) => Err(self.internal_error()),
                Ok(VcpuExit::FailEntry(reason, cpu)) => Err(Fault::FailEntry { reason, cpu }),
                // Inside guest RAM only a watched page exits (super::watch): served from RAM.
                Ok(VcpuExit::MmioRead(addr, data)) => {
                    if self.ctl.serve_mmio(self.index, addr, data, false) {
                        Ok(Outcome::Resume)
                    } else {
                        Err(Fault::Mmio { addr, write: false })
                    }
                }
                Ok(VcpuExit::MmioWrite(addr, data)) => {
                    let mut small = [0u8; 8];
                    let n = data.len().min(small.len());
                    small[..n].copy_from_slice(&data[..n]);
                    if n == data.len()
                        && self.ctl.serve_mmio(self.index, addr, &mut small[..n], true)
                    {
                        Ok(Outcome::Resume)
                    } else {
                        Err(Fault::Mmio { addr, write: true })
                    }
                }
                Ok(VcpuExit::SystemEvent(kind, _)) => match kind {
                    kvm_bindings::KVM_SYSTEM_EVENT_SHUTDOWN => Ok(Outcome::End(End::Shutdown(0))),
                    kvm_bindings::KVM_SYSTEM_EVENT_RESET => Ok(Outcome::End(End::Reboot)),
                    kvm_bindings::KVM_SYSTEM_EVENT_CRASH => Ok(Outcome::End(End::Crash(
                        "KVM reported a guest crash".into(),
                    ))),
                    other => Err(Fault::SystemEvent(other)),
                },
                Ok(other) => Err(Fault::UnexpectedExit(format!("{other:?}"))),
                Err(e) if e.errno() == libc::EINTR || e.errno() == libc::EAGAIN => {
                    Ok(Outcome::Resume)
                }
                Err(e) => Err(kvm_fault("KVM_RUN")(e)),
            };
            match step {
                Ok(Outcome::Resume) => {
                    if port_write {
                        self.maybe_open_window();
                    }
                    self.sync_window_stepping();
                }
                Ok(Outcome::StopVcpu) => return LoopEnd::Stopped,
                Ok(Outcome::End(end)) => {
                    self.ctl.end(end.into());
                    return LoopEnd::Ended;
                }
                Err(fault) => return self.fault(fault),
            }
        }
    }

    /// After a port write that resumes the vCPU: opens a step window if the checking host
    /// wants one (never during the discovery trace). Interrupts are not held back for long:
    /// raising one kicks the vCPU, which is an exit that closes the window, and the checker's
    /// budget bounds all windows of a run.
    ///
    /// Only after a write made at CPL0: on PVM, stepping turned on while the vCPU is at CPL3
    /// sets TF in its own RFLAGS, so each of its CPL3 instructions raises a `#DB` in the guest
    /// (measured: a guest without a `#DB` handler triple-faults). Turned on at CPL0, stepping
    /// stops at CPL0 instructions only, and a return to CPL3 runs there without steps.
    fn maybe_open_window(&mut self) {
        if self.window || self.stepping {
            return;
        }
        // The mode is read only for a checking host (an ioctl without sync regs).
        if let Some(watcher) = self.ctl.exit_watcher() {
            if exit_mode(&self.fd, self.sync_regs).0 == 0 {
                self.window = watcher.step_window_open(self.index);
                if self.window {
                    super::step::window_state(&self.ctl, &self.fd, self.index, self.sync_regs);
                }
            }
        }
    }

    /// Makes KVM's single-stepping for step windows match [`Self::window`]. A window that
    /// cannot step (KVM refuses) is closed at once.
    fn sync_window_stepping(&mut self) {
        if self.window == self.window_stepping {
            return;
        }
        let ok = super::step::set_stepping(&self.fd, self.window);
        if self.window && !ok {
            self.window = false;
            if let Some(watcher) = self.ctl.exit_watcher() {
                watcher.step_window_close(self.index);
            }
            return;
        }
        self.window_stepping = self.window;
    }

    /// An `out` or a string `outs`: a string output of several elements is that many
    /// writes of one element each, as on hardware, so that a device judges the width of
    /// each access by its element size (PVABI-CONV-031: `rep outsb` of 4 bytes to the
    /// doorbell is four 1-byte writes, none of which is a call). Stops at the first write
    /// that does not resume the vCPU.
    ///
    /// Each write says whether it is an element of a string output
    /// ([`PortAccess::string_element`]): when the exit carries several elements, and (only
    /// with an exit watcher, i.e. for the checking host) when it is an element of a
    /// `rep outs` (see [`Self::rep_outs_element`]).
    fn port_out_elements(&mut self, port: u16, data: &[u8]) -> Result<Outcome, Fault> {
        // SAFETY: on a KVM_EXIT_IO exit the `io` member of the exit union is the active one.
        let size = usize::from(unsafe { self.fd.get_kvm_run().__bindgen_anon_1.io.size });
        if size == 0 || data.len() <= size {
            let string_element = self.ctl.exit_watcher().is_some() && self.rep_outs_element();
            return self.port_out(port, data, string_element);
        }
        for element in data.chunks(size) {
            let outcome = self.port_out(port, element, true)?;
            if outcome != Outcome::Resume {
                return Ok(outcome);
            }
        }
        Ok(Outcome::Resume)
    }

    /// Whether the one-element `out` exit being handled is an element of a `rep outs`. KVM
    /// runs every string I/O instruction in its instruction emulator (and, on PVM, all CPL0
    /// code), one element per exit (`count` 1), and sets RFLAGS.RF while it executes a
    /// `rep`-prefixed string instruction; RIP stays on the instruction at each element's
    /// exit, the last one included (measured here at CPL0 and CPL3: a `rep outsd` of two
    /// elements is two exits, each with RF 1 and RIP on the `rep outsd`; `out` and `outs`
    /// without `rep` exit with RF 0, RIP past them). RF alone could also be the guest's own
    /// (an `iretq` with RF set onto an `out` that the processor, not the emulator, runs, whose
    /// exit leaves RIP on the `out`), so the instruction at RIP must be a `rep outs` too.
    fn rep_outs_element(&self) -> bool {
        const RFLAGS_RF: u64 = 1 << 16;
        let Ok(regs) = self.exit_regs() else {
            return false;
        };
        if regs.rflags & RFLAGS_RF == 0 {
            return false;
        }
        // The bytes at RIP, as far as they are mapped: a `rep outs` shows in its first few.
        let (bytes, read) = super::step::code_at(&self.ctl, &self.fd, regs.rip);
        pvabi_dispatch::x86::special(&bytes[..read]) == Some(pvabi_dispatch::x86::Special::RepOuts)
    }

    /// An `out`: the exit's registers become the one [`CallRegs`], the bus answers in it,
    /// and what changed goes back to the vCPU.
    fn port_out(&mut self, port: u16, data: &[u8], string_element: bool) -> Result<Outcome, Fault> {
        let (cpl, long_mode) = exit_mode(&self.fd, self.sync_regs);
        let access = PortAccess {
            vcpu: self.index,
            cpl,
            long_mode,
            port,
            string_element,
        };
        let mut regs = self.exit_regs()?;
        let before = CallRegs {
            rax: regs.rax,
            rdi: regs.rdi,
            rsi: regs.rsi,
            r8: regs.r8,
            r9: regs.r9,
            r10: regs.r10,
            r11: regs.r11,
        };
        let mut call = before;
        let outcome = self.bus.write(&access, data, &mut call);
        if call != before {
            regs.rax = call.rax;
            regs.rdi = call.rdi;
            regs.rsi = call.rsi;
            regs.r8 = call.r8;
            regs.r9 = call.r9;
            regs.r10 = call.r10;
            regs.r11 = call.r11;
            self.set_exit_regs(&regs)?;
        }
        Ok(outcome)
    }

    /// `HLT`: with IF=1 wait for an interrupt (or the end); with IF=0 the vCPU is stuck.
    fn halt(&mut self) -> Result<(), Fault> {
        let regs = self.exit_regs()?;
        if regs.rflags & RFLAGS_IF == 0 {
            return Err(Fault::HaltWithInterruptsOff);
        }
        // A vector handed to KVM_INTERRUPT but not yet delivered keeps
        // ready_for_interrupt_injection at 0: resume and let KVM deliver it.
        if self.fd.get_kvm_run().ready_for_interrupt_injection == 0 {
            return Ok(());
        }
        loop {
            {
                let shared = self.shared();
                let mut state = lock(&shared.state);
                let migrating = || self.ctl.shared.migration.pending();
                while !shared.any_pending() && !self.ctl.is_ended() && !migrating() {
                    state = wait(&shared.wake, state);
                }
                if !migrating() {
                    return Ok(());
                }
            }
            // Still halted once the VM has migrated.
            self.migration_point()?;
        }
    }

    fn internal_error(&mut self) -> Fault {
        let run = self.fd.get_kvm_run();
        // SAFETY: the exit reason is KVM_EXIT_INTERNAL_ERROR, so `internal` is the
        // active member of the union.
        let internal = unsafe { run.__bindgen_anon_1.internal };
        let n = (internal.ndata as usize).min(internal.data.len());
        let data: Vec<String> = internal.data[..n]
            .iter()
            .map(|d| format!("{d:#x}"))
            .collect();
        Fault::InternalError {
            suberror: internal.suberror,
            data: data.join(", "),
        }
    }
}

/// EFER.LMA: long mode is active.
const EFER_LMA: u64 = 1 << 10;

/// The mode of an exit whose registers could not be read: ring 3, not 64-bit (never more
/// privilege than known).
const UNKNOWN_MODE: (u8, bool) = (3, false);

/// The mode of the vCPU at the exit being handled: its privilege level (SS.DPL, which is the
/// CPL in 64-bit mode) and whether it ran 64-bit code (EFER.LMA and CS.L) rather than
/// compatibility mode. From the registers KVM synced into `kvm_run`, or one `KVM_GET_SREGS`.
fn exit_mode(fd: &VcpuFd, sync_regs: bool) -> (u8, bool) {
    let mode = |s: &kvm_bindings::kvm_sregs| (s.ss.dpl, s.efer & EFER_LMA != 0 && s.cs.l != 0);
    if sync_regs {
        mode(&fd.sync_regs().sregs)
    } else {
        fd.get_sregs().map_or(UNKNOWN_MODE, |s| mode(&s))
    }
}

/// [`exit_mode`] from this thread's `kvm_run` as KVM synced it on the current exit
/// (KVM_CAP_SYNC_REGS), for exits whose data borrows the vCPU file (`in`).
fn synced_mode() -> (u8, bool) {
    let run = KVM_RUN.with(Cell::get);
    if run.is_null() {
        return UNKNOWN_MODE;
    }
    // SAFETY: `run` is this thread's mapped `kvm_run` (set while its `VcpuFd` lives); KVM
    // wrote the synced registers before returning from KVM_RUN and does not touch them until
    // the next one. The reads go through raw pointers to single fields, disjoint from the I/O
    // data the exit's slice borrows, so no reference to the whole struct is created.
    unsafe {
        let sregs = addr_of!((*run).s.regs.sregs);
        let dpl = addr_of!((*sregs).ss.dpl).read_volatile();
        let efer = addr_of!((*sregs).efer).read_volatile();
        let l = addr_of!((*sregs).cs.l).read_volatile();
        (dpl, efer & EFER_LMA != 0 && l != 0)
    }
}

/// The state of the vCPU at the exit being handled, for the exit watcher: its interrupt state
/// (RFLAGS.IF and the IDTR) and its paging state (CR3, CR4, EFER), from this thread's
/// `kvm_run` as KVM synced it (KVM_CAP_SYNC_REGS).
fn synced_exit_state() -> pvabi_dispatch::ExitState {
    let run = KVM_RUN.with(Cell::get);
    if run.is_null() {
        return pvabi_dispatch::ExitState {
            interrupt_flag: false,
            idt_base: 0,
            idt_limit: 0,
            cr3: 0,
            cr4: 0,
            efer: 0,
        };
    }
    // SAFETY: as in `synced_mode`: this thread's mapped `kvm_run`, whose synced registers
    // KVM wrote before returning from KVM_RUN; raw-pointer reads of single fields, disjoint
    // from the exit's I/O data.
    unsafe {
        let synced = addr_of!((*run).s.regs);
        let rflags = addr_of!((*synced).regs.rflags).read_volatile();
        let sregs = addr_of!((*synced).sregs);
        pvabi_dispatch::ExitState {
            interrupt_flag: rflags & RFLAGS_IF != 0,
            idt_base: addr_of!((*sregs).idt.base).read_volatile(),
            idt_limit: addr_of!((*sregs).idt.limit).read_volatile(),
            cr3: addr_of!((*sregs).cr3).read_volatile(),
            cr4: addr_of!((*sregs).cr4).read_volatile(),
            efer: addr_of!((*sregs).efer).read_volatile(),
        }
    }
}

/// A failed vCPU ioctl as a [`Fault`].
fn kvm_fault(op: &'static str) -> impl FnOnce(kvm_ioctls::Error) -> Fault {
    move |e| Fault::Kvm {
        op,
        errno: e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering;

    use super::super::testing::kvm_or_skip;
    use super::super::{FlushTarget, Vm, VmConfig, VmCtl};

    fn marked(ctl: &VmCtl) -> Vec<bool> {
        ctl.shared
            .vcpus
            .iter()
            .map(|v| v.flush.load(Ordering::SeqCst))
            .collect()
    }

    /// PVABI-MEM-016 in the reference host: a flush of every vCPU marks each of them, those
    /// parked (never started, or stopped) included, and a thread flushes a marked vCPU (the
    /// CR4.PGE toggle of `flush_tlb`) at the top of its run loop, before it next enters
    /// `KVM_RUN`; a flush of one vCPU marks that one only. (The dispatcher's half, that
    /// MEM_FLUSH_TLB_ALL asks the machine for every vCPU, is its own test.)
    #[test]
    fn a_flush_of_every_vcpu_marks_the_parked_ones_too() {
        if !kvm_or_skip("a_flush_of_every_vcpu_marks_the_parked_ones_too") {
            return;
        }
        let config = VmConfig {
            vcpus: 3,
            ..VmConfig::default()
        };
        let vm = Vm::new(&config, pvabi_guest_images::smoke()).expect("a VM of the smoke guest");
        let ctl = vm.ctl();
        assert_eq!(marked(&ctl), [false; 3]);
        ctl.flush_tlb(FlushTarget::Vcpu(2));
        assert_eq!(marked(&ctl), [false, false, true]);
        ctl.flush_tlb(FlushTarget::All);
        assert_eq!(
            marked(&ctl),
            [true; 3],
            "a parked vCPU was left out of the flush"
        );
    }
}
