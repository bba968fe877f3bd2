//! Spec chapter "Calling convention": how a call reaches the host.
//!
//! Registers (both bindings): `rax` = call code in, status out; arguments `a0..a5` in `rdi`,
//! `rsi`, `r8`, `r9`, `r10`, `r11`; results `r0..r3` in `rdi`, `rsi`, `r8`, `r9`. Every other
//! register is preserved (`rbx` is never used); flags are unspecified.
//!
//! - [`PortTransport`]: the mandatory binding, `out dx, eax` to the doorbell port.
//! - [`VmcallTransport`]: the optional `vmcall`/`vmmcall` binding, for hosts that own the
//!   hypervisor and advertise it in the transport CPUID leaf. Hosts that run in user space
//!   over KVM never see `vmcall` (KVM answers it itself), so use it only when advertised.
//!
//! Everything above the [`Transport`] trait is plain Rust: tests drive the client with a
//! fake transport.

use pvabi_abi::convention::{DOORBELL_PORT, MAX_ARGS, MAX_RESULTS};
use pvabi_abi::status::Status;

use crate::error::{Error, Result};

/// What a call returns: the raw status (`rax`) and the four result registers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct RawResult {
    /// `rax` after the call: a [`Status`] value, zero-extended.
    pub status: u64,
    /// `r0..r3` (`rdi`, `rsi`, `r8`, `r9`); unspecified unless `status` is SUCCESS (or a
    /// call defines them for another status, as MULTICALL does for INCOMPLETE).
    pub results: [u64; MAX_RESULTS],
}

impl RawResult {
    /// A SUCCESS answer with these results (for fake transports).
    pub const fn ok(results: [u64; MAX_RESULTS]) -> Self {
        RawResult {
            status: Status::Success.raw(),
            results,
        }
    }

    /// An answer with this status and zero results (for fake transports).
    pub const fn error(status: Status) -> Self {
        RawResult {
            status: status.raw(),
            results: [0; MAX_RESULTS],
        }
    }

    /// The status, if this version of the ABI defines it.
    pub fn status(&self) -> Option<Status> {
        Status::from_raw(self.status)
    }

    /// `Ok(results)` on SUCCESS, the decoded error otherwise.
    pub fn into_result(self) -> Result<[u64; MAX_RESULTS]> {
        Error::check(self.status).map(|()| self.results)
    }
}

/// A way to make a pvabi call.
///
/// # Implementing
/// A transport must deliver `code` and `args` to the host as the calling convention says and
/// hand back the host's status and result registers unchanged. Fake transports for tests
/// answer from Rust code instead.
pub trait Transport {
    /// Makes one call: `code` in `rax`, `args` in `a0..a5`.
    ///
    /// # Safety
    /// This is a raw hypercall. Depending on the code and arguments the host may write guest
    /// memory (memory blocks, shared pages), change page tables, give pages away, start
    /// vCPUs or stop the VM. The caller must make sure the call's effects are sound for the
    /// program; the typed methods of [`Pvabi`](crate::Pvabi) document what each call needs.
    unsafe fn call(&self, code: u32, args: [u64; MAX_ARGS]) -> RawResult;
}

impl<T: Transport + ?Sized> Transport for &T {
    unsafe fn call(&self, code: u32, args: [u64; MAX_ARGS]) -> RawResult {
        // SAFETY: forwarded; the caller upholds `Transport::call`'s contract.
        unsafe { (**self).call(code, args) }
    }
}

/// The port-I/O doorbell binding: `out dx, eax` with `dx` = the doorbell port.
///
/// The port comes from the transport CPUID leaf ([`Discovery::port_transport`]); the
/// default is [`DOORBELL_PORT`]. Code running at CPL3 needs IOPL 3 (or an I/O permission
/// bitmap that allows the port).
///
/// [`Discovery::port_transport`]: crate::discovery::Discovery::port_transport
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct PortTransport {
    /// The doorbell port.
    pub port: u16,
}

impl PortTransport {
    /// The doorbell on the spec's default port.
    pub const DEFAULT: PortTransport = PortTransport {
        port: DOORBELL_PORT,
    };

    /// The doorbell on `port`.
    pub const fn new(port: u16) -> Self {
        PortTransport { port }
    }
}

impl Default for PortTransport {
    fn default() -> Self {
        PortTransport::DEFAULT
    }
}

