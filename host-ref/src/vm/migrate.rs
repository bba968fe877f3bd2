//! Migration of a running VM to a new KVM VM, within this process, over the same guest RAM.
//!
//! [`VmCtl::request_migration`] asks for one (the reference host does when a test guest asks,
//! [`pvabi_dispatch::host_event`]). Every vCPU thread then stops at its next *migration point*
//! (before `KVM_RUN`, while it halts, while it is parked), lets KVM complete its last port or
//! MMIO exit (which KVM finishes only inside the next `KVM_RUN`: `immediate_exit`), saves its
//! vCPU's state from KVM (general, segment and control registers, x87/SSE and the XSAVE area,
//! XCR0, every MSR KVM lists and can read, pending exceptions and interrupts, the MP state,
//! the debug registers, and the TPR kept in `kvm_run`), and waits. The time-stamp counter is
//! saved but not written back: each vCPU read it at its own moment before the rendezvous. The last to arrive
//! builds the new VM: a new `KVM_CREATE_VM`, guest RAM registered in it at the same addresses
//! (the same mapping: no copy; the memory slots of the layout, so watched pages stay out of
//! them, and the old VM's dirty log kept first), new vCPUs with the CPUID they had, the ioeventfds bound again,
//! the TSC link read again. It replaces the old VM, whose file is closed once its vCPUs are.
//! Each thread restores its state into its new vCPU and drops the old one; the last to finish
//! calls the hook set with [`VmCtl::on_migrated`] (the reference host: the dispatcher brings
//! the time page up to date and writes the channel's DONE line) and only then do the vCPUs
//! run guest code again.
//!
//! The dispatcher is not rebuilt: it is the same object, with all its state (the negotiated
//! version and features, host-owned pages, queues, timers), serving the new VM's vCPUs, as a
//! migration target must (PVABI-VER-013).
//!
//! A vCPU thread that does not reach a migration point within [`RENDEZVOUS_TIMEOUT`] (one
//! blocked in a host call, such as a VCPU_HALT without a timeout) abandons the migration: the
//! vCPUs go on in the old VM and the hook is not called, so the request is not reported done.
//!
//! Measured on this project's PVM host: the TSC cannot be moved (`KVM_SET_MSRS` of
//! `IA32_TSC` and `KVM_SET_DEVICE_ATTR` of `KVM_VCPU_TSC_OFFSET` are accepted and change
//! nothing; `KVM_SET_TSC_KHZ` fails with EINVAL; `tsc_probe.rs`), so the new VM's counters are
//! the old ones and the TSC link stays (offset 0).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use kvm_bindings::{
    kvm_debugregs, kvm_fpu, kvm_mp_state, kvm_msr_entry, kvm_regs, kvm_sregs, kvm_vcpu_events,
    kvm_xcrs, kvm_xsave, Msrs,
};
use kvm_ioctls::{IoEventAddress, Kvm, NoDatamatch, VcpuFd, VmFd};
use pvabi_dispatch::sync::{lock, read_lock, write_lock};
use vmm_sys_util::eventfd::EventFd;

use super::{tsc, Fault, VmCtl};

/// IA32_TSC.
const MSR_IA32_TSC: u32 = 0x10;
/// IA32_TSC_ADJUST.
const MSR_IA32_TSC_ADJUST: u32 = 0x3b;

/// How long the vCPUs wait for each other at a migration's rendezvous before they give it up.
pub const RENDEZVOUS_TIMEOUT: Duration = Duration::from_secs(5);

/// The rendezvous of the vCPU threads for a migration (one per VM).
pub(super) struct Migration {
    /// A migration was asked for and is not done: threads stop at their next migration point.
    pending: AtomicBool,
    /// Migrations completed.
    done: AtomicU64,
    phase: Mutex<Phase>,
    cv: Condvar,
    vcpus: u32,
}

