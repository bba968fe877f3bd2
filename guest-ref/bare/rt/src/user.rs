//! Running a function, or code in either mode, at CPL3.
//!
//! `pvabi_rt_enter_user` saves RFLAGS and the callee-saved registers on the kernel
//! stack, then a pad word and a tag word of 0, stores that stack pointer in this vCPU's
//! TSS as `rsp0`, and `iretq`s to a
//! ring-3 trampoline (user CS/SS, IOPL 3, the caller's IF) on this vCPU's user stack.
//! The trampoline calls the function and then executes a `ud2` at a known address
//! (`pvabi_rt_user_exit`) with the result in `rdi`. The #UD enters ring 0 on `rsp0`:
//! the CPU pushed its 5-word frame right below the saved registers. The #UD entry
//! recognises the trampoline's `ud2` (ring-3 CS and exactly that `rip`), drops the
//! frame, restores the registers and RFLAGS and returns the result from
//! `pvabi_rt_enter_user`; any other #UD is fatal as usual. Interrupts taken while at
//! CPL3 enter ring 0 on `rsp0` too (below the saved registers) and return with `iretq`.
//!
//! `pvabi_rt_enter_code` ([`run_user_code`]) saves the same, with the tag word pointing
//! to the caller's [`UserContext`], loads every register from it and `iretq`s to the
//! code in the 64-bit or the 32-bit user code segment. A #UD or #GP taken at CPL3 while
//! the tag is set ends the code: the entry writes every register and the frame's `rip`,
//! `cs`, `rflags` and `rsp` to the context, and returns from `pvabi_rt_enter_code`.
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

