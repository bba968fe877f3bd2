//! Booting a guest image under the reference host: the one function behind `pvabi run`
//! and the end-to-end tests.
//!
//! [`run`] creates a VM ([`vm::Vm`]) for an ELF image, then the pvabi dispatcher on its
//! control handle ([`PvabiPorts`] on a [`PortBus`]), runs it until the guest ends it (or a
//! fault, or the optional
//! [`RunConfig::timeout`]), and returns a [`RunOutcome`]: how the VM ended, what the host
//! recorded (the dispatcher's [`Report`]), every console byte the guest wrote, the wall
//! time, and how many port exits reached the host.
//!
//! Console output goes to the sink of [`RunConfig::host`] (`ConsoleSink::Stdout` by
//! default, as it arrives) and is captured in [`RunOutcome::console`] as well.
//!
//! ```no_run
//! use pvabi_host::dispatch::{ConsoleSink, HostConfig};
//! use pvabi_host::runner::{self, RunConfig};
//!
//! # fn image() -> Vec<u8> { std::fs::read("guest.elf").unwrap() }
//! let config = RunConfig {
//!     host: HostConfig { console: ConsoleSink::Discard, ..HostConfig::default() },
//!     ..RunConfig::default()
//! };
//! let outcome = runner::run(&image(), config).expect("the VM ran");
//! println!("{} after {:?}", outcome.end, outcome.wall);
//! ```
//!
//! [`run_with`] adds devices of the caller's own (test scenarios, parameters, a host that
//! answers one port differently) to the bus in front of the pvabi ports. The built-in
//! guests are in the `pvabi-guest-images` crate.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use pvabi_dispatch::sync::lock;
use pvabi_dispatch::{ConfigError, ConsoleSink, HostConfig, OnReboot, Report};

use crate::bus::PortBus;
use crate::machine::{KvmDispatcher, PvabiPorts, RingNotifyWorkers, ServedCounter};
use crate::vm::{self, Fault, FaultReport, VmConfig, VmCtl, VmEnd, VmError};

/// What to run a guest with.
#[derive(Clone, Debug)]
pub struct RunConfig {
    /// What the host serves. Its `vcpus` is set to [`vm`](Self::vm)`.vcpus`; its console
    /// sink still receives the output (the runner captures a copy).
    pub host: HostConfig,
    /// Size and shape of the VM (its `cpuid` is set from [`host`](Self::host)).
    pub vm: VmConfig,
    /// End the VM with a fault if it runs longer than this (`None`: no limit).
    pub timeout: Option<Duration>,
}

impl Default for RunConfig {
    /// The default host (console to stdout), a 1-vCPU 64 MiB VM, no time limit.
    fn default() -> Self {
        RunConfig {
            host: HostConfig::default(),
            vm: VmConfig::default(),
            timeout: None,
        }
    }
}

/// Port exits that reached the host (each one a VM exit handled in user space).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ExitCounts {
    /// `out` to the doorbell port: pvabi calls made directly.
    pub doorbell: u64,
    /// `out` to the ring-notify port that reached the VMM (writes of a vCPU's index are
    /// served inside the kernel instead: [`ring_notify_kernel`](Self::ring_notify_kernel)).
    pub ring_notify: u64,
    /// Writes to the ring-notify port that KVM served through an ioeventfd, without an exit
    /// to the VMM (not counted in [`total`](Self::total)).
    pub ring_notify_kernel: u64,
    /// `out` to any other port.
    pub other_out: u64,
    /// `in` from any port.
    pub port_in: u64,
}

impl ExitCounts {
    /// Every port exit to the VMM.
    pub fn total(&self) -> u64 {
        self.doorbell + self.ring_notify + self.other_out + self.port_in
    }
}