#[derive(Default)]
struct Phase {
    /// The vCPU that asked (the hook is told).
    requester: u32,
    /// Threads at the rendezvous with their state saved.
    arrived: u32,
    /// The new vCPU files, once the new VM is built; each thread takes its own.
    fds: Vec<Option<VcpuFd>>,
    /// Threads whose state is in their new vCPU.
    restored: u32,
    /// Bumped when a migration ends, done or abandoned: the threads that wait go on.
    round: u64,
    /// Why the last migration was abandoned (for diagnostics).
    failed: Option<String>,
}

impl Migration {
    pub(super) fn new(vcpus: u32) -> Self {
        Migration {
            pending: AtomicBool::new(false),
            done: AtomicU64::new(0),
            phase: Mutex::new(Phase::default()),
            cv: Condvar::new(),
            vcpus,
        }
    }

    /// Whether the vCPU threads are to stop at their next migration point.
    pub(super) fn pending(&self) -> bool {
        self.pending.load(Ordering::Acquire)
    }

    /// Ends the round (done or abandoned): resets the rendezvous and lets every thread go.
    fn finish(&self, phase: &mut Phase, failed: Option<String>) {
        if failed.is_none() {
            self.done.fetch_add(1, Ordering::Relaxed);
        }
        *phase = Phase {
            round: phase.round + 1,
            failed,
            ..Phase::default()
        };
        self.pending.store(false, Ordering::Release);
        self.cv.notify_all();
    }
}

impl VmCtl {
    /// Asks for a migration of the VM to a new KVM VM (see the module documentation), which
    /// every vCPU joins at its next migration point, `vcpu` (the asking vCPU, told to the
    /// [`on_migrated`](Self::on_migrated) hook) before it runs guest code again. False if the
    /// VM has ended or a migration is already under way.
    pub fn request_migration(&self, vcpu: u32) -> bool {
        let m = &self.shared.migration;
        if self.is_ended() {
            return false;
        }
        {
            let mut phase = lock(&m.phase);
            if m.pending.swap(true, Ordering::AcqRel) {
                return false;
            }
            phase.requester = vcpu;
        }
        for v in &self.shared.vcpus {
            v.kick();
        }
        true
    }

    /// Sets the hook called once a migration is done, with the asking vCPU, while every vCPU
    /// is still paused. At most one hook: false if one was set before.
    pub fn on_migrated(&self, hook: Arc<dyn Fn(u32) + Send + Sync>) -> bool {
        self.shared.on_migrated.set(hook).is_ok()
    }

    /// Migrations completed so far.
    pub fn migrations(&self) -> u64 {
        self.shared.migration.done.load(Ordering::Relaxed)
    }

    /// Why the last migration was abandoned, if it was.
    pub fn migration_failure(&self) -> Option<String> {
        lock(&self.shared.migration.phase).failed.clone()
    }
}

/// Binds writes to `port` (of `datamatch` only, if given) to `fd` in `vm`.
pub(super) fn bind_ioevent(
    vm: &VmFd,
    fd: &EventFd,
    port: u16,
    datamatch: Option<u32>,
) -> Result<(), kvm_ioctls::Error> {
    let addr = IoEventAddress::Pio(u64::from(port));
    match datamatch {
        Some(value) => vm.register_ioevent(fd, &addr, value),
        None => vm.register_ioevent(fd, &addr, NoDatamatch),
    }
}

/// Lets KVM finish the vCPU's last port or MMIO exit without running guest code: KVM moves
/// RIP past the instruction and puts an `in`'s or an MMIO read's data into its register only
/// inside the next `KVM_RUN`, in state no ioctl reads, so a vCPU saved before that would run
/// the instruction again in the new VM. `KVM_RUN` with `immediate_exit` set completes the exit
/// and returns EINTR at once (KVM's API documentation, `immediate_exit`: "to complete
/// pending operations ... before saving state"). A vCPU with no pending exit returns EINTR
/// all the same.
fn complete_pending_exit(fd: &mut VcpuFd) -> Result<(), Fault> {
    fd.set_kvm_immediate_exit(1);
    let result = match fd.run() {
        Err(e) if e.errno() == libc::EINTR => Ok(()),
        Err(e) => Err(Fault::Kvm {
            op: "KVM_RUN (immediate exit, before a migration)",
            errno: e.to_string(),
        }),
        Ok(exit) => Err(Fault::Kvm {
            op: "KVM_RUN (immediate exit, before a migration)",
            errno: format!("an exit instead of EINTR: {exit:?}"),
        }),
    };
    fd.set_kvm_immediate_exit(0);
    result
}

