//! The pvabi reference host over KVM.
//!
//! [`vm`] is the KVM layer: it creates the VM, loads a bare-metal guest ELF, runs the
//! vCPUs on threads and hands every port access to a [`vm::VmHost`]. What the ports
//! mean (the pvabi calls) is decided by the host implementation plugged into it.

pub mod bench;
pub mod dispatch;
pub mod runner;
pub mod vm;
