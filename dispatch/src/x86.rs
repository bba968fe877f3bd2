//! x86-64 instructions, decoded with the [`iced_x86`] crate: the one place where the project
//! decodes guest code.
//!
//! Two users:
//! - the checking host's look at accesses through a queued page-table entry (module
//!   `guest_check::queued_pte`, PVABI-MEM-013 and PVABI-DEFER-008): [`decode`] gives the
//!   memory an instruction accesses, from its bytes and the registers it starts with, and how
//!   the next stop shows that it ran ([`Decoded::ran`]);
//! - a VMM that looks for a few instructions in the bytes at RIP ([`special`]): the
//!   reference host's discovery trace (CPUID, `vmcall`, `vmmcall`: PVABI-DISC-004,
//!   PVABI-CONV-010) and its test of whether an `out` exit is an element of a `rep outs`.
//!
//! # What [`decode`] gives, and what it gives up on
//!
//! iced decodes every instruction of the 64-bit mode (legacy, VEX and EVEX encodings) and
//! says which memory each one accesses: its memory operands, with segment, base, index,
//! scale and displacement (RIP-relative ones made absolute), and the implicit ones (the stack
//! slots of `push`, `pop`, `call`, `ret`, `enter` and `leave`, the elements of string
//! instructions, `xlat`'s table byte). [`decode`] turns those into linear addresses with the
//! registers the instruction starts with (FS and GS add their bases; ES, CS, SS and DS add
//! none in 64-bit mode). It gives up (`None`), so that no access is ever made up, on:
//! - bytes that are no valid instruction, or that end before it does;
//! - control transfers other than the near ones of 64-bit code (`jmp`, `jcc`, `loop`,
//!   `jrcxz`, `call`, `ret`, directly or through a register or memory): `int`, `syscall`,
//!   `iretq`, far transfers, `xbegin`, `ud2`, `vmcall` and the like;
//! - `bt`, `bts`, `btr` and `btc` of memory with a register bit offset, which address a bit
//!   string beyond the operand (iced gives the operand's address);
//! - an access whose size iced does not give (`xsave` and its kin: the size depends on XCR0;
//!   AMX tiles), a gather or scatter (VSIB), a masked load or store (`maskmovdqu`,
//!   `vmaskmovps`, `vpmaskmovd`, any AVX-512 instruction with an opmask: the elements the
//!   mask leaves out are not accessed, though iced gives the whole operand for most of them),
//!   and any other conditional access than a string instruction's element under `rep`:
//!   whether or where they access memory does not show in the bytes and registers.
//!
//! A `rep`-prefixed string instruction runs as many elements as its count (RCX, or ECX with
//! `67`) goes down by, from its starting RSI and RDI on: a processor's single-step trap
//! stops after each element with RIP still on the instruction, and KVM's instruction
//! emulator (all ring-0 code on PVM) was measured running the whole count in one step, RIP
//! still on it, then moving RIP past it in the next step with the count 0. [`Decoded::ran`]
//! reports the elements each step ran, from the registers at the stops before and after it.
//!
//! # The soundness rule
//!
//! A decode is checked by the instruction's own execution before any access is reported:
//! [`Decoded::ran`] takes it as run only if the next stop's RIP is the one it goes to (right
//! after it; for a branch, its target; for a transfer through memory or a `ret`, the 8 bytes
//! it loaded, read again at the next stop; for a `rep` string instruction, itself again with
//! its count gone down) and its RSP is the one it leaves (unchanged, or moved by its stack
//! operation; any value only where it writes RSP as an operand or with `leave`). An
//! instruction that faulted, an interrupt delivered before it, or a decode that is wrong
//! shows as a stop that does not fit, and nothing is reported for it.

use iced_x86::{
    Code, CodeSize, Decoder, DecoderOptions, FlowControl, InstructionInfoFactory, Mnemonic,
    OpAccess, OpKind, Register,
};

/// The position of RSP in [`Regs::gprs`] (the encoding order: 0 = rax, 1 = rcx, 2 = rdx,
/// 3 = rbx, 4 = rsp, 5 = rbp, 6 = rsi, 7 = rdi, 8 to 15 = r8 to r15).
pub const RSP: usize = 4;

/// How an instruction uses the memory it names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// The fetch of the instruction's own bytes.
    Fetch,
    /// A load.
    Read,
    /// A store.
    Write,
    /// A load and a store of the same bytes (`add [m], r`, `xchg`, `cmpxchg`, `inc`, ...).
    ReadWrite,
}

impl Kind {
    /// For a message: "a read", "a write", ...
    pub fn describe(self) -> &'static str {
        match self {
            Kind::Fetch => "the fetch",
            Kind::Read => "a read",
            Kind::Write => "a write",
            Kind::ReadWrite => "a read-modify-write",
        }
    }
}

/// One access to linear memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Access {
    /// The first byte's linear address.
    pub address: u64,
    /// Bytes accessed (1 to 512: `fxsave` stores 512).
    pub size: u32,
    /// Load, store or both.
    pub kind: Kind,
}

/// Where an instruction leaves RIP, which the next stop must show for it to count as run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Next {
    /// Right after it.
    Follows,
    /// At this address (a direct `jmp` or `call`, or one through a register).
    To(u64),
    /// Right after it or at this address (a conditional branch, `loop`, `jrcxz`).
    Branch(u64),
    /// At the 8 bytes the instruction loads from this linear address (a `jmp` or `call`
    /// through memory, `ret`): [`Decoded::ran`] reads them at the next stop.
    Loaded(u64),
}

/// A `rep`-prefixed string instruction: what it starts with, against which the next stop
/// shows how many elements it ran.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Repeat {
    /// The count (RCX, or ECX with `67`).
    pub count: u64,
    /// It counts in ECX and addresses with ESI and EDI (`67`).
    pub addr32: bool,
    /// The index register that moves by an element each time (RDI where it has one, else
    /// RSI), in encoding order (see [`RSP`]).
    pub index: usize,
    /// That register's value.
    pub start: u64,
    /// An element's size in bytes.
    pub size: u32,
}

/// At most this many bytes of each of a `rep` string instruction's element runs are reported
/// for one step, from its first element on: 256 pages to walk.
pub const ELEMENTS_MAX: u64 = 1 << 20;

