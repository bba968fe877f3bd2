// The test protocol between the hostile guest and its host tests, in one place: the guest
// uses this file as a module, and the host tests `include!` it, so the two cannot drift.

/// `out` 32-bit: a named report (`rdi`/`rsi` = name, `r8`..`r11` = four values).
pub const PORT_REPORT: u16 = 0x5680;
/// `out` 32-bit: a log of input records (`rdi` = address, `rsi` = number of [`Rec`]s).
pub const PORT_LOG: u16 = 0x5681;
/// `out` 32-bit: snapshot guest memory (`rdi` = address, `rsi` = length, `r8` = tag).
pub const PORT_SNAP: u16 = 0x5682;
/// `out` 32-bit: compare guest memory with the snapshot `rdi` (= tag).
pub const PORT_CHECK: u16 = 0x5683;
/// `in` 32-bit: the scenario.
pub const PORT_SCENARIO: u16 = 0x5684;
/// `in` 32-bit: the next parameter.
pub const PORT_PARAM: u16 = 0x5685;
/// `out` 8-bit: raw console byte (panic messages).
pub const PORT_CONSOLE: u16 = 0x5686;

/// Malformed inputs of every class, table-driven (1 vCPU).
pub const S_CLASSES: u32 = 0;
/// NEGOTIATE replayed, downgraded and raced between two vCPUs.
pub const S_NEGOTIATE_RACE: u32 = 1;
/// Double fetch: a second vCPU flips MULTICALL entries' call codes.
pub const S_DF_MULTICALL: u32 = 2;
/// Double fetch: ... deferred entries' call codes.
pub const S_DF_DEFER: u32 = 3;
/// Double fetch: ... ring submissions' call codes.
pub const S_DF_RING: u32 = 4;
/// Double fetch: ... a RING_SETUP block's `sq_page`.
pub const S_DF_SETUP: u32 = 5;
/// Load: every vCPU issues mixed calls in every mode (params: rounds, tag).
pub const S_LOAD: u32 = 6;
/// Fault: a triple fault on vCPU 0.
pub const S_TRIPLE_FAULT: u32 = 7;
/// Fault: vCPU 0 spins at CPL3 for ever (ends by the run's timeout).
pub const S_SPIN: u32 = 8;
/// Fault: vCPU 1 spins at CPL3 for ever while vCPU 0 shuts down (code 5).
pub const S_SPIN_AP: u32 = 9;
/// Fault: vCPU 1 loops on MULTICALLs while vCPU 0 ends the VM (param: 0 = shutdown(6),
/// 1 = triple fault).
pub const S_MID_BATCH: u32 = 10;
/// Fault: vCPU 1 floods a HOST_POLLED ring while vCPU 0 shuts down (code 7).
pub const S_RING_BUSY: u32 = 11;
/// Double fetch: vCPU 2 flips a VcpuStartState block's `rip` while vCPU 0 starts vCPU 1.
pub const S_DF_START: u32 = 12;

/// One logged input and the host's answer (80 bytes, as the guest writes it).
#[derive(Clone, Copy, Debug, Default)]
#[repr(C)]
pub struct Rec {
    /// The input class (`C_*` in `inputs.rs`).
    pub class: u32,
    /// Class-specific: the argument perturbed, the field, the variant.
    pub sub: u32,
    /// The call code (or a class-specific value).
    pub code: u64,
    /// The argument registers.
    pub args: [u64; 6],
    /// `rax` after the call.
    pub st: u64,
    /// Class-specific results.
    pub r: [u64; 2],
}
