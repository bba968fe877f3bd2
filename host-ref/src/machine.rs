//! The pvabi dispatcher on a KVM VM: [`KvmMachine`] is its [`Machine`] over a [`VmCtl`],
//! [`PvabiPorts`] is the [`PortDevice`] that hands the doorbell and ring-notify ports to it,
//! and [`RingNotifyWorkers`] serve the ring-notify port inside the kernel.
//!
//! # The ring-notify port without an exit to the VMM
//!
//! [`PvabiPorts::bind_ring_notify`] binds, for every vCPU index `i`, 32-bit writes of `i` to
//! the ring-notify port to an ioeventfd: KVM signals an event file descriptor and resumes the
//! vCPU at once, without returning to this VMM (PVABI-RING-021 allows completing the write
//! before the ring is processed). A host worker thread per index waits on its descriptor
//! and calls the dispatcher's [`ring_notify`](Dispatcher::ring_notify): in doorbell mode it
//! processes the ring on the worker, in host-polled mode it wakes the poller. Writes of other
//! widths or values still reach the VMM and are answered as before (no effect,
//! PVABI-RING-022), so what a guest sees is unchanged except for the timing. Completion
//! events the worker posts are raised with [`VmCtl::raise_interrupt`] from the worker
//! thread (a kick and `KVM_INTERRUPT`; the vCPU thread is not otherwise involved).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use vmm_sys_util::eventfd::EventFd;

use pvabi_abi::status::Status;
use pvabi_abi::vcpu::VcpuStartState;
use pvabi_dispatch::{CallRegs, ConfigError, Dispatcher, GuestTsc, HostConfig, Machine, Outcome};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use crate::bus::{PortAccess, PortBus, PortDevice};
use crate::vm::{FlushTarget, StartError, VmCtl, VmError};

/// The dispatcher's [`Machine`] over a VM's [`VmCtl`].
#[derive(Clone, Debug)]
pub struct KvmMachine(VmCtl);

impl KvmMachine {
    /// The machine of the VM behind `ctl`.
    pub fn new(ctl: VmCtl) -> Self {
        KvmMachine(ctl)
    }

    /// The VM's control handle.
    pub fn ctl(&self) -> &VmCtl {
        &self.0
    }
}

impl Machine for KvmMachine {
    type Memory = GuestMemoryMmap;

    fn memory(&self) -> &GuestMemoryMmap {
        self.0.memory()
    }

    fn vcpu_count(&self) -> u32 {
        self.0.vcpu_count()
    }

    fn raise_interrupt(&self, vcpu: u32, vector: u8) {
        self.0.raise_interrupt(vcpu, vector);
    }

    fn start_vcpu(&self, vcpu: u32, s: &VcpuStartState) -> Result<(), Status> {
        self.0
            .start_vcpu(vcpu, s.rip, s.rsp, s.arg, s.cr3)
            .map_err(|e| match e {
                StartError::AlreadyRunning(_) | StartError::Ended => Status::InvalidState,
                StartError::NoSuchVcpu { .. } | StartError::BadCr3(_) => Status::InvalidParameter,
            })
    }

    fn flush_tlb(&self, target: Option<u32>) {
        self.0
            .flush_tlb(target.map_or(FlushTarget::All, FlushTarget::Vcpu));
    }

    fn guest_tsc(&self) -> Option<GuestTsc> {
        self.0.tsc().map(|l| GuestTsc {
            tsc: l.now(),
            hz: l.hz,
        })
    }

    fn release_pages(&self, gpas: &[u64]) {
        // Zeroing keeps this free of unsafe code; the pages are zeroed again on reclaim.
        let zero = [0u8; 4096];
        for &gpa in gpas {
            let _ = self.0.memory().write_slice(&zero, GuestAddress(gpa));
        }
    }

    fn guest_written_pages(&self, gpas: &[u64]) -> Option<Vec<u64>> {
        self.0.guest_written_pages(gpas)
    }

