//! A probe of *watched pages*: a guest page taken out of KVM's memory slots (the VMM keeps its
//! own mapping of it), so that every guest access to it becomes a `KVM_EXIT_MMIO` that the VMM
//! serves from that mapping. It prints, for accesses from CPL0 and CPL3, what each access looks
//! like at the VMM (address, width, read or write), what a `rep movs`, `lock xadd`,
//! `lock cmpxchg`, `xchg` and an SSE copy become, the cost of one access, and whether the slots
//! can be split and joined again while two vCPUs run. Run it with
//! `cargo test -p pvabi-host --lib mmio_probe -- --ignored --nocapture --test-threads 1`.
//!
//! What it printed on this project's PVM host (KVM's page-table-based virtualisation, where
//! ring-0 code is emulated), the same at CPL0 and CPL3 unless noted:
//! - every load and store is one exit with its exact address, width and direction: 8-byte
//!   aligned and unaligned `mov`s one exit of 8 bytes; 4-, 2- and 1-byte ones likewise; an
//!   8-byte load straddling the page's edge one exit of only the 4 bytes inside it;
//! - `rep movsb` of 64 bytes out of the page: 64 exits of 1 byte (RCX counting down);
//!   `rep movsq` of 8 qwords: 8 exits of 8 bytes, in and out of the page;
//! - `lock xadd`, `lock cmpxchg`, `xchg`, `lock add`: a read exit, then a write exit (their
//!   results correct: the read-modify-write is emulated, not atomic against other writers);
//! - an SSE `movdqu` at CPL3: two exits of 8 bytes (load and store);
//! - cost per access: ~10 µs from CPL0 (a port exit there: ~9 µs), ~64 µs from CPL3 (a port
//!   exit there that day: ~62 µs);
//! - slot changes while two vCPUs spin at CPL3 on the page: running through them, both vCPUs
//!   triple-fault at the first change (the rest of RAM is missing between deleting the slot
//!   and creating its pieces); with both held out of `KVM_RUN` around each change, 200 changes
//!   and ~6000 loop iterations each without a fault, ~40 µs of ioctls per change and ~190 µs
//!   with the wait (one run ~5.6 ms a change on a loaded machine).
//!
//! The guest code is position-independent assembly below (`global_asm!` into a read-only
//! section of the test binary), copied into guest RAM by the probe; it does not run on the
//! host.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use kvm_bindings::kvm_userspace_memory_region;
use kvm_ioctls::{Kvm, VcpuExit, VcpuFd, VmFd};
use vm_memory::{
    Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion,
    MemoryRegionAddress,
};

use super::testing::kvm_or_skip;
use super::{boot, cpuid, memory, BOOT_GDT_ADDR, BOOT_STACK_TOP, MIB, PML4_ADDR};

/// The watched page.
const W: u64 = 0x40_0000;
const MEM: u64 = 64 * MIB;
const CODE: u64 = 0x20_0000;
const SSE_CODE: u64 = 0x20_1000;
const SPIN_CODE: u64 = 0x20_2000;
const TO_USER_CODE: u64 = 0x20_3000;
/// The probe's TSS (0x68 bytes, then an 8 KiB I/O bitmap of zeros and its 0xff end byte).
const TSS: u64 = 0x1000;
const PORT_MARK: u16 = 0x5658;
const PORT_TICK: u16 = 0x5659;
const PORT_END: u16 = 0x565a;

