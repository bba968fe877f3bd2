//! Spec chapter "Calling convention": the x86-64 bindings and the memory-block rules.
//!
//! The mandatory binding is a port-I/O doorbell: the guest loads `rax` with the call code and
//! the argument registers, `dx` with the doorbell port, and executes `out dx, eax`. A host that
//! owns the hypervisor may also offer the `vmcall`/`vmmcall` binding, with the same registers.
//! `rbx` is never part of the convention (LLVM reserves it), and every register that is not a
//! result register is preserved.

/// The default doorbell port (advertised in the transport CPUID leaf).
pub const DOORBELL_PORT: u16 = 0x5650;
/// The default ring-notify port (advertised in the transport CPUID leaf).
pub const RING_NOTIFY_PORT: u16 = 0x5654;
/// The width, in bytes, of the doorbell access (`out dx, eax`).
pub const DOORBELL_WIDTH: u32 = 4;

/// The number of argument registers.
pub const MAX_ARGS: usize = 6;
/// The number of result registers (besides the status in `rax`).
pub const MAX_RESULTS: usize = 4;

/// The size of a page, and the unit of the page-crossing rule.
pub const PAGE_SIZE: u64 = 4096;
/// The largest memory block a call takes.
pub const MAX_BLOCK_SIZE: u64 = 4096;

/// A general-purpose register of the convention.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Register {
    /// `rax`: the call code in, the status out.
    Rax,
    /// `rdi`.
    Rdi,
    /// `rsi`.
    Rsi,
    /// `r8`.
    R8,
    /// `r9`.
    R9,
    /// `r10`.
    R10,
    /// `r11`.
    R11,
}

impl Register {
    /// The register's assembler name.
    pub const fn name(self) -> &'static str {
        match self {
            Register::Rax => "rax",
            Register::Rdi => "rdi",
            Register::Rsi => "rsi",
            Register::R8 => "r8",
            Register::R9 => "r9",
            Register::R10 => "r10",
            Register::R11 => "r11",
        }
    }
}

/// The register of argument `i` (`a0` to `a5`).
pub const ARG_REGISTERS: [Register; MAX_ARGS] = [
    Register::Rdi,
    Register::Rsi,
    Register::R8,
    Register::R9,
    Register::R10,
    Register::R11,
];
/// The register of result `i` (`r0` to `r3`).
pub const RESULT_REGISTERS: [Register; MAX_RESULTS] =
    [Register::Rdi, Register::Rsi, Register::R8, Register::R9];
/// The register that carries the call code in and the status out.
pub const CODE_REGISTER: Register = Register::Rax;

/// True when a block of `size` bytes at guest-physical `gpa` stays within one 4 KiB page
/// (an empty block never crosses).
///
/// ```
/// use pvabi_abi::convention::within_one_page;
/// assert!(within_one_page(0x1000, 4096));
/// assert!(!within_one_page(0x1ff8, 16));
/// assert!(!within_one_page(u64::MAX, 2));
/// ```
pub const fn within_one_page(gpa: u64, size: u64) -> bool {
    if size == 0 {
        return true;
    }
    if size > PAGE_SIZE {
        return false;
    }
    match gpa.checked_add(size - 1) {
        Some(last) => gpa / PAGE_SIZE == last / PAGE_SIZE,
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rbx_and_rdx_are_not_argument_registers() {
        for r in ARG_REGISTERS.iter().chain(RESULT_REGISTERS.iter()) {
            assert!(!matches!(r.name(), "rbx" | "rdx" | "rcx" | "rsp" | "rbp"));
        }
        assert_eq!(
            RESULT_REGISTERS,
            [
                ARG_REGISTERS[0],
                ARG_REGISTERS[1],
                ARG_REGISTERS[2],
                ARG_REGISTERS[3]
            ]
        );
    }

    #[test]
    fn ports_have_spec_values() {
        assert_eq!(DOORBELL_PORT, 0x5650);
        assert_eq!(RING_NOTIFY_PORT, 0x5654);
    }

    #[test]
    fn page_crossing() {
        assert!(within_one_page(0, 0));
        assert!(within_one_page(0xfff, 1));
        assert!(!within_one_page(0xfff, 2));
        assert!(!within_one_page(0, 4097));
    }
}

/// A reserved 32-bit field of a guest-written block: only 0 is valid, so parsing a block with
/// zerocopy's `TryFromBytes` rejects a non-zero reserved field by type (the host then answers
/// `INVALID_PARAMETER`). In C it is a plain `uint32_t`.
#[repr(u32)]
#[derive(
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    Hash,
    zerocopy::TryFromBytes,
    zerocopy::IntoBytes,
    zerocopy::KnownLayout,
    zerocopy::Immutable,
)]
pub enum ReservedU32 {
    /// The only valid value.
    #[default]
    Zero = 0,
}

/// A reserved 64-bit field of a guest-written block; see [`ReservedU32`]. In C a `uint64_t`.
#[repr(u64)]
#[derive(
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    Hash,
    zerocopy::TryFromBytes,
    zerocopy::IntoBytes,
    zerocopy::KnownLayout,
    zerocopy::Immutable,
)]
pub enum ReservedU64 {
    /// The only valid value.
    #[default]
    Zero = 0,
}