/// What [`decode`] found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decoded {
    /// The instruction's length in bytes.
    pub len: u8,
    /// Its data accesses: memory operands, stack slots, string elements (in iced's order);
    /// for a `rep` string instruction, its first elements (at RSI, RDI), whatever its count.
    pub data: Vec<Access>,
    /// Where it leaves RIP.
    pub next: Next,
    /// RSP after it, where that follows from the registers it starts with (`None`: it writes
    /// RSP as an operand, as `mov rsp, rax` and `pop rsp` do, or with `leave`).
    pub rsp: Option<u64>,
    /// A `rep` string instruction's start.
    pub repeat: Option<Repeat>,
}

impl Decoded {
    /// What the instruction at `rip` accessed, if the next stop (its RIP and general
    /// registers) shows that it ran: the fetch of its bytes, then its data accesses. `None`
    /// where the stop does not fit it: its RIP is not where the instruction goes ([`Next`]),
    /// or its RSP not the one it leaves ([`Decoded::rsp`]). `load` reads the 8 bytes at a
    /// linear address at the next stop (`None`: not mapped), for [`Next::Loaded`].
    ///
    /// A `rep` string instruction may also stop on itself, with elements left to do; either
    /// way the count must have gone down by the elements it ran (none only where it was 0
    /// and RIP moved past it), and RDI (or RSI) by as many elements, forwards or backwards;
    /// each element access becomes the run of the elements done (at most [`ELEMENTS_MAX`]
    /// bytes of it).
    pub fn ran(
        &self,
        rip: u64,
        next_rip: u64,
        next_gprs: &[u64; 16],
        load: impl FnOnce(u64) -> Option<u64>,
    ) -> Option<Vec<Access>> {
        let after = rip.wrapping_add(u64::from(self.len));
        if self.rsp.is_some_and(|rsp| rsp != next_gprs[RSP]) {
            return None;
        }
        let fits = match self.next {
            Next::Follows => next_rip == after,
            Next::To(target) => next_rip == target,
            Next::Branch(target) => next_rip == after || next_rip == target,
            Next::Loaded(at) => load(at) == Some(next_rip),
        };
        let fetch = Access {
            address: rip,
            size: u32::from(self.len),
            kind: Kind::Fetch,
        };
        let Some(r) = self.repeat else {
            return fits.then(|| {
                std::iter::once(fetch)
                    .chain(self.data.iter().copied())
                    .collect()
            });
        };
        if !fits && next_rip != rip {
            return None;
        }
        let mask = if r.addr32 { 0xffff_ffff } else { u64::MAX };
        let left = next_gprs[1] & mask;
        if left > r.count {
            return None;
        }
        let done = r.count - left;
        if done == 0 && (next_rip == rip || r.count != 0) {
            return None;
        }
        let span = done.checked_mul(u64::from(r.size))?;
        let moved = next_gprs[r.index].wrapping_sub(r.start) & mask;
        let forward = moved == span & mask;
        if !forward && moved != span.wrapping_neg() & mask {
            return None;
        }
        let mut accesses = vec![fetch];
        if done == 0 {
            return Some(accesses);
        }
        let run = span.min(ELEMENTS_MAX);
        accesses.extend(self.data.iter().map(|e| Access {
            // Backwards (DF set), the first element is the highest.
            address: if forward {
                e.address
            } else {
                e.address.wrapping_add(u64::from(e.size)).wrapping_sub(run)
            },
            size: run as u32,
            kind: e.kind,
        }));
        Some(accesses)
    }
}

/// The registers an instruction starts with, as far as its addresses need them.
#[derive(Clone, Copy, Debug)]
pub struct Regs<'a> {
    /// RIP: the instruction's own address.
    pub rip: u64,
    /// The general registers in encoding order (see [`RSP`]).
    pub gprs: &'a [u64; 16],
    /// FS's base (an `fs:` override adds it).
    pub fs_base: u64,
    /// GS's base (a `gs:` override adds it).
    pub gs_base: u64,
}

impl Regs<'_> {
    /// The value of `reg` as an address computation reads it: a general register of any
    /// size (AH to BH are bits 15:8), or a segment register's base. `None` for any other.
    fn value(&self, reg: Register) -> Option<u64> {
        match reg {
            Register::FS => return Some(self.fs_base),
            Register::GS => return Some(self.gs_base),
            Register::ES | Register::CS | Register::SS | Register::DS => return Some(0),
            _ => {}
        }
        if !reg.is_gpr() {
            return None;
        }
        let full = *self.gprs.get(reg.full_register().number())?;
        Some(match reg.size() {
            8 => full,
            4 => full & 0xffff_ffff,
            2 => full & 0xffff,
            _ if matches!(
                reg,
                Register::AH | Register::CH | Register::DH | Register::BH
            ) =>
            {
                (full >> 8) & 0xff
            }
            _ => full & 0xff,
        })
    }
}

