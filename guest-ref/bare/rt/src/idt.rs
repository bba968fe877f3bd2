//! The IDT, the interrupt entry stubs and trap dispatch.
//!
//! Every vector has a 16-byte stub at `pvabi_rt_isr_stubs + 16 * vector` that pushes
//! a zero error code (unless the CPU pushed one), then the vector, then jumps to a
//! common path that saves the general registers as a [`TrapFrame`] and calls
//! [`pvabi_rt_trap`]. Vectors 0-31 (exceptions) are fatal: the fatal hook runs, then
//! the vCPU halts with interrupts off, which the host reports with the registers.
//! Vectors 32-255 call the handler registered with [`set_interrupt_handler`], or are
//! fatal when none is. All gates have DPL 0: software interrupts (`int n`) are not a
//! way into the runtime (on PVM hosts they do not work at all; see `user.rs`).
//!
//! The stubs and the common path are hand-written assembly: the `x86_64` crate's typed
//! handlers need the nightly-only `x86-interrupt` ABI, which hands a handler the CPU's
//! frame only, not the saved registers of a [`TrapFrame`]. The gates are the crate's.

use core::arch::{asm, global_asm};
use core::mem::MaybeUninit;
use core::sync::atomic::{AtomicUsize, Ordering};

use x86_64::instructions::tables::lidt;
use x86_64::registers::control::Cr2;
use x86_64::structures::gdt::SegmentSelector;
use x86_64::structures::idt::{Entry, HandlerFunc};
use x86_64::structures::DescriptorTablePointer;
use x86_64::VirtAddr;

use crate::{Global, FATAL_MARKER, KERNEL_CS};

/// The registers saved on interrupt entry, lowest address first.
#[repr(C)]
#[derive(Debug)]
#[allow(missing_docs)]
pub struct TrapFrame {
    pub r15: u64,
    pub r14: u64,
    pub r13: u64,
    pub r12: u64,
    pub r11: u64,
    pub r10: u64,
    pub r9: u64,
    pub r8: u64,
    pub rdi: u64,
    pub rsi: u64,
    pub rbp: u64,
    pub rbx: u64,
    pub rdx: u64,
    pub rcx: u64,
    pub rax: u64,
    /// The interrupt vector.
    pub vector: u64,
    /// The CPU's error code, or 0 for vectors without one.
    pub error_code: u64,
    /// Where the interrupted code resumes.
    pub rip: u64,
    /// The interrupted code's CS (its low two bits are the CPL it ran at).
    pub cs: u64,
    pub rflags: u64,
    pub rsp: u64,
    pub ss: u64,
}

/// A handler for an interrupt vector (32-255). It runs at CPL0 with interrupts
/// disabled, on the kernel stack of the vCPU that took the interrupt. There is no
/// interrupt controller to acknowledge: the host injects vectors directly.
pub type InterruptHandler = fn(&mut TrapFrame);

/// Called on a fatal exception or unexpected interrupt, before the vCPU halts for
/// good. Use it to report the frame through the host's protocol.
pub type FatalHook = fn(&TrapFrame);

/// Why [`set_interrupt_handler`] refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HandlerError {
    /// Vectors 0-31 are CPU exceptions: they are always fatal.
    Exception,
}

static HANDLERS: [AtomicUsize; 256] = [const { AtomicUsize::new(0) }; 256];
static FATAL_HOOK: AtomicUsize = AtomicUsize::new(0);

/// Registers `handler` for `vector` (for every vCPU).
pub fn set_interrupt_handler(vector: u8, handler: InterruptHandler) -> Result<(), HandlerError> {
    check_vector(vector)?;
    HANDLERS[usize::from(vector)].store(handler as usize, Ordering::Release);
    Ok(())
}

/// Removes the handler for `vector`; the vector becomes fatal again.
pub fn clear_interrupt_handler(vector: u8) -> Result<(), HandlerError> {
    check_vector(vector)?;
    HANDLERS[usize::from(vector)].store(0, Ordering::Release);
    Ok(())
}

fn check_vector(vector: u8) -> Result<(), HandlerError> {
    if vector < 32 {
        Err(HandlerError::Exception)
    } else {
        Ok(())
    }
}

/// Installs the hook that runs before a fatal halt.
pub fn set_fatal_hook(hook: FatalHook) {
    FATAL_HOOK.store(hook as usize, Ordering::Release);
}

/// Vectors for which the CPU pushes an error code.
macro_rules! has_error_code {
    () => {
        "(pvabi_rt_vec == 8) || ((pvabi_rt_vec >= 10) && (pvabi_rt_vec <= 14)) || (pvabi_rt_vec == 17) || (pvabi_rt_vec == 21) || (pvabi_rt_vec == 29) || (pvabi_rt_vec == 30)"
    };
}