    /// A migration to a new KVM VM ([`VmCtl::request_migration`]); the runner's hook reports
    /// it done ([`VmCtl::on_migrated`]). A change of the TSC offset is never performed: on
    /// the project's PVM host KVM accepts one and the counters do not move (measured,
    /// `vm/tsc_probe.rs`), so the reference host cannot claim it.
    fn request_host_event(&self, vcpu: u32, event: pvabi_dispatch::HostEvent) -> bool {
        match event {
            pvabi_dispatch::HostEvent::Migrate => self.0.request_migration(vcpu),
            pvabi_dispatch::HostEvent::TscOffset => false,
        }
    }

    /// Watched pages ([`VmCtl::watch_pages`]); their accesses reach the dispatcher through
    /// the runner's exit watcher, which only a checking host installs.
    fn watch_pages(&self, gpa: u64, pages: u64) -> bool {
        self.0.exit_watcher_set() && self.0.watch_pages(gpa, pages).is_ok()
    }

    fn unwatch_pages(&self, gpa: u64, pages: u64) {
        let _ = self.0.unwatch_pages(gpa, pages);
    }
}

/// The reference host's dispatcher type.
pub type KvmDispatcher = Dispatcher<KvmMachine>;

/// The pvabi ports as a bus device: the doorbell and the ring-notify port, answered by the
/// dispatcher (which also enforces the doorbell's width and privilege rules).
#[derive(Debug)]
pub struct PvabiPorts {
    dispatcher: Arc<KvmDispatcher>,
}

impl PvabiPorts {
    /// A dispatcher serving `config` on the VM behind `ctl` (the one validation of the
    /// configuration), as a device.
    pub fn new(config: HostConfig, ctl: VmCtl) -> Result<Self, ConfigError> {
        let dispatcher = Dispatcher::new(config, Arc::new(KvmMachine::new(ctl)))?;
        Ok(PvabiPorts {
            dispatcher: Arc::new(dispatcher),
        })
    }

    /// The ports of the dispatcher of the next boot after a reset: `previous`'s configuration
    /// and monotonic time over the reset VM behind `ctl`, every other pvabi state fresh
    /// ([`Dispatcher::after_reset`]). Shut `previous` down first.
    pub fn after_reset(previous: &KvmDispatcher, ctl: VmCtl) -> Result<Self, ConfigError> {
        let dispatcher = previous.after_reset(Arc::new(KvmMachine::new(ctl)))?;
        Ok(PvabiPorts {
            dispatcher: Arc::new(dispatcher),
        })
    }

    /// The dispatcher.
    pub fn dispatcher(&self) -> &Arc<KvmDispatcher> {
        &self.dispatcher
    }

    /// Serves the ring-notify port inside the kernel (see the module docs): one ioeventfd
    /// per vCPU index, with a worker thread each. Stop them with
    /// [`RingNotifyWorkers::stop`] once the VM has ended.
    pub fn bind_ring_notify(&self, ctl: &VmCtl) -> Result<RingNotifyWorkers, VmError> {
        let port = self.dispatcher.config().ring_notify_port;
        // All or nothing: a write bound to a descriptor nobody serves would be lost.
        let unbind = |fds: &[EventFd]| {
            for (i, fd) in fds.iter().enumerate() {
                let _ = ctl.remove_ioeventfd(fd, port, Some(i as u32));
            }
        };
        let mut fds = Vec::new();
        for i in 0..ctl.vcpu_count() {
            match ctl.ioeventfd(port, Some(i)) {
                Ok(fd) => fds.push(fd),
                Err(e) => {
                    unbind(&fds);
                    return Err(e);
                }
            }
        }
        let shared = Arc::new(WorkerShared {
            stopping: AtomicBool::new(false),
            served: AtomicU64::new(0),
            fds,
        });
        let mut threads = Vec::new();
        for vcpu in 0..ctl.vcpu_count() {
            let (mine, dispatcher) = (shared.clone(), self.dispatcher.clone());
            let spawned = std::thread::Builder::new()
                .name(format!("pvabi-notify{vcpu}"))
                .spawn(move || notify_worker(&mine, &dispatcher, vcpu));
            match spawned {
                Ok(t) => threads.push(t),
                Err(e) => {
                    unbind(&shared.fds);
                    RingNotifyWorkers {
                        shared: shared.clone(),
                        threads,
                    }
                    .stop();
                    return Err(VmError::Thread(e));
                }
            }
        }
        Ok(RingNotifyWorkers { shared, threads })
    }

