//! Spec chapter "Discovery": finding the pvabi CPUID leaves.
//!
//! pvabi's leaves sit at a base `B = 0x40000000 + k * 0x100`, `k` in `0..=255`, so that they
//! can stand beside another hypervisor's leaves (at `0x40000000` a host may present, say,
//! KVM's signature). [`discover`] scans the bases in order, stops at the first whose leaf
//! `B + 0` carries the pvabi signature, and decodes leaves `B + 1 ..= B + 3` with
//! [`CpuidInfo::from_leaves`]. The CPUID instruction sits behind the [`Cpuid`] trait so the
//! scan can be tested with a fake.
//!
//! ```
//! use pvabi_guest::abi::discovery::{CpuidInfo, TransportFlags};
//! use pvabi_guest::discovery::{discover_with, Cpuid};
//!
//! /// KVM's signature at 0x40000000, pvabi at 0x40000100.
//! struct Fake(CpuidInfo);
//! impl Cpuid for Fake {
//!     fn cpuid(&self, leaf: u32, _subleaf: u32) -> [u32; 4] {
//!         match leaf {
//!             0x4000_0000 => [0x4000_0001, 0x4b4d_564b, 0x564b_4d56, 0x4d], // "KVMKVMKVM"
//!             0x4000_0100..=0x4000_0103 => self.0.leaves(0x4000_0100)[(leaf & 3) as usize],
//!             _ => [0; 4],
//!         }
//!     }
//! }
//!
//! let info = CpuidInfo {
//!     highest_version: 0x1_0000, lowest_version: 0x1_0000, offered_features: 0x1ff,
//!     doorbell_port: 0x5650, ring_notify_port: 0x5654, transport: TransportFlags::PIO,
//!     max_multicall_entries: 32, deferred_capacity: 64, ring_capacity: 32, vcpus: 2,
//! };
//! let found = discover_with(&Fake(info)).unwrap();
//! assert_eq!(found.base, 0x4000_0100);
//! assert_eq!(found.info, info);
//! assert_eq!(found.port_transport().port, 0x5650);
//! ```

use pvabi_abi::discovery::{
    candidate_bases, is_signature, CpuidInfo, TransportFlags, CPUID_LEAF_MAX, CPUID_LEAF_SIGNATURE,
};
use pvabi_abi::features::Features;
use pvabi_abi::version::Version;

use crate::transport::{HypercallInsn, PortTransport, VmcallTransport};
use crate::Pvabi;

/// Executes CPUID.
pub trait Cpuid {
    /// `[eax, ebx, ecx, edx]` of CPUID leaf `leaf`, sub-leaf `subleaf`.
    fn cpuid(&self, leaf: u32, subleaf: u32) -> [u32; 4];
}

impl<C: Cpuid + ?Sized> Cpuid for &C {
    fn cpuid(&self, leaf: u32, subleaf: u32) -> [u32; 4] {
        (**self).cpuid(leaf, subleaf)
    }
}

/// The CPU's own CPUID instruction.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NativeCpuid;

#[cfg(target_arch = "x86_64")]
impl Cpuid for NativeCpuid {
    #[inline]
    fn cpuid(&self, leaf: u32, subleaf: u32) -> [u32; 4] {
        let (eax, ebx, ecx, edx): (u32, u64, u32, u32);
        // SAFETY: CPUID exists on every x86-64 CPU and only writes eax, ebx, ecx and edx.
        // `rbx` cannot be an asm operand (LLVM reserves it), so it is saved in a scratch
        // register and swapped back: after the `xchg`, rbx holds its old value and the scratch
        // register CPUID's ebx. No memory or stack access; flags are preserved.
        unsafe {
            core::arch::asm!(
                "mov {tmp}, rbx",
                "cpuid",
                "xchg {tmp}, rbx",
                tmp = out(reg) ebx,
                inout("eax") leaf => eax,
                inout("ecx") subleaf => ecx,
                out("edx") edx,
                options(nomem, nostack, preserves_flags),
            );
        }
        [eax, ebx as u32, ecx, edx]
    }
}

/// What discovery found: where the leaves are, and what they say.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Discovery {
    /// The base leaf `B` (`0x40000000 + k * 0x100`).
    pub base: u32,
    /// `eax` of leaf `B + 0`: the highest pvabi leaf (`B + 3` in this version).
    pub max_leaf: u32,
    /// The decoded leaves `B + 1 ..= B + 3` (a leaf above `max_leaf` reads as zeros).
    pub info: CpuidInfo,
}

