//! The pvabi reference guest library.
//!
//! A `#![no_std]`, allocation-free library that any x86-64 guest kernel can use to talk to a
//! pvabi host: discovery through CPUID, the version and feature handshake, a typed wrapper
//! for every call of the interface, status codes as a Rust error type, and helpers for the
//! shared-memory protocols (time page, event queue, deferred queue, rings, MULTICALL
//! batches). Every number comes from the ABI crate, [`pvabi_abi`] (re-exported as [`abi`]).
//!
//! The crate mirrors the spec: one module per chapter, each adding the methods of its calls
//! to [`Pvabi`], the client, and each method naming the call it makes.
//!
//! | module | chapter | calls |
//! |---|---|---|
//! | [`discovery`] | Discovery | (CPUID leaves) |
//! | [`transport`] | Calling convention | (the bindings) |
//! | [`error`] | Status codes | |
//! | [`base`] | Base family | `GET_SPEC_VERSION` ... `NEGOTIATE` |
//! | [`console`] | Console family | `CONSOLE_WRITE_REGS`, `CONSOLE_WRITE` |
//! | [`time`] | Time family | `TIME_*`, the shared time page |
//! | [`events`] | Events family | `EVENTS_*`, the event queue |
//! | [`memory`] | Memory family | `MEM_*` |
//! | [`vcpu`] | vCPU family | `VCPU_*` |
//! | [`system`] | System family | `SYSTEM_*` |
//! | [`batch`] | Batching, deferral and rings | `MULTICALL`, `MULTICALL_PAGES`, `DEFER_*`, `RING_*` |
//!
//! # Using it
//!
//! ```no_run
//! # #[cfg(target_arch = "x86_64")] {
//! use pvabi_guest::{base::NegotiateRequest, discovery, Features};
//!
//! let found = discovery::discover().expect("no pvabi host");
//! let pv = found.pvabi(); // the port-I/O doorbell advertised in CPUID
//! let done = pv
//!     .negotiate(NegotiateRequest::v1(Features::CONSOLE, Features::TIME | Features::EVENTS))
//!     .expect("NEGOTIATE failed");
//! pv.console_write_regs(b"hello from the guest\n").unwrap();
//! if done.granted.contains(Features::TIME) {
//!     let _ns = pv.time_monotonic().unwrap();
//! }
//! # }
//! ```
//!
//! Everything above the [`Transport`] is plain Rust, so a guest (or a test) can run it on a
//! fake host. This example runs as a doc test:
//!
//! ```
//! use core::cell::Cell;
//! use pvabi_guest::abi::{Call, Status};
//! use pvabi_guest::base::NegotiateRequest;
//! use pvabi_guest::transport::{RawResult, Transport};
//! use pvabi_guest::{Error, Features, Pvabi, Version};
//!
//! /// A fake host that serves 1.0 and offers CONSOLE and TIME.
//! #[derive(Default)]
//! struct FakeHost {
//!     negotiated: Cell<bool>,
//!     written: Cell<u64>,
//! }
//!
//! impl Transport for FakeHost {
//!     unsafe fn call(&self, code: u32, args: [u64; 6]) -> RawResult {
//!         let offered = (Features::CONSOLE | Features::TIME).bits();
//!         match Call::from_code(code.into()) {
//!             Some(Call::GetSpecVersion) => RawResult::ok([0x1_0000, 0x1_0000, 0, 0]),
//!             Some(Call::Negotiate) if self.negotiated.get() => RawResult::error(Status::Locked),
//!             Some(Call::Negotiate) => {
//!                 self.negotiated.set(true);
//!                 RawResult::ok([0x1_0000, args[1] | (args[2] & offered), 0, 0])
//!             }
//!             Some(_) if !self.negotiated.get() => RawResult::error(Status::NotNegotiated),
//!             Some(Call::ConsoleWriteRegs) => {
//!                 self.written.set(self.written.get() + args[0]);
//!                 RawResult::ok([args[0], 0, 0, 0])
//!             }
//!             _ => RawResult::error(Status::NotSupported),
//!         }
//!     }
//! }
//!
//! let pv = Pvabi::new(FakeHost::default());
//! assert_eq!(pv.get_spec_version().unwrap().highest, Version::new(1, 0));
//! assert_eq!(pv.console_write_regs(b"too early"), Err(Error::Status(Status::NotNegotiated)));
//!
//! let done = pv.negotiate(NegotiateRequest::v1(Features::CONSOLE, Features::EVENTS)).unwrap();
//! assert_eq!(done.version, Version::new(1, 0));
//! assert_eq!(done.granted, Features::CONSOLE); // EVENTS is not offered
//!
//! // 40 bytes go out as two CONSOLE_WRITE_REGS calls (32 + 8 bytes).
//! assert_eq!(pv.console_write_regs(&[b'x'; 40]), Ok(40));
//! assert_eq!(pv.transport().written.get(), 40);
//! ```
//!
//! # Guest-physical addresses
//!
//! Calls that take a memory block take a guest-physical address (GPA), and the wrappers take
//! raw GPAs too. A guest that runs identity-mapped (as the reference guests do) can obtain
//! one with [`gpa_of`]; a guest with another mapping must translate addresses itself.
//!
//! # Safety model
//!
//! A raw call ([`Transport::call`], [`Pvabi::call_raw`]) is `unsafe`: with the wrong code and
//! arguments the host writes guest memory or page tables. The typed wrappers are safe when
//! the call cannot affect memory the guest's Rust code uses (clocks, console output, vCPU
//! control, ...), and `unsafe fn`s with a `# Safety` section when it can: registering a page
//! the host writes from then on, ballooning, page-table updates, starting a vCPU, running a
//! batch. Queueing a call the host runs later (deferred queue, rings) is `unsafe` for the same
//! reason, except for the typed shortcuts of calls without memory effects.
//!
//! # Building for a guest
//!
//! The crate uses no floating point and no SIMD, so it builds for bare-metal guests compiled
//! with `-C target-feature=-sse,-sse2` (hosts that emulate ring-0 code may not emulate SSE).
//! `core::fmt` (used only by the [`console::Console`] adapter and the `Display` impls) comes
//! precompiled with `core` and may contain SSE instructions: avoid formatting in code that
//! must stay SSE-free.
#![no_std]
#![deny(missing_docs)]