    /// Attaches this device to `bus` at the configured doorbell and ring-notify ports.
    pub fn attach_to(self: &Arc<Self>, bus: &mut PortBus) {
        let c = self.dispatcher.config();
        bus.attach(c.doorbell_port..=c.doorbell_port, self.clone());
        bus.attach(c.ring_notify_port..=c.ring_notify_port, self.clone());
    }
}

impl PortDevice for PvabiPorts {
    fn write(&self, access: &PortAccess, data: &[u8], regs: &mut CallRegs) -> Option<Outcome> {
        if access.string_element {
            self.dispatcher
                .string_element_port_out(access.caller(), access.port, data, regs)
        } else {
            self.dispatcher
                .port_out(access.caller(), access.port, data, regs)
        }
    }

    fn read(&self, access: &PortAccess, data: &mut [u8]) -> Option<Outcome> {
        self.dispatcher
            .port_in(access.port, data)
            .then_some(Outcome::Resume)
    }

    fn vm_ending(&self) {
        self.dispatcher.shutdown();
    }
}

struct WorkerShared {
    stopping: AtomicBool,
    /// Writes served so far (the eventfd counters' sum).
    served: AtomicU64,
    /// Per vCPU index, the ioeventfd of writes of that index.
    fds: Vec<EventFd>,
}

/// The worker threads behind the ring-notify port's ioeventfds
/// ([`PvabiPorts::bind_ring_notify`]).
pub struct RingNotifyWorkers {
    shared: Arc<WorkerShared>,
    threads: Vec<JoinHandle<()>>,
}

impl std::fmt::Debug for RingNotifyWorkers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RingNotifyWorkers")
            .field("vcpus", &self.shared.fds.len())
            .field("served", &self.served())
            .finish()
    }
}

impl RingNotifyWorkers {
    /// Writes to the ring-notify port KVM handed to the workers so far (each one a write
    /// that did not exit to the VMM).
    pub fn served(&self) -> u64 {
        self.shared.served.load(Ordering::SeqCst)
    }

    /// A handle that reads [`served`](Self::served) from elsewhere.
    pub fn served_counter(&self) -> ServedCounter {
        ServedCounter(self.shared.clone())
    }

    /// Stops and joins the workers (writes that arrive later are not served); returns the
    /// writes served.
    pub fn stop(self) -> u64 {
        self.shared.stopping.store(true, Ordering::SeqCst);
        for fd in &self.shared.fds {
            // Wakes the worker; it sees `stopping` first. (Fails only if the counter would
            // overflow, in which case the worker is awake anyway.)
            let _ = fd.write(1);
        }
        for t in self.threads {
            let _ = t.join();
        }
        self.shared.served.load(Ordering::SeqCst)
    }
}

/// Reads the number of ring-notify writes the workers served (see
/// [`RingNotifyWorkers::served`]), from any thread.
#[derive(Clone)]
pub struct ServedCounter(Arc<WorkerShared>);

impl std::fmt::Debug for ServedCounter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("ServedCounter").field(&self.get()).finish()
    }
}

impl ServedCounter {
    /// Writes served so far.
    pub fn get(&self) -> u64 {
        self.0.served.load(Ordering::SeqCst)
    }
}

/// Waits for `vcpu`'s descriptor to be signalled (a poll, as the descriptor is non-blocking)
/// and notifies the dispatcher once per wake-up, however many writes it coalesced: one pass
/// over the ring consumes every submission published before the writes (RING-007).
fn notify_worker(shared: &WorkerShared, dispatcher: &KvmDispatcher, vcpu: u32) {
    use std::os::fd::AsRawFd;
    let fd = &shared.fds[vcpu as usize];
    loop {
        let mut pfd = libc::pollfd {
            fd: fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: `pfd` is one live, initialised pollfd; poll(2) writes only its `revents`.
        let ret = unsafe { libc::poll(&mut pfd, 1, -1) };
        if shared.stopping.load(Ordering::SeqCst) {
            return;
        }
        if ret < 0 {
            continue; // EINTR
        }
        if let Ok(n) = fd.read() {
            shared.served.fetch_add(n, Ordering::SeqCst);
            dispatcher.ring_notify(vcpu);
        }
    }
}
