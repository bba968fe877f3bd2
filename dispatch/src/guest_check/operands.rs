//! The memory one x86-64 instruction accesses, from its bytes and the registers it starts
//! with: the decoder behind the checking host's look at accesses through a queued page-table
//! entry (module `queued_pte`, PVABI-MEM-013).
//!
//! It knows the instructions compilers emit for data at ring 0 in 64-bit mode (moves, ALU
//! operations, shifts, multiplies and divides, `movzx`/`movsx`, `cmov`, `setcc`, exchanges
//! and `cmpxchg`, `push`/`pop`/`pushf`/`popf`/`leave`, the multi-byte `nop`, and the system
//! instructions a kernel uses, such as `mov cr`, `lgdt`, `invlpg`, `wrmsr` and `cpuid`), with
//! their prefixes (operand size, `lock`, `rep` hints, segment overrides; FS and GS add their
//! bases), REX, ModRM, SIB, displacements (RIP-relative ones included) and immediates. It
//! gives up ([`decode`] returns `None`) on everything else, so that no access is ever made up:
//! control transfers (`jmp`, `call`, `ret`, `iretq`, `syscall`, conditional branches, `int`),
//! string instructions (`movs`, `stos`, `rep` anything: each element is a step of its own
//! and the first element's addresses say nothing of the others), `xlat`, `enter`, `pop` to
//! memory, the bit-string forms of `bt`/`bts`/`btr`/`btc` with a register offset (which reach
//! beyond the operand), 32-bit addressing (`67`), x87, SSE, VEX and EVEX, and any opcode not
//! listed above.
//!
//! A decode is checked by the instruction's own execution before any access is reported: the
//! caller compares the next stop's RIP with `rip + len` ([`Decoded::len`]), so a length
//! decoded wrong, an instruction that faulted, or an interrupt delivered before it shows as a
//! RIP that does not follow, and nothing is reported for it.

/// The register numbers of the encoding (0 = rax, 1 = rcx, ..., 4 = rsp, 5 = rbp, ..., 15 =
/// r15): the order of [`Regs::gprs`].
pub(crate) const RSP: usize = 4;
const RBP: usize = 5;

/// How an instruction uses the memory it names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
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
    pub(crate) fn describe(self) -> &'static str {
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
pub(crate) struct Access {
    /// The first byte's linear address.
    pub address: u64,
    /// Bytes accessed (1 to 16).
    pub size: u8,
    /// Load, store or both.
    pub kind: Kind,
}

/// What [`decode`] found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Decoded {
    /// The instruction's length in bytes.
    pub len: u8,
    /// Its data accesses (at most two: `push [m]` reads `[m]` and writes the stack).
    pub data: [Option<Access>; 2],
    /// It may write RSP (a stack operation, or RSP among its register operands): its next stop
    /// may have another RSP.
    pub writes_rsp: bool,
}

impl Decoded {
    /// The fetch of the instruction at `rip`, then its data accesses.
    pub(crate) fn accesses(&self, rip: u64) -> impl Iterator<Item = Access> + '_ {
        let fetch = Access {
            address: rip,
            size: self.len,
            kind: Kind::Fetch,
        };
        std::iter::once(fetch).chain(self.data.iter().flatten().copied())
    }
}

/// The registers an instruction starts with, as far as its addresses need them.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Regs<'a> {
    /// RIP: the instruction's own address.
    pub rip: u64,
    /// The general registers in encoding order (see [`RSP`]).
    pub gprs: &'a [u64; 16],
    /// FS's base (an `fs:` override adds it).
    pub fs_base: u64,
    /// GS's base (a `gs:` override adds it).
    pub gs_base: u64,
}

/// The architectural limit of an instruction's length.
const MAX_LEN: usize = 15;

/// A read position in the instruction's bytes.
struct Cursor<'a> {
    code: &'a [u8],
    at: usize,
}