impl Discovery {
    /// The highest spec version the host serves.
    pub const fn highest_version(&self) -> Version {
        Version(self.info.highest_version)
    }

    /// The lowest spec version the host serves.
    pub const fn lowest_version(&self) -> Version {
        Version(self.info.lowest_version)
    }

    /// The offered features as advertised in CPUID: a hint (PROBE_FEATURES is authoritative).
    /// Unknown bits are kept.
    pub const fn offered_features(&self) -> Features {
        Features::from_bits_retain(self.info.offered_features)
    }

    /// The transport flags (unknown bits kept).
    pub const fn transport_flags(&self) -> TransportFlags {
        self.info.transport
    }

    /// The port-I/O doorbell on the advertised port (the mandatory binding).
    pub const fn port_transport(&self) -> PortTransport {
        PortTransport::new(self.info.doorbell_port)
    }

    /// A client on the port-I/O doorbell.
    pub const fn pvabi(&self) -> Pvabi<PortTransport> {
        Pvabi::new(self.port_transport())
    }

    /// The instruction binding, if the host advertises it: `preferred` when advertised, else
    /// the other instruction when that one is, else `None`. Pick `preferred` with
    /// [`hypercall_insn_for_cpu`] (`vmcall` on Intel, `vmmcall` on AMD).
    pub fn vmcall_transport(&self, preferred: HypercallInsn) -> Option<VmcallTransport> {
        let flags = self.info.transport;
        let has = |insn| match insn {
            HypercallInsn::Vmcall => flags.contains(TransportFlags::VMCALL),
            HypercallInsn::Vmmcall => flags.contains(TransportFlags::VMMCALL),
        };
        let other = match preferred {
            HypercallInsn::Vmcall => HypercallInsn::Vmmcall,
            HypercallInsn::Vmmcall => HypercallInsn::Vmcall,
        };
        [preferred, other]
            .into_iter()
            .find(|&insn| has(insn))
            .map(VmcallTransport::new)
    }
}

/// Scans the candidate bases with the CPU's CPUID and decodes the first with the pvabi
/// signature; `None` when no base has it (no pvabi host).
#[cfg(target_arch = "x86_64")]
pub fn discover() -> Option<Discovery> {
    discover_with(&NativeCpuid)
}

/// [`discover`] with any [`Cpuid`] (a fake one in tests).
///
/// Leaves are read only at the base that matched; a leaf above the advertised `max_leaf`
/// reads as zeros.
pub fn discover_with<C: Cpuid + ?Sized>(cpuid: &C) -> Option<Discovery> {
    let base = candidate_bases().find(|&base| {
        let [_, ebx, ecx, edx] = cpuid.cpuid(base + CPUID_LEAF_SIGNATURE, 0);
        is_signature(ebx, ecx, edx)
    })?;
    let max_leaf = cpuid.cpuid(base + CPUID_LEAF_SIGNATURE, 0)[0];
    let mut leaves = [[0u32; 4]; CPUID_LEAF_MAX as usize + 1];
    for (offset, leaf) in (0u32..).zip(leaves.iter_mut()) {
        if base + offset <= max_leaf {
            *leaf = cpuid.cpuid(base + offset, 0);
        }
    }
    Some(Discovery {
        base,
        max_leaf,
        info: CpuidInfo::from_leaves(&leaves),
    })
}

/// The hypercall instruction of this CPU's vendor (CPUID leaf 0): `vmmcall` for
/// "AuthenticAMD" and "HygonGenuine", `vmcall` otherwise.
pub fn hypercall_insn_for_cpu<C: Cpuid + ?Sized>(cpuid: &C) -> HypercallInsn {
    let [_, ebx, ecx, edx] = cpuid.cpuid(0, 0);
    let mut vendor = [0u8; 12];
    vendor[0..4].copy_from_slice(&ebx.to_le_bytes());
    vendor[4..8].copy_from_slice(&edx.to_le_bytes());
    vendor[8..12].copy_from_slice(&ecx.to_le_bytes());
    match &vendor {
        b"AuthenticAMD" | b"HygonGenuine" => HypercallInsn::Vmmcall,
        _ => HypercallInsn::Vmcall,
    }
}