#[cfg(target_arch = "x86_64")]
impl PortTransport {
    /// A doorbell call with a full 64-bit `rax`: what [`Transport::call`] does with the code
    /// zero-extended, for test guests that must also make calls the convention forbids (a
    /// code with bits 63:32 set, PVABI-CONV-001).
    ///
    /// # Safety
    ///
    /// As [`Transport::call`].
    #[inline]
    pub unsafe fn call_rax(&self, rax: u64, args: [u64; MAX_ARGS]) -> RawResult {
        let status: u64;
        let (r0, r1, r2, r3): (u64, u64, u64, u64);
        // SAFETY: the doorbell exit follows the calling convention: the host reads rax, rdi,
        // rsi, r8-r11 and dx, and writes rax, rdi, rsi, r8, r9 (declared as outputs); every
        // other register, including rdx, r10 and r11, is preserved, and rbx is not involved.
        // Flags are unspecified, so `preserves_flags` is not claimed. The host may read and
        // write guest memory (memory blocks, shared pages), so no `nomem`/`readonly`: the
        // compiler treats memory reachable from exposed pointers as read and written. It does
        // not touch the stack below rsp, hence `nostack`. What the call does beyond that is
        // the caller's responsibility (this fn's contract).
        unsafe {
            core::arch::asm!(
                "out dx, eax",
                inout("rax") rax => status,
                inout("rdi") args[0] => r0,
                inout("rsi") args[1] => r1,
                inout("r8") args[2] => r2,
                inout("r9") args[3] => r3,
                in("r10") args[4],
                in("r11") args[5],
                in("dx") self.port,
                options(nostack),
            );
        }
        RawResult {
            status,
            results: [r0, r1, r2, r3],
        }
    }
}

#[cfg(target_arch = "x86_64")]
impl Transport for PortTransport {
    #[inline]
    unsafe fn call(&self, code: u32, args: [u64; MAX_ARGS]) -> RawResult {
        // SAFETY: forwarded; the caller upholds this fn's contract.
        unsafe { self.call_rax(u64::from(code), args) }
    }
}

/// Which instruction the hypercall binding uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum HypercallInsn {
    /// `vmcall` (Intel VMX); advertised by `TRANSPORT_VMCALL`.
    Vmcall,
    /// `vmmcall` (AMD SVM); advertised by `TRANSPORT_VMMCALL`.
    Vmmcall,
}

/// The optional hypercall-instruction binding: the same registers as the doorbell, with
/// `vmcall` or `vmmcall` instead of `out` (`rdx` is not read).
///
/// Use it only when the transport CPUID leaf advertises it
/// ([`Discovery::vmcall_transport`]): on a host that does not handle the instruction it
/// raises `#UD` or never returns (user-space hosts over KVM, and PVM hosts, never see it).
///
/// [`Discovery::vmcall_transport`]: crate::discovery::Discovery::vmcall_transport
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct VmcallTransport {
    /// The instruction.
    pub insn: HypercallInsn,
}

impl VmcallTransport {
    /// The binding with `insn`.
    pub const fn new(insn: HypercallInsn) -> Self {
        VmcallTransport { insn }
    }
}

#[cfg(target_arch = "x86_64")]
impl Transport for VmcallTransport {
    #[inline]
    unsafe fn call(&self, code: u32, args: [u64; MAX_ARGS]) -> RawResult {
        let status: u64;
        let (r0, r1, r2, r3): (u64, u64, u64, u64);
        match self.insn {
            // SAFETY: as for `PortTransport::call`, with the instruction binding: same
            // registers in and out, everything else preserved, flags unspecified, memory
            // possibly read and written by the host, stack untouched.
            HypercallInsn::Vmcall => unsafe {
                core::arch::asm!(
                    "vmcall",
                    inout("rax") u64::from(code) => status,
                    inout("rdi") args[0] => r0,
                    inout("rsi") args[1] => r1,
                    inout("r8") args[2] => r2,
                    inout("r9") args[3] => r3,
                    in("r10") args[4],
                    in("r11") args[5],
                    options(nostack),
                );
            },
            // SAFETY: as above, with `vmmcall`.
            HypercallInsn::Vmmcall => unsafe {
                core::arch::asm!(
                    "vmmcall",
                    inout("rax") u64::from(code) => status,
                    inout("rdi") args[0] => r0,
                    inout("rsi") args[1] => r1,
                    inout("r8") args[2] => r2,
                    inout("r9") args[3] => r3,
                    in("r10") args[4],
                    in("r11") args[5],
                    options(nostack),
                );
            },
        }
        RawResult {
            status,
            results: [r0, r1, r2, r3],
        }
    }
}

/// Rings the ring-notify port: writes the vCPU index (32-bit `out`), which has the effect of
/// `RING_ENTER` for that vCPU's rings, asynchronously. The port comes from the transport
/// CPUID leaf (`ring_notify_port`; default [`RING_NOTIFY_PORT`]).
///
/// [`RING_NOTIFY_PORT`]: pvabi_abi::convention::RING_NOTIFY_PORT
///
/// # Safety
/// The host processes the vCPU's submission ring: every queued submission must be sound to
/// run (see [`Rings::submit`](crate::batch::Rings::submit)), and `port` must be the
/// ring-notify port.
#[cfg(target_arch = "x86_64")]
#[inline]
pub unsafe fn notify_ring(port: u16, vcpu: u32) {
    // SAFETY: a 32-bit port write; the host reads the submission ring, which the caller
    // vouches for. The host does not change registers or flags for this exit, but we do not
    // rely on it for flags; memory may be written (completions), so no `nomem`.
    unsafe {
        core::arch::asm!("out dx, eax", in("dx") port, in("eax") vcpu, options(nostack));
    }
}
