//! Unit tests of the dispatcher over a [`FakeMachine`]: no KVM needed.
//!
//! One module per family, plus `checks` (generic checks, precedence, hostile inputs) and
//! `regs` (what happens to the registers).

mod base;
mod batch;
mod checks;
mod console;
mod double_fetch;
mod events;
mod guest_check;
mod identity;
mod memory;
mod multicall_pages;
mod owned;
mod regs;
mod ring;
mod system;
mod time;
mod vcpu;

use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use pvabi_abi::calls::Call;
use pvabi_abi::features::Features;
use pvabi_abi::status::Status;
use vm_memory::{Bytes, GuestAddress};
use zerocopy::{FromBytes, IntoBytes};

use super::{ConsoleSink, Dispatcher, FakeMachine, HostConfig, Outcome};
use crate::CallRegs;
use crate::Doorbell;

/// Guest RAM of the fake machine: 4 MiB from address 0.
pub(crate) const MEM: u64 = 4 << 20;
/// A free page to put blocks in.
pub(crate) const BUF: u64 = 0x10_0000;
/// Another free page.
pub(crate) const BUF2: u64 = 0x10_1000;
/// Free pages for shared areas.
pub(crate) const PAGE1: u64 = 0x20_0000;
pub(crate) const PAGE2: u64 = 0x20_1000;
pub(crate) const PAGE3: u64 = 0x20_2000;

/// Polls `f` every millisecond until it holds, failing the test after 5 s.
pub(crate) fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "timed out waiting for {what}"
        );
        thread::sleep(Duration::from_millis(1));
    }
}

/// A dispatcher over a fake machine, with helpers.
pub(crate) struct H {
    pub d: Dispatcher<FakeMachine>,
    pub m: Arc<FakeMachine>,
}

/// A quiet 1.0 configuration for `vcpus` vCPUs.
pub(crate) fn config(vcpus: u32) -> HostConfig {
    HostConfig {
        vcpus,
        console: ConsoleSink::Discard,
        ..HostConfig::acting_as(pvabi_abi::version::V1_0)
    }
}

impl H {
    /// Not negotiated yet.
    pub fn new(vcpus: u32) -> H {
        H::with(config(vcpus))
    }

    pub fn with(config: HostConfig) -> H {
        let m = Arc::new(FakeMachine::new(MEM as usize, config.vcpus));
        let d = Dispatcher::new(config, m.clone()).expect("valid test config");
        H { d, m }
    }

    /// Negotiated 1.0 with every feature.
    pub fn ready(vcpus: u32) -> H {
        H::ready_with(config(vcpus))
    }

    pub fn ready_with(config: HostConfig) -> H {
        let h = H::with(config);
        h.negotiate(Features::defined_in(pvabi_abi::version::V1_0));
        h
    }

    pub fn negotiate(&self, required: Features) {
        let (s, _) = self.call(0, Call::Negotiate, &[0x0001_0000, required.bits()]);
        assert_eq!(s, Status::Success, "NEGOTIATE");
    }

    /// `vcpu` starts (parked) vCPU `target` with a plain start state, and it succeeds.
    pub fn start_vcpu_from(&self, vcpu: u32, target: u32) {
        let start = pvabi_abi::vcpu::VcpuStartState {
            rip: 0x20_0000,
            rsp: 0x8000,
            ..Default::default()
        };
        self.write(BUF, &start);
        assert_eq!(
            self.status(vcpu, Call::VcpuStart, &[u64::from(target), BUF]),
            Status::Success
        );
    }

    /// Registers for `code` with `args` (missing args 0).
    pub fn regs(code: u64, args: &[u64]) -> CallRegs {
        CallRegs::raw(code, args)
    }

    /// Makes a call by raw code; returns the status, the result registers and the outcome.
    pub fn raw(&self, vcpu: u32, code: u64, args: &[u64]) -> (Status, [u64; 4], Outcome) {
        let mut regs = H::regs(code, args);
        let outcome = self.d.call(Doorbell::ring0(vcpu), &mut regs);
        let status = Status::from_raw(regs.rax).expect("a defined status in rax");
        (status, regs.results(), outcome)
    }

    /// Makes a call that returns; returns the status and the result registers.
    pub fn call(&self, vcpu: u32, call: Call, args: &[u64]) -> (Status, [u64; 4]) {
        let (s, r, o) = self.raw(vcpu, u64::from(call.code()), args);
        assert_eq!(o, Outcome::Resume, "{call:?} should return");
        (s, r)
    }

    /// The status of a call.
    pub fn status(&self, vcpu: u32, call: Call, args: &[u64]) -> Status {
        self.call(vcpu, call, args).0
    }

    pub fn write<T: IntoBytes + zerocopy::Immutable + ?Sized>(&self, gpa: u64, value: &T) {
        self.m
            .memory()
            .write_slice(value.as_bytes(), GuestAddress(gpa))
            .expect("test write in RAM");
    }

    pub fn read<T: FromBytes>(&self, gpa: u64) -> T {
        let mut buf = vec![0u8; size_of::<T>()];
        self.m
            .memory()
            .read_slice(&mut buf, GuestAddress(gpa))
            .expect("test read in RAM");
        T::read_from_bytes(&buf).expect("size")
    }

    pub fn read_bytes(&self, gpa: u64, len: usize) -> Vec<u8> {
        let mut buf = vec![0u8; len];
        self.m
            .memory()
            .read_slice(&mut buf, GuestAddress(gpa))
            .expect("test read in RAM");
        buf
    }

    pub fn u32_at(&self, gpa: u64) -> u32 {
        self.read::<u32>(gpa)
    }
}

use super::machine::Machine as _;