/// How a run went.
#[derive(Clone, Debug)]
pub struct RunOutcome {
    /// How the VM ended.
    pub end: VmEnd,
    /// What the host recorded (calls by status, events, PTE writes, ...).
    pub report: Report,
    /// Every console byte the guest wrote, in order.
    pub console: Vec<u8>,
    /// From creating the VM to its end.
    pub wall: Duration,
    /// The discovery trace of the first boot, when the host checks its guest
    /// (`HostConfig::check_guest`; [`vm::DiscoveryTrace`]).
    pub discovery: Option<vm::DiscoveryTrace>,
    /// Port exits that reached the host.
    pub exits: ExitCounts,
}

impl RunOutcome {
    /// The console output as (lossy) UTF-8.
    pub fn console_text(&self) -> String {
        String::from_utf8_lossy(&self.console).into_owned()
    }

    /// pvabi calls the host handled: direct ones and those inside batches, deferred queues
    /// and rings.
    pub fn calls(&self) -> u64 {
        self.report.calls.values().map(|c| c.total).sum()
    }
}

/// Why a guest could not be run (a guest that fails is a [`VmEnd`], not an error).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RunError {
    /// The image file could not be read.
    #[error(
        "cannot read the guest image {}: {source}; check the path (without an image, \
         `pvabi run` boots the built-in demo guest)",
        path.display()
    )]
    ReadImage {
        /// The path given.
        path: PathBuf,
        /// What reading it reported.
        #[source]
        source: std::io::Error,
    },
    /// The image file is not a guest the VM can load (or does not fit into its memory).
    #[error("{}: {source}", path.display())]
    BadImage {
        /// The path given.
        path: PathBuf,
        /// What the VM layer found wrong (its message says what to do).
        source: VmError,
    },
    /// The host configuration is incoherent.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The VM could not be created or run (no KVM, permission, memory, vCPUs, ...).
    #[error(transparent)]
    Vm(#[from] VmError),
}

/// Reads a guest image from a file.
pub fn read_image(path: &Path) -> Result<Vec<u8>, RunError> {
    std::fs::read(path).map_err(|source| RunError::ReadImage {
        path: path.to_path_buf(),
        source,
    })
}

/// Runs the image in the file at `path` (see [`run`]); errors about the image name the path.
pub fn run_file(path: &Path, config: RunConfig) -> Result<RunOutcome, RunError> {
    let image = read_image(path)?;
    run(&image, config).map_err(|e| match e {
        RunError::Vm(
            source @ (VmError::BadElf(_) | VmError::ImageTooLarge { .. } | VmError::Load(_)),
        ) => RunError::BadImage {
            path: path.to_path_buf(),
            source,
        },
        other => other,
    })
}

/// Boots `image` (a static x86-64 ELF linked at 0x200000) under the reference host and
/// runs it until it ends. Console output goes to `config.host.console` as it arrives and is
/// captured in the outcome.
pub fn run(image: &[u8], config: RunConfig) -> Result<RunOutcome, RunError> {
    run_with(image, config, |_, _| {})
}

/// [`run`] with devices of the caller's own: `add_devices` gets the bus (the pvabi ports
/// already attached) and the dispatcher, before the guest runs. Devices attached there come
/// in front of the pvabi ports; whatever they do not handle reaches them. It is called once
/// per boot: after a reset ([`OnReboot::Reset`]) the new boot has a new bus and a new
/// dispatcher, and gets its devices again.
pub fn run_with(
    image: &[u8],
    config: RunConfig,
    mut add_devices: impl FnMut(&mut PortBus, &Arc<KvmDispatcher>),
) -> Result<RunOutcome, RunError> {
    run_with_notify(image, config, |bus, dispatcher, _| {
        add_devices(bus, dispatcher)
    })
}

