//! Every general-purpose register around one port instruction, for the calling-convention
//! test: [`exchange`] loads all of them (but `rsp`) from [`Regs`] values, executes one of the
//! [`Op`] instructions, and records all of them (with `rsp` and `rflags`) afterwards, so that
//! a check can compare each register the host may change and each one it must preserve.
//! Works at CPL0 and, through `run_at_cpl3`, at CPL3 (the statics are user-accessible).

#![allow(dead_code)] // Each test uses the slots it checks.

use core::arch::global_asm;
use core::cell::UnsafeCell;

/// Register slots, in the order of [`Regs::r`].
pub const RAX: usize = 0;
pub const RBX: usize = 1;
pub const RCX: usize = 2;
pub const RDX: usize = 3;
pub const RSI: usize = 4;
pub const RDI: usize = 5;
pub const RBP: usize = 6;
pub const R8: usize = 7;
pub const R9: usize = 8;
pub const R10: usize = 9;
pub const R11: usize = 10;
/// `r12` to `r15` are slots 11 to 14.
pub const R12: usize = 11;
pub const RSP: usize = 15;
pub const RFLAGS: usize = 16;
/// The slots [`exchange`] loads (all but `rsp` and `rflags`).
pub const LOADED: usize = 15;

/// The instruction [`exchange`] executes.
#[derive(Clone, Copy)]
#[repr(u64)]
pub enum Op {
    /// `out dx, eax`: the doorbell binding.
    OutDword = 0,
    /// `out dx, al`.
    OutByte = 1,
    /// `out dx, ax`.
    OutWord = 2,
    /// `in eax, dx`.
    InDword = 3,
    /// `rep outsb` (`rcx` bytes from `[rsi]`).
    RepOutsb = 4,
    /// `in al, dx`.
    InByte = 5,
    /// `vmcall` (only where the transport leaf advertises it).
    Vmcall = 6,
    /// `vmmcall` (only where the transport leaf advertises it).
    Vmmcall = 7,
}

/// A register file: `r[slot]`.
#[derive(Clone, Copy)]
#[repr(C)]
pub struct Regs {
    /// The slots (see the constants).
    pub r: [u64; 17],
}

struct Slots(UnsafeCell<[Regs; 2]>);

// SAFETY: one vCPU, used by one exchange at a time (the asm below and the accessors).
unsafe impl Sync for Slots {}

/// `[0]`: the values to load; `[1]`: the values after the instruction.
static SLOTS: Slots = Slots(UnsafeCell::new([Regs { r: [0; 17] }, Regs { r: [0; 17] }]));
struct Scratch(UnsafeCell<[u64; 2]>);

// SAFETY: only the exchange routine touches it, on one vCPU.
unsafe impl Sync for Scratch {}

/// The op, and the caller's `rsp` (restored after the instruction whatever the host did).
static SCRATCH: Scratch = Scratch(UnsafeCell::new([0; 2]));