impl Cursor<'_> {
    fn peek(&self) -> Option<u8> {
        self.code
            .get(self.at)
            .copied()
            .filter(|_| self.at < MAX_LEN)
    }

    fn byte(&mut self) -> Option<u8> {
        let b = self.peek()?;
        self.at += 1;
        Some(b)
    }

    /// A little-endian signed immediate or displacement of `n` (1, 2, 4 or 8) bytes.
    fn signed(&mut self, n: usize) -> Option<i64> {
        if n == 0 {
            return Some(0);
        }
        let end = self.at.checked_add(n)?;
        if end > MAX_LEN {
            return None;
        }
        let bytes = self.code.get(self.at..end)?;
        self.at = end;
        let mut v = [0u8; 8];
        v[..n].copy_from_slice(bytes);
        let raw = u64::from_le_bytes(v);
        let shift = 64 - 8 * n as u32;
        Some(((raw << shift) as i64) >> shift)
    }

    fn skip(&mut self, n: usize) -> Option<()> {
        self.signed(n).map(drop)
    }
}

/// A memory operand, before the instruction's length is known (RIP-relative addresses count
/// from the next instruction).
#[derive(Clone, Copy, Debug)]
struct Mem {
    base: Option<usize>,
    index: Option<(usize, u64)>,
    disp: i64,
    rip_relative: bool,
}

/// A ModRM byte: its register field, and its register or memory operand.
#[derive(Clone, Copy, Debug)]
struct ModRm {
    /// The `reg` field with REX.R (a register number, or an opcode extension in 0..8).
    reg: usize,
    /// The `reg` field alone (the opcode extension of a group).
    ext: u8,
    /// The register operand (`mod` 3), with REX.B.
    rm_reg: Option<usize>,
    /// The memory operand (`mod` 0 to 2).
    mem: Option<Mem>,
}

/// The instruction's REX prefix, split.
#[derive(Clone, Copy, Debug, Default)]
struct Rex {
    w: bool,
    r: usize,
    x: usize,
    b: usize,
}

fn modrm(c: &mut Cursor<'_>, rex: Rex) -> Option<ModRm> {
    let m = c.byte()?;
    let md = m >> 6;
    let ext = (m >> 3) & 7;
    let reg = usize::from(ext) | rex.r << 3;
    let rm = usize::from(m & 7);
    if md == 3 {
        return Some(ModRm {
            reg,
            ext,
            rm_reg: Some(rm | rex.b << 3),
            mem: None,
        });
    }
    let mut mem = Mem {
        base: None,
        index: None,
        disp: 0,
        rip_relative: false,
    };
    let mut disp32 = md == 2;
    if rm == 4 {
        let sib = c.byte()?;
        let index = usize::from((sib >> 3) & 7) | rex.x << 3;
        // Index 4 without REX.X is "no index" (rsp cannot be one); r12 can.
        if index != RSP {
            mem.index = Some((index, 1 << (sib >> 6)));
        }
        let base = usize::from(sib & 7);
        if base == 5 && md == 0 {
            disp32 = true;
        } else {
            mem.base = Some(base | rex.b << 3);
        }
    } else if rm == 5 && md == 0 {
        mem.rip_relative = true;
        disp32 = true;
    } else {
        mem.base = Some(rm | rex.b << 3);
    }
    mem.disp = if md == 1 {
        c.signed(1)?
    } else if disp32 {
        c.signed(4)?
    } else {
        0
    };
    Some(ModRm {
        reg,
        ext,
        rm_reg: None,
        mem: Some(mem),
    })
}

/// How an opcode uses its operands, once its ModRM (if any) is known.
#[derive(Clone, Copy, Debug, Default)]
struct Form {
    /// The ModRM memory operand's size and use (`None`: it is not accessed, as for `lea`
    /// and the hint `nop`s).
    mem: Option<(u8, Kind)>,
    /// Immediate bytes after the ModRM, SIB and displacement.
    imm: usize,
    /// A stack access: `(offset from RSP, size, kind)`.
    stack: Option<(i64, u8, Kind)>,
    /// Writes RSP whatever its operands.
    writes_rsp: bool,
    /// A `moffs` operand: an absolute 8-byte address after the opcode.
    moffs: Option<(u8, Kind)>,
}

fn mem(size: u8, kind: Kind) -> Form {
    Form {
        mem: Some((size, kind)),
        ..Form::default()
    }
}

fn imm(n: usize) -> Form {
    Form {
        imm: n,
        ..Form::default()
    }
}

fn with_imm(f: Form, n: usize) -> Form {
    Form { imm: n, ..f }
}

fn stack(offset: i64, size: u8, kind: Kind) -> Form {
    Form {
        stack: Some((offset, size, kind)),
        writes_rsp: true,
        ..Form::default()
    }
}

