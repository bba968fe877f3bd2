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
pub const PHASE_CPL3_IOEVENTFD: u32 = 13;
pub const PHASE_MULTICALL_1: u32 = 14;
pub const PHASE_MULTICALL_8: u32 = 15;
pub const PHASE_RING_ENTER: u32 = 16;
pub const PHASE_EVENTS_COALESCED: u32 = 17;
pub const PHASE_EVENTS_UNCOALESCED: u32 = 18;
pub const PHASE_TIME_CALL: u32 = 19;
pub const PHASE_TIME_PAGE: u32 = 20;
pub const PHASE_MULTICALL_256: u32 = 21;
pub const PHASE_MULTICALL_1024: u32 = 22;

/// `out` 32-bit: a port the host binds to an ioeventfd (the write never reaches the VMM).
pub const PORT_IOEVENTFD: u16 = 0x5685;
/// The event vector of the events phases.
pub const EVENT_VECTOR: u8 = 0x41;
/// Time-page reads per operation of the other phases (a read is far cheaper than an exit,
/// so more of them make the marks' own exits negligible).
pub const TIME_PAGE_FACTOR: u64 = 10;
