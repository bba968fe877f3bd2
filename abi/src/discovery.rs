//! Spec chapter "Discovery": the pvabi CPUID leaves.
//!
//! pvabi's leaves sit in the hypervisor range at a base `B = 0x40000000 + k * 0x100` for some
//! `k` in `0..=255`, so they can stand beside another hypervisor's leaves. A guest scans the
//! bases in order and takes the first whose leaf `B + 0` carries [`SIGNATURE`].

/// The first base a guest scans.
pub const CPUID_FIRST_BASE: u32 = 0x4000_0000;
/// The distance between two candidate bases.
pub const CPUID_BASE_STRIDE: u32 = 0x100;
/// The number of candidate bases (`k` runs over `0..CPUID_BASE_COUNT`).
pub const CPUID_BASE_COUNT: u32 = 256;
/// The last base a guest scans: `CPUID_FIRST_BASE + (CPUID_BASE_COUNT - 1) * CPUID_BASE_STRIDE`.
// Derived from the three above, so its registry entry is quoted: the ABI snapshots do not
// record it as a constant of its own.
pub const CPUID_LAST_BASE: u32 = 0x4000_ff00;
static_assertions::const_assert_eq!(
    CPUID_LAST_BASE,
    CPUID_FIRST_BASE + (CPUID_BASE_COUNT - 1) * CPUID_BASE_STRIDE
);

/// Offset of the signature leaf: `eax` = highest pvabi leaf, `ebx:ecx:edx` = [`SIGNATURE`].
pub const CPUID_LEAF_SIGNATURE: u32 = 0;
/// Offset of the version leaf: `eax` = highest version, `ebx` = lowest version,
/// `ecx`/`edx` = offered features bits 31:0 / 63:32 (a hint; PROBE_FEATURES is authoritative).
pub const CPUID_LEAF_VERSION: u32 = 1;
/// Offset of the transport leaf: `eax[15:0]` = doorbell port, `eax[31:16]` = ring-notify port,
/// `ebx` = [`TransportFlags`], `ecx` = `edx` = 0.
pub const CPUID_LEAF_TRANSPORT: u32 = 2;
/// Offset of the limits leaf: `eax` = maximum MULTICALL entries, `ebx` = deferred-queue
/// capacity, `ecx` = submission-ring capacity, `edx` = number of vCPUs.
pub const CPUID_LEAF_LIMITS: u32 = 3;
/// The highest leaf offset defined by this version (`eax` of the signature leaf is `B + this`).
pub const CPUID_LEAF_MAX: u32 = 3;

/// The 12-byte interface signature in `ebx`, `ecx`, `edx` of leaf `B + 0`.
pub const SIGNATURE: [u8; 12] = *b"pvabi-x86-64";
/// [`SIGNATURE`] bytes 0..4 as read from `ebx`.
pub const SIGNATURE_EBX: u32 = 0x6261_7670;
/// [`SIGNATURE`] bytes 4..8 as read from `ecx`.
pub const SIGNATURE_ECX: u32 = 0x3878_2d69;
/// [`SIGNATURE`] bytes 8..12 as read from `edx`.
pub const SIGNATURE_EDX: u32 = 0x3436_2d36;

/// Transport bit: the port-I/O doorbell binding (always set).
pub const TRANSPORT_PIO: u32 = 1 << 0;
/// Transport bit: the `vmcall` binding (Intel).
pub const TRANSPORT_VMCALL: u32 = 1 << 1;
/// Transport bit: the `vmmcall` binding (AMD).
pub const TRANSPORT_VMMCALL: u32 = 1 << 2;

bitflags::bitflags! {
    /// The transport flags in `ebx` of the transport leaf.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
    pub struct TransportFlags: u32 {
        /// The port-I/O doorbell binding.
        const PIO = TRANSPORT_PIO;
        /// The `vmcall` binding.
        const VMCALL = TRANSPORT_VMCALL;
        /// The `vmmcall` binding.
        const VMMCALL = TRANSPORT_VMMCALL;
        // Unknown bits are kept.
        const _ = !0;
    }
}

/// The values of the four pvabi leaves, as a host fills them and a guest decodes them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CpuidInfo {
    /// Highest version served (`Version` raw value).
    pub highest_version: u32,
    /// Lowest version served.
    pub lowest_version: u32,
    /// Offered features (hint).
    pub offered_features: u64,
    /// Doorbell port.
    pub doorbell_port: u16,
    /// Ring-notify port.
    pub ring_notify_port: u16,
    /// Transport flags.
    pub transport: TransportFlags,
    /// Maximum MULTICALL entries.
    pub max_multicall_entries: u32,
    /// Deferred-queue capacity.
    pub deferred_capacity: u32,
    /// Submission-ring capacity.
    pub ring_capacity: u32,
    /// Number of vCPUs.
    pub vcpus: u32,
}