/// What the bytes before the opcode said.
#[derive(Clone, Copy, Debug, Default)]
struct Prefixes {
    /// `66`.
    opsize16: bool,
    /// `f2` or `f3` (the last of them).
    rep: Option<u8>,
    /// The segment base an `fs:` or `gs:` override adds (the others add none in 64-bit mode).
    segment_base: u64,
}

/// Decodes the instruction at the start of `code` (the bytes at RIP, as many as could be
/// read) with the registers it starts with. `None` if it is not one this decoder knows (see
/// the module's documentation) or `code` ends before it does.
pub(crate) fn decode(code: &[u8], regs: &Regs<'_>) -> Option<Decoded> {
    let mut c = Cursor { code, at: 0 };
    let mut p = Prefixes::default();
    let mut segments = 0;
    loop {
        match c.peek()? {
            0x66 => p.opsize16 = true,
            0x67 => return None,
            0xf0 => {}
            b @ (0xf2 | 0xf3) => p.rep = Some(b),
            0x26 | 0x2e | 0x36 | 0x3e => {
                segments += 1;
                p.segment_base = 0;
            }
            0x64 => {
                segments += 1;
                p.segment_base = regs.fs_base;
            }
            0x65 => {
                segments += 1;
                p.segment_base = regs.gs_base;
            }
            _ => break,
        }
        c.at += 1;
    }
    // Which of two segment overrides counts is not defined: give up.
    if segments > 1 {
        return None;
    }
    let mut rex = Rex::default();
    if let Some(b @ 0x40..=0x4f) = c.peek() {
        c.at += 1;
        rex = Rex {
            w: b & 8 != 0,
            r: usize::from((b >> 2) & 1),
            x: usize::from((b >> 1) & 1),
            b: usize::from(b & 1),
        };
    }
    let v: u8 = if rex.w {
        8
    } else if p.opsize16 {
        2
    } else {
        4
    };
    // An immediate of the operand size, at most 4 bytes (sign-extended to 8 with REX.W).
    let iz = if v == 2 { 2 } else { 4 };
    // The stack slot of a push or pop: 8 bytes, 2 with `66`.
    let slot: u8 = if p.opsize16 { 2 } else { 8 };
    let op = c.byte()?;
    let (m, form) = if op == 0x0f {
        let op2 = c.byte()?;
        two_byte(&mut c, rex, &p, v, op2)?
    } else {
        one_byte(&mut c, rex, &p, v, iz, slot, op)?
    };
    if let Some((size, kind)) = form.moffs {
        let address = c.signed(8)? as u64;
        let len = c.at;
        return Some(Decoded {
            len: len as u8,
            data: [
                Some(Access {
                    address: address.wrapping_add(p.segment_base),
                    size,
                    kind,
                }),
                None,
            ],
            writes_rsp: false,
        });
    }
    c.skip(form.imm)?;
    let len = c.at;
    let next_rip = regs.rip.wrapping_add(len as u64);
    let reg = |r: usize| regs.gprs[r & 15];
    let mut data = [None, None];
    let mut n = 0;
    if let (Some((size, kind)), Some(mem)) = (form.mem, m.and_then(|m| m.mem)) {
        let base = if mem.rip_relative {
            next_rip
        } else {
            mem.base.map_or(0, reg)
        };
        let index = mem.index.map_or(0, |(i, scale)| reg(i).wrapping_mul(scale));
        let address = base
            .wrapping_add(index)
            .wrapping_add(mem.disp as u64)
            .wrapping_add(p.segment_base);
        data[n] = Some(Access {
            address,
            size,
            kind,
        });
        n += 1;
    }
    if let Some((offset, size, kind)) = form.stack {
        let base = if op == 0xc9 { reg(RBP) } else { reg(RSP) };
        data[n] = Some(Access {
            address: base.wrapping_add(offset as u64),
            size,
            kind,
        });
    }
    let names_rsp = m.is_some_and(|m| m.reg == RSP || m.rm_reg == Some(RSP));
    Some(Decoded {
        len: len as u8,
        data,
        writes_rsp: form.writes_rsp || names_rsp,
    })
}

