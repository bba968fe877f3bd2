//! Errors of the VM layer, and why a running vCPU could not go on. Each message says what
//! went wrong; where the fix is a setting, the message names the setting (the command line
//! maps settings to its flags).

use std::time::Duration;

use thiserror::Error;

/// Why a VM could not be created or run.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum VmError {
    /// `/dev/kvm` does not exist.
    #[error(
        "/dev/kvm not found: this machine has no KVM; load kvm_intel/kvm_amd (modprobe) \
         or run on a host with virtualization enabled"
    )]
    KvmMissing,
    /// `/dev/kvm` exists but may not be opened.
    #[error(
        "/dev/kvm: permission denied: add your user to the kvm group \
         (`sudo usermod -aG kvm $USER`, then log in again) or run as root"
    )]
    KvmPermission,
    /// Opening `/dev/kvm` failed for another reason.
    #[error("cannot open /dev/kvm: {0}; check that the KVM module is loaded and working (dmesg)")]
    KvmOpen(#[source] kvm_ioctls::Error),
    /// The kernel's KVM speaks another API version.
    #[error(
        "KVM API version {found} is not supported (this host needs version 12, the stable \
         API of every Linux since 2.6.22); use a standard Linux kernel"
    )]
    KvmApiVersion {
        /// The version the kernel reported.
        found: i32,
    },
    /// A KVM ioctl failed while the VM was being set up.
    #[error("{op} failed: {source}; the kernel's KVM refused the VM setup (see dmesg)")]
    Kvm {
        /// The operation, e.g. `KVM_CREATE_VM`.
        op: &'static str,
        /// The error the ioctl returned.
        #[source]
        source: kvm_ioctls::Error,
    },
    /// The guest memory size cannot work.
    #[error(
        "guest memory must be a multiple of 4 KiB between 4 MiB and {max_gib} GiB, not \
         {bytes} bytes (VmConfig::mem_bytes)"
    )]
    MemorySize {
        /// The size asked for.
        bytes: u64,
        /// The largest size the boot page tables can map, in GiB.
        max_gib: u64,
    },
    /// The vCPU count cannot work on this host.
    #[error("{requested} vCPUs requested; this host supports 1 to {max} (VmConfig::vcpus)")]
    VcpuCount {
        /// The count asked for.
        requested: u32,
        /// The most this host (KVM and the VM layer) supports.
        max: u32,
    },
    /// The CPUID table (KVM's leaves plus the configured ones) is larger than KVM accepts.
    #[error(
        "the CPUID table has {entries} entries, more than KVM accepts; too many extra CPUID \
         leaves are configured"
    )]
    CpuidTooLarge {
        /// The number of entries.
        entries: usize,
    },
    /// The guest image is not a loadable ELF executable.
    #[error(
        "the guest image is not a loadable x86-64 ELF executable: {0}; build it as a static, \
         non-PIE x86-64 executable linked at 0x200000 (guest-ref/bare/rt/link.ld)"
    )]
    BadElf(String),
    /// The guest image does not fit into guest RAM.
    #[error(
        "the image needs {need_mib} MiB of guest memory but the VM has {have_mib} MiB; \
         give the VM at least {need_mib} MiB"
    )]
    ImageTooLarge {
        /// Guest RAM the image needs (its end address, rounded up), in MiB.
        need_mib: u64,
        /// Guest RAM configured, in MiB.
        have_mib: u64,
    },
    /// Guest RAM could not be allocated.
    #[error("cannot allocate {mib} MiB of guest memory: {source}; use less guest memory or free host memory")]
    Memory {
        /// The amount requested, in MiB.
        mib: u64,
        /// What the allocation reported.
        #[source]
        source: vm_memory::mmap::FromRangesError,
    },
    /// Writing the boot structures or the image into guest memory failed.
    #[error("cannot write {what} into guest memory: {detail}; this is a bug in the VM layer's memory layout")]
    GuestWrite {
        /// What was being written.
        what: &'static str,
        /// The underlying error, as text.
        detail: String,
    },
    /// The ELF loader refused the image.
    #[error(
        "cannot load the guest image: {0}; check that it is a static x86-64 executable \
         linked at 0x200000"
    )]
    Load(#[source] linux_loader::loader::Error),
    /// A vCPU thread could not be started.
    #[error(
        "cannot start a vCPU thread: {0}; the host is out of threads or memory (use fewer vCPUs)"
    )]
    Thread(#[source] std::io::Error),
    /// The signal that kicks vCPUs out of `KVM_RUN` could not be installed.
    #[error(
        "cannot install the vCPU kick signal handler: {0}; another part of this process \
         owns SIGRTMIN, which the VM layer needs"
    )]
    Signal(#[source] std::io::Error),
    /// An event file descriptor (for an ioeventfd) could not be created.
    #[error(
        "cannot create an eventfd: {0}; the process is out of file descriptors (raise \
         `ulimit -n`)"
    )]
    EventFd(#[source] std::io::Error),
    /// A range to watch ([`VmCtl::watch_pages`](super::VmCtl::watch_pages)) is not whole
    /// pages inside guest RAM.
    #[error(
        "cannot watch {pages} page(s) at {gpa:#x}: give a page-aligned address and at least \
         one page, all inside guest RAM"
    )]
    WatchRange {
        /// The start asked for.
        gpa: u64,
        /// The pages asked for.
        pages: u64,
    },
    /// More pages to watch than the layer allows at once.
    #[error("cannot watch more than {max} pages at once; unwatch some first")]
    TooManyWatched {
        /// [`MAX_WATCHED_PAGES`](super::MAX_WATCHED_PAGES).
        max: usize,
    },
    /// KVM refused a change of the memory slots for watched pages.
    #[error("{op} failed while changing the memory slots for watched pages: {source}")]
    WatchSlots {
        /// The ioctl.
        op: &'static str,
        /// What it returned.
        #[source]
        source: kvm_ioctls::Error,
    },
}

