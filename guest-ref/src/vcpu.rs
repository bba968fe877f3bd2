//! Spec chapter "vCPU family": starting, stopping, yielding, halting and kicking vCPUs.

use pvabi_abi::calls::Call;
use pvabi_abi::vcpu::WakeReason;

use crate::error::{Error, Result};
use crate::shared::{hang, returned};
use crate::transport::Transport;
use crate::Pvabi;

/// VCPU_INFO's answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct VcpuInfo {
    /// The calling vCPU's index.
    pub index: u32,
    /// The number of vCPUs.
    pub count: u32,
}

/// Decodes a `WakeReason` result.
fn wake_reason(raw: u64) -> Result<WakeReason> {
    const EVENT: u64 = WakeReason::Event as u64;
    const TIMEOUT: u64 = WakeReason::Timeout as u64;
    match raw {
        EVENT => Ok(WakeReason::Event),
        TIMEOUT => Ok(WakeReason::Timeout),
        other => Err(Error::UnexpectedResult(other)),
    }
}

impl<T: Transport> Pvabi<T> {
    /// `VCPU_INFO`: the calling vCPU's index and the number of vCPUs.
    #[doc(alias = "VCPU_INFO")]
    pub fn vcpu_info(&self) -> Result<VcpuInfo> {
        // SAFETY: VCPU_INFO takes no argument and only returns registers.
        let r = unsafe { self.call_raw(Call::VcpuInfo, [0; 6]) }?;
        Ok(VcpuInfo {
            index: r[0] as u32,
            count: r[1] as u32,
        })
    }

    /// `VCPU_START`: starts vCPU `index` in the state described by the `VcpuStartState` at
    /// guest-physical `state_gpa` (8-aligned, not crossing a page: a
    /// [`Block`](crate::Block) guarantees both). INVALID_STATE if it is running.
    ///
    /// # Safety
    /// The new vCPU runs guest code at `rip` on the stack `rsp` with `rdi = arg`, with
    /// interrupts disabled, concurrently with the caller: the code, the stack, the page tables
    /// (`cr3`, 0 = the boot ones) and whatever the code touches must be valid for that.
    #[doc(alias = "VCPU_START")]
    pub unsafe fn vcpu_start(&self, index: u32, state_gpa: u64) -> Result<()> {
        let args = [u64::from(index), state_gpa, 0, 0, 0, 0];
        // SAFETY: the caller vouches for the started vCPU's code and state (see above).
        unsafe { self.call_raw(Call::VcpuStart, args) }.map(drop)
    }

    /// `VCPU_STOP`: stops the calling vCPU; returns only when the host refuses (vCPU 0
    /// cannot stop: INVALID_STATE), with the reason.
    #[doc(alias = "VCPU_STOP")]
    pub fn try_vcpu_stop(&self) -> Error {
        // SAFETY: stopping the caller ends its execution; nothing runs on after it.
        returned(unsafe { self.call_raw(Call::VcpuStop, [0; 6]) })
    }

    /// `VCPU_STOP`: stops the calling vCPU. If the host refuses, spins forever (use
    /// [`try_vcpu_stop`](Self::try_vcpu_stop) to see the error).
    #[doc(alias = "VCPU_STOP")]
    pub fn vcpu_stop(&self) -> ! {
        let _ = self.try_vcpu_stop();
        hang()
    }

    /// `VCPU_YIELD`: gives up the physical CPU for a while.
    #[doc(alias = "VCPU_YIELD")]
    pub fn vcpu_yield(&self) -> Result<()> {
        // SAFETY: VCPU_YIELD only lets the host schedule something else.
        unsafe { self.call_raw(Call::VcpuYield, [0; 6]) }.map(drop)
    }

    /// `VCPU_HALT`: halts the calling vCPU until an event is pending for it or `timeout_ns`
    /// nanoseconds pass (0 = no timeout). Returns at once if an event is already pending.
    #[doc(alias = "VCPU_HALT")]
    pub fn vcpu_halt(&self, timeout_ns: u64) -> Result<WakeReason> {
        // SAFETY: VCPU_HALT only suspends the caller (and, as a sync point, runs the
        // caller's deferred queue, whose entries were vouched for when queued).
        let r = unsafe { self.call_raw(Call::VcpuHalt, [timeout_ns, 0, 0, 0, 0, 0]) }?;
        wake_reason(r[0])
    }

    /// `VCPU_KICK`: posts a KICK event to vCPU `index` and wakes it if halted.
    #[doc(alias = "VCPU_KICK")]
    pub fn vcpu_kick(&self, index: u32) -> Result<()> {
        // SAFETY: the host only writes the target's registered event queue (handed over by
        // its owner) and wakes it.
        unsafe { self.call_raw(Call::VcpuKick, [u64::from(index), 0, 0, 0, 0, 0]) }.map(drop)
    }
}