/// [`run_with`], whose callback also gets the counter of ring-notify writes served inside
/// the kernel (`None` when this KVM could not bind the port to ioeventfds: then every
/// write reaches the VMM, as [`ExitCounts::ring_notify`]).
///
/// With [`OnReboot::Reset`] in the host configuration, a SYSTEM_REBOOT resets the VM
/// ([`vm::Vm::after_reset`], [`PvabiPorts::after_reset`]) and the guest boots again, up to the
/// limit; the outcome then covers every boot (console, exits, wall time; the report is the
/// last boot's dispatcher's) and the timeout bounds them all together.
pub fn run_with_notify(
    image: &[u8],
    config: RunConfig,
    mut add_devices: impl FnMut(&mut PortBus, &Arc<KvmDispatcher>, Option<&ServedCounter>),
) -> Result<RunOutcome, RunError> {
    let RunConfig {
        host: mut host_config,
        vm: mut vm_config,
        timeout,
    } = config;
    host_config.vcpus = vm_config.vcpus;
    let captured = Arc::new(Mutex::new(Vec::new()));
    host_config.console = capture(host_config.console, captured.clone());
    let doorbell = host_config.doorbell_port;
    let ring_notify = host_config.ring_notify_port;
    let reset_limit = match host_config.on_reboot {
        OnReboot::Reset { limit } => limit,
        OnReboot::End => 0,
    };
    vm_config.cpuid = host_config.cpuid_leaves();
    // The checking host sees the guest's writes to its RAM (PVABI-MEM-006) and every exit's
    // interrupt and paging state (PVABI-PLAT-008, PVABI-MEM-022); other hosts pay for neither.
    let checking = host_config.check_guest;
    vm_config.log_guest_writes |= checking;
    // Its vCPU threads also look for a `rep outs` at every doorbell exit (PVABI-CONV-030).
    host_config.vmm_marks_string_outputs |= checking;

    // The VM, then its control handle, then the dispatcher on it, then the devices.
    let started = Instant::now();
    let mut vm = vm::Vm::new(&vm_config, image)?;
    // A checking host also single-steps the first boot's discovery (vm::DiscoveryTrace),
    // taken when that boot ends (no handle keeps the first VM alive after a reset).
    if checking {
        vm.ctl().trace_discovery();
    }
    let mut discovery = None;
    let mut pvabi = Arc::new(PvabiPorts::new(host_config, vm.ctl())?);
    let mut resets = 0;
    let mut exits = ExitCounts::default();
    loop {
        let ctl = vm.ctl();
        if checking {
            ctl.watch_exits(Arc::new(CheckExits(Arc::downgrade(pvabi.dispatcher()))));
        }
        // A migration a guest asked for (HostConfig::host_events) is reported to the
        // dispatcher while every vCPU is still paused.
        let weak = Arc::downgrade(pvabi.dispatcher());
        ctl.on_migrated(Arc::new(move |vcpu| {
            if let Some(d) = weak.upgrade() {
                d.host_event_performed(vcpu, pvabi_dispatch::HostEvent::Migrate);
            }
        }));
        let mut bus = PortBus::new();
        pvabi.attach_to(&mut bus);
        bus.watch(doorbell);
        bus.watch(ring_notify);
        // The ring-notify port inside the kernel; without ioeventfds, writes reach the bus.
        let workers = pvabi.bind_ring_notify(&ctl).ok();
        let served = workers.as_ref().map(RingNotifyWorkers::served_counter);
        add_devices(&mut bus, pvabi.dispatcher(), served.as_ref());
        let bus = Arc::new(bus);

        let watchdog = timeout.map(|limit| {
            let left = limit.saturating_sub(started.elapsed());
            Watchdog::start(ctl.clone(), left, limit)
        });
        let end = vm.run(bus.clone());
        if let Some(w) = watchdog {
            w.stop();
        }
        exits.ring_notify_kernel += workers.map_or(0, RingNotifyWorkers::stop);
        let end = end?;
        if resets == 0 {
            discovery = ctl.discovery_trace();
        }
        let (outs, ins) = bus.totals();
        let doorbell_outs = bus.counts(doorbell).map_or(0, |c| c.0);
        let notify_outs = bus.counts(ring_notify).map_or(0, |c| c.0);
        exits.doorbell += doorbell_outs;
        exits.ring_notify += notify_outs;
        exits.other_out += outs.saturating_sub(doorbell_outs + notify_outs);
        exits.port_in += ins;
        if end == VmEnd::Reboot && resets < reset_limit {
            // A reset (PVABI-SYS-003's first choice): the old dispatcher's threads stop
            // writing guest RAM before it is carried over, then a new VM and a new pvabi
            // state, monotonic time going on.
            resets += 1;
            pvabi.dispatcher().shutdown();
            let next = vm::Vm::after_reset(&vm_config, image, &ctl)?;
            pvabi = Arc::new(PvabiPorts::after_reset(pvabi.dispatcher(), next.ctl())?);
            vm = next;
            continue;
        }
        let wall = started.elapsed();
        let console = std::mem::take(&mut *lock(&captured));
        return Ok(RunOutcome {
            end,
            report: pvabi.dispatcher().report(),
            console,
            wall,
            exits,
            discovery,
        });
    }
}