std::arch::global_asm!(
    ".pushsection .rodata.pvabi_mmio_probe,\"a\"",
    ".globl pvabi_mmio_probe_tests",
    ".globl pvabi_mmio_probe_tests_end",
    "pvabi_mmio_probe_tests:",
    "mov rbx, 0x400000",
    "mov r8, 0x500000",
    "mov dx, 0x5658",
    // 1: an aligned 8-byte read
    "mov eax, 1",
    "out dx, eax",
    "mov rax, [rbx]",
    // 2: a 4-byte write of an immediate
    "mov eax, 2",
    "out dx, eax",
    "mov dword ptr [rbx + 8], 0x11223344",
    // 3: an aligned 8-byte write
    "mov eax, 3",
    "out dx, eax",
    "movabs rax, 0x8877665544332211",
    "mov [rbx + 16], rax",
    // 4: an unaligned 8-byte read inside the page
    "mov eax, 4",
    "out dx, eax",
    "mov rax, [rbx + 0x23]",
    // 5: an 8-byte read from the RAM page below into the watched page
    "mov eax, 5",
    "out dx, eax",
    "mov rax, [rbx - 4]",
    // 6: an 8-byte read from the watched page into the RAM page above
    "mov eax, 6",
    "out dx, eax",
    "mov rax, [rbx + 0xffc]",
    // 7: rep movsb of 64 bytes out of the page
    "mov eax, 7",
    "out dx, eax",
    "lea rsi, [rbx + 0x40]",
    "mov rdi, r8",
    "mov ecx, 64",
    "cld",
    "rep movsb",
    // 8: rep movsq of 8 qwords out of the page
    "mov eax, 8",
    "out dx, eax",
    "lea rsi, [rbx + 0x40]",
    "mov rdi, r8",
    "mov ecx, 8",
    "rep movsq",
    // 9: rep movsq of 8 qwords into the page
    "mov eax, 9",
    "out dx, eax",
    "mov rsi, r8",
    "lea rdi, [rbx + 0x100]",
    "mov ecx, 8",
    "rep movsq",
    // 10: lock xadd
    "mov eax, 10",
    "out dx, eax",
    "mov eax, 5",
    "lock xadd [rbx + 0x80], eax",
    // 11: lock cmpxchg that succeeds (the VMM preset 0x42)
    "mov eax, 11",
    "out dx, eax",
    "mov eax, 0x42",
    "mov ecx, 0x77",
    "lock cmpxchg [rbx + 0x88], ecx",
    // 12: xchg (implicitly locked)
    "mov eax, 12",
    "out dx, eax",
    "xchg [rbx + 0x90], rax",
    // 13: a 2-byte write and a 1-byte read
    "mov eax, 13",
    "out dx, eax",
    "mov word ptr [rbx + 0x98], 0xabcd",
    "mov al, [rbx + 0x9a]",
    // 14: lock or to the stack? no: lock add to the page (a full barrier used on a queue)
    "mov eax, 14",
    "out dx, eax",
    "lock add dword ptr [rbx + 0xa0], 0",
    // 15..16: 1000 reads
    "mov eax, 15",
    "out dx, eax",
    "mov ecx, 1000",
    ".Lpvabi_mmio_r:",
    "mov eax, [rbx]",
    "dec ecx",
    "jnz .Lpvabi_mmio_r",
    // 16..17: 1000 writes
    "mov eax, 16",
    "out dx, eax",
    "mov ecx, 1000",
    ".Lpvabi_mmio_w:",
    "mov [rbx + 0x200], ecx",
    "dec ecx",
    "jnz .Lpvabi_mmio_w",
    // 17..18: 1000 port writes (the exit cost without MMIO)
    "mov eax, 17",
    "out dx, eax",
    "mov ecx, 1000",
    "mov dx, 0x5659",
    ".Lpvabi_mmio_o:",
    "out dx, eax",
    "dec ecx",
    "jnz .Lpvabi_mmio_o",
    "mov dx, 0x5658",
    "mov eax, 18",
    "out dx, eax",
    "mov dx, 0x565a",
    "out dx, eax",
    "hlt",
    "pvabi_mmio_probe_tests_end:",
    // The SSE copy (run at CPL3 only: the CPL0 emulator lacks SSE).
    ".globl pvabi_mmio_probe_sse",
    ".globl pvabi_mmio_probe_sse_end",
    "pvabi_mmio_probe_sse:",
    "mov rbx, 0x400000",
    "mov dx, 0x5658",
    "mov eax, 30",
    "out dx, eax",
    "movdqu xmm0, [rbx + 0x40]",
    "mov eax, 31",
    "out dx, eax",
    "movdqu [rbx + 0x140], xmm0",
    "mov eax, 32",
    "out dx, eax",
    "mov dx, 0x565a",
    "out dx, eax",
    "hlt",
    "pvabi_mmio_probe_sse_end:",
    // Two vCPUs spin on the page (rdi = the vCPU) until the stop word at 0x500900 is set.
    ".globl pvabi_mmio_probe_spin",
    ".globl pvabi_mmio_probe_spin_end",
    "pvabi_mmio_probe_spin:",
    "mov rbx, 0x400000",
    "mov r8, 0x500800",
    ".Lpvabi_mmio_s:",
    "inc qword ptr [r8 + rdi * 8]",
    "mov rax, [rbx + rdi * 8 + 0x400]",
    "inc rax",
    "mov [rbx + rdi * 8 + 0x400], rax",
    "mov dx, 0x5659",
    "out dx, eax",
    "cmp qword ptr [r8 + 0x100], 0",
    "je .Lpvabi_mmio_s",
    "mov dx, 0x565a",
    "out dx, eax",
    "hlt",
    "pvabi_mmio_probe_spin_end:",
    // CPL0 to CPL3 at r9 with the stack r10, IOPL 3, through an iretq frame.
    ".globl pvabi_mmio_probe_to_user",
    ".globl pvabi_mmio_probe_to_user_end",
    "pvabi_mmio_probe_to_user:",
    "mov ax, 0x33",
    "mov ds, ax",
    "mov es, ax",
    "push 0x33",
    "push r10",
    "push 0x3002",
    "push 0x2b",
    "push r9",
    "iretq",
    "pvabi_mmio_probe_to_user_end:",
    ".popsection",
);

