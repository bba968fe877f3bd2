//! The pvabi dispatcher on a KVM VM: [`KvmMachine`] is its [`Machine`] over a [`VmCtl`], and
//! [`PvabiPorts`] is the [`PortDevice`] that hands the doorbell and ring-notify ports to it.

use std::sync::Arc;

use pvabi_abi::status::Status;
use pvabi_abi::vcpu::VcpuStartState;
use pvabi_dispatch::{CallRegs, ConfigError, Dispatcher, GuestTsc, HostConfig, Machine, Outcome};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use crate::bus::{PortAccess, PortBus, PortDevice};
use crate::vm::{FlushTarget, StartError, VmCtl};

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

    /// The dispatcher.
    pub fn dispatcher(&self) -> &Arc<KvmDispatcher> {
        &self.dispatcher
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
        self.dispatcher
            .port_out(access.caller(), access.port, data, regs)
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