/// One vCPU's state, as KVM holds it.
struct VcpuState {
    regs: kvm_regs,
    sregs: kvm_sregs,
    fpu: kvm_fpu,
    xsave: Option<kvm_xsave>,
    xcrs: Option<kvm_xcrs>,
    msrs: Vec<kvm_msr_entry>,
    events: kvm_vcpu_events,
    mp_state: kvm_mp_state,
    debugregs: kvm_debugregs,
    /// `kvm_run.cr8`: without an in-kernel APIC, KVM loads the TPR from it at each `KVM_RUN`.
    cr8: u64,
}

fn kvm_fault(op: &'static str) -> impl FnOnce(kvm_ioctls::Error) -> Fault {
    move |e| Fault::Kvm {
        op,
        errno: e.to_string(),
    }
}

/// The MSRs KVM lists that this vCPU can read, with their values.
fn read_msrs(fd: &VcpuFd) -> Result<Vec<kvm_msr_entry>, Fault> {
    let kvm = Kvm::new().map_err(kvm_fault("open /dev/kvm"))?;
    let list = kvm
        .get_msr_index_list()
        .map_err(kvm_fault("KVM_GET_MSR_INDEX_LIST"))?;
    let mut out = Vec::new();
    // One at a time: KVM_GET_MSRS stops at the first MSR it cannot read.
    for &index in list.as_slice() {
        let mut one = Msrs::from_entries(&[kvm_msr_entry {
            index,
            ..Default::default()
        }])
        .map_err(|e| Fault::Kvm {
            op: "KVM_GET_MSRS",
            errno: format!("{e:?}"),
        })?;
        if fd.get_msrs(&mut one).is_ok_and(|n| n == 1) {
            out.push(one.as_slice()[0]);
        }
    }
    Ok(out)
}

impl VcpuState {
    /// Reads the state of `fd`; with `sync_regs`, general registers a port handler left in
    /// `kvm_run` for the next `KVM_RUN` are taken from there (KVM has not loaded them yet).
    fn save(fd: &mut VcpuFd, sync_regs: bool) -> Result<Self, Fault> {
        let dirty = sync_regs
            && fd.get_kvm_run().kvm_dirty_regs & u64::from(kvm_bindings::KVM_SYNC_X86_REGS) != 0;
        let regs = if dirty {
            fd.sync_regs().regs
        } else {
            fd.get_regs().map_err(kvm_fault("KVM_GET_REGS"))?
        };
        Ok(VcpuState {
            regs,
            sregs: fd.get_sregs().map_err(kvm_fault("KVM_GET_SREGS"))?,
            fpu: fd.get_fpu().map_err(kvm_fault("KVM_GET_FPU"))?,
            xsave: fd.get_xsave().ok(),
            xcrs: fd.get_xcrs().ok(),
            msrs: read_msrs(fd)?,
            events: fd
                .get_vcpu_events()
                .map_err(kvm_fault("KVM_GET_VCPU_EVENTS"))?,
            mp_state: fd.get_mp_state().map_err(kvm_fault("KVM_GET_MP_STATE"))?,
            debugregs: fd
                .get_debug_regs()
                .map_err(kvm_fault("KVM_GET_DEBUGREGS"))?,
            cr8: fd.get_kvm_run().cr8,
        })
    }