extern "C" {
    static pvabi_mmio_probe_tests: u8;
    static pvabi_mmio_probe_tests_end: u8;
    static pvabi_mmio_probe_sse: u8;
    static pvabi_mmio_probe_sse_end: u8;
    static pvabi_mmio_probe_spin: u8;
    static pvabi_mmio_probe_spin_end: u8;
    static pvabi_mmio_probe_to_user: u8;
    static pvabi_mmio_probe_to_user_end: u8;
}

/// The bytes between two symbols of the assembly above.
fn code(start: &u8, end: &u8) -> Vec<u8> {
    let (s, e) = (start as *const u8, end as *const u8);
    let len = e as usize - s as usize;
    // SAFETY: both symbols bound one contiguous run of bytes in the read-only section above.
    unsafe { std::slice::from_raw_parts(s, len) }.to_vec()
}

/// The probe's memory slots: RAM whole, or split around the watched page.
struct Slots {
    vm: Arc<VmFd>,
    host: u64,
}

impl Slots {
    fn set(&self, slot: u32, gpa: u64, size: u64) {
        let region = kvm_userspace_memory_region {
            slot,
            flags: 0,
            guest_phys_addr: gpa,
            memory_size: size,
            userspace_addr: self.host + gpa,
        };
        // SAFETY: the range is part of the live mapping of guest RAM, which outlives the VM
        // (declared before it in the test).
        unsafe { self.vm.set_user_memory_region(region) }.expect("KVM_SET_USER_MEMORY_REGION");
    }
    /// Takes the watched page out: slot 0 below it, slot 1 above it.
    fn watch(&self) {
        self.set(0, 0, 0);
        self.set(0, 0, W);
        self.set(1, W + 0x1000, MEM - W - 0x1000);
    }
    /// Puts it back: slot 0 is all of RAM again.
    fn unwatch(&self) {
        self.set(1, W + 0x1000, 0);
        self.set(0, 0, 0);
        self.set(0, 0, MEM);
    }
}

