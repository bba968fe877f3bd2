//! Booting a guest image under the reference host: the one function behind `pvabi run`
//! and the end-to-end tests.
//!
//! [`run`] creates a VM ([`vm::Vm`]) for an ELF image, plugs the pvabi dispatcher into it
//! ([`PvabiHost`]), runs it until the guest ends it (or a fault, or the optional
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
//! let config = RunConfig {
//!     host: HostConfig { console: ConsoleSink::Discard, ..HostConfig::default() },
//!     ..RunConfig::default()
//! };
//! let outcome = runner::run(runner::demo_guest(), config).expect("the VM ran");
//! println!("{} after {:?}", outcome.end, outcome.wall);
//! ```
//!
//! The built-in guests (`guest-ref/bare`, built by this crate's build script) are embedded:
//! [`demo_guest`], [`smoke_guest`], [`probe_guest`], [`bench_guest`], [`matrix_guest`],
//! or by name with [`builtin_guest`].

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::dispatch::{ConfigError, ConsoleSink, HostConfig, PvabiHost, Report};
use crate::vm::{self, CallRegs, FaultReport, Next, VmConfig, VmCtl, VmEnd, VmError, VmHost};

/// The demo guest (`guest-ref/bare/demo`): exercises every pvabi 1.0 call family.
pub fn demo_guest() -> &'static [u8] {
    include_bytes!(env!("PVABI_GUEST_DEMO"))
}

/// The VM layer's bring-up guest (`guest-ref/bare/smoke`; raw test protocol, not pvabi).
pub fn smoke_guest() -> &'static [u8] {
    include_bytes!(env!("PVABI_GUEST_SMOKE"))
}

/// The probe guest (`guest-ref/bare/probe`).
pub fn probe_guest() -> &'static [u8] {
    include_bytes!(env!("PVABI_GUEST_PROBE"))
}

/// The benchmark guest (`guest-ref/bare/bench`).
pub fn bench_guest() -> &'static [u8] {
    include_bytes!(env!("PVABI_GUEST_BENCH"))
}

/// The cross-version matrix guest (`guest-ref/bare/matrix`).
pub fn matrix_guest() -> &'static [u8] {
    include_bytes!(env!("PVABI_GUEST_MATRIX"))
}

/// A function that returns an embedded guest image.
pub type GuestImage = fn() -> &'static [u8];

/// The built-in guests by name.
pub const BUILTIN_GUESTS: &[(&str, GuestImage)] = &[
    ("demo", demo_guest),
    ("smoke", smoke_guest),
    ("probe", probe_guest),
    ("bench", bench_guest),
    ("matrix", matrix_guest),
];

/// A built-in guest image by name (see [`BUILTIN_GUESTS`]).
pub fn builtin_guest(name: &str) -> Option<&'static [u8]> {
    BUILTIN_GUESTS
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, image)| image())
}

/// What to run a guest with.
#[derive(Clone, Debug)]
pub struct RunConfig {
    /// What the host serves. Its `vcpus` is set to [`vm`](Self::vm)`.vcpus`; its console
    /// sink still receives the output (the runner captures a copy).
    pub host: HostConfig,
    /// Size and shape of the VM.
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
    /// `out` to the ring-notify port.
    pub ring_notify: u64,
    /// `out` to any other port.
    pub other_out: u64,
    /// `in` from any port.
    pub port_in: u64,
}

impl ExitCounts {
    /// Every port exit.
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
    #[error("{0}; this is a bug in the caller's HostConfig")]
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
    run_wrapped(image, config, |pvabi| pvabi)
}

/// A host that answers `in`s from one extra port with the given values, in order (the last
/// one repeats, 0 when none were given), and forwards everything else to the pvabi host
/// it wraps: how a test hands a guest its scenario or parameters. Use it with
/// [`run_wrapped`].
pub struct PortFeed {
    inner: Arc<dyn VmHost>,
    port: u16,
    values: Mutex<std::collections::VecDeque<u32>>,
}

impl PortFeed {
    /// A host that feeds `values` to `in`s from `port` and forwards the rest to `inner`.
    pub fn new(inner: Arc<dyn VmHost>, port: u16, values: impl IntoIterator<Item = u32>) -> Self {
        PortFeed {
            inner,
            port,
            values: Mutex::new(values.into_iter().collect()),
        }
    }
}

impl VmHost for PortFeed {
    fn cpuid_leaves(&self) -> Vec<(u32, u32, [u32; 4])> {
        self.inner.cpuid_leaves()
    }

    fn port_out(
        &self,
        vcpu: u32,
        port: u16,
        data: &[u8],
        regs: &mut CallRegs,
        ctl: &VmCtl,
    ) -> Next {
        self.inner.port_out(vcpu, port, data, regs, ctl)
    }

    fn port_in(&self, vcpu: u32, port: u16, data: &mut [u8], ctl: &VmCtl) -> Next {
        if port != self.port {
            return self.inner.port_in(vcpu, port, data, ctl);
        }
        let value = {
            let mut values = self.values.lock().unwrap_or_else(|e| e.into_inner());
            match values.len() {
                0 => 0,
                1 => values[0],
                _ => values.pop_front().unwrap_or(0),
            }
        };
        let n = data.len().min(4);
        data[..n].copy_from_slice(&value.to_le_bytes()[..n]);
        Next::Resume
    }