/// The one-byte opcode map: the ModRM (if the opcode has one) and the form.
fn one_byte(
    c: &mut Cursor<'_>,
    rex: Rex,
    p: &Prefixes,
    v: u8,
    iz: usize,
    slot: u8,
    op: u8,
) -> Option<(Option<ModRm>, Form)> {
    use Kind::{Read, ReadWrite, Write};
    // Opcodes without a ModRM.
    let plain = match op {
        // ALU with an immediate to AL or eAX.
        0x04 | 0x0c | 0x14 | 0x1c | 0x24 | 0x2c | 0x34 | 0x3c | 0xa8 => Some(imm(1)),
        0x05 | 0x0d | 0x15 | 0x1d | 0x25 | 0x2d | 0x35 | 0x3d | 0xa9 => Some(imm(iz)),
        // push r, pop r
        0x50..=0x57 => Some(stack(-i64::from(slot), slot, Write)),
        0x58..=0x5f => Some(stack(0, slot, Read)),
        // push imm32, push imm8
        0x68 => Some(with_imm(stack(-i64::from(slot), slot, Write), iz)),
        0x6a => Some(with_imm(stack(-i64::from(slot), slot, Write), 1)),
        // xchg r, eAX (and nop, pause); cbw/cwde/cdqe, cwd/cdq/cqo; sahf, lahf
        0x90..=0x99 | 0x9e | 0x9f => Some(Form {
            writes_rsp: op == 0x94 && rex.b == 0,
            ..Form::default()
        }),
        // pushf, popf
        0x9c => Some(stack(-i64::from(slot), slot, Write)),
        0x9d => Some(stack(0, slot, Read)),
        // mov AL/eAX, moffs and back
        0xa0 => Some(Form {
            moffs: Some((1, Read)),
            ..Form::default()
        }),
        0xa1 => Some(Form {
            moffs: Some((v, Read)),
            ..Form::default()
        }),
        0xa2 => Some(Form {
            moffs: Some((1, Write)),
            ..Form::default()
        }),
        0xa3 => Some(Form {
            moffs: Some((v, Write)),
            ..Form::default()
        }),
        // mov r8, imm8; mov r, imm (imm64 with REX.W)
        0xb0..=0xb7 => Some(imm(1)),
        0xb8..=0xbf => Some(Form {
            imm: if rex.w { 8 } else { iz },
            writes_rsp: op == 0xbc && rex.b == 0,
            ..Form::default()
        }),
        // leave: rsp = rbp, then pop rbp (reads [rbp])
        0xc9 => Some(stack(0, slot, Read)),
        // in/out with an imm8 port, or with dx
        0xe4..=0xe7 => Some(imm(1)),
        0xec..=0xef => Some(Form::default()),
        // hlt, cmc, clc, stc, cli, sti, cld, std
        0xf4 | 0xf5 | 0xf8..=0xfd => Some(Form::default()),
        _ => None,
    };
    if let Some(f) = plain {
        return Some((None, f));
    }
    // Opcodes with a ModRM: which, and their operand size.
    let has_modrm = matches!(op, 0x00..=0x3f if op & 7 < 4)
        || matches!(
            op,
            0x63 | 0x69 | 0x6b | 0x80 | 0x81 | 0x83..=0x8e | 0xc0 | 0xc1 | 0xc6 | 0xc7
        )
        || matches!(op, 0xd0..=0xd3 | 0xf6 | 0xf7 | 0xfe | 0xff);
    if !has_modrm {
        return None;
    }
    let m = modrm(c, rex)?;
    let ext = m.ext;
    let form = match op {
        // ALU Eb,Gb / Ev,Gv / Gb,Eb / Gv,Ev (cmp, 38-3B, only reads)
        0x00..=0x3f => {
            let (size, dest) = match op & 7 {
                0 => (1, true),
                1 => (v, true),
                2 => (1, false),
                _ => (v, false),
            };
            let kind = if dest && op & 0xf8 != 0x38 {
                ReadWrite
            } else {
                Read
            };
            mem(size, kind)
        }
        // movsxd Gv, Ed
        0x63 => mem(if p.opsize16 { 2 } else { 4 }, Read),
        // imul Gv, Ev, imm
        0x69 => with_imm(mem(v, Read), iz),
        0x6b => with_imm(mem(v, Read), 1),
        // group 1: Eb,Ib / Ev,Iz / Ev,Ib (cmp: /7, reads)
        0x80 | 0x81 | 0x83 => {
            let size = if op == 0x80 { 1 } else { v };
            let kind = if ext == 7 { Read } else { ReadWrite };
            with_imm(mem(size, kind), if op == 0x81 { iz } else { 1 })
        }
        // test, xchg
        0x84 => mem(1, Read),
        0x85 => mem(v, Read),
        0x86 => mem(1, ReadWrite),
        0x87 => mem(v, ReadWrite),
        // mov Eb,Gb / Ev,Gv / Gb,Eb / Gv,Ev
        0x88 => mem(1, Write),
        0x89 => mem(v, Write),
        0x8a => mem(1, Read),
        0x8b => mem(v, Read),
        // mov Ew, Sreg (16 bits to memory); lea (no access; a register form is invalid);
        // mov Sreg, Ew
        0x8c => mem(2, Write),
        0x8d if m.mem.is_some() => Form::default(),
        0x8e => mem(2, Read),
        // group 2 with imm8, 1 or CL
        0xc0 => with_imm(mem(1, ReadWrite), 1),
        0xc1 => with_imm(mem(v, ReadWrite), 1),
        0xd0 | 0xd2 => mem(1, ReadWrite),
        0xd1 | 0xd3 => mem(v, ReadWrite),
        // mov Eb, Ib / Ev, Iz (only /0: /7 is xabort/xbegin)
        0xc6 if ext == 0 => with_imm(mem(1, Write), 1),
        0xc7 if ext == 0 => with_imm(mem(v, Write), iz),
        // group 3: test (/0, /1: an immediate), not, neg, mul, imul, div, idiv
        0xf6 | 0xf7 => {
            let size = if op == 0xf6 { 1 } else { v };
            match ext {
                0 | 1 => with_imm(mem(size, Read), if op == 0xf6 { 1 } else { iz }),
                2 | 3 => mem(size, ReadWrite),
                _ => mem(size, Read),
            }
        }
        // group 4: inc, dec Eb
        0xfe if ext <= 1 => mem(1, ReadWrite),
        // group 5: inc, dec Ev; push Ev (a read, then a store to the stack). The calls and
        // jumps (/2 to /5) transfer control.
        0xff if ext <= 1 => mem(v, ReadWrite),
        0xff if ext == 6 => Form {
            mem: Some((if p.opsize16 { 2 } else { 8 }, Read)),
            ..stack(-i64::from(slot), slot, Write)
        },
        _ => return None,
    };
    Some((Some(m), form))
}