global_asm!(
    ".section .text.pvabi_rt_isr, \"ax\", @progbits",
    ".balign 16",
    ".global pvabi_rt_isr_stubs",
    "pvabi_rt_isr_stubs:",
    ".set pvabi_rt_vec, 0",
    ".rept 256",
    "    .balign 16",
    // #UD and #GP first check for the end of ring-3 code (user.rs).
    "    .if pvabi_rt_vec == 6",
    "    jmp pvabi_rt_ud_entry",
    "    .elseif pvabi_rt_vec == 13",
    "    jmp pvabi_rt_gp_entry",
    "    .else",
    concat!("    .if !(", has_error_code!(), ")"),
    "    push 0",
    "    .endif",
    "    push pvabi_rt_vec",
    "    jmp pvabi_rt_isr_common",
    "    .endif",
    "    .set pvabi_rt_vec, pvabi_rt_vec + 1",
    ".endr",
    "",
    ".global pvabi_rt_isr_common",
    "pvabi_rt_isr_common:",
    "    push rax",
    "    push rcx",
    "    push rdx",
    "    push rbx",
    "    push rbp",
    "    push rsi",
    "    push rdi",
    "    push r8",
    "    push r9",
    "    push r10",
    "    push r11",
    "    push r12",
    "    push r13",
    "    push r14",
    "    push r15",
    "    mov rdi, rsp",
    "    cld",
    "    call {trap}",
    "    pop r15",
    "    pop r14",
    "    pop r13",
    "    pop r12",
    "    pop r11",
    "    pop r10",
    "    pop r9",
    "    pop r8",
    "    pop rdi",
    "    pop rsi",
    "    pop rbp",
    "    pop rbx",
    "    pop rdx",
    "    pop rcx",
    "    pop rax",
    "    add rsp, 16",
    "    iretq",
    trap = sym pvabi_rt_trap,
);

extern "C" {
    static pvabi_rt_isr_stubs: u8;
}

/// Dispatches one trap. Called by the common stub with the saved frame.
extern "C" fn pvabi_rt_trap(frame: &mut TrapFrame) {
    let vector = frame.vector as usize;
    let handler = if vector >= 32 {
        HANDLERS[vector & 0xff].load(Ordering::Acquire)
    } else {
        0
    };
    if handler == 0 {
        fatal(frame);
    }
    // SAFETY: non-zero entries are only ever stored from `InterruptHandler` values.
    let handler: InterruptHandler =
        unsafe { core::mem::transmute::<usize, InterruptHandler>(handler) };
    handler(frame);
}

/// Runs the fatal hook, then halts with the trap in the registers the host reports:
/// `rax` = [`FATAL_MARKER`] | vector, `rdi` = vector, `rsi` = rip, `rdx` = error code,
/// `rcx` = CR2, `r8` = the interrupted CS.
fn fatal(frame: &TrapFrame) -> ! {
    let hook = FATAL_HOOK.load(Ordering::Acquire);
    if hook != 0 {
        // SAFETY: non-zero values are only ever stored from `FatalHook` values.
        let hook: FatalHook = unsafe { core::mem::transmute::<usize, FatalHook>(hook) };
        hook(frame);
    }
    // Trap handlers always run at CPL0, where CR2 can be read.
    let cr2 = Cr2::read_raw();
    loop {
        // Hand-written: the host reads the report from these registers.
        // SAFETY: halts with interrupts disabled; only loads registers.
        unsafe {
            asm!(
                "cli",
                "hlt",
                in("rax") FATAL_MARKER | frame.vector,
                in("rdi") frame.vector,
                in("rsi") frame.rip,
                in("rdx") frame.error_code,
                in("rcx") cr2,
                in("r8") frame.cs,
                options(nomem, nostack),
            );
        }
    }
}

/// All 256 gates. Not `x86_64`'s `InterruptDescriptorTable`: that keeps the reserved
/// vectors (15, 22-27, 31) private, and the runtime makes every vector present.
#[repr(C, align(16))]
struct Idt([Entry<HandlerFunc>; 256]);

// Written once by the boot vCPU in `init`, before other vCPUs start; read-only after.
// Uninitialised until then, so that it stays in .bss (a non-present gate is not zero).
static IDT: Global<MaybeUninit<Idt>> = Global::new(MaybeUninit::uninit());

/// Fills the IDT. Called once by the boot vCPU.
pub(crate) fn init() {
    let stubs = core::ptr::addr_of!(pvabi_rt_isr_stubs) as u64;
    let gates = IDT.get().cast::<Entry<HandlerFunc>>();
    for vector in 0..256 {
        let mut gate = Entry::missing();
        // SAFETY: the address is vector `vector`'s entry stub (above), which expects
        // exactly the CPU's interrupt frame; KERNEL_CS is the runtime's 64-bit kernel code
        // segment. The defaults are what the runtime wants: present, interrupt gate (IF
        // cleared on entry), DPL 0, no IST.
        unsafe {
            gate.set_handler_addr(VirtAddr::new(stubs + 16 * vector as u64))
                .set_code_selector(SegmentSelector(KERNEL_CS));
        }
        // SAFETY: in bounds (`Idt` is 256 entries); single-threaded at this point (nothing
        // has loaded the IDT yet).
        unsafe { gates.add(vector).write(gate) };
    }
}

/// Loads the IDT on the calling vCPU.
pub(crate) fn load() {
    let ptr = DescriptorTablePointer {
        limit: (core::mem::size_of::<Idt>() - 1) as u16,
        base: VirtAddr::from_ptr(IDT.get()),
    };
    // SAFETY: the IDT was filled by `init` and lives forever.
    unsafe { lidt(&ptr) };
}