    fn vcpu_started(&self, vcpu: u32, ctl: &VmCtl) {
        self.inner.vcpu_started(vcpu, ctl);
    }

    fn vm_ending(&self, how: &VmEnd, ctl: &VmCtl) {
        self.inner.vm_ending(how, ctl);
    }
}

/// [`run`] with the pvabi host wrapped by `wrap`, for hosts that add ports of their own
/// (test scenarios, devices) around the pvabi ones. The wrapper must forward every port
/// it does not handle, and [`VmHost::vcpu_started`] and [`VmHost::vm_ending`], to the
/// pvabi host it is given.
pub fn run_wrapped(
    image: &[u8],
    config: RunConfig,
    wrap: impl FnOnce(Arc<dyn VmHost>) -> Arc<dyn VmHost>,
) -> Result<RunOutcome, RunError> {
    let RunConfig {
        host: mut host_config,
        vm: vm_config,
        timeout,
    } = config;
    if vm_config.vcpus == 0 || vm_config.vcpus > vm::MAX_VCPUS {
        // Checked here so that the message is about the VM, not the host configuration.
        return Err(VmError::Config(format!(
            "{} vCPUs requested; a VM has 1 to {} vCPUs; pass --vcpus N within that range",
            vm_config.vcpus,
            vm::MAX_VCPUS
        ))
        .into());
    }
    host_config.vcpus = vm_config.vcpus;
    let captured = Arc::new(Mutex::new(Vec::new()));
    host_config.console = capture(host_config.console, captured.clone());
    let doorbell = host_config.doorbell_port;
    let ring_notify = host_config.ring_notify_port;
    let pvabi = Arc::new(PvabiHost::new(host_config)?);
    let counting = Arc::new(Counting {
        inner: wrap(pvabi.clone()),
        doorbell,
        ring_notify,
        counts: Default::default(),
    });

    let started = Instant::now();
    let vm = vm::Vm::new(&vm_config, image, counting.clone())?;
    let watchdog = timeout.map(|limit| Watchdog::start(vm.ctl(), limit));
    let end = vm.run();
    if let Some(w) = watchdog {
        w.stop();
    }
    let end = end?;
    let wall = started.elapsed();
    let console = std::mem::take(&mut *captured.lock().unwrap_or_else(|e| e.into_inner()));
    Ok(RunOutcome {
        end,
        report: pvabi.report(),
        console,
        wall,
        exits: counting.counts.snapshot(),
    })
}

/// A sink that captures every byte into `buffer` and then hands it to `sink`.
fn capture(sink: ConsoleSink, buffer: Arc<Mutex<Vec<u8>>>) -> ConsoleSink {
    ConsoleSink::Custom(Arc::new(move |vcpu, bytes| {
        buffer
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend_from_slice(bytes);
        sink.emit(vcpu, bytes);
    }))
}

#[derive(Debug, Default)]
struct Counters {
    doorbell: AtomicU64,
    ring_notify: AtomicU64,
    other_out: AtomicU64,
    port_in: AtomicU64,
}

impl Counters {
    fn snapshot(&self) -> ExitCounts {
        ExitCounts {
            doorbell: self.doorbell.load(Ordering::Relaxed),
            ring_notify: self.ring_notify.load(Ordering::Relaxed),
            other_out: self.other_out.load(Ordering::Relaxed),
            port_in: self.port_in.load(Ordering::Relaxed),
        }
    }
}

/// Counts port exits on their way to the host.
struct Counting {
    inner: Arc<dyn VmHost>,
    doorbell: u16,
    ring_notify: u16,
    counts: Counters,
}

impl VmHost for Counting {
    fn cpuid_leaves(&self) -> Vec<(u32, u32, [u32; 4])> {
        self.inner.cpuid_leaves()
    }

    fn port_out(
        &self,
        vcpu: u32,
        port: u16,
        data: &[u8],
        regs: &mut CallRegs,
        ctl: &VmCtl,
    ) -> Next {
        let counter = if port == self.doorbell {
            &self.counts.doorbell
        } else if port == self.ring_notify {
            &self.counts.ring_notify
        } else {
            &self.counts.other_out
        };
        counter.fetch_add(1, Ordering::Relaxed);
        self.inner.port_out(vcpu, port, data, regs, ctl)
    }

    fn port_in(&self, vcpu: u32, port: u16, data: &mut [u8], ctl: &VmCtl) -> Next {
        self.counts.port_in.fetch_add(1, Ordering::Relaxed);
        self.inner.port_in(vcpu, port, data, ctl)
    }

    fn vcpu_started(&self, vcpu: u32, ctl: &VmCtl) {
        self.inner.vcpu_started(vcpu, ctl);
    }

    fn vm_ending(&self, how: &VmEnd, ctl: &VmCtl) {
        self.inner.vm_ending(how, ctl);
    }
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
    fn start(ctl: VmCtl, limit: Duration) -> Self {
        let (done, wait) = mpsc::channel::<()>();
        let thread = std::thread::spawn(move || {
            if let Err(mpsc::RecvTimeoutError::Timeout) = wait.recv_timeout(limit) {
                ctl.end(VmEnd::Fault(FaultReport {
                    vcpu: 0,
                    reason: format!(
                        "timeout: the guest was still running after {:.1} s (the time limit of \
                         the run: --timeout); it may be stuck in a loop or waiting for an event that \
                         never came",
                        limit.as_secs_f64()
                    ),
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