/// The two-byte opcode map (after `0f`).
fn two_byte(
    c: &mut Cursor<'_>,
    rex: Rex,
    p: &Prefixes,
    v: u8,
    op: u8,
) -> Option<(Option<ModRm>, Form)> {
    use Kind::{Read, ReadWrite, Write};
    // `f2`/`f3` select other instructions in this map (SSE among them): only these know it.
    let rep_ok = match p.rep {
        None => true,
        Some(0xf3) => matches!(op, 0x1e | 0xb8 | 0xbc | 0xbd | 0xae),
        Some(_) => false,
    };
    if !rep_ok {
        return None;
    }
    let plain = match op {
        // clts, invd, wbinvd, wrmsr, rdtsc, rdmsr, rdpmc, cpuid
        0x06 | 0x08 | 0x09 | 0x30..=0x33 | 0xa2 => Some(Form::default()),
        // bswap
        0xc8..=0xcf => Some(Form {
            writes_rsp: op == 0xcc && rex.b == 0,
            ..Form::default()
        }),
        _ => None,
    };
    if let Some(f) = plain {
        return Some((None, f));
    }
    let has_modrm = matches!(
        op,
        0x00 | 0x01
            | 0x0d
            | 0x18
            | 0x19
            | 0x1c..=0x1f
            | 0x20..=0x23
            | 0x40..=0x4f
            | 0x90..=0x9f
            | 0xa3..=0xa5
            | 0xab..=0xaf
            | 0xb0..=0xb1
            | 0xb3
            | 0xb6..=0xb8
            | 0xba..=0xbf
            | 0xc0
            | 0xc1
            | 0xc7
    );
    if !has_modrm {
        return None;
    }
    let m = modrm(c, rex)?;
    let ext = m.ext;
    let is_mem = m.mem.is_some();
    // The forms with a register operand only (`mod` 3) access no memory.
    let none = Form::default();
    let form = match op {
        // sldt, str (store 16 bits); lldt, ltr, verr, verw (load 16 bits)
        0x00 if !is_mem => none,
        0x00 => match ext {
            0 | 1 => mem(2, Write),
            2..=5 => mem(2, Read),
            _ => return None,
        },
        // group 7 with a register form: swapgs, rdtscp, monitor, mwait, clac, stac, xgetbv,
        // xsetbv, ... (no memory operand)
        0x01 if !is_mem => none,
        0x01 => match ext {
            0 | 1 => mem(10, Write),
            2 | 3 => mem(10, Read),
            4 => mem(2, Write),
            6 => mem(2, Read),
            // invlpg: a translation is dropped, no memory is accessed
            7 => none,
            _ => return None,
        },
        // prefetchw, prefetch hints, the hint nops (`nop Ev`, endbr64): no access
        0x0d | 0x18 | 0x19 | 0x1c..=0x1f => none,
        // mov to and from control and debug registers (always a register form)
        0x20..=0x23 => none,
        // cmovcc (the load happens whatever the condition), setcc
        0x40..=0x4f => mem(v, Read),
        0x90..=0x9f => mem(1, Write),
        // bt, bts, btr, btc with a register bit offset: only their register forms (with
        // memory they address a bit string beyond the operand)
        0xa3 | 0xab | 0xb3 | 0xbb if !is_mem => none,
        // shld, shrd (imm8 or CL)
        0xa4 | 0xac => with_imm(mem(v, ReadWrite), 1),
        0xa5 | 0xad => mem(v, ReadWrite),
        // group 15: fences, rd/wrfsbase, rd/wrgsbase (register forms); clflush (/7)
        0xae if !is_mem => none,
        0xae if ext == 7 && p.rep.is_none() => mem(1, Read),
        // imul Gv, Ev
        0xaf => mem(v, Read),
        // cmpxchg
        0xb0 => mem(1, ReadWrite),
        0xb1 => mem(v, ReadWrite),
        // movzx, movsx
        0xb6 | 0xbe => mem(1, Read),
        0xb7 | 0xbf => mem(2, Read),
        // popcnt (f3 only: without it, 0f b8 is jmpe)
        0xb8 if p.rep == Some(0xf3) => mem(v, Read),
        // group 8: bt (reads), bts, btr, btc with an imm8 bit offset
        0xba if ext == 4 => with_imm(mem(v, Read), 1),
        0xba if ext >= 5 => with_imm(mem(v, ReadWrite), 1),
        // bsf, bsr (tzcnt, lzcnt with f3)
        0xbc | 0xbd => mem(v, Read),
        // xadd
        0xc0 => mem(1, ReadWrite),
        0xc1 => mem(v, ReadWrite),
        // group 9: cmpxchg8b, cmpxchg16b (/1); rdrand, rdseed (register forms)
        0xc7 if ext == 1 && is_mem => mem(if rex.w { 16 } else { 8 }, ReadWrite),
        0xc7 if (ext == 6 || ext == 7) && !is_mem => none,
        _ => return None,
    };
    Some((Some(m), form))
}

