// The test protocol between the bench guest and `pvabi bench` (src/bench.rs), in one place:
// the guest uses this file as a module and the host `include!`s it, so the two cannot drift.
// See the guest's main.rs for what each port and phase means.

/// `out` 32-bit: a mark (`eax` = phase | round << 8 | MARK_END on the end mark).
pub const PORT_MARK: u16 = 0x5680;
/// `in` 32-bit: the next parameter (operations per phase, rounds).
pub const PORT_PARAM: u16 = 0x5681;
/// `out` 32-bit: a port nobody handles (the bare exit).
pub const PORT_BARE: u16 = 0x5682;
/// `out` 8-bit: raw console byte.
pub const PORT_CONSOLE: u16 = 0x5683;
/// `out` 32-bit: a port whose handler only changes `rdi`.
pub const PORT_BARE_REGS: u16 = 0x5684;
/// Bit 31 of a mark: the end of a phase.
pub const MARK_END: u32 = 1 << 31;

pub const PHASE_CPL0_BARE: u32 = 0;
pub const PHASE_CPL0_CALL: u32 = 1;
pub const PHASE_CPL3_BARE: u32 = 2;
pub const PHASE_CPL3_CALL: u32 = 3;
pub const PHASE_DIRECT: u32 = 4;
pub const PHASE_MULTICALL: u32 = 5;
pub const PHASE_DEFERRED: u32 = 6;
pub const PHASE_RING_DOORBELL: u32 = 7;
pub const PHASE_RING_POLLED: u32 = 8;
pub const PHASE_CPL0_REGS: u32 = 9;
pub const PHASE_CPL3_REGS: u32 = 10;
pub const PHASE_SMP_1: u32 = 11;
pub const PHASE_SMP_2: u32 = 12;