/// One access the VMM served.
#[derive(Clone, Debug)]
struct Access {
    gpa: u64,
    write: bool,
    len: usize,
    data: u64,
    rip: u64,
    rcx: u64,
    rflags: u64,
}

fn serve(mem: &GuestMemoryMmap, exit: VcpuExit<'_>) -> Option<(u64, bool, usize, u64)> {
    match exit {
        VcpuExit::MmioRead(gpa, data) => {
            mem.read_slice(data, GuestAddress(gpa)).ok()?;
            let mut v = [0u8; 8];
            v[..data.len()].copy_from_slice(data);
            Some((gpa, false, data.len(), u64::from_le_bytes(v)))
        }
        VcpuExit::MmioWrite(gpa, data) => {
            mem.write_slice(data, GuestAddress(gpa)).ok()?;
            let mut v = [0u8; 8];
            v[..data.len()].copy_from_slice(data);
            Some((gpa, true, data.len(), u64::from_le_bytes(v)))
        }
        _ => None,
    }
}

fn start(fd: &VcpuFd, rip: u64, cpl3: bool, rdi: u64) {
    let mut s = fd.get_sregs().unwrap();
    boot::long_mode_sregs(&mut s, PML4_ADDR);
    s.gdt.limit = 7 * 8 - 1;
    // A TSS with an I/O bitmap allowing every port: what PVM's emulator consults for `out`
    // at CPL3 (it runs ring 3 with the real IOPL 0).
    s.tr.base = TSS;
    s.tr.limit = 0x68 + 8192;
    fd.set_sregs(&s).unwrap();
    let mut regs = boot::entry_regs(rip, BOOT_STACK_TOP - 0x1000 * rdi, rdi, 0, 0);
    if cpl3 {
        // Through the guest's own iretq (CPL0 code), to `rip` at CPL3.
        regs.rip = TO_USER_CODE;
        regs.r9 = rip;
        regs.r10 = 0x60_0000 + 0x1000 * rdi;
    }
    fd.set_regs(&regs).unwrap();
}

const TEST_NAMES: [&str; 18] = [
    "",
    "mov rax, [W] (8-byte read)",
    "mov dword [W+8], imm (4-byte write)",
    "mov [W+16], rax (8-byte write)",
    "mov rax, [W+0x23] (unaligned 8-byte read)",
    "mov rax, [W-4] (8 bytes: 4 RAM, 4 watched)",
    "mov rax, [W+0xffc] (8 bytes: 4 watched, 4 RAM)",
    "rep movsb 64 bytes out of W",
    "rep movsq 8 qwords out of W",
    "rep movsq 8 qwords into W",
    "lock xadd [W+0x80], eax",
    "lock cmpxchg [W+0x88], ecx (succeeds)",
    "xchg [W+0x90], rax",
    "mov word [W+0x98], imm; mov al, [W+0x9a]",
    "lock add dword [W+0xa0], 0",
    "1000 x mov eax, [W]",
    "1000 x mov [W+0x200], ecx",
    "1000 x out (no MMIO)",
];