impl CpuidInfo {
    /// The `[eax, ebx, ecx, edx]` of leaf offsets `0..=CPUID_LEAF_MAX` relative to `base`.
    pub fn leaves(&self, base: u32) -> [[u32; 4]; 4] {
        [
            [
                base + CPUID_LEAF_MAX,
                SIGNATURE_EBX,
                SIGNATURE_ECX,
                SIGNATURE_EDX,
            ],
            [
                self.highest_version,
                self.lowest_version,
                self.offered_features as u32,
                (self.offered_features >> 32) as u32,
            ],
            [
                u32::from(self.doorbell_port) | (u32::from(self.ring_notify_port) << 16),
                self.transport.bits(),
                0,
                0,
            ],
            [
                self.max_multicall_entries,
                self.deferred_capacity,
                self.ring_capacity,
                self.vcpus,
            ],
        ]
    }

    /// Decodes the leaves `1..=3` (`leaves[0]` is the signature leaf and is not needed).
    pub fn from_leaves(leaves: &[[u32; 4]; 4]) -> CpuidInfo {
        CpuidInfo {
            highest_version: leaves[1][0],
            lowest_version: leaves[1][1],
            offered_features: u64::from(leaves[1][2]) | (u64::from(leaves[1][3]) << 32),
            doorbell_port: leaves[2][0] as u16,
            ring_notify_port: (leaves[2][0] >> 16) as u16,
            transport: TransportFlags::from_bits_retain(leaves[2][1]),
            max_multicall_entries: leaves[3][0],
            deferred_capacity: leaves[3][1],
            ring_capacity: leaves[3][2],
            vcpus: leaves[3][3],
        }
    }
}

/// True when `[ebx, ecx, edx]` of a leaf carry the pvabi signature.
pub const fn is_signature(ebx: u32, ecx: u32, edx: u32) -> bool {
    ebx == SIGNATURE_EBX && ecx == SIGNATURE_ECX && edx == SIGNATURE_EDX
}

/// The candidate bases, in scan order.
pub fn candidate_bases() -> impl Iterator<Item = u32> {
    (0..CPUID_BASE_COUNT).map(|k| CPUID_FIRST_BASE + k * CPUID_BASE_STRIDE)
}

/// One row of the spec's CPUID table.
#[derive(Clone, Copy, Debug)]
pub struct LeafDoc {
    /// Offset from the base.
    pub offset: u32,
    /// Name of the leaf.
    pub name: &'static str,
    /// Contents of `eax`, `ebx`, `ecx`, `edx`.
    pub registers: [&'static str; 4],
}

/// The layout of the pvabi CPUID leaves, for the spec.
pub const LEAVES: [LeafDoc; 4] = [
    LeafDoc {
        offset: CPUID_LEAF_SIGNATURE,
        name: "signature",
        registers: [
            "highest pvabi leaf (B + 3)",
            "\"pvab\"",
            "\"i-x8\"",
            "\"6-64\"",
        ],
    },
    LeafDoc {
        offset: CPUID_LEAF_VERSION,
        name: "version",
        registers: [
            "highest version served",
            "lowest version served",
            "offered features, bits 31:0 (hint)",
            "offered features, bits 63:32 (hint)",
        ],
    },
    LeafDoc {
        offset: CPUID_LEAF_TRANSPORT,
        name: "transport",
        registers: [
            "bits 15:0 doorbell port, bits 31:16 ring-notify port",
            "transport flags",
            "0 (reserved)",
            "0 (reserved)",
        ],
    },
    LeafDoc {
        offset: CPUID_LEAF_LIMITS,
        name: "limits",
        registers: [
            "maximum MULTICALL entries",
            "deferred-queue capacity",
            "submission-ring capacity",
            "number of vCPUs",
        ],
    },
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_registers_spell_the_signature() {
        let mut bytes = [0u8; 12];
        bytes[0..4].copy_from_slice(&SIGNATURE_EBX.to_le_bytes());
        bytes[4..8].copy_from_slice(&SIGNATURE_ECX.to_le_bytes());
        bytes[8..12].copy_from_slice(&SIGNATURE_EDX.to_le_bytes());
        assert_eq!(&bytes, &SIGNATURE);
        assert!(is_signature(SIGNATURE_EBX, SIGNATURE_ECX, SIGNATURE_EDX));
    }

    #[test]
    fn bases_cover_the_hypervisor_range() {
        let v: [u32; 3] = [0, 1, 255].map(|k| candidate_bases().nth(k).unwrap());
        assert_eq!(v, [0x4000_0000, 0x4000_0100, 0x4000_ff00]);
        assert_eq!(candidate_bases().count(), 256);
    }

    #[test]
    fn leaves_round_trip() {
        let info = CpuidInfo {
            highest_version: 0x0001_0001,
            lowest_version: 0x0001_0000,
            offered_features: 0x1_0000_01ff,
            doorbell_port: 0x5650,
            ring_notify_port: 0x5654,
            transport: TransportFlags::PIO | TransportFlags::from_bits_retain(1 << 20),
            max_multicall_entries: 32,
            deferred_capacity: 64,
            ring_capacity: 32,
            vcpus: 2,
        };
        let leaves = info.leaves(0x4000_0100);
        assert_eq!(leaves[0][0], 0x4000_0103);
        assert_eq!(CpuidInfo::from_leaves(&leaves), info);
    }
}