#[cfg(test)]
extern crate std;

pub use pvabi_abi as abi;
pub use pvabi_abi::{Call, Features, Status, Version};

pub mod base;
pub mod batch;
pub mod console;
pub mod discovery;
pub mod error;
pub mod events;
pub mod memory;
mod shared;
pub mod system;
pub mod time;
pub mod transport;
pub mod vcpu;

pub use error::{Error, Result};
pub use shared::{gpa_of, Block, Full};
pub use transport::{PortTransport, RawResult, Transport, VmcallTransport};

/// The pvabi client: one typed method per call, over a [`Transport`].
///
/// The methods are defined in the chapter modules ([`base`], [`console`], [`time`],
/// [`events`], [`memory`], [`vcpu`], [`system`], [`batch`]); each names its call. A `Pvabi` is
/// cheap to copy when its transport is (a [`PortTransport`] is a port number), and every
/// method takes `&self`, so each vCPU may use its own copy or share one.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Pvabi<T> {
    transport: T,
}

impl<T: Transport> Pvabi<T> {
    /// A client that makes its calls through `transport`.
    pub const fn new(transport: T) -> Self {
        Pvabi { transport }
    }

    /// The transport.
    pub const fn transport(&self) -> &T {
        &self.transport
    }

    /// Gives the transport back.
    pub fn into_transport(self) -> T {
        self.transport
    }

    /// Makes any call with explicit arguments (unused argument registers should be 0) and
    /// decodes the status: `Ok(results)` on SUCCESS, where only the results the call defines
    /// are meaningful.
    ///
    /// # Safety
    /// The host acts on the arguments: a call that registers a shared page, takes a memory
    /// block it writes, changes page tables or ballooned pages, starts a vCPU or runs a batch
    /// can change memory that Rust code relies on. The caller must make sure that everything
    /// the call does to guest memory and to the VM is sound for the program.
    pub unsafe fn call_raw(&self, call: Call, args: [u64; 6]) -> Result<[u64; 4]> {
        // SAFETY: the caller takes responsibility for the call's effects (see above).
        unsafe { self.transport.call(call.code(), args) }.into_result()
    }
}
