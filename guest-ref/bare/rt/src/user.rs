//! Running a function at CPL3.
//!
//! `pvabi_rt_enter_user` saves RFLAGS and the callee-saved registers on the kernel
//! stack, stores that stack pointer in this vCPU's TSS as `rsp0`, and `iretq`s to a
//! ring-3 trampoline (user CS/SS, IOPL 3, the caller's IF) on this vCPU's user stack.
//! The trampoline calls the function and then executes a `ud2` at a known address
//! (`pvabi_rt_user_exit`) with the result in `rdi`. The #UD enters ring 0 on `rsp0`:
//! the CPU pushed its 5-word frame right below the saved registers. The #UD entry
//! recognises the trampoline's `ud2` (ring-3 CS and exactly that `rip`), drops the
//! frame, restores the registers and RFLAGS and returns the result from
//! `pvabi_rt_enter_user`; any other #UD is fatal as usual. Interrupts taken while at
//! CPL3 enter ring 0 on `rsp0` too (below the saved registers) and return with `iretq`.
//!
//! Why an exception and not `int 0x81` or `syscall`: on PVM hosts (KVM's
//! page-table-based virtualisation) a software interrupt from ring 3 raises #UD (and
//! KVM's instruction emulator cannot execute `INT n` outside real mode at all), and
//! `syscall` from ring 3 jumps to LSTAR without leaving ring 3 (PVM's paravirtual
//! supervisor mode). Exceptions are delivered through the IDT correctly everywhere.
//!
//! Hand-written assembly: the `x86_64` crate has nothing for switching rings with a
//! hand-built `iretq` frame and coming back through an exception entry.

use core::arch::global_asm;
use core::sync::atomic::{AtomicBool, Ordering};

use crate::{Global, KERNEL_DS, MAX_VCPUS, USER_CS, USER_DS, USER_STACK_SIZE};

#[repr(C, align(4096))]
struct UserStacks([[u8; USER_STACK_SIZE]; MAX_VCPUS]);

// Slot `n` is used only by vCPU `n`, and only by ring-3 code it runs.
static USER_STACKS: Global<UserStacks> = Global::new(UserStacks([[0; USER_STACK_SIZE]; MAX_VCPUS]));
static IN_USER: [AtomicBool; MAX_VCPUS] = [const { AtomicBool::new(false) }; MAX_VCPUS];

global_asm!(
    ".section .text.pvabi_rt_user, \"ax\", @progbits",
    // extern "C" fn(f: u64, arg: u64, user_rsp: u64, rsp0: *mut u64) -> u64
    ".global pvabi_rt_enter_user",
    "pvabi_rt_enter_user:",
    "    pushfq",
    "    push rbx",
    "    push rbp",
    "    push r12",
    "    push r13",
    "    push r14",
    "    push r15",
    // 7 pushes after the call's return address: rsp is 16-byte aligned, as rsp0 must
    // be for the CPU's exception frame to land exactly below it.
    "    mov [rcx], rsp",
    "    mov rax, [rsp + 48]",
    "    and eax, 0x200",
    "    or eax, 0x3002",
    "    push {user_ds}",
    "    push rdx",
    "    push rax",
    "    push {user_cs}",
    "    lea rax, [rip + 2f]",
    "    push rax",
    "    iretq",
    // Ring 3: rdi = f, rsi = arg.
    "2:",
    "    call {user_call}",
    "    mov rdi, rax",
    ".global pvabi_rt_user_exit",
    "pvabi_rt_user_exit:",
    "    ud2",
    "",
    // The #UD entry (IDT vector 6), ring 0.
    ".global pvabi_rt_ud_entry",
    "pvabi_rt_ud_entry:",
    "    test qword ptr [rsp + 8], 3",
    "    jz 3f",
    "    push rax",
    "    lea rax, [rip + pvabi_rt_user_exit]",
    "    cmp rax, [rsp + 8]",
    "    pop rax",
    "    jne 3f",
    // The trampoline's exit: back to pvabi_rt_enter_user's caller.
    "    add rsp, 40",
    "    mov ax, {kernel_ds}",
    "    mov ss, ax",
    "    mov ds, ax",
    "    mov es, ax",
    "    pop r15",
    "    pop r14",
    "    pop r13",
    "    pop r12",
    "    pop rbp",
    "    pop rbx",
    "    popfq",
    "    mov rax, rdi",
    "    ret",
    // Any other #UD: the usual (fatal) path.
    "3:",
    "    push 0",
    "    push 6",
    "    jmp pvabi_rt_isr_common",
    user_ds = const USER_DS,
    user_cs = const USER_CS,
    kernel_ds = const KERNEL_DS,
    user_call = sym pvabi_rt_user_call,
);

extern "C" {
    fn pvabi_rt_enter_user(f: u64, arg: u64, user_rsp: u64, rsp0: *mut u64) -> u64;
}

/// Runs at CPL3: calls the Rust function.
extern "C" fn pvabi_rt_user_call(f: usize, arg: u64) -> u64 {
    // SAFETY: `f` was produced from a `fn(u64) -> u64` by `run_at_cpl3`.
    let f = unsafe { core::mem::transmute::<usize, fn(u64) -> u64>(f) };
    f(arg)
}

/// Runs `f(arg)` in ring 3 on this vCPU's user stack and returns its result.
///
/// Ring-3 code may use port I/O and runs with the caller's interrupt flag; interrupts
/// it takes are handled at CPL0 as usual. All of guest RAM is user-accessible (the
/// host maps it with the U bit), so `f` may touch any memory; it must not execute
/// privileged instructions (that faults, fatally).
/// Ring-3 code cannot enter ring 0 with `int n` or `syscall` (see the module docs);
/// only exceptions and interrupts do. Port I/O works through the TSS's I/O
/// permission bitmap, which allows every port.
///
/// What ring-3 code reads of its own state is the hardware's, which on a PVM host is
/// not the guest's view: `mov ax, cs` gives the host's user selector (its RPL is 3
/// all the same) and `pushfq` shows IF=1 and IOPL=0 whatever the guest set.
/// Interrupt frames carry the guest's view ([`USER_CS`](crate::USER_CS)).
///
/// Not re-entrant: calling it while this vCPU already runs ring-3 code (for example
/// from an interrupt handler that interrupted ring 3) panics.
pub fn run_at_cpl3(f: fn(u64) -> u64, arg: u64) -> u64 {
    let vcpu = crate::current_vcpu() as usize;
    assert!(vcpu < MAX_VCPUS, "run_at_cpl3: vCPU index out of range");
    if IN_USER[vcpu].swap(true, Ordering::Acquire) {
        panic!("run_at_cpl3: nested call");
    }
    // SAFETY: in bounds; the top of this vCPU's own user stack (16-byte aligned).
    let user_rsp = unsafe { core::ptr::addr_of_mut!((*USER_STACKS.get()).0[vcpu]) as u64 }
        + USER_STACK_SIZE as u64;
    let rsp0 = crate::gdt::rsp0_slot(vcpu);
    // SAFETY: the runtime's GDT, TSS and IDT are loaded on this vCPU (the entry code
    // did that before any user code ran); the user stack is this vCPU's and unused;
    // `pvabi_rt_enter_user` preserves the callee-saved registers and RFLAGS and returns
    // normally through the #UD entry.
    let result = unsafe { pvabi_rt_enter_user(f as usize as u64, arg, user_rsp, rsp0) };
    IN_USER[vcpu].store(false, Ordering::Release);
    result
}