    /// Writes the state into a new vCPU (CPUID already set), in the order KVM needs: the
    /// MSRs before the control registers that depend on them, the events and the MP state
    /// last.
    fn restore(&self, fd: &mut VcpuFd) -> Result<(), Fault> {
        // Only the MSRs whose value differs from the new vCPU's (KVM refuses writes of some
        // of its own MSRs, such as MSR_KVM_ASYNC_PF_INT, even of the value they hold).
        let fresh = read_msrs(fd)?;
        for m in &self.msrs {
            if fresh.iter().any(|f| f.index == m.index && f.data == m.data) {
                continue;
            }
            // Not the time-stamp counter (IA32_TSC, IA32_TSC_ADJUST): each vCPU read it at
            // its own moment before the rendezvous, so writing it back would set every
            // counter back by its wait and out of step with the others. The new VM's
            // counters are what they are; the host brings the time page up to date for them
            // (PVABI-TIME-010).
            if matches!(m.index, MSR_IA32_TSC | MSR_IA32_TSC_ADJUST) {
                continue;
            }
            let one = Msrs::from_entries(&[*m]).map_err(|e| Fault::Kvm {
                op: "KVM_SET_MSRS",
                errno: format!("{e:?}"),
            })?;
            if fd.set_msrs(&one).map_err(kvm_fault("KVM_SET_MSRS"))? != 1 {
                return Err(Fault::Kvm {
                    op: "KVM_SET_MSRS",
                    errno: format!("MSR {:#x} = {:#x} was refused", m.index, m.data),
                });
            }
        }
        fd.set_sregs(&self.sregs)
            .map_err(kvm_fault("KVM_SET_SREGS"))?;
        fd.set_regs(&self.regs).map_err(kvm_fault("KVM_SET_REGS"))?;
        fd.set_fpu(&self.fpu).map_err(kvm_fault("KVM_SET_FPU"))?;
        if let Some(xsave) = &self.xsave {
            // SAFETY: `xsave` was read by KVM_GET_XSAVE from a vCPU with the same CPUID, so
            // its size is the one this vCPU's KVM_SET_XSAVE expects.
            unsafe { fd.set_xsave(xsave) }.map_err(kvm_fault("KVM_SET_XSAVE"))?;
        }
        if let Some(xcrs) = &self.xcrs {
            fd.set_xcrs(xcrs).map_err(kvm_fault("KVM_SET_XCRS"))?;
        }
        fd.set_debug_regs(&self.debugregs)
            .map_err(kvm_fault("KVM_SET_DEBUGREGS"))?;
        fd.set_vcpu_events(&self.events)
            .map_err(kvm_fault("KVM_SET_VCPU_EVENTS"))?;
        fd.set_mp_state(self.mp_state)
            .map_err(kvm_fault("KVM_SET_MP_STATE"))?;
        let run = fd.get_kvm_run();
        run.cr8 = self.cr8;
        run.request_interrupt_window = 0;
        Ok(())
    }
}

/// Builds the new VM (see the module documentation) and puts it in place of the old one;
/// returns its vCPUs, in index order.
fn build(ctl: &VmCtl) -> Result<Vec<VcpuFd>, String> {
    let shared = &ctl.shared;
    let kvm = Kvm::new().map_err(|e| format!("open /dev/kvm: {e}"))?;
    let vm = kvm.create_vm().map_err(|e| format!("KVM_CREATE_VM: {e}"))?;
    // The slots the old VM has, watched pages left out (held under the layout's lock, which
    // every slot change takes first).
    let mut layout = lock(&shared.layout);
    if shared.log_guest_writes {
        // The guest's writes so far, before the old VM's log goes with it.
        layout.keep_dirty_log(&read_lock(&shared.vm));
    }
    layout
        .register_in(&vm, shared.log_guest_writes)
        .map_err(|e| e.to_string())?;
    let mut fds = Vec::with_capacity(shared.cpuids.len());
    for (i, leaves) in shared.cpuids.iter().enumerate() {
        let fd = vm
            .create_vcpu(i as u64)
            .map_err(|e| format!("KVM_CREATE_VCPU: {e}"))?;
        fd.set_cpuid2(leaves)
            .map_err(|e| format!("KVM_SET_CPUID2: {e}"))?;
        fds.push(fd);
    }
    {
        let ioevents = lock(&shared.ioevents);
        for (fd, port, datamatch) in ioevents.iter() {
            bind_ioevent(&vm, fd, *port, *datamatch).map_err(|e| format!("KVM_IOEVENTFD: {e}"))?;
        }
        *write_lock(&shared.vm) = vm;
    }
    Ok(fds)
}

