//! Spec chapter "System family": shutdown, reboot and crash report.
//!
//! These calls do not return on success. Each has a `try_*` form that returns the error when
//! the host refuses (e.g. NOT_GRANTED), and a `-> !` form that spins forever in that case.

use pvabi_abi::calls::Call;
use pvabi_abi::convention::PAGE_SIZE;

use crate::error::Error;
use crate::shared::{gpa_of, hang, returned};
use crate::transport::Transport;
use crate::Pvabi;

impl<T: Transport> Pvabi<T> {
    /// `SYSTEM_SHUTDOWN`: powers the VM off with exit code `code`; returns only with the
    /// host's refusal.
    #[doc(alias = "SYSTEM_SHUTDOWN")]
    pub fn try_shutdown(&self, code: u32) -> Error {
        // SAFETY: ending the VM ends every vCPU; nothing runs on after it.
        returned(unsafe { self.call_raw(Call::SystemShutdown, [u64::from(code), 0, 0, 0, 0, 0]) })
    }

    /// `SYSTEM_SHUTDOWN`: powers the VM off with exit code `code`. Spins forever if the host
    /// refuses.
    #[doc(alias = "SYSTEM_SHUTDOWN")]
    pub fn shutdown(&self, code: u32) -> ! {
        let _ = self.try_shutdown(code);
        hang()
    }

    /// `SYSTEM_REBOOT`: reboots the VM; returns only with the host's refusal.
    #[doc(alias = "SYSTEM_REBOOT")]
    pub fn try_reboot(&self) -> Error {
        // SAFETY: rebooting ends the current run of every vCPU.
        returned(unsafe { self.call_raw(Call::SystemReboot, [0; 6]) })
    }

    /// `SYSTEM_REBOOT`: reboots the VM. Spins forever if the host refuses.
    #[doc(alias = "SYSTEM_REBOOT")]
    pub fn reboot(&self) -> ! {
        let _ = self.try_reboot();
        hang()
    }

    /// `SYSTEM_CRASH`: reports a crash with the `len`-byte message (0 to 4096, not crossing a
    /// page) at guest-physical `gpa` and ends the VM; returns only with the host's refusal.
    #[doc(alias = "SYSTEM_CRASH")]
    pub fn try_crash(&self, gpa: u64, len: u64) -> Error {
        // SAFETY: the host only reads the message, then ends the VM.
        returned(unsafe { self.call_raw(Call::SystemCrash, [gpa, len, 0, 0, 0, 0]) })
    }

    /// `SYSTEM_CRASH` with the message at guest-physical `gpa`. Spins forever if the host
    /// refuses.
    #[doc(alias = "SYSTEM_CRASH")]
    pub fn crash(&self, gpa: u64, len: u64) -> ! {
        let _ = self.try_crash(gpa, len);
        hang()
    }

    /// `SYSTEM_CRASH` with `message`, cut at the first 4 KiB page boundary so the block never
    /// crosses one. Addresses come from [`gpa_of`]: **valid only under identity mapping**.
    /// Returns only with the host's refusal (suits a panic handler: no formatting, no
    /// allocation).
    #[doc(alias = "SYSTEM_CRASH")]
    pub fn try_crash_message(&self, message: &[u8]) -> Error {
        if message.is_empty() {
            return self.try_crash(0, 0);
        }
        let gpa = gpa_of(message);
        let room = (PAGE_SIZE - gpa % PAGE_SIZE) as usize;
        self.try_crash(gpa, message.len().min(room) as u64)
    }
}
