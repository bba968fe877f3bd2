//! The CPUID scan, with a fake CPUID that puts another hypervisor first.

use std::cell::RefCell;
use std::collections::HashMap;

use pvabi_guest::abi::discovery::{
    candidate_bases, CpuidInfo, TransportFlags, CPUID_FIRST_BASE, CPUID_LEAF_MAX,
};
use pvabi_guest::abi::{Features, Version};
use pvabi_guest::discovery::{discover_with, hypercall_insn_for_cpu, Cpuid};
use pvabi_guest::transport::HypercallInsn;

/// A fake CPUID: fixed leaves, zeros elsewhere, and a log of the leaves read.
#[derive(Default)]
struct FakeCpuid {
    leaves: HashMap<u32, [u32; 4]>,
    reads: RefCell<Vec<u32>>,
}

impl FakeCpuid {
    fn with_pvabi(mut self, base: u32, info: &CpuidInfo) -> Self {
        for (i, leaf) in info.leaves(base).into_iter().enumerate() {
            self.leaves.insert(base + i as u32, leaf);
        }
        self
    }

    fn with_leaf(mut self, leaf: u32, regs: [u32; 4]) -> Self {
        self.leaves.insert(leaf, regs);
        self
    }
}

impl Cpuid for FakeCpuid {
    fn cpuid(&self, leaf: u32, subleaf: u32) -> [u32; 4] {
        assert_eq!(subleaf, 0);
        self.reads.borrow_mut().push(leaf);
        self.leaves.get(&leaf).copied().unwrap_or_default()
    }
}

/// `ebx, ecx, edx` of a 12-byte signature.
fn sig(s: &[u8; 12]) -> [u32; 3] {
    let w = |i: usize| u32::from_le_bytes(s[i..i + 4].try_into().unwrap());
    [w(0), w(4), w(8)]
}

fn info() -> CpuidInfo {
    CpuidInfo {
        highest_version: Version::new(1, 1).0,
        lowest_version: Version::new(1, 0).0,
        offered_features: 0x1ff | (1 << 33),
        doorbell_port: 0x5650,
        ring_notify_port: 0x5654,
        transport: TransportFlags::PIO | TransportFlags::VMMCALL,
        max_multicall_entries: 32,
        deferred_capacity: 64,
        ring_capacity: 32,
        vcpus: 4,
    }
}

#[test]
fn skips_a_foreign_signature_and_stops_at_pvabi() {
    let [b, c, d] = sig(b"KVMKVMKVM\0\0\0");
    let cpu = FakeCpuid::default()
        .with_leaf(CPUID_FIRST_BASE, [0x4000_0001, b, c, d])
        .with_pvabi(0x4000_0100, &info())
        // A second pvabi base further up must not be reached.
        .with_pvabi(
            0x4000_0200,
            &CpuidInfo {
                vcpus: 99,
                ..info()
            },
        );
    let found = discover_with(&cpu).expect("pvabi found");
    assert_eq!(found.base, 0x4000_0100);
    assert_eq!(found.max_leaf, 0x4000_0100 + CPUID_LEAF_MAX);
    assert_eq!(found.info, info());
    assert_eq!(found.highest_version(), Version::new(1, 1));
    assert_eq!(found.lowest_version(), Version::new(1, 0));
    assert_eq!(found.offered_features().bits(), 0x1ff | (1 << 33));
    assert!(found.offered_features().contains(Features::RING));
    assert_eq!(found.port_transport().port, 0x5650);
    assert_eq!(found.pvabi().transport().port, 0x5650);
    assert!(
        !cpu.reads.borrow().iter().any(|&l| l >= 0x4000_0200),
        "the scan stops at the first match: {:x?}",
        cpu.reads.borrow()
    );
}

#[test]
fn finds_the_last_base_and_reports_absence() {
    let last = candidate_bases().last().unwrap();
    assert_eq!(last, 0x4000_ff00);
    let cpu = FakeCpuid::default().with_pvabi(last, &info());
    assert_eq!(discover_with(&cpu).unwrap().base, last);

    let none = FakeCpuid::default();
    assert_eq!(discover_with(&none), None);
    assert_eq!(none.reads.borrow().len(), 256, "every base probed once");
}

#[test]
fn leaves_above_max_leaf_read_as_zero() {
    let base = 0x4000_0000;
    let mut leaves = info().leaves(base);
    leaves[0][0] = base + 1; // only the version leaf
    let mut cpu = FakeCpuid::default();
    for (i, l) in leaves.into_iter().enumerate() {
        cpu = cpu.with_leaf(base + i as u32, l);
    }
    let found = discover_with(&cpu).unwrap();
    assert_eq!(found.info.highest_version, info().highest_version);
    assert_eq!(found.info.doorbell_port, 0);
    assert_eq!(found.info.vcpus, 0);
    assert!(!cpu.reads.borrow().contains(&(base + 2)));
}

#[test]
fn instruction_binding_only_when_advertised() {
    let cpu = FakeCpuid::default().with_pvabi(0x4000_0000, &info());
    let found = discover_with(&cpu).unwrap();
    // Only VMMCALL is advertised: it is chosen even when VMCALL is preferred.
    assert_eq!(
        found
            .vmcall_transport(HypercallInsn::Vmcall)
            .map(|t| t.insn),
        Some(HypercallInsn::Vmmcall)
    );
    let pio_only = CpuidInfo {
        transport: TransportFlags::PIO,
        ..info()
    };
    let cpu = FakeCpuid::default().with_pvabi(0x4000_0000, &pio_only);
    assert_eq!(
        discover_with(&cpu)
            .unwrap()
            .vmcall_transport(HypercallInsn::Vmmcall),
        None
    );
    let both = CpuidInfo {
        transport: TransportFlags::all(),
        ..info()
    };
    let cpu = FakeCpuid::default().with_pvabi(0x4000_0000, &both);
    let found = discover_with(&cpu).unwrap();
    assert_eq!(
        found.vmcall_transport(HypercallInsn::Vmcall).unwrap().insn,
        HypercallInsn::Vmcall
    );
    assert_eq!(
        found.vmcall_transport(HypercallInsn::Vmmcall).unwrap().insn,
        HypercallInsn::Vmmcall
    );
}

#[test]
fn vendor_picks_the_instruction() {
    let [b, c, d] = sig(b"AuthenticAMD");
    // CPUID leaf 0 returns the vendor in ebx, edx, ecx order.
    let amd = FakeCpuid::default().with_leaf(0, [0x10, b, d, c]);
    assert_eq!(hypercall_insn_for_cpu(&amd), HypercallInsn::Vmmcall);
    let [b, c, d] = sig(b"GenuineIntel");
    let intel = FakeCpuid::default().with_leaf(0, [0x10, b, d, c]);
    assert_eq!(hypercall_insn_for_cpu(&intel), HypercallInsn::Vmcall);
}

#[cfg(target_arch = "x86_64")]
#[test]
fn native_cpuid_matches_core() {
    use pvabi_guest::discovery::NativeCpuid;
    #[allow(unused_unsafe)]
    // SAFETY: CPUID is available on every x86-64 CPU.
    let r = unsafe { core::arch::x86_64::__cpuid_count(0, 0) };
    assert_eq!(NativeCpuid.cpuid(0, 0), [r.eax, r.ebx, r.ecx, r.edx]);
    // On a plain Linux host (no pvabi hypervisor) discovery finds nothing; under a pvabi
    // host it finds a base. Either way it must not crash.
    let _ = pvabi_guest::discovery::discover();
}