/// A vCPU thread's migration point, with its vCPU file `fd`: if a migration is pending,
/// saves the vCPU's state, waits for the others, restores the state into the new VM's vCPU
/// and returns it (the thread then uses it instead of `fd`, which it drops). `Ok(None)`: no
/// migration, or one given up (the thread goes on with `fd`).
pub(super) fn migration_point(
    ctl: &VmCtl,
    index: u32,
    fd: &mut VcpuFd,
    sync_regs: bool,
) -> Result<Option<VcpuFd>, Fault> {
    let m = &ctl.shared.migration;
    if !m.pending() {
        return Ok(None);
    }
    complete_pending_exit(fd)?;
    let state = VcpuState::save(fd, sync_regs)?;
    let deadline = Instant::now() + RENDEZVOUS_TIMEOUT;
    let mut phase = lock(&m.phase);
    if !m.pending() {
        return Ok(None);
    }
    let round = phase.round;
    phase.arrived += 1;
    if phase.arrived == m.vcpus {
        match build(ctl) {
            Ok(fds) => {
                phase.fds = fds.into_iter().map(Some).collect();
                m.cv.notify_all();
            }
            Err(why) => {
                m.finish(&mut phase, Some(why));
                return Ok(None);
            }
        }
    }
    // Wait for the new VM.
    while phase.fds.is_empty() && phase.round == round {
        if ctl.is_ended() || Instant::now() >= deadline {
            let why = format!(
                "{} of {} vCPUs reached the rendezvous",
                phase.arrived, m.vcpus
            );
            m.finish(&mut phase, Some(why));
            return Ok(None);
        }
        phase =
            m.cv.wait_timeout(phase, Duration::from_millis(50))
                .unwrap_or_else(|e| e.into_inner())
                .0;
    }
    if phase.round != round {
        return Ok(None);
    }
    let Some(mut new) = phase.fds.get_mut(index as usize).and_then(Option::take) else {
        return Err(Fault::Kvm {
            op: "migration",
            errno: format!("no new vCPU {index}"),
        });
    };
    drop(phase);
    let restored = state.restore(&mut new);
    tsc_relink(ctl, index, &new);
    let mut phase = lock(&m.phase);
    phase.restored += 1;
    if phase.restored == m.vcpus {
        // Every vCPU is in the new VM and none runs: the host brings what the guest sees of
        // the machine up to date (the time page) before any of them runs guest code again.
        if let Some(hook) = ctl.shared.on_migrated.get() {
            hook(phase.requester);
        }
        m.finish(&mut phase, None);
    } else {
        while phase.round == round && !ctl.is_ended() {
            phase =
                m.cv.wait_timeout(phase, Duration::from_millis(50))
                    .unwrap_or_else(|e| e.into_inner())
                    .0;
        }
    }
    drop(phase);
    restored.map(|()| Some(new))
}

/// After vCPU 0 is in the new VM: reads the TSC link again (rate and offset of the new VM's
/// vCPU 0 and its `IA32_TSC`), since a migration target's counters need not be the source's.
fn tsc_relink(ctl: &VmCtl, index: u32, fd: &VcpuFd) {
    if index == 0 {
        *write_lock(&ctl.shared.tsc) = tsc::link(std::slice::from_ref(fd));
    }
}
