//! Errors of the VM layer. Each message says what went wrong and what to do about it.

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
    /// The configuration cannot work; the message names the setting to change.
    #[error("invalid VM configuration: {0}")]
    Config(String),
    /// The guest image is not a loadable ELF executable.
    #[error(
        "the guest image is not a loadable x86-64 ELF executable: {0}; build it as a static, \
         non-PIE x86-64 executable linked at 0x200000 (guest-ref/bare/rt/link.ld)"
    )]
    BadElf(String),
    /// The guest image does not fit into guest RAM.
    #[error(
        "the image needs {need_mib} MiB of guest memory but the VM has {have_mib} MiB; \
         pass --mem {need_mib}M (or more)"
    )]
    ImageTooLarge {
        /// Guest RAM the image needs (its end address, rounded up), in MiB.
        need_mib: u64,
        /// Guest RAM configured, in MiB.
        have_mib: u64,
    },
    /// Guest RAM could not be allocated.
    #[error("cannot allocate {mib} MiB of guest memory: {source}; pass a smaller --mem or free host memory")]
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
        "cannot start a vCPU thread: {0}; the host is out of threads or memory (lower --vcpus)"
    )]
    Thread(#[source] std::io::Error),
    /// The signal that kicks vCPUs out of `KVM_RUN` could not be installed.
    #[error(
        "cannot install the vCPU kick signal handler: {0}; another part of this process \
         owns SIGRTMIN, which the VM layer needs"
    )]
    Signal(#[source] std::io::Error),
}