/// Runs the test body on `fd` from its current state until the end port; prints what each
/// test did.
fn run_tests(label: &str, fd: &mut VcpuFd, mem: &GuestMemoryMmap, verbose_upto: u32) {
    let mut tag = 0u32;
    let mut since = Instant::now();
    let mut accesses: Vec<Access> = Vec::new();
    let mut ticks = 0u64;
    let report = |tag: u32, accesses: &mut Vec<Access>, elapsed: Duration, ticks: u64| {
        if tag == 0 {
            return;
        }
        let name = TEST_NAMES.get(tag as usize).copied().unwrap_or("sse");
        if tag <= verbose_upto || tag >= 30 {
            println!("mmio {label} test {tag} {name}: {} exit(s)", accesses.len());
            for a in accesses.iter().take(24) {
                println!(
                    "    {} gpa {:#x} len {} data {:#x} rip {:#x} rcx {} RF {}",
                    if a.write { "write" } else { "read " },
                    a.gpa,
                    a.len,
                    a.data,
                    a.rip,
                    a.rcx,
                    a.rflags >> 16 & 1
                );
            }
        } else {
            let n = accesses.len().max(ticks as usize).max(1);
            println!(
                "mmio {label} test {tag} {name}: {} MMIO exit(s), {ticks} port exit(s), {:?} \
                 in all, {:.1} us each",
                accesses.len(),
                elapsed,
                elapsed.as_secs_f64() * 1e6 / n as f64
            );
        }
        accesses.clear();
    };
    loop {
        let exit = fd.run();
        match exit {
            Ok(VcpuExit::IoOut(PORT_MARK, data)) => {
                let t = u32::from_le_bytes(data.try_into().unwrap());
                report(tag, &mut accesses, since.elapsed(), ticks);
                ticks = 0;
                tag = t;
                since = Instant::now();
            }
            Ok(VcpuExit::IoOut(PORT_TICK, _)) => ticks += 1,
            Ok(VcpuExit::IoOut(PORT_END, _)) => {
                report(tag, &mut accesses, since.elapsed(), ticks);
                return;
            }
            Ok(e @ (VcpuExit::MmioRead(..) | VcpuExit::MmioWrite(..))) => {
                let (gpa, write, len, data) = serve(mem, e).expect("MMIO inside RAM");
                let (rip, rcx, rflags) = if (15..=17).contains(&tag) {
                    (0, 0, 0)
                } else {
                    let r = fd.get_regs().unwrap();
                    (r.rip, r.rcx, r.rflags)
                };
                accesses.push(Access {
                    gpa,
                    write,
                    len,
                    data,
                    rip,
                    rcx,
                    rflags,
                });
            }
            Ok(other) => {
                let other = format!("{other:?}");
                report(tag, &mut accesses, since.elapsed(), ticks);
                let regs = fd.get_regs().ok();
                println!(
                    "mmio {label}: after test {tag}: unexpected exit {other} at rip {:#x?}",
                    regs.map(|r| r.rip)
                );
                return;
            }
            Err(e) => {
                println!("mmio {label}: after test {tag}: KVM_RUN failed: {e}");
                return;
            }
        }
    }
}