/// Why a vCPU could not go on: the VM ends with a [`FaultReport`](super::FaultReport)
/// holding one of these.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum Fault {
    /// `KVM_EXIT_SHUTDOWN`.
    #[error(
        "triple fault (KVM_EXIT_SHUTDOWN): the guest took an exception it could not handle \
         (no usable IDT or a fault in its handler)"
    )]
    TripleFault,
    /// `KVM_EXIT_INTERNAL_ERROR`.
    #[error("KVM_EXIT_INTERNAL_ERROR suberror {suberror}{}, data [{data}]", internal_error_hint(*.suberror))]
    InternalError {
        /// KVM's suberror code.
        suberror: u32,
        /// KVM's data words, in hex.
        data: String,
    },
    /// `KVM_EXIT_FAIL_ENTRY`.
    #[error(
        "KVM_EXIT_FAIL_ENTRY: hardware refused to enter the guest (reason {reason:#x}, host \
         cpu {cpu}): invalid guest state"
    )]
    FailEntry {
        /// The hardware's entry failure reason.
        reason: u64,
        /// The host CPU.
        cpu: u32,
    },
    /// An MMIO access to an address without RAM or a device.
    #[error(
        "MMIO {} {addr:#x}: no RAM or device at that guest-physical address",
        if *.write { "write to" } else { "read of" }
    )]
    Mmio {
        /// The guest-physical address.
        addr: u64,
        /// A write (else a read).
        write: bool,
    },
    /// A KVM system event the layer does not know.
    #[error("unexpected KVM system event {0}")]
    SystemEvent(u32),
    /// Any other exit the layer does not handle.
    #[error("unexpected VM exit {0}")]
    UnexpectedExit(String),
    /// A vCPU ioctl failed while the VM ran.
    #[error("{op} failed: {errno}")]
    Kvm {
        /// The ioctl, e.g. `KVM_RUN`.
        op: &'static str,
        /// What it returned.
        errno: String,
    },
    /// `HLT` with interrupts disabled: nothing can wake the vCPU.
    #[error("stuck: HLT with interrupts disabled (IF=0), nothing can wake this vCPU")]
    HaltWithInterruptsOff,
    /// The last running vCPU stopped.
    #[error(
        "all vCPUs stopped: vCPU {0} was the last one running and it stopped with no other \
         vCPU running or starting"
    )]
    AllStopped(u32),
    /// A host callback panicked on a vCPU thread.
    #[error("the host panicked on vCPU {vcpu}'s thread: {message}")]
    HostPanic {
        /// The vCPU whose thread it was.
        vcpu: u32,
        /// The panic message.
        message: String,
    },
    /// The VM ran past its time limit.
    #[error(
        "timeout: the guest was still running after {:.1} s (the run's time limit); it may \
         be stuck in a loop or waiting for an event that never came",
        .0.as_secs_f64()
    )]
    Timeout(Duration),
    /// A vCPU thread could not be started.
    #[error("could not start the thread of vCPU {vcpu}: {error}")]
    Thread {
        /// The vCPU.
        vcpu: u32,
        /// What the OS said.
        error: String,
    },
    /// Ended by the embedding program for its own reason (a test's watchdog, a supervisor).
    #[error("{0}")]
    Host(String),
}

fn internal_error_hint(suberror: u32) -> &'static str {
    match suberror {
        1 => {
            " (emulation failure: on PVM, ring-0 code is emulated and SSE/AVX instructions are \
             not supported; build the guest with -Ctarget-feature=-sse,-sse2)"
        }
        2 => " (simultaneous exceptions)",
        3 => " (delivery event)",
        _ => "",
    }
}
