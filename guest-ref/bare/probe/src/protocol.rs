// The test protocol between the probe guest and its host test, in one place: the guest
// uses this file as a module, and the host test `include!`s it, so the two cannot drift.

pub const PORT_REPORT: u16 = 0x5670;
pub const PORT_CONSOLE: u16 = 0x5671;
pub const PORT_SCENARIO: u16 = 0x5672;
pub const PORT_PARAM: u16 = 0x5673;
pub const S_UNKNOWN: u32 = 0;
pub const S_BEFORE_NEGOTIATE: u32 = 1;
pub const S_NOT_GRANTED: u32 = 2;
pub const S_RESERVED_REGS: u32 = 3;
pub const S_RESERVED_BLOCKS: u32 = 4;
pub const S_OUTSIDE_RAM: u32 = 5;
pub const S_MISALIGNED: u32 = 6;
pub const S_CROSSES_PAGE: u32 = 7;
pub const S_HOST_OWNED: u32 = 8;
pub const S_PRECEDENCE: u32 = 9;
pub const S_NESTED_MULTICALL: u32 = 10;
pub const S_DEFER_NOT_DEFERRABLE: u32 = 11;
pub const S_GARBAGE_RING: u32 = 12;
pub const S_NEGOTIATE_TWICE: u32 = 13;
pub const S_NEGOTIATE_VERSION: u32 = 14;
pub const S_NEGOTIATE_FEATURE: u32 = 15;
pub const S_DOORBELL_WIDTH: u32 = 16;
pub const S_DOUBLE_FETCH: u32 = 17;
pub const S_SWEEP: u32 = 18;
pub const S_VCPU_START_STATE: u32 = 19;
pub const S_CPL3: u32 = 20;