use crate::{Global, KERNEL_DS, MAX_VCPUS, USER32_CS, USER_CS, USER_DS, USER_STACK_SIZE};

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
    // The pad word and the tag (0: this is run_at_cpl3, see `run_user_code`). 9 pushes
    // after the call's return address: rsp is 16-byte aligned, as rsp0 must be for the
    // CPU's exception frame to land exactly below it.
    "    push 0",
    "    push 0",
    "    mov [rcx], rsp",
    "    mov rax, [rsp + 64]",
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
    "    cmp qword ptr [rsp + 40], 0",
    "    jne 5f",
    "    push rax",
    "    lea rax, [rip + pvabi_rt_user_exit]",
    "    cmp rax, [rsp + 8]",
    "    pop rax",
    "    jne 3f",
    // The trampoline's exit: back to pvabi_rt_enter_user's caller (past the CPU's frame,
    // the tag and the pad word).
    "    add rsp, 56",
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
    // A #UD of run_user_code's code: it ends there.
    "5:",
    "    push rax",
    "    mov rax, [rsp + 48]",
    "    mov qword ptr [rax + {vector}], 6",
    "    mov qword ptr [rax + {error_code}], 0",
    "    jmp pvabi_rt_user_code_exit",
    "",
    // The #GP entry (IDT vector 13; the CPU pushed an error code), ring 0.
    ".global pvabi_rt_gp_entry",
    "pvabi_rt_gp_entry:",
    "    test qword ptr [rsp + 16], 3",
    "    jz 6f",
    "    cmp qword ptr [rsp + 48], 0",
    "    jne 7f",
    // Any other #GP: the usual (fatal) path.
    "6:",
    "    push 13",
    "    jmp pvabi_rt_isr_common",
    // A #GP of run_user_code's code: it ends there. The error code goes to the context,
    // and the saved rax takes its slot (`pop` to an rsp-based operand addresses it after
    // the increment), which leaves the stack as the #UD path leaves it.
    "7:",
    "    push rax",
    "    mov rax, [rsp + 56]",
    "    mov qword ptr [rax + {vector}], 13",
    "    push qword ptr [rsp + 8]",
    "    pop qword ptr [rax + {error_code}]",
    "    pop qword ptr [rsp]",
    "    jmp pvabi_rt_user_code_exit",
    "",
    // The end of run_user_code's code. rax = the context, [rsp] = the code's rax, then
    // the CPU's frame (rip, cs, rflags, rsp, ss), the tag, the pad word and the registers
    // pvabi_rt_enter_code saved.
    "pvabi_rt_user_code_exit:",
    "    mov [rax + 8], rbx",
    "    mov [rax + 16], rcx",
    "    mov [rax + 24], rdx",
    "    mov [rax + 32], rsi",
    "    mov [rax + 40], rdi",
    "    mov [rax + 48], rbp",
    "    mov [rax + 56], r8",
    "    mov [rax + 64], r9",
    "    mov [rax + 72], r10",
    "    mov [rax + 80], r11",
    "    mov [rax + 88], r12",
    "    mov [rax + 96], r13",
    "    mov [rax + 104], r14",
    "    mov [rax + 112], r15",
    "    mov rcx, [rsp + 8]",
    "    mov [rax + {rip}], rcx",
    "    mov rcx, [rsp + 16]",
    "    mov [rax + {cs}], rcx",
    "    mov rcx, [rsp + 24]",
    "    mov [rax + {rflags}], rcx",
    "    mov rcx, [rsp + 32]",
    "    mov [rax + {rsp}], rcx",
    "    pop qword ptr [rax]",
    "    add rsp, 56",
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
    "    ret",
    "",
    // extern "C" fn(cs: u64, entry: u64, ctx: *mut UserContext, rsp0: *mut u64)
    ".global pvabi_rt_enter_code",
    "pvabi_rt_enter_code:",
    "    pushfq",
    "    push rbx",
    "    push rbp",
    "    push r12",
    "    push r13",
    "    push r14",
    "    push r15",
    // The pad word and the tag: the context (never 0).
    "    push 0",
    "    push rdx",
    "    mov [rcx], rsp",
    "    mov rax, [rsp + 64]",
    "    and eax, 0x200",
    "    or eax, 0x3002",
    "    push {user_ds}",
    "    push qword ptr [rdx + {rsp}]",
    "    push rax",
    "    push rdi",
    "    push rsi",
    "    mov rsi, rdx",
    "    mov rax, [rsi]",
    "    mov rbx, [rsi + 8]",
    "    mov rcx, [rsi + 16]",
    "    mov rdx, [rsi + 24]",
    "    mov rdi, [rsi + 40]",
    "    mov rbp, [rsi + 48]",
    "    mov r8, [rsi + 56]",
    "    mov r9, [rsi + 64]",
    "    mov r10, [rsi + 72]",
    "    mov r11, [rsi + 80]",
    "    mov r12, [rsi + 88]",
    "    mov r13, [rsi + 96]",
    "    mov r14, [rsi + 104]",
    "    mov r15, [rsi + 112]",
    "    mov rsi, [rsi + 32]",
    "    iretq",
    user_ds = const USER_DS,
    user_cs = const USER_CS,
    kernel_ds = const KERNEL_DS,
    user_call = sym pvabi_rt_user_call,
    rsp = const core::mem::offset_of!(UserContext, rsp),
    rflags = const core::mem::offset_of!(UserContext, rflags),
    rip = const core::mem::offset_of!(UserContext, rip),
    cs = const core::mem::offset_of!(UserContext, cs),
    vector = const core::mem::offset_of!(UserContext, vector),
    error_code = const core::mem::offset_of!(UserContext, error_code),
);

extern "C" {
    fn pvabi_rt_enter_user(f: u64, arg: u64, user_rsp: u64, rsp0: *mut u64) -> u64;
    fn pvabi_rt_enter_code(cs: u64, entry: u64, ctx: *mut UserContext, rsp0: *mut u64);
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

/// The code segment [`run_user_code`] runs code in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UserSegment {
    /// [`USER_CS`]: 64-bit mode.
    Long,
    /// [`USER32_CS`]: compatibility mode (`CS.L` = 0, `CS.D` = 1: 32-bit code).
    Compat,
}