global_asm!(
    ".section .text.pvabi_conform_exchange, \"ax\", @progbits",
    ".global pvabi_conform_exchange",
    "pvabi_conform_exchange:",
    "    push rbx",
    "    push rbp",
    "    push r12",
    "    push r13",
    "    push r14",
    "    push r15",
    "    mov [rip + {scratch}], rdi",
    "    mov [rip + {scratch} + 8], rsp",
    "    mov [rip + {slots} + 120], rsp",
    "    mov rax, [rip + {slots} + 0]",
    "    mov rbx, [rip + {slots} + 8]",
    "    mov rcx, [rip + {slots} + 16]",
    "    mov rdx, [rip + {slots} + 24]",
    "    mov rsi, [rip + {slots} + 32]",
    "    mov rdi, [rip + {slots} + 40]",
    "    mov rbp, [rip + {slots} + 48]",
    "    mov r8,  [rip + {slots} + 56]",
    "    mov r9,  [rip + {slots} + 64]",
    "    mov r10, [rip + {slots} + 72]",
    "    mov r11, [rip + {slots} + 80]",
    "    mov r12, [rip + {slots} + 88]",
    "    mov r13, [rip + {slots} + 96]",
    "    mov r14, [rip + {slots} + 104]",
    "    mov r15, [rip + {slots} + 112]",
    // Flags before, with the status flags cleared (cmp below sets them; they are
    // unspecified after a call anyway).
    "    pushfq",
    "    pop qword ptr [rip + {slots} + 128]",
    "    cmp qword ptr [rip + {scratch}], 1",
    "    je 11f",
    "    cmp qword ptr [rip + {scratch}], 2",
    "    je 12f",
    "    cmp qword ptr [rip + {scratch}], 3",
    "    je 13f",
    "    cmp qword ptr [rip + {scratch}], 4",
    "    je 14f",
    "    cmp qword ptr [rip + {scratch}], 5",
    "    je 15f",
    "    cmp qword ptr [rip + {scratch}], 6",
    "    je 16f",
    "    cmp qword ptr [rip + {scratch}], 7",
    "    je 17f",
    "    out dx, eax",
    "    jmp 20f",
    "11: out dx, al",
    "    jmp 20f",
    "12: out dx, ax",
    "    jmp 20f",
    "13: in eax, dx",
    "    jmp 20f",
    "14: rep outsb",
    "    jmp 20f",
    "15: in al, dx",
    "    jmp 20f",
    "16: vmcall",
    "    jmp 20f",
    "17: vmmcall",
    "20:",
    "    mov [rip + {slots} + 136 + 0], rax",
    "    mov [rip + {slots} + 136 + 8], rbx",
    "    mov [rip + {slots} + 136 + 16], rcx",
    "    mov [rip + {slots} + 136 + 24], rdx",
    "    mov [rip + {slots} + 136 + 32], rsi",
    "    mov [rip + {slots} + 136 + 40], rdi",
    "    mov [rip + {slots} + 136 + 48], rbp",
    "    mov [rip + {slots} + 136 + 56], r8",
    "    mov [rip + {slots} + 136 + 64], r9",
    "    mov [rip + {slots} + 136 + 72], r10",
    "    mov [rip + {slots} + 136 + 80], r11",
    "    mov [rip + {slots} + 136 + 88], r12",
    "    mov [rip + {slots} + 136 + 96], r13",
    "    mov [rip + {slots} + 136 + 104], r14",
    "    mov [rip + {slots} + 136 + 112], r15",
    "    mov [rip + {slots} + 136 + 120], rsp",
    "    mov rsp, [rip + {scratch} + 8]",
    "    pushfq",
    "    pop qword ptr [rip + {slots} + 136 + 128]",
    "    pop r15",
    "    pop r14",
    "    pop r13",
    "    pop r12",
    "    pop rbp",
    "    pop rbx",
    "    ret",
    slots = sym SLOTS,
    scratch = sym SCRATCH,
);

extern "C" {
    fn pvabi_conform_exchange(op: u64);
}

/// Loads `input` (slots 0 to 14), executes `op`, and returns every register afterwards,
/// with `rsp` and `rflags` as they were right after the instruction; `rflags` of the input
/// is filled in with the flags right before it.
pub fn exchange(op: Op, input: &Regs) -> (Regs, Regs) {
    // SAFETY: one vCPU, no re-entrancy: nothing else touches SLOTS meanwhile.
    unsafe {
        (*SLOTS.0.get())[0] = *input;
    }
    // SAFETY: the routine saves and restores every callee-saved register and `rsp`, and
    // clobbers the caller-saved ones, which an `extern "C"` call may clobber anyway. The
    // instruction is a port access to a port the test chose: the host answers it (a pvabi
    // call, or nothing), or, for `rep outsb`, reads `rcx` bytes at `rsi`, which the test
    // points at memory of its own.
    unsafe { pvabi_conform_exchange(op as u64) };
    // SAFETY: as above.
    let [before, after] = unsafe { *SLOTS.0.get() };
    (before, after)
}

/// A distinct value for every slot, tagged with `tag` (so that two runs differ).
pub fn pattern(tag: u64) -> Regs {
    let mut r = Regs { r: [0; 17] };
    for (i, slot) in r.r.iter_mut().enumerate().take(LOADED) {
        *slot = 0xa5c3_0000_0000_0000 | (tag << 32) | ((i as u64 + 1) * 0x0101_0101);
    }
    r
}
