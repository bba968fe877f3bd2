//! The CPUID table each vCPU gets: KVM's supported set, the host's leaves merged over
//! it, and the per-vCPU APIC IDs.
//!
//! When the host supplies any leaf in the hypervisor range 0x4000_0000..=0x4000_00FF,
//! KVM's own hypervisor leaves (its "KVMKVMKVM" signature and feature leaf) are
//! dropped, so that the guest sees one consistent hypervisor interface: the host's.

use kvm_bindings::{kvm_cpuid_entry2, CpuId, KVM_CPUID_FLAG_SIGNIFCANT_INDEX};

use super::VmError;

/// The hypervisor CPUID range.
pub const HYPERVISOR_LEAVES: std::ops::RangeInclusive<u32> = 0x4000_0000..=0x4000_00ff;

/// Merges `extra` (function, index, [eax, ebx, ecx, edx]) over `supported`.
pub(super) fn merge(
    supported: &[kvm_cpuid_entry2],
    extra: &[(u32, u32, [u32; 4])],
) -> Vec<kvm_cpuid_entry2> {
    let replaces_hypervisor = extra.iter().any(|(f, _, _)| HYPERVISOR_LEAVES.contains(f));
    let mut entries: Vec<kvm_cpuid_entry2> = supported
        .iter()
        .filter(|e| !(replaces_hypervisor && HYPERVISOR_LEAVES.contains(&e.function)))
        .copied()
        .collect();
    for &(function, index, [eax, ebx, ecx, edx]) in extra {
        // A function is indexed when KVM says so or when the host gives it several
        // sub-leaves or a non-zero one.
        let indexed = index != 0
            || extra.iter().filter(|(f, _, _)| *f == function).count() > 1
            || supported
                .iter()
                .any(|e| e.function == function && e.flags & KVM_CPUID_FLAG_SIGNIFCANT_INDEX != 0);
        let flags = if indexed {
            KVM_CPUID_FLAG_SIGNIFCANT_INDEX
        } else {
            0
        };
        let entry = kvm_cpuid_entry2 {
            function,
            index,
            flags,
            eax,
            ebx,
            ecx,
            edx,
            ..Default::default()
        };
        match entries
            .iter_mut()
            .find(|e| e.function == function && (!indexed || e.index == index))
        {
            Some(existing) => *existing = entry,
            None => entries.push(entry),
        }
    }
    entries
}

/// Leaf 1 `ecx`: x2APIC (bit 21) and "a hypervisor is present" (bit 31).
const LEAF1_ECX_X2APIC: u32 = 1 << 21;
const LEAF1_ECX_HYPERVISOR: u32 = 1 << 31;
/// Leaf 1 `edx`: on-chip local APIC (bit 9).
const LEAF1_EDX_APIC: u32 = 1 << 9;

/// The reference platform's view of leaf 1: a hypervisor is present (PVABI-DISC-013) and
/// there is no local APIC, neither xAPIC nor x2APIC (PVABI-PLAT-010): interrupts arrive by
/// `KVM_INTERRUPT`, without an in-kernel irqchip.
pub(super) fn platform_leaves(entries: &mut [kvm_cpuid_entry2]) {
    for e in entries.iter_mut().filter(|e| e.function == 1) {
        e.ecx = (e.ecx | LEAF1_ECX_HYPERVISOR) & !LEAF1_ECX_X2APIC;
        e.edx &= !LEAF1_EDX_APIC;
    }
}

/// The table for vCPU `vcpu`: `base` with its APIC ID in leaf 1 (`EBX[31:24]`) and in
/// the x2APIC topology leaves 0xB and 0x1F (EDX).
pub(super) fn for_vcpu(base: &[kvm_cpuid_entry2], vcpu: u32) -> Result<CpuId, VmError> {
    let mut entries = base.to_vec();
    for e in &mut entries {
        match e.function {
            1 => e.ebx = (e.ebx & 0x00ff_ffff) | ((vcpu & 0xff) << 24),
            0xb | 0x1f => e.edx = vcpu,
            _ => {}
        }
    }
    CpuId::from_entries(&entries).map_err(|_| VmError::CpuidTooLarge {
        entries: entries.len(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leaf(function: u32, index: u32, flags: u32, eax: u32) -> kvm_cpuid_entry2 {
        kvm_cpuid_entry2 {
            function,
            index,
            flags,
            eax,
            ..Default::default()
        }
    }

    #[test]
    fn host_leaves_replace_kvm_hypervisor_leaves() {
        let supported = [
            leaf(0, 0, 0, 0xd),
            leaf(0x4000_0000, 0, 0, 0x4000_0001),
            leaf(0x4000_0001, 0, 0, 7),
        ];
        let merged = merge(&supported, &[(0x4000_0000, 0, [0x4000_0010, 1, 2, 3])]);
        assert_eq!(merged.len(), 2);
        assert_eq!(merged[1].function, 0x4000_0000);
        assert_eq!(merged[1].eax, 0x4000_0010);
        assert_eq!(merged[1].ebx, 1);
    }

    #[test]
    fn the_platform_has_a_hypervisor_and_no_apic() {
        let mut entries = [kvm_cpuid_entry2 {
            function: 1,
            ecx: LEAF1_ECX_X2APIC,
            edx: LEAF1_EDX_APIC | 1,
            ..Default::default()
        }];
        platform_leaves(&mut entries);
        assert_eq!(entries[0].ecx, LEAF1_ECX_HYPERVISOR);
        assert_eq!(entries[0].edx, 1);
    }

    #[test]
    fn indexed_leaves_keep_their_subleaves() {
        let supported = [
            leaf(7, 0, KVM_CPUID_FLAG_SIGNIFCANT_INDEX, 1),
            leaf(7, 1, KVM_CPUID_FLAG_SIGNIFCANT_INDEX, 2),
        ];
        let merged = merge(&supported, &[(7, 1, [9, 0, 0, 0])]);
        assert_eq!(merged.len(), 2);
        assert_eq!((merged[0].eax, merged[1].eax), (1, 9));
        let merged = merge(&[leaf(1, 0, 0, 5)], &[(1, 0, [6, 0, 0, 0])]);
        assert_eq!((merged.len(), merged[0].eax), (1, 6));
    }
}