/// The registers [`run_user_code`] loads before the code runs (`rax` to `r15` and `rsp`),
/// and every register and how the code ended, recorded when it ends.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[allow(missing_docs)]
pub struct UserContext {
    pub rax: u64,
    pub rbx: u64,
    pub rcx: u64,
    pub rdx: u64,
    pub rsi: u64,
    pub rdi: u64,
    pub rbp: u64,
    pub r8: u64,
    pub r9: u64,
    pub r10: u64,
    pub r11: u64,
    pub r12: u64,
    pub r13: u64,
    pub r14: u64,
    pub r15: u64,
    pub rsp: u64,
    /// Not loaded (the code starts with IOPL 3 and the caller's IF); recorded from the
    /// exception frame (the guest's view).
    pub rflags: u64,
    /// Where the code ended: the faulting instruction (recorded only).
    pub rip: u64,
    /// The code segment the exception frame names (recorded only; the guest's view).
    pub cs: u64,
    /// The exception that ended the code: 6 (#UD) or 13 (#GP) (recorded only).
    pub vector: u64,
    /// Its error code (0 for #UD; recorded only).
    pub error_code: u64,
}

// The offsets the assembly's register loads and stores use.
const _: () = {
    assert!(core::mem::offset_of!(UserContext, rsi) == 32);
    assert!(core::mem::offset_of!(UserContext, r15) == 112);
};

/// Runs the code at `entry` in ring 3, in 64-bit or compatibility mode as `segment` says,
/// with `rax` to `r15` and `rsp` loaded from `ctx`, until it raises #UD (`ud2`, the usual
/// end) or #GP; then records in `ctx` every register, `rflags`, and where and how it ended
/// ([`UserContext::vector`]). Unlike [`run_at_cpl3`], a #GP ends the code instead of being
/// fatal: the code can observe a fault its own instruction raised (for example a port write
/// a host answers with #GP).
///
/// The code starts with IOPL 3 and the caller's interrupt flag, SS = [`USER_DS`] (flat),
/// and DS, ES, FS and GS null (the return to ring 3 clears selectors of DPL 0): in
/// compatibility mode a memory access through a null segment raises #GP, so such code
/// should keep to registers and the stack. Port I/O works as for [`run_at_cpl3`].
///
/// What the architecture defines across the switches into compatibility mode and back:
/// the low 32 bits of `rax` to `rsp` and all of `r8` to `r15` (which compatibility mode
/// cannot reach) are preserved; the upper halves of `rax` to `rsp` are undefined.
///
/// # Safety
/// `entry` must be the address of code for that mode (for [`UserSegment::Compat`]
/// assembled as `.code32`, below 4 GiB, as the whole image is) that ends with a `ud2`; any
/// other exception than #UD and #GP it raises is fatal. `ctx.rsp` is the stack the code
/// gets: memory the code may use (below 4 GiB for compatibility mode), or anything if the
/// code uses no stack.
pub unsafe fn run_user_code(segment: UserSegment, entry: u64, ctx: &mut UserContext) {
    let cs = match segment {
        UserSegment::Long => USER_CS,
        UserSegment::Compat => {
            assert!(
                entry <= u64::from(u32::MAX),
                "run_user_code: entry above 4 GiB"
            );
            USER32_CS
        }
    };
    let vcpu = crate::current_vcpu() as usize;
    assert!(vcpu < MAX_VCPUS, "run_user_code: vCPU index out of range");
    if IN_USER[vcpu].swap(true, Ordering::Acquire) {
        panic!("run_user_code: nested call");
    }
    let rsp0 = crate::gdt::rsp0_slot(vcpu);
    // SAFETY: the runtime's GDT (with both user code segments), TSS and IDT are loaded on
    // this vCPU; the caller vouches for the code; `pvabi_rt_enter_code` preserves the
    // callee-saved registers and RFLAGS and returns normally through the #UD or #GP entry,
    // which writes the registers to `ctx` (a live, exclusive reference).
    unsafe { pvabi_rt_enter_code(u64::from(cs), entry, ctx, rsp0) };
    IN_USER[vcpu].store(false, Ordering::Release);
}
