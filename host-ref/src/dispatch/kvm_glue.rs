//! The glue between the KVM layer ([`crate::vm`]) and the dispatcher: [`PvabiHost`] is the
//! [`VmHost`] that maps the doorbell and ring-notify ports to [`Dispatcher`] calls, and
//! [`Outcome`]s to [`Next`]s.

use std::sync::{Arc, OnceLock};

use pvabi_abi::convention::DOORBELL_WIDTH;
use pvabi_abi::status::Status;
use pvabi_abi::vcpu::VcpuStartState;
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use crate::vm::{CallRegs, FaultReport, FlushTarget, Next, StartError, VmCtl, VmEnd, VmHost};

use super::config::{ConfigError, HostConfig};
use super::machine::Machine;
use super::report::Report;
use super::{Dispatcher, End, Outcome};

/// [`Machine`] over a running VM's [`VmCtl`].
#[derive(Debug)]
pub struct CtlMachine(pub VmCtl);

impl Machine for CtlMachine {
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

    fn release_pages(&self, gpas: &[u64]) {
        // Zeroing keeps this free of unsafe code; the pages are zeroed again on reclaim.
        let zero = [0u8; 4096];
        for &gpa in gpas {
            let _ = self.0.memory().write_slice(&zero, GuestAddress(gpa));
        }
    }
}

/// The pvabi host for the KVM layer. The dispatcher is created when the first vCPU starts
/// (the [`VmCtl`] does not exist before); the CPUID leaves come from the configuration.
#[derive(Debug)]
pub struct PvabiHost {
    config: HostConfig,
    dispatcher: OnceLock<Result<Dispatcher, ConfigError>>,
    user_mode_calls: bool,
}

impl PvabiHost {
    /// A host serving `config` (checked now).
    pub fn new(config: HostConfig) -> Result<Self, ConfigError> {
        config.validate()?;
        Ok(PvabiHost {
            config,
            dispatcher: OnceLock::new(),
            user_mode_calls: false,
        })
    }

    /// Performs doorbell calls made at any privilege level, against rule CONV-013 (by
    /// default a doorbell `out` from CPL 1-3 performs no call and gets NOT_SUPPORTED). Only
    /// for measurements on hosts that emulate ring-0 code, where loops must run in ring 3
    /// (`pvabi bench`); never for a guest whose user processes are not trusted.
    pub fn allowing_user_mode_calls(mut self) -> Self {
        self.user_mode_calls = true;
        self
    }

    /// The dispatcher, once the VM has started.
    pub fn dispatcher(&self) -> Option<&Dispatcher> {
        self.dispatcher.get().and_then(|d| d.as_ref().ok())
    }

    /// What the host recorded (empty if the VM never started).
    pub fn report(&self) -> Report {
        self.dispatcher()
            .map(Dispatcher::report)
            .unwrap_or_default()
    }

    fn get(&self, ctl: &VmCtl) -> Result<&Dispatcher, String> {
        self.dispatcher
            .get_or_init(|| Dispatcher::new(self.config.clone(), Arc::new(CtlMachine(ctl.clone()))))
            .as_ref()
            .map_err(|e| e.to_string())
    }
}

impl VmHost for PvabiHost {
    fn cpuid_leaves(&self) -> Vec<(u32, u32, [u32; 4])> {
        self.config.cpuid_leaves()
    }

    fn port_out(
        &self,
        vcpu: u32,
        port: u16,
        data: &[u8],
        regs: &mut CallRegs,
        ctl: &VmCtl,
    ) -> Next {
        let d = match self.get(ctl) {
            Ok(d) => d,
            Err(reason) => {
                return Next::EndVm(VmEnd::Fault(FaultReport {
                    vcpu,
                    reason,
                    regs: None,
                }))
            }
        };
        if port == self.config.doorbell_port {
            // Another width performs no call (CONV-008); nor does a doorbell `out` from
            // outside ring 0, which the guest kernel may have opened to user mode through the
            // I/O bitmap (CONV-013). Both answer NOT_SUPPORTED and change nothing else.
            let user_mode = !self.user_mode_calls && ctl.exit_cpl(vcpu) != Some(0);
            if data.len() != DOORBELL_WIDTH as usize || user_mode {
                regs.rax = Status::NotSupported.raw();
                return Next::Resume;
            }
            return match d.call(vcpu, regs) {
                Outcome::Resume => Next::Resume,
                Outcome::StopVcpu => Next::StopVcpu,
                Outcome::End(End::Shutdown(code)) => Next::EndVm(VmEnd::Shutdown(code)),
                Outcome::End(End::Reboot) => Next::EndVm(VmEnd::Reboot),
                Outcome::End(End::Crash(message)) => Next::EndVm(VmEnd::Crash(message)),
            };
        }
        if port == self.config.ring_notify_port && data.len() == 4 {
            let mut index = [0u8; 4];
            index.copy_from_slice(data);
            d.ring_notify(u32::from_le_bytes(index));
        }
        // Other ports (and other widths on the notify port) are ignored.
        Next::Resume
    }

    fn port_in(&self, _vcpu: u32, port: u16, data: &mut [u8], _ctl: &VmCtl) -> Next {
        // No pvabi port is readable: a read performs no call and completes with all bits
        // set, as for a port no device claims (CONV-009). Other ports read as zeros.
        if port == self.config.doorbell_port || port == self.config.ring_notify_port {
            data.fill(0xff);
        }
        Next::Resume
    }

    fn vcpu_started(&self, _vcpu: u32, ctl: &VmCtl) {
        // Create the dispatcher before the guest runs; a bad config surfaces on first use.
        let _ = self.get(ctl);
    }

    fn vm_ending(&self, _how: &VmEnd, _ctl: &VmCtl) {
        if let Some(d) = self.dispatcher() {
            d.shutdown();
        }
    }
}
