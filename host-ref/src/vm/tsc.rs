//! The guest's time-stamp counter as the host sees it: its rate (`KVM_GET_TSC_KHZ`) and its
//! offset from the host's own TSC (`KVM_GET_DEVICE_ATTR` of `KVM_VCPU_TSC_OFFSET`), both read
//! at VM creation and checked against `KVM_GET_MSRS` of `IA32_TSC`, so that the host can
//! compute every vCPU's TSC at any moment without stopping a vCPU: host `rdtsc` + offset.
//!
//! The link is used only if the host kernel itself keeps time with the TSC (its clocksource
//! is `tsc`: the counter is constant-rate and synchronised across CPUs), every vCPU has the
//! same rate and offset, and each `IA32_TSC` reading lies within the host TSC values read
//! just before and after it. The reference host never sets a TSC rate or offset, so the
//! guest's TSC runs at the host's rate.
//!
//! Measured on this project's PVM host: `KVM_GET_TSC_KHZ` 2 599 998 kHz, offset 0 (PVM runs
//! guest ring 3 natively, so `rdtsc` there cannot be offset), `IA32_TSC` within a host
//! bracket of 20 000-30 000 ticks (the ioctl takes ~8 us), ~1 000 ticks before its end.

use kvm_bindings::{kvm_device_attr, kvm_msr_entry, Msrs, KVMIO};
use kvm_ioctls::VcpuFd;
use vmm_sys_util::ioctl::ioctl_with_ref;

vmm_sys_util::ioctl_iow_nr!(KVM_GET_DEVICE_ATTR, KVMIO, 0xe2, kvm_device_attr);

/// `IA32_TIME_STAMP_COUNTER`.
const MSR_IA32_TSC: u32 = 0x10;
/// `KVM_VCPU_TSC_CTRL` / `KVM_VCPU_TSC_OFFSET`.
const TSC_CTRL: u32 = kvm_bindings::KVM_VCPU_TSC_CTRL;
const TSC_OFFSET: u64 = kvm_bindings::KVM_VCPU_TSC_OFFSET as u64;

/// The guest TSC as a function of the host's: `guest = host + offset` (wrapping).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TscLink {
    /// Added (wrapping) to the host TSC.
    pub offset: u64,
    /// The vCPUs' TSC rate in Hz.
    pub hz: u64,
}

impl TscLink {
    /// Every vCPU's TSC now.
    pub fn now(&self) -> u64 {
        host_tsc().wrapping_add(self.offset)
    }
}

/// The host's TSC.
pub fn host_tsc() -> u64 {
    // SAFETY: `rdtsc` has no preconditions in a user process on x86-64 Linux.
    unsafe { core::arch::x86_64::_rdtsc() }
}

/// Whether the host kernel keeps time with the TSC.
fn host_clocksource_is_tsc() -> bool {
    std::fs::read_to_string("/sys/devices/system/clocksource/clocksource0/current_clocksource")
        .is_ok_and(|s| s.trim() == "tsc")
}

/// One vCPU's TSC offset from KVM, or `None` if KVM does not report it.
fn kvm_offset(fd: &VcpuFd) -> Option<u64> {
    let mut offset = 0u64;
    let attr = kvm_device_attr {
        group: TSC_CTRL,
        attr: TSC_OFFSET,
        addr: std::ptr::addr_of_mut!(offset) as u64,
        flags: 0,
    };
    // SAFETY: KVM_GET_DEVICE_ATTR reads `attr` and writes 8 bytes at `attr.addr`, which
    // points to `offset`, live for the call.
    let r = unsafe { ioctl_with_ref(fd, KVM_GET_DEVICE_ATTR(), &attr) };
    (r == 0).then_some(offset)
}

/// A reading of the vCPU's `IA32_TSC` with the host TSC just before and after it.
fn msr_bracket(fd: &VcpuFd) -> Option<(u64, u64, u64)> {
    let mut msrs = Msrs::from_entries(&[kvm_msr_entry {
        index: MSR_IA32_TSC,
        ..Default::default()
    }])
    .ok()?;
    let before = host_tsc();
    let n = fd.get_msrs(&mut msrs).ok()?;
    let after = host_tsc();
    (n == 1).then(|| (before, msrs.as_slice()[0].data, after))
}

/// The link for these vCPUs, or why it cannot be established (see the module docs).
pub(super) fn link(fds: &[VcpuFd]) -> Result<TscLink, &'static str> {
    if !host_clocksource_is_tsc() {
        return Err("the host's clocksource is not tsc");
    }
    let mut link: Option<TscLink> = None;
    for fd in fds {
        let khz = fd
            .get_tsc_khz()
            .ok()
            .filter(|&k| k != 0)
            .ok_or("KVM_GET_TSC_KHZ failed")?;
        let offset = kvm_offset(fd).ok_or("KVM_VCPU_TSC_OFFSET is not readable")?;
        // Two readings: the offset must put the guest TSC inside both brackets.
        for _ in 0..2 {
            let (before, guest, after) = msr_bracket(fd).ok_or("KVM_GET_MSRS(IA32_TSC) failed")?;
            let (lo, hi) = (before.wrapping_add(offset), after.wrapping_add(offset));
            if guest.wrapping_sub(lo) > hi.wrapping_sub(lo) {
                return Err("IA32_TSC does not match the host TSC plus KVM's offset");
            }
        }
        let this = TscLink {
            offset,
            hz: u64::from(khz) * 1000,
        };
        if link.is_some_and(|l| l != this) {
            return Err("the vCPUs' TSC rates or offsets differ");
        }
        link = Some(this);
    }
    link.ok_or("no vCPU")
}