/// Decodes the instruction at the start of `code` (the bytes at RIP, as many as could be
/// read, in 64-bit mode) with the registers it starts with. `None` if it is one this module
/// gives up on (see the module's documentation) or `code` ends before it does.
pub fn decode(code: &[u8], regs: &Regs<'_>) -> Option<Decoded> {
    let mut decoder = Decoder::with_ip(64, code, regs.rip, DecoderOptions::NONE);
    let instr = decoder.decode();
    if instr.is_invalid() {
        return None;
    }
    let reg = |r: Register| regs.value(r);
    // The operand a transfer through a register or memory takes its target from.
    let indirect = || match instr.op0_kind() {
        OpKind::Register => reg(instr.op0_register()).map(Next::To),
        OpKind::Memory => instr
            .virtual_address(0, 0, |r, _, _| reg(r))
            .map(Next::Loaded),
        _ => None,
    };
    let near = matches!(instr.op0_kind(), OpKind::NearBranch64);
    let next = match instr.flow_control() {
        FlowControl::Next => Next::Follows,
        FlowControl::UnconditionalBranch | FlowControl::Call if near => {
            Next::To(instr.near_branch_target())
        }
        FlowControl::ConditionalBranch if near => Next::Branch(instr.near_branch_target()),
        FlowControl::IndirectBranch if instr.code() == Code::Jmp_rm64 => indirect()?,
        FlowControl::IndirectCall if instr.code() == Code::Call_rm64 => indirect()?,
        FlowControl::Return if matches!(instr.code(), Code::Retnq | Code::Retnq_imm16) => {
            Next::Loaded(regs.gprs[RSP])
        }
        _ => return None,
    };
    // A bit string: the bit offset in a register reaches beyond the operand.
    if matches!(
        instr.mnemonic(),
        Mnemonic::Bt | Mnemonic::Bts | Mnemonic::Btr | Mnemonic::Btc
    ) && instr.op0_kind() == OpKind::Memory
        && instr.op1_kind() == OpKind::Register
    {
        return None;
    }
    // Masked loads and stores: the elements the mask leaves out are not accessed (iced gives
    // the whole operand for these).
    let masked = matches!(
        instr.mnemonic(),
        Mnemonic::Maskmovq
            | Mnemonic::Maskmovdqu
            | Mnemonic::Vmaskmovdqu
            | Mnemonic::Vmaskmovps
            | Mnemonic::Vmaskmovpd
            | Mnemonic::Vpmaskmovd
            | Mnemonic::Vpmaskmovq
    ) || instr.op_mask() != Register::None;
    let mut factory = InstructionInfoFactory::new();
    let info = factory.info(&instr);
    // A `rep` string instruction: iced gives its elements' accesses as conditional (on the
    // count), and [`Decoded::ran`] scales them by the elements the next stop shows run.
    let rep_string =
        instr.is_string_instruction() && (instr.has_rep_prefix() || instr.has_repne_prefix());
    let mut data = Vec::with_capacity(info.used_memory().len());
    for m in info.used_memory() {
        if m.vsib_size() != 0 || masked {
            return None;
        }
        let kind = match m.access() {
            OpAccess::Read => Kind::Read,
            OpAccess::Write => Kind::Write,
            OpAccess::ReadWrite | OpAccess::ReadCondWrite => Kind::ReadWrite,
            OpAccess::CondRead if rep_string => Kind::Read,
            OpAccess::CondWrite if rep_string => Kind::Write,
            OpAccess::NoMemAccess | OpAccess::None => continue,
            _ => return None,
        };
        let conditional = matches!(m.access(), OpAccess::CondRead | OpAccess::CondWrite);
        let size = if conditional {
            instr.memory_size().size()
        } else {
            m.memory_size().size()
        };
        if size == 0 {
            return None;
        }
        data.push(Access {
            address: m.virtual_address(0, |r, _, _| reg(r))?,
            size: u32::try_from(size).ok()?,
            kind,
        });
    }
    // RSP after it: unchanged unless it writes RSP; moved by its stack operation where that
    // is all it does to RSP.
    let rsp = regs.gprs[RSP];
    let writes_rsp = info.used_registers().iter().any(|u| {
        u.register().full_register() == Register::RSP
            && matches!(
                u.access(),
                OpAccess::Write
                    | OpAccess::CondWrite
                    | OpAccess::ReadWrite
                    | OpAccess::ReadCondWrite
            )
    });
    let names_rsp = (0..instr.op_count()).any(|i| {
        instr.op_kind(i) == OpKind::Register
            && instr.op_register(i).full_register() == Register::RSP
    });
    let increment = instr.stack_pointer_increment();
    let rsp = if !writes_rsp {
        Some(rsp)
    } else if names_rsp || increment == 0 {
        None
    } else {
        Some(rsp.wrapping_add(i64::from(increment) as u64))
    };
    let repeat = if rep_string {
        let addr32 = info
            .used_memory()
            .iter()
            .any(|m| m.address_size() == CodeSize::Code32);
        let mask = if addr32 { 0xffff_ffff } else { u64::MAX };
        let index = if instr.op0_kind() == OpKind::MemoryESRDI
            || instr.op0_kind() == OpKind::MemoryESEDI
            || instr.op1_kind() == OpKind::MemoryESRDI
            || instr.op1_kind() == OpKind::MemoryESEDI
        {
            7
        } else {
            6
        };
        Some(Repeat {
            count: regs.gprs[1] & mask,
            addr32,
            index,
            start: regs.gprs[index] & mask,
            size: u32::try_from(instr.memory_size().size()).ok()?,
        })
    } else {
        None
    };
    Some(Decoded {
        len: u8::try_from(instr.len()).ok()?,
        data,
        next,
        rsp,
        repeat,
    })
}

/// An instruction a VMM looks for at RIP ([`special`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Special {
    /// `cpuid`.
    Cpuid,
    /// `vmcall` (Intel's hypercall instruction).
    Vmcall,
    /// `vmmcall` (AMD's).
    Vmmcall,
    /// `rep outs` (`outsb`, `outsw`, `outsd` with `rep` or `repne`): a string output whose
    /// elements exit one at a time.
    RepOuts,
}