#[cfg(test)]
mod tests {
    use super::{decode, Access, Decoded, Kind, Regs};

    /// Registers where register `n` holds `0x1000 * (n + 1)`, at RIP 0x20_0000.
    fn gprs() -> [u64; 16] {
        std::array::from_fn(|n| 0x1000 * (n as u64 + 1))
    }

    fn at(code: &[u8]) -> Option<Decoded> {
        let g = gprs();
        decode(
            code,
            &Regs {
                rip: 0x20_0000,
                gprs: &g,
                fs_base: 0x7000_0000,
                gs_base: 0x9000_0000,
            },
        )
    }

    /// The length and the one data access of `code`.
    fn one(code: &[u8]) -> (u8, Access) {
        let d = at(code).unwrap_or_else(|| panic!("{code:x?} not decoded"));
        assert!(d.data[1].is_none(), "{code:x?}: {d:?}");
        (
            d.len,
            d.data[0].unwrap_or_else(|| panic!("{code:x?}: {d:?}")),
        )
    }

    fn acc(address: u64, size: u8, kind: Kind) -> Access {
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
        // ds: and cs: overrides add nothing in 64-bit mode; lock add [rdx], eax
        assert_eq!(one(&[0x3e, 0x8b, 0x02]), (3, acc(0x3000, 4, Kind::Read)));
        assert_eq!(
            one(&[0xf0, 0x01, 0x02]),
            (3, acc(0x3000, 4, Kind::ReadWrite))
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
        // cmpxchg16b [rdi]; xadd [rcx], eax; setne byte [rax]
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
        // lgdt [rax]: 10 bytes
        assert_eq!(one(&[0x0f, 0x01, 0x10]), (3, acc(0x1000, 10, Kind::Read)));
    }

    #[test]
    fn the_stack_operations_and_what_writes_rsp() {
        // push rbx: [rsp - 8]; pop r12: [rsp]; leave: [rbp]
        let push = at(&[0x53]).unwrap();
        assert_eq!(
            (push.len, push.data[0], push.writes_rsp),
            (1, Some(acc(0x5000 - 8, 8, Kind::Write)), true)
        );
        let pop = at(&[0x41, 0x5c]).unwrap();
        assert_eq!(pop.data[0], Some(acc(0x5000, 8, Kind::Read)));
        let leave = at(&[0xc9]).unwrap();
        assert_eq!(leave.data[0], Some(acc(0x6000, 8, Kind::Read)));
        // push qword [rax + 8]: the load and the store to the stack
        let push_m = at(&[0xff, 0x70, 0x08]).unwrap();
        assert_eq!(
            push_m.data,
            [
                Some(acc(0x1008, 8, Kind::Read)),
                Some(acc(0x5000 - 8, 8, Kind::Write))
            ]
        );
        // sub rsp, 0x28 writes rsp; sub rax, 0x28 does not; mov rsp, rax does
        assert!(at(&[0x48, 0x83, 0xec, 0x28]).unwrap().writes_rsp);
        assert!(!at(&[0x48, 0x83, 0xe8, 0x28]).unwrap().writes_rsp);
        assert!(at(&[0x48, 0x89, 0xc4]).unwrap().writes_rsp);
        assert!(!at(&[0x48, 0x89, 0xc3]).unwrap().writes_rsp);
        // lea rax, [rip + 0x10]: no access at all (only the fetch)
        let lea = at(&[0x48, 0x8d, 0x05, 0x10, 0, 0, 0]).unwrap();
        assert_eq!((lea.len, lea.data), (7, [None, None]));
        assert_eq!(
            lea.accesses(0x20_0000).collect::<Vec<_>>(),
            [acc(0x20_0000, 7, Kind::Fetch)]
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
            (&[0x0f, 0x01, 0xf8], 3),                    // swapgs
            (&[0x0f, 0xa2], 2),                          // cpuid
            (&[0xef], 1),                                // out dx, eax
            (&[0xfa], 1),                                // cli
        ] {
            let d = at(code).unwrap_or_else(|| panic!("{code:x?}"));
            assert_eq!((d.len, d.data), (len, [None, None]), "{code:x?}");
        }
    }

    #[test]
    fn what_it_does_not_know_is_not_decoded() {
        for code in [
            &[0xc3][..],               // ret
            &[0xe8, 0, 0, 0, 0],       // call rel32
            &[0xff, 0x10],             // call [rax]
            &[0xff, 0x20],             // jmp [rax]
            &[0x74, 0x02],             // je
            &[0x48, 0xcf],             // iretq
            &[0x0f, 0x05],             // syscall
            &[0xf3, 0x48, 0xa5],       // rep movsq
            &[0xaa],                   // stosb
            &[0xd7],                   // xlat
            &[0x8f, 0x00],             // pop [rax]
            &[0x0f, 0xab, 0x08],       // bts [rax], ecx (a bit string)
            &[0x67, 0x8b, 0x00],       // mov eax, [eax]
            &[0x0f, 0x28, 0x00],       // movaps
            &[0xc5, 0xf8, 0x28, 0x00], // vmovaps
            &[0xd9, 0x00],             // fld dword [rax]
            &[0xf2, 0x0f, 0x10, 0x00], // movsd xmm0, [rax]
            &[0x64, 0x65, 0x8b, 0x00], // two segment overrides
            &[0x48, 0x66, 0x8b, 0x00], // REX before a prefix
            &[0x48, 0x8b],             // truncated
            &[0x48, 0x8b, 0x80, 0, 0], // truncated displacement
            &[0x66; 15],               // prefixes only
            &[0x0f, 0x0b],             // ud2
            &[0xcd, 0x80],             // int
        ] {
            assert_eq!(at(code), None, "{code:x?}");
        }
    }
}