/// The checking host's exit watcher: hands each exit's state and each access to a watched
/// page to the dispatcher, and runs its step windows (held weakly: the dispatcher's machine holds the VM, which holds its
/// watcher).
struct CheckExits(std::sync::Weak<KvmDispatcher>);

impl vm::ExitWatcher for CheckExits {
    fn exit(&self, vcpu: u32, state: pvabi_dispatch::ExitState) {
        if let Some(d) = self.0.upgrade() {
            d.check_exit(vcpu, state);
        }
    }

    fn step_window_open(&self, vcpu: u32) -> bool {
        self.0.upgrade().is_some_and(|d| d.step_window_open(vcpu))
    }

    fn step_window_step(&self, vcpu: u32) -> bool {
        self.0.upgrade().is_some_and(|d| d.step_window_step(vcpu))
    }

    fn step_window_close(&self, vcpu: u32) {
        if let Some(d) = self.0.upgrade() {
            d.step_window_close(vcpu);
        }
    }

    fn watched_access(&self, vcpu: u32, gpa: u64, data: &[u8], write: bool) {
        if let Some(d) = self.0.upgrade() {
            d.watched_access(vcpu, gpa, data, write);
        }
    }

    fn step_window_wants_state(&self, vcpu: u32) -> bool {
        self.0
            .upgrade()
            .is_some_and(|d| d.step_window_wants_state(vcpu))
    }

    fn step_window_state(&self, vcpu: u32, state: &pvabi_dispatch::guest_check::StepState) {
        if let Some(d) = self.0.upgrade() {
            d.step_window_state(vcpu, state);
        }
    }
}

/// A sink that captures every byte into `buffer` and then hands it to `sink`.
fn capture(sink: ConsoleSink, buffer: Arc<Mutex<Vec<u8>>>) -> ConsoleSink {
    ConsoleSink::Custom(Arc::new(move |vcpu, bytes| {
        lock(&buffer).extend_from_slice(bytes);
        sink.emit(vcpu, bytes);
    }))
}

/// Ends the VM with a fault when it runs longer than its limit.
struct Watchdog {
    done: mpsc::Sender<()>,
    thread: std::thread::JoinHandle<()>,
}

impl fmt::Debug for Watchdog {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Watchdog").finish_non_exhaustive()
    }
}

impl Watchdog {
    /// Ends the VM behind `ctl` after `wait`, reporting a time-out of `limit`.
    fn start(ctl: VmCtl, wait: Duration, limit: Duration) -> Self {
        let (done, waiter) = mpsc::channel::<()>();
        let thread = std::thread::spawn(move || {
            if let Err(mpsc::RecvTimeoutError::Timeout) = waiter.recv_timeout(wait) {
                ctl.end(VmEnd::Fault(FaultReport {
                    vcpu: 0,
                    fault: Fault::Timeout(limit),
                    regs: None,
                }));
            }
        });
        Watchdog { done, thread }
    }

    fn stop(self) {
        // The receiver may be gone (it timed out); either way the thread ends.
        let _ = self.done.send(());
        let _ = self.thread.join();
    }
}