#[test]
#[ignore = "probe of watched pages: prints what works, asserts little"]
fn watched_page_mmio_probe() {
    if !kvm_or_skip("watched_page_mmio_probe") {
        return;
    }
    // Declared before the VM, so dropped after it.
    let memory = memory::create(MEM).unwrap();
    let kvm = Kvm::new().unwrap();
    let vm = Arc::new(kvm.create_vm().unwrap());
    boot::write_tables(&memory, MEM).unwrap();
    // The boot GDT plus user code (DPL 3, 64-bit) and data (DPL 3) descriptors.
    for (i, d) in [0x00af_fb00_0000_ffffu64, 0x00cf_f300_0000_ffff]
        .iter()
        .enumerate()
    {
        memory
            .write_obj(*d, GuestAddress(BOOT_GDT_ADDR + 8 * (5 + i as u64)))
            .unwrap();
    }
    memory.write_obj(0x68u16, GuestAddress(TSS + 0x66)).unwrap();
    memory
        .write_obj(0xffu8, GuestAddress(TSS + 0x68 + 8192))
        .unwrap();
    // SAFETY: the symbols are defined by the assembly above.
    let (tests, sse, spin, to_user) = unsafe {
        (
            code(&pvabi_mmio_probe_tests, &pvabi_mmio_probe_tests_end),
            code(&pvabi_mmio_probe_sse, &pvabi_mmio_probe_sse_end),
            code(&pvabi_mmio_probe_spin, &pvabi_mmio_probe_spin_end),
            code(&pvabi_mmio_probe_to_user, &pvabi_mmio_probe_to_user_end),
        )
    };
    memory.write_slice(&tests, GuestAddress(CODE)).unwrap();
    memory.write_slice(&sse, GuestAddress(SSE_CODE)).unwrap();
    memory.write_slice(&spin, GuestAddress(SPIN_CODE)).unwrap();
    memory
        .write_slice(&to_user, GuestAddress(TO_USER_CODE))
        .unwrap();
    let host = memory
        .iter()
        .next()
        .unwrap()
        .get_host_address(MemoryRegionAddress(0))
        .unwrap() as u64;
    let slots = Slots {
        vm: vm.clone(),
        host,
    };
    slots.set(0, 0, MEM);
    let supported = kvm
        .get_supported_cpuid(kvm_bindings::KVM_MAX_CPUID_ENTRIES)
        .unwrap();
    let base = supported.as_slice().to_vec();
    let mut fds: Vec<VcpuFd> = (0..2)
        .map(|i| {
            let fd = vm.create_vcpu(i).unwrap();
            fd.set_cpuid2(&cpuid::for_vcpu(&base, i as u32).unwrap())
                .unwrap();
            fd
        })
        .collect();

    let preset = |memory: &GuestMemoryMmap| {
        for (i, b) in (0..0x1000u64).step_by(8).enumerate() {
            memory
                .write_obj(0x1111_0000_0000_0000u64 | i as u64, GuestAddress(W + b))
                .unwrap();
        }
        memory.write_obj(0x42u32, GuestAddress(W + 0x88)).unwrap();
    };

    // Phase A and B: the tests at CPL0, then at CPL3, the page watched.
    slots.watch();
    for (label, cpl3) in [("CPL0", false), ("CPL3", true)] {
        preset(&memory);
        start(&fds[0], CODE, cpl3, 0);
        run_tests(label, &mut fds[0], &memory, 14);
        println!(
            "mmio {label}: afterwards W+0x80 = {:#x} (xadd 5), W+0x88 = {:#x} (cmpxchg 0x77), \
             W+0x98 = {:#x}",
            memory.read_obj::<u64>(GuestAddress(W + 0x80)).unwrap(),
            memory.read_obj::<u64>(GuestAddress(W + 0x88)).unwrap(),
            memory.read_obj::<u64>(GuestAddress(W + 0x98)).unwrap()
        );
    }
    preset(&memory);
    start(&fds[0], SSE_CODE, true, 0);
    run_tests("CPL3 SSE", &mut fds[0], &memory, 0);
    slots.unwatch();

    // Phase C: two vCPUs spin at CPL3 while the main thread splits and joins the slots, first
    // with the vCPUs running (no pause), then with both held out of KVM_RUN around each change.
    let memory = Arc::new(memory);
    for paused in [false, true] {
        memory.write_obj(0u64, GuestAddress(0x50_0900)).unwrap();
        let gate = Arc::new((Mutex::new((false, 0u32)), Condvar::new()));
        let outside = Arc::new(AtomicU64::new(0));
        let watched = Arc::new(AtomicU64::new(0));
        let mut threads = Vec::new();
        for (i, mut fd) in std::mem::take(&mut fds).into_iter().enumerate() {
            start(&fd, SPIN_CODE, true, i as u64);
            let (memory, gate, outside, watched) = (
                memory.clone(),
                gate.clone(),
                outside.clone(),
                watched.clone(),
            );
            threads.push(std::thread::spawn(move || {
                let mut result = String::from("ended at the end port");
                let mut in_guest = false;
                let enter = |in_guest: &mut bool| {
                    if paused && !*in_guest {
                        let (m, cv) = &*gate;
                        let mut g = m.lock().unwrap();
                        while g.0 {
                            g = cv.wait(g).unwrap();
                        }
                        g.1 += 1;
                        *in_guest = true;
                    }
                };
                let leave = |in_guest: &mut bool| {
                    if paused && *in_guest {
                        let (m, cv) = &*gate;
                        m.lock().unwrap().1 -= 1;
                        cv.notify_all();
                        *in_guest = false;
                    }
                };
                loop {
                    enter(&mut in_guest);
                    let exit = fd.run();
                    match exit {
                        Ok(VcpuExit::IoOut(PORT_TICK, _)) => leave(&mut in_guest),
                        Ok(VcpuExit::IoOut(PORT_END, _)) => break,
                        Ok(e @ (VcpuExit::MmioRead(..) | VcpuExit::MmioWrite(..))) => {
                            match serve(&memory, e) {
                                Some((gpa, ..)) if gpa & !0xfff == W => {
                                    watched.fetch_add(1, Ordering::Relaxed);
                                }
                                Some(_) => {
                                    outside.fetch_add(1, Ordering::Relaxed);
                                }
                                None => {
                                    result = "MMIO outside RAM".into();
                                    break;
                                }
                            }
                        }
                        Ok(other) => {
                            let other = format!("{other:?}");
                            result = format!(
                                "unexpected exit {other} at rip {:#x?}",
                                fd.get_regs().ok().map(|r| r.rip)
                            );
                            break;
                        }
                        Err(e) => {
                            result = format!("KVM_RUN: {e}");
                            break;
                        }
                    }
                }
                leave(&mut in_guest);
                (result, fd)
            }));
        }
        let t0 = Instant::now();
        let rounds = 100;
        let mut change = Duration::ZERO;
        let mut ioctls = Duration::ZERO;
        let before: Vec<u64> = (0..2)
            .map(|i| memory.read_obj(GuestAddress(0x50_0800 + 8 * i)).unwrap())
            .collect();
        let mut is_watched = false;
        for round in 0..rounds * 2 {
            std::thread::sleep(Duration::from_millis(5));
            let c0 = Instant::now();
            if paused {
                let (m, cv) = &*gate;
                let mut g = m.lock().unwrap();
                g.0 = true;
                while g.1 > 0 {
                    g = cv.wait(g).unwrap();
                }
                drop(g);
            }
            let i0 = Instant::now();
            if round % 2 == 0 {
                slots.watch();
            } else {
                slots.unwatch();
            }
            is_watched = round % 2 == 0;
            ioctls += i0.elapsed();
            if paused {
                let (m, cv) = &*gate;
                m.lock().unwrap().0 = false;
                cv.notify_all();
            }
            change += c0.elapsed();
            if threads.iter().all(|t| t.is_finished()) {
                break;
            }
        }
        if is_watched {
            slots.unwatch();
        }
        memory.write_obj(1u64, GuestAddress(0x50_0900)).unwrap();
        let after: Vec<u64> = (0..2)
            .map(|i| memory.read_obj(GuestAddress(0x50_0800 + 8 * i)).unwrap())
            .collect();
        for (i, t) in threads.into_iter().enumerate() {
            let (result, fd) = t.join().unwrap();
            println!(
                "mmio spin ({}): vCPU {i}: {result}; loop iterations {} during the changes",
                if paused {
                    "paused around changes"
                } else {
                    "running through changes"
                },
                after[i] - before[i]
            );
            fds.push(fd);
        }
        println!(
            "mmio spin ({}): {} slot changes in {:?} ({:?} changing, {:.0} us per change incl. \
             pause, {:.0} us of it in the ioctls), {} watched-page exits, {} MMIO exits elsewhere in RAM (the gap between \
             deleting and re-creating a slot)",
            if paused { "paused" } else { "running" },
            rounds * 2,
            t0.elapsed(),
            change,
            change.as_secs_f64() * 1e6 / (rounds * 2) as f64,
            ioctls.as_secs_f64() * 1e6 / (rounds * 2) as f64,
            watched.load(Ordering::Relaxed),
            outside.load(Ordering::Relaxed)
        );
    }
}