/// Which [`Special`] instruction starts `code` (bytes at RIP, decoded as 64-bit code), if
/// any.
pub fn special(code: &[u8]) -> Option<Special> {
    let instr = Decoder::new(64, code, DecoderOptions::NONE).decode();
    match instr.code() {
        Code::Cpuid => Some(Special::Cpuid),
        Code::Vmcall => Some(Special::Vmcall),
        Code::Vmmcall => Some(Special::Vmmcall),
        Code::Outsb_DX_m8 | Code::Outsw_DX_m16 | Code::Outsd_DX_m32
            if instr.has_rep_prefix() || instr.has_repne_prefix() =>
        {
            Some(Special::RepOuts)
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::{decode, special, Access, Decoded, Kind, Next, Regs, Special, RSP};

    /// Registers where register `n` holds `0x1000 * (n + 1)`, at RIP 0x20_0000.
    fn gprs() -> [u64; 16] {
        std::array::from_fn(|n| 0x1000 * (n as u64 + 1))
    }

    fn with(code: &[u8], g: &[u64; 16]) -> Option<Decoded> {
        decode(
            code,
            &Regs {
                rip: 0x20_0000,
                gprs: g,
                fs_base: 0x7000_0000,
                gs_base: 0x9000_0000,
            },
        )
    }

    fn at(code: &[u8]) -> Option<Decoded> {
        with(code, &gprs())
    }

    /// The length and the one data access of `code`.
    fn one(code: &[u8]) -> (u8, Access) {
        let d = at(code).unwrap_or_else(|| panic!("{code:x?} not decoded"));
        assert_eq!(d.data.len(), 1, "{code:x?}: {d:?}");
        (d.len, d.data[0])
    }

    fn acc(address: u64, size: u32, kind: Kind) -> Access {
        Access {
            address,
            size,
            kind,
        }
    }

    #[test]
    fn modrm_sib_and_displacement_forms_give_the_address() {
        // mov rax, [rcx]: base rcx (0x2000)
        assert_eq!(one(&[0x48, 0x8b, 0x01]), (3, acc(0x2000, 8, Kind::Read)));
        // mov eax, [rbx + 0x10]: disp8
        assert_eq!(one(&[0x8b, 0x43, 0x10]), (3, acc(0x4010, 4, Kind::Read)));
        // mov [rbp - 8], rdi: disp8 negative
        assert_eq!(
            one(&[0x48, 0x89, 0x7d, 0xf8]),
            (4, acc(0x6000 - 8, 8, Kind::Write))
        );
        // mov rax, [rsp + 0x20]: SIB with no index (rsp base)
        assert_eq!(
            one(&[0x48, 0x8b, 0x44, 0x24, 0x20]),
            (5, acc(0x5020, 8, Kind::Read))
        );
        // mov eax, [rax + rcx*4 + 0x12345678]: SIB, disp32
        assert_eq!(
            one(&[0x8b, 0x84, 0x88, 0x78, 0x56, 0x34, 0x12]),
            (7, acc(0x1000 + 0x2000 * 4 + 0x1234_5678, 4, Kind::Read))
        );
        // mov eax, [r12 + r13*8]: REX.X and REX.B (r12 as base needs a SIB)
        assert_eq!(
            one(&[0x43, 0x8b, 0x04, 0xec]),
            (4, acc(0xd000 + 0xe000 * 8, 4, Kind::Read))
        );
        // mov eax, [r12 + r12]: index 4 with REX.X is r12, not "none"
        assert_eq!(
            one(&[0x43, 0x8b, 0x04, 0x24]),
            (4, acc(0xd000 * 2, 4, Kind::Read))
        );
        // mov eax, [0x1000 + rcx*2]: SIB base 5 with mod 0 is disp32 and no base
        assert_eq!(
            one(&[0x8b, 0x04, 0x4d, 0x00, 0x10, 0x00, 0x00]),
            (7, acc(0x1000 + 0x2000 * 2, 4, Kind::Read))
        );
        // mov eax, [rip + 0x10] with REX.B: mod 0 and rm 5 are RIP-relative whatever REX.B
        // says ([r13] needs mod 1, below).
        assert_eq!(
            one(&[0x41, 0x8b, 0x05, 0x10, 0, 0, 0]),
            (7, acc(0x20_0000 + 7 + 0x10, 4, Kind::Read))
        );
        // mov eax, [r13 + 0]: mod 1
        assert_eq!(
            one(&[0x41, 0x8b, 0x45, 0x00]),
            (4, acc(0xe000, 4, Kind::Read))
        );
        // mov eax, [eax]: 32-bit addressing (67) truncates the address
        let mut g = gprs();
        g[0] = 0x1_2345_6789;
        assert_eq!(
            with(&[0x67, 0x8b, 0x00], &g).map(|d| d.data),
            Some(vec![acc(0x2345_6789, 4, Kind::Read)])
        );
    }

    #[test]
    fn rip_relative_addresses_count_from_the_next_instruction() {
        // mov rax, [rip + 0x100]
        assert_eq!(
            one(&[0x48, 0x8b, 0x05, 0x00, 0x01, 0, 0]),
            (7, acc(0x20_0007 + 0x100, 8, Kind::Read))
        );
        // mov dword [rip - 0x10], 0x11223344: the immediate counts in the length
        assert_eq!(
            one(&[0xc7, 0x05, 0xf0, 0xff, 0xff, 0xff, 0x44, 0x33, 0x22, 0x11]),
            (10, acc(0x20_000a - 0x10, 4, Kind::Write))
        );
        // cmp byte [rip + 4], 1
        assert_eq!(
            one(&[0x80, 0x3d, 4, 0, 0, 0, 1]),
            (7, acc(0x20_0007 + 4, 1, Kind::Read))
        );
    }

    #[test]
    fn operand_sizes_prefixes_and_segment_bases() {
        // 66 mov [rax], cx: 2 bytes
        assert_eq!(one(&[0x66, 0x89, 0x08]), (3, acc(0x1000, 2, Kind::Write)));
        // 66 mov word [rax], 0x1234: imm16
        assert_eq!(
            one(&[0x66, 0xc7, 0x00, 0x34, 0x12]),
            (5, acc(0x1000, 2, Kind::Write))
        );
        // mov qword [rax], -1: imm32 sign-extended with REX.W
        assert_eq!(
            one(&[0x48, 0xc7, 0x00, 0xff, 0xff, 0xff, 0xff]),
            (7, acc(0x1000, 8, Kind::Write))
        );
        // mov rax, gs:[0x28]: SIB-less disp32 absolute (mod 0, rm 4, base 5) plus GS's base
        assert_eq!(
            one(&[0x65, 0x48, 0x8b, 0x04, 0x25, 0x28, 0, 0, 0]),
            (9, acc(0x9000_0028, 8, Kind::Read))
        );
        // mov eax, fs:[rbx]
        assert_eq!(
            one(&[0x64, 0x8b, 0x03]),
            (3, acc(0x7000_0000 + 0x4000, 4, Kind::Read))
        );
        // ds: and cs: overrides add nothing in 64-bit mode, and neither does ss: for [rbp];
        // lock add [rdx], eax
        assert_eq!(one(&[0x3e, 0x8b, 0x02]), (3, acc(0x3000, 4, Kind::Read)));
        assert_eq!(one(&[0x2e, 0x8b, 0x02]), (3, acc(0x3000, 4, Kind::Read)));
        assert_eq!(
            one(&[0x8b, 0x45, 0x08]),
            (3, acc(0x6000 + 8, 4, Kind::Read))
        );
        assert_eq!(
            one(&[0xf0, 0x01, 0x02]),
            (3, acc(0x3000, 4, Kind::ReadWrite))
        );
        // Two segment overrides: in 64-bit mode the last FS or GS one counts (iced decodes as
        // the processor does), and a DS after it does not undo it.
        assert_eq!(
            one(&[0x64, 0x65, 0x8b, 0x00]),
            (4, acc(0x9000_1000, 4, Kind::Read))
        );
        assert_eq!(
            one(&[0x64, 0x3e, 0x8b, 0x00]),
            (4, acc(0x7000_1000, 4, Kind::Read))
        );
        // A REX before a legacy prefix is no REX (it must come last): 66 makes it 16 bits.
        assert_eq!(
            one(&[0x48, 0x66, 0x8b, 0x00]),
            (4, acc(0x1000, 2, Kind::Read))
        );
        // movzx eax, byte [rsi]; movsx rax, word [rdi]
        assert_eq!(one(&[0x0f, 0xb6, 0x06]), (3, acc(0x7000, 1, Kind::Read)));
        assert_eq!(
            one(&[0x48, 0x0f, 0xbf, 0x07]),
            (4, acc(0x8000, 2, Kind::Read))
        );
        // mov al, [moffs64]; mov [moffs64], rax
        assert_eq!(
            one(&[0xa0, 0x88, 0x77, 0x66, 0x55, 0x44, 0x33, 0x22, 0x11]),
            (9, acc(0x1122_3344_5566_7788, 1, Kind::Read))
        );
        assert_eq!(
            one(&[0x48, 0xa3, 8, 0, 0, 0, 0, 0, 0, 0]),
            (10, acc(8, 8, Kind::Write))
        );
        // cmpxchg16b [rdi] (its store is conditional, its load is not); xadd [rcx], eax;
        // setne byte [rax]
        assert_eq!(
            one(&[0xf0, 0x48, 0x0f, 0xc7, 0x0f]),
            (5, acc(0x8000, 16, Kind::ReadWrite))
        );
        assert_eq!(
            one(&[0x0f, 0xc1, 0x01]),
            (3, acc(0x2000, 4, Kind::ReadWrite))
        );
        assert_eq!(one(&[0x0f, 0x95, 0x00]), (3, acc(0x1000, 1, Kind::Write)));
        // test dword [rax], 0x100 (group 3 /0 with imm32); neg qword [rax]
        assert_eq!(
            one(&[0xf7, 0x00, 0, 1, 0, 0]),
            (6, acc(0x1000, 4, Kind::Read))
        );
        assert_eq!(
            one(&[0x48, 0xf7, 0x18]),
            (3, acc(0x1000, 8, Kind::ReadWrite))
        );
        // lgdt [rax]: 10 bytes; cmovg rax, [rax]: the load happens whatever the condition
        assert_eq!(one(&[0x0f, 0x01, 0x10]), (3, acc(0x1000, 10, Kind::Read)));
        assert_eq!(
            one(&[0x48, 0x0f, 0x4f, 0x00]),
            (4, acc(0x1000, 8, Kind::Read))
        );
    }

    #[test]
    fn the_stack_operations_and_what_they_leave_in_rsp() {
        let rsp = 0x5000;
        // push rbx: [rsp - 8], and rsp - 8; pop r12: [rsp], rsp + 8; leave: [rbp], rsp any
        let push = at(&[0x53]).unwrap();
        assert_eq!(
            (push.len, push.data, push.rsp),
            (1, vec![acc(rsp - 8, 8, Kind::Write)], Some(rsp - 8))
        );
        let pop = at(&[0x41, 0x5c]).unwrap();
        assert_eq!(
            (pop.data, pop.rsp),
            (vec![acc(rsp, 8, Kind::Read)], Some(rsp + 8))
        );
        let leave = at(&[0xc9]).unwrap();
        assert_eq!(
            (leave.data, leave.rsp),
            (vec![acc(0x6000, 8, Kind::Read)], None)
        );
        // 66 push bx: a 2-byte slot
        assert_eq!(
            at(&[0x66, 0x53]).map(|d| (d.data, d.rsp)),
            Some((vec![acc(rsp - 2, 2, Kind::Write)], Some(rsp - 2)))
        );
        // push qword [rax + 8]: the load and the store to the stack
        let push_m = at(&[0xff, 0x70, 0x08]).unwrap();
        assert_eq!(
            push_m.data,
            [acc(0x1008, 8, Kind::Read), acc(rsp - 8, 8, Kind::Write)]
        );
        // pop qword [rax]: the load from the stack, the store; pop [rsp + 8] addresses with
        // the RSP after the pop
        let pop_m = at(&[0x8f, 0x00]).unwrap();
        let mut got = pop_m.data.clone();
        got.sort_by_key(|a| a.address);
        assert_eq!(
            got,
            [acc(0x1000, 8, Kind::Write), acc(rsp, 8, Kind::Read)],
            "{pop_m:?}"
        );
        let pop_rsp = at(&[0x8f, 0x44, 0x24, 0x08]).unwrap();
        assert!(
            pop_rsp.data.contains(&acc(rsp + 16, 8, Kind::Write)),
            "{pop_rsp:?}"
        );
        // enter 0x10, 0: pushes rbp, then makes room
        let enter = at(&[0xc8, 0x10, 0, 0]).unwrap();
        assert_eq!(
            (enter.data, enter.rsp),
            (vec![acc(rsp - 8, 8, Kind::Write)], Some(rsp - 8 - 0x10))
        );
        // sub rsp, 0x28 writes rsp (to a value the decoder leaves open); sub rax, 0x28 does
        // not; mov rsp, rax does; mov rbx, rax does not; pop rsp does
        assert_eq!(at(&[0x48, 0x83, 0xec, 0x28]).unwrap().rsp, None);
        assert_eq!(at(&[0x48, 0x83, 0xe8, 0x28]).unwrap().rsp, Some(rsp));
        assert_eq!(at(&[0x48, 0x89, 0xc4]).unwrap().rsp, None);
        assert_eq!(at(&[0x48, 0x89, 0xc3]).unwrap().rsp, Some(rsp));
        assert_eq!(at(&[0x5c]).unwrap().rsp, None);
        // lea rax, [rip + 0x10]: no access at all (only the fetch)
        let lea = at(&[0x48, 0x8d, 0x05, 0x10, 0, 0, 0]).unwrap();
        assert_eq!((lea.len, lea.data.is_empty()), (7, true));
        let mut after = gprs();
        after[0] = 0x20_0017;
        assert_eq!(
            lea.ran(0x20_0000, 0x20_0007, &after, |_| None),
            Some(vec![acc(0x20_0000, 7, Kind::Fetch)])
        );
    }

    #[test]
    fn instructions_without_memory_operands_have_a_length() {
        for (code, len) in [
            (&[0x90][..], 1),                     // nop
            (&[0x0f, 0x1f, 0x44, 0x00, 0x00], 5), // nop dword [rax + rax]
            (&[0x66, 0x0f, 0x1f, 0x84, 0, 0, 0, 0, 0], 9),
            (&[0xf3, 0x0f, 0x1e, 0xfa], 4),              // endbr64
            (&[0x48, 0xb8, 1, 2, 3, 4, 5, 6, 7, 8], 10), // mov rax, imm64
            (&[0xb8, 1, 2, 3, 4], 5),                    // mov eax, imm32
            (&[0x48, 0x31, 0xc0], 3),                    // xor rax, rax
            (&[0x0f, 0x22, 0xd8], 3),                    // mov cr3, rax
            (&[0x0f, 0x01, 0x38], 3),                    // invlpg [rax]: no access
            (&[0x0f, 0x18, 0x08], 3),                    // prefetcht0 [rax]: no access
            (&[0x0f, 0x01, 0xf8], 3),                    // swapgs
            (&[0x0f, 0xa2], 2),                          // cpuid
            (&[0xef], 1),                                // out dx, eax
            (&[0xfa], 1),                                // cli
        ] {
            let d = at(code).unwrap_or_else(|| panic!("{code:x?}"));
            assert_eq!((d.len, d.data.len()), (len, 0), "{code:x?}");
            assert_eq!((d.next, d.rsp), (Next::Follows, Some(0x5000)), "{code:x?}");
        }
    }

    #[test]
    fn control_transfers_give_where_they_go_and_their_stack_slots() {
        let rsp = 0x5000;
        // call rel32 (to 0x20_0005 + 0x10): the return address's slot
        let call = at(&[0xe8, 0x10, 0, 0, 0]).unwrap();
        assert_eq!(
            (call.next, call.data, call.rsp),
            (
                Next::To(0x20_0015),
                vec![acc(rsp - 8, 8, Kind::Write)],
                Some(rsp - 8)
            )
        );
        // call [rax]: the target's load, the slot; call rax: the slot
        let call_m = at(&[0xff, 0x10]).unwrap();
        assert_eq!(call_m.next, Next::Loaded(0x1000));
        assert_eq!(
            call_m.data,
            [acc(0x1000, 8, Kind::Read), acc(rsp - 8, 8, Kind::Write)]
        );
        assert_eq!(at(&[0xff, 0xd0]).unwrap().next, Next::To(0x1000));
        // jmp [rip + 0x20]; jmp rcx; jmp rel8 (back to itself); je rel8
        let jmp_m = at(&[0xff, 0x25, 0x20, 0, 0, 0]).unwrap();
        assert_eq!(
            (jmp_m.next, jmp_m.data, jmp_m.rsp),
            (
                Next::Loaded(0x20_0026),
                vec![acc(0x20_0026, 8, Kind::Read)],
                Some(rsp)
            )
        );
        assert_eq!(at(&[0xff, 0xe1]).unwrap().next, Next::To(0x2000));
        assert_eq!(at(&[0xeb, 0xfe]).unwrap().next, Next::To(0x20_0000));
        let je = at(&[0x74, 0x02]).unwrap();
        assert_eq!((je.next, je.data.len()), (Next::Branch(0x20_0004), 0));
        // ret; ret 8
        let ret = at(&[0xc3]).unwrap();
        assert_eq!(
            (ret.next, ret.data, ret.rsp),
            (
                Next::Loaded(rsp),
                vec![acc(rsp, 8, Kind::Read)],
                Some(rsp + 8)
            )
        );
        assert_eq!(at(&[0xc2, 8, 0]).unwrap().rsp, Some(rsp + 16));
        // loop rel8
        assert_eq!(at(&[0xe2, 0xfe]).unwrap().next, Next::Branch(0x20_0000));
    }

    #[test]
    fn string_instructions_give_their_first_element() {
        // stosb: [rdi]; lodsq: [rsi]; movsd: [rsi] and [rdi]; outsb: [rsi]; xlat: [rbx + al]
        assert_eq!(one(&[0xaa]), (1, acc(0x8000, 1, Kind::Write)));
        assert_eq!(one(&[0x48, 0xad]), (2, acc(0x7000, 8, Kind::Read)));
        let mut movs = at(&[0xa5]).unwrap().data;
        movs.sort_by_key(|a| a.address);
        assert_eq!(
            movs,
            [acc(0x7000, 4, Kind::Read), acc(0x8000, 4, Kind::Write)]
        );
        assert_eq!(one(&[0x6e]), (1, acc(0x7000, 1, Kind::Read)));
        let mut g = gprs();
        g[0] = 0x1234_5642;
        assert_eq!(
            with(&[0xd7], &g).map(|d| d.data),
            Some(vec![acc(0x4000 + 0x42, 1, Kind::Read)])
        );
        // rep movsq: the first elements, at rsi and rdi, and its count, rcx
        let mut movsq = at(&[0xf3, 0x48, 0xa5]).unwrap().data;
        movsq.sort_by_key(|a| a.address);
        assert_eq!(
            movsq,
            [acc(0x7000, 8, Kind::Read), acc(0x8000, 8, Kind::Write)]
        );
        let r = at(&[0xf3, 0x48, 0xa5]).unwrap().repeat.unwrap();
        assert_eq!(
            (r.count, r.addr32, r.index, r.start, r.size),
            (0x2000, false, 7, 0x8000, 8)
        );
        // rep stosd with 67: ecx counts (0 here, though rcx is not) and edi addresses
        let mut g = gprs();
        g[1] = 1 << 32;
        g[7] = 0x1_0000_8000;
        let d = with(&[0x67, 0xf3, 0xab], &g).unwrap();
        assert_eq!(d.data, [acc(0x8000, 4, Kind::Write)]);
        assert_eq!(d.repeat.map(|r| (r.count, r.start)), Some((0, 0x8000)));
        // rep lodsb moves rsi
        assert_eq!(at(&[0xf3, 0xac]).unwrap().repeat.map(|r| r.index), Some(6));
        // repne scasb
        assert_eq!(one(&[0xf2, 0xae]), (2, acc(0x8000, 1, Kind::Read)));
    }

    #[test]
    fn x87_sse_and_avx_memory_operands() {
        // fld dword [rax]; fnstcw [rdx]; fxsave [rax] (512 bytes); movaps xmm0, [rax];
        // movsd xmm0, [rax]; vmovaps xmm0, [rax]; movntps [rax], xmm0
        assert_eq!(one(&[0xd9, 0x00]), (2, acc(0x1000, 4, Kind::Read)));
        assert_eq!(one(&[0xd9, 0x3a]), (2, acc(0x3000, 2, Kind::Write)));
        assert_eq!(one(&[0x0f, 0xae, 0x00]), (3, acc(0x1000, 512, Kind::Write)));
        assert_eq!(one(&[0x0f, 0x28, 0x00]), (3, acc(0x1000, 16, Kind::Read)));
        assert_eq!(
            one(&[0xf2, 0x0f, 0x10, 0x00]),
            (4, acc(0x1000, 8, Kind::Read))
        );
        assert_eq!(
            one(&[0xc5, 0xf8, 0x28, 0x00]),
            (4, acc(0x1000, 16, Kind::Read))
        );
        assert_eq!(one(&[0x0f, 0x2b, 0x00]), (3, acc(0x1000, 16, Kind::Write)));
    }

    #[test]
    fn what_it_gives_up_on_is_not_decoded() {
        for code in [
            &[0x48, 0xcf][..],                     // iretq
            &[0x0f, 0x05],                         // syscall
            &[0x0f, 0x07],                         // sysret
            &[0xcd, 0x80],                         // int
            &[0xcc],                               // int3
            &[0x0f, 0x0b],                         // ud2
            &[0xff, 0x18],                         // call far [rax]
            &[0xff, 0x28],                         // jmp far [rax]
            &[0x48, 0xcb],                         // retf
            &[0xc7, 0xf8, 0, 0, 0, 0],             // xbegin
            &[0x0f, 0x01, 0xc1],                   // vmcall
            &[0x0f, 0xab, 0x08],                   // bts [rax], ecx (a bit string)
            &[0x48, 0x0f, 0xa3, 0x08],             // bt [rax], rcx
            &[0x48, 0x0f, 0xae, 0x20],             // xsave64 [rax] (its size)
            &[0xc4, 0xe2, 0x69, 0x90, 0x04, 0x88], // vpgatherdd (VSIB)
            &[0x66, 0x0f, 0xf7, 0xc1],             // maskmovdqu
            &[0xc4, 0xe2, 0x79, 0x2e, 0x00],       // vmaskmovps [rax], xmm0, xmm0
            &[0x62, 0xf1, 0x74, 0x49, 0x58, 0x00], // vaddps zmm0{k1}, zmm1, [rax]
            &[0x62, 0xf1, 0x7c, 0x49, 0x11, 0x00], // vmovups [rax]{k1}, zmm0
            &[0x48, 0x8b],                         // truncated
            &[0x48, 0x8b, 0x80, 0, 0],             // truncated displacement
            &[0x66; 15],                           // prefixes only
            &[0xf0, 0x8b, 0x00],                   // lock on a load
            &[],                                   // nothing read
        ] {
            assert_eq!(at(code), None, "{code:x?}");
        }
        // bt with an immediate bit offset stays within the operand
        assert_eq!(one(&[0x0f, 0xba, 0x20, 3]), (4, acc(0x1000, 4, Kind::Read)));
    }

    /// The registers of gprs() with RSP at `rsp`.
    fn rsp_at(rsp: u64) -> [u64; 16] {
        let mut g = gprs();
        g[RSP] = rsp;
        g
    }

    #[test]
    fn an_instruction_ran_only_if_the_next_stop_fits_it() {
        let rip = 0x20_0000;
        let rsp = 0x5000;
        let never = |_| panic!("no load for this one");
        let ran = |d: &Decoded, next_rip: u64, next_rsp: u64| {
            d.ran(rip, next_rip, &rsp_at(next_rsp), never).is_some()
        };
        // mov rax, [rcx]: RIP right after it, RSP unchanged; then the fetch and the load
        let mov = at(&[0x48, 0x8b, 0x01]).unwrap();
        assert_eq!(
            mov.ran(rip, rip + 3, &rsp_at(rsp), never),
            Some(vec![acc(rip, 3, Kind::Fetch), acc(0x2000, 8, Kind::Read)])
        );
        assert!(!ran(&mov, rip + 2, rsp));
        assert!(!ran(&mov, 0x30_0001, rsp), "a handler's RIP");
        assert!(!ran(&mov, rip + 3, rsp - 40), "an interrupt frame");
        // push rbx: RSP exactly 8 lower
        let push = at(&[0x53]).unwrap();
        assert!(ran(&push, rip + 1, rsp - 8));
        assert!(!ran(&push, rip + 1, rsp));
        // mov rsp, rax: any RSP
        assert!(ran(&at(&[0x48, 0x89, 0xc4]).unwrap(), rip + 3, 1));
        // je: after it or at its target, nowhere else
        let je = at(&[0x74, 0x02]).unwrap();
        assert!(ran(&je, rip + 2, rsp));
        assert!(ran(&je, rip + 4, rsp));
        assert!(!ran(&je, rip + 3, rsp));
        // call rel32: at its target, with the return address pushed
        let call = at(&[0xe8, 0x10, 0, 0, 0]).unwrap();
        assert!(ran(&call, rip + 0x15, rsp - 8));
        assert!(!ran(&call, rip + 5, rsp - 8));
        assert!(!ran(&call, rip + 0x15, rsp));
        // ret: at the address it popped (read again at the next stop), RSP 8 higher
        let ret = at(&[0xc3]).unwrap();
        let stack = |at: u64| (at == rsp).then_some(0x20_1234);
        assert!(ret.ran(rip, 0x20_1234, &rsp_at(rsp + 8), stack).is_some());
        assert!(ret.ran(rip, 0x20_1235, &rsp_at(rsp + 8), stack).is_none());
        assert!(ret.ran(rip, 0x20_1234, &rsp_at(rsp), stack).is_none());
        assert!(
            ret.ran(rip, 0x20_1234, &rsp_at(rsp + 8), |_| None)
                .is_none(),
            "not mapped"
        );
        // jmp [rax]
        let jmp = at(&[0xff, 0x20]).unwrap();
        let table = |at: u64| (at == 0x1000).then_some(0x40_0000);
        assert!(jmp.ran(rip, 0x40_0000, &rsp_at(rsp), table).is_some());
        assert!(jmp.ran(rip, rip + 2, &rsp_at(rsp), table).is_none());
    }

    #[test]
    fn a_rep_string_instruction_ran_the_elements_its_count_went_down_by() {
        let rip = 0x20_0000;
        let never = |_| panic!("no load for this one");
        // rep movsq with rcx 0x300 (rsi 0x7000, rdi 0x8000)
        let mut start = gprs();
        start[1] = 0x300;
        let d = with(&[0xf3, 0x48, 0xa5], &start).unwrap();
        let stop = |rcx: u64, moved: i64| {
            let mut g = gprs();
            g[1] = rcx;
            g[6] = g[6].wrapping_add(moved as u64);
            g[7] = g[7].wrapping_add(moved as u64);
            g
        };
        let runs = |next_rip: u64, g: &[u64; 16]| {
            d.ran(rip, next_rip, g, never).map(|mut a| {
                a.sort_by_key(|a| (a.kind == Kind::Fetch, a.address));
                a
            })
        };
        // All of it in one step, RIP still on it (as KVM's emulator does on PVM): every element
        let all = Some(vec![
            acc(0x7000, 0x300 * 8, Kind::Read),
            acc(0x8000, 0x300 * 8, Kind::Write),
            acc(rip, 3, Kind::Fetch),
        ]);
        assert_eq!(runs(rip, &stop(0, 0x300 * 8)), all);
        // ... then the step past it with the count 0: the fetch alone
        let mut done = gprs();
        done[1] = 0;
        assert_eq!(
            with(&[0xf3, 0x48, 0xa5], &done)
                .unwrap()
                .ran(rip, rip + 3, &done, never),
            Some(vec![acc(rip, 3, Kind::Fetch)])
        );
        // One element a step (a processor's single-step trap), and the last one past it
        assert_eq!(
            runs(rip, &stop(0x2ff, 8)),
            Some(vec![
                acc(0x7000, 8, Kind::Read),
                acc(0x8000, 8, Kind::Write),
                acc(rip, 3, Kind::Fetch),
            ])
        );
        assert_eq!(runs(rip + 3, &stop(0, 0x300 * 8)), all);
        // Backwards (DF set): the elements below the first one
        assert_eq!(
            runs(rip, &stop(0x2fe, -16))
                .unwrap()
                .into_iter()
                .map(|a| (a.address, a.size))
                .collect::<Vec<_>>(),
            [(0x7000 - 8, 16), (0x8000 - 8, 16), (rip, 3)]
        );
        // Stops that do not fit: no progress on itself, a count that went up, RDI not moved
        // with it, RIP elsewhere (an interrupt's handler), RIP past it with nothing done
        assert_eq!(runs(rip, &stop(0x300, 0)), None);
        assert_eq!(runs(rip, &stop(0x301, 0)), None);
        assert_eq!(runs(rip, &stop(0x2ff, 0)), None);
        assert_eq!(runs(rip, &stop(0x2ff, 16)), None);
        assert_eq!(runs(0x30_0001, &stop(0x2ff, 8)), None);
        assert_eq!(runs(rip + 3, &stop(0x300, 0)), None);
        // A run longer than ELEMENTS_MAX is cut there (rep stosb of 16 MiB)
        let mut big = gprs();
        big[1] = 16 << 20;
        let stosb = with(&[0xf3, 0xaa], &big).unwrap();
        let mut after = big;
        after[1] = 0;
        after[7] += 16 << 20;
        assert_eq!(
            stosb.ran(rip, rip, &after, never),
            Some(vec![
                acc(rip, 2, Kind::Fetch),
                acc(0x8000, super::ELEMENTS_MAX as u32, Kind::Write)
            ])
        );
    }

    #[test]
    fn rsp_is_the_fifth_register() {
        let mut g = gprs();
        g[RSP] = 0x9_0000;
        assert_eq!(
            with(&[0x50], &g).map(|d| d.data),
            Some(vec![acc(0x9_0000 - 8, 8, Kind::Write)])
        );
    }

    #[test]
    fn the_special_instructions_are_found_behind_prefixes() {
        assert_eq!(special(&[0x0f, 0xa2, 0x90]), Some(Special::Cpuid));
        assert_eq!(special(&[0x66, 0x48, 0x0f, 0xa2]), Some(Special::Cpuid));
        assert_eq!(special(&[0x0f, 0x01, 0xc1]), Some(Special::Vmcall));
        assert_eq!(special(&[0x0f, 0x01, 0xd9]), Some(Special::Vmmcall));
        // Not them: `out dx, eax`, `lgdt` (0F 01 /2), `nop`, a truncated opcode, prefixes only.
        assert_eq!(special(&[0xef]), None);
        assert_eq!(special(&[0x0f, 0x01, 0x15, 0, 0, 0, 0]), None);
        assert_eq!(special(&[0x90, 0x0f, 0xa2]), None);
        assert_eq!(special(&[0x0f]), None);
        assert_eq!(special(&[0x66; 16]), None);
        // rep outsd, rep outsb, repne outsd, rep outsw (66), with a REX and a segment prefix.
        for code in [
            &[0xf3, 0x6f][..],
            &[0xf3, 0x6e],
            &[0xf2, 0x6f],
            &[0x66, 0xf3, 0x6f],
            &[0x2e, 0xf3, 0x48, 0x6f],
        ] {
            assert_eq!(special(code), Some(Special::RepOuts), "{code:x?}");
        }
        // out dx, eax; outsd; rep movsd; rep insd; a truncated prefix run.
        for code in [
            &[0xef][..],
            &[0x6f],
            &[0xf3, 0xa5],
            &[0xf3, 0x6d],
            &[0xf3, 0x66],
        ] {
            assert_eq!(special(code), None, "{code:x?}");
        }
    }
}
