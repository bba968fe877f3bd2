//! `pvabi-host`: the pvabi reference host, a thin VMM over KVM around [`pvabi_dispatch`].
//!
//! * [`vm`]: the KVM layer. It creates the VM, loads a bare-metal guest ELF, runs the vCPUs
//!   on threads and hands every port access to a [`bus::PortBus`]. It knows nothing of
//!   pvabi's call semantics.
//! * [`bus`]: the port bus and its device trait.
//! * [`machine`]: [`KvmMachine`], the dispatcher's [`Machine`](pvabi_dispatch::Machine) over
//!   a running VM, and [`PvabiPorts`], the bus device that hands the doorbell and
//!   ring-notify ports to the dispatcher.
//! * [`runner`]: boots an image under the reference host ([`runner::run`]): what
//!   `pvabi run`, `pvabi bench` and the end-to-end tests use.
//!
//! One call, from the guest's `out` to its answer: `KVM_EXIT_IO` on a vCPU thread
//! (`vm/vcpu_thread.rs`) → the exit's registers as one [`CallRegs`](pvabi_dispatch::CallRegs)
//! and its privilege level in a [`bus::PortAccess`] → [`bus::PortBus::write`] →
//! [`PvabiPorts`] → [`Dispatcher::port_out`](pvabi_dispatch::Dispatcher::port_out) →
//! the same `CallRegs` back into the vCPU's registers, and the dispatcher's
//! [`Outcome`](pvabi_dispatch::Outcome) decides whether the vCPU resumes, parks or the VM
//! ends.

pub mod bus;
pub mod machine;
pub mod runner;
pub mod vm;

pub use machine::{KvmDispatcher, KvmMachine, PvabiPorts};
/// The dispatcher crate, re-exported for users of the reference host.
pub use pvabi_dispatch as dispatch;
