// The hostile guest's table-driven inputs, shared by the guest (which makes the calls) and the
// host tests (which regenerate the same list and check the guest made exactly these calls):
// both `include!` this file into a module that has the ABI crate in scope as `abi`.
// Everything here is derived from the call table (`abi::calls`), so a new call or argument
// gets its malformed inputs without a change here.

use abi::calls::{ArgCheck, BlockKind, CallDescriptor};
use abi::layout::{FieldLayout, StructLayout};

/// Call codes that no call has: every unused code below 0x800, the first and last code of
/// every unused family up to 0xffff, and every defined code with one bit of 16..=63 set.
pub const C_UNUSED_CODE: u32 = 1;
/// A register argument that fails its check: each reserved bit of a mask, values around a
/// range, vCPU indices at and beyond the count (the other arguments valid).
pub const C_RESERVED_ARG: u32 = 2;
/// A memory block outside guest RAM (aligned, within one page).
pub const C_OUTSIDE_RAM: u32 = 3;
/// A memory block that crosses a page boundary inside guest RAM.
pub const C_CROSSES_PAGE: u32 = 4;
/// An address plus a length that overflows 2^64 (blocks, ranges and PFNs).
pub const C_WRAPS: u32 = 5;
/// A memory block on a host-owned page.
pub const C_HOST_OWNED: u32 = 6;
/// A reserved bit in a batch entry's own fields (`sub` = field, `code` = bit).
pub const C_ENTRY_FIELD: u32 = 7;
/// A submission ring `tail` beyond `head` + capacity (`code` = tail − head).
pub const C_SQ_INDEX: u32 = 8;
/// A completion ring `head` ahead of its `tail` (`code` = head − tail).
pub const C_CQ_INDEX: u32 = 9;
/// A deferred queue `tail` beyond `head` + capacity (`code` = tail − head).
pub const C_DQ_INDEX: u32 = 10;
/// An event acknowledged more than once: `head` past `tail` (`code` = extra acks).
pub const C_EVENT_ACK: u32 = 11;
/// NEGOTIATE again after it succeeded (`sub` = variant, `code` = vCPU).
pub const C_NEGOTIATE: u32 = 12;

/// A reserved bit (or an undefined value) in a field of a call's structure block: each bit
/// of every `flags` and `reserved` field that no flag defines, and undefined `mode` values
/// (`sub` = field offset, `r[0]` = the value, `r[1]` = the field width written).
pub const C_BLOCK_FIELD: u32 = 13;

/// A call in a context it is not allowed in: every non-batchable call (MULTICALL itself
/// included: nested MULTICALL) as a MULTICALL entry and as a ring submission, and every call
/// without a deferral class in the deferred queue (`sub` = the context, `CTX_*`).
pub const C_CONTEXT: u32 = 14;
/// [`C_CONTEXT`]: a MULTICALL entry.
pub const CTX_MULTICALL: u32 = 0;
/// [`C_CONTEXT`]: a ring submission.
pub const CTX_RING: u32 = 1;
/// [`C_CONTEXT`]: a deferred-queue entry.
pub const CTX_DEFERRED: u32 = 2;

/// Entry fields of [`C_ENTRY_FIELD`].
pub const F_MC_FLAGS: u32 = 0;
/// `MulticallEntry.reserved`.
pub const F_MC_RESERVED: u32 = 1;
/// `DeferredEntry.flags`.
pub const F_DE_FLAGS: u32 = 2;
/// `SubmissionEntry.flags`.
pub const F_SQE_FLAGS: u32 = 3;

/// `tail − head` values of [`C_SQ_INDEX`] and [`C_DQ_INDEX`] beyond any capacity here.
pub const BAD_OCCUPANCY: [u32; 7] = [65, 66, 200, 1000, 1 << 16, 1 << 31, u32::MAX];
/// `head − tail` values of [`C_CQ_INDEX`].
pub const CQ_HEAD_AHEAD: [u32; 5] = [1, 2, 65, 1 << 20, 1 << 31];
/// Extra acknowledgements of [`C_EVENT_ACK`].
pub const EXTRA_ACKS: [u32; 6] = [1, 2, 3, 64, 1 << 20, 1 << 31];

/// NEGOTIATE variants of [`C_NEGOTIATE`], after a successful NEGOTIATE.
pub const NEGOTIATE_VARIANTS: u32 = 7;

/// The registers of NEGOTIATE variant `v` ([`C_NEGOTIATE`]): 0 replays the first
/// NEGOTIATE, 1 downgrades (minimum minor 0, fewer features), 2 asks for more, 3 another
/// major, 4 a reserved bit of `requested`, 5 an unknown required feature, 6 `flags` set.
pub fn negotiate_variant(v: u32, first: [u64; 4]) -> [u64; 6] {
    let [req, required, optional, flags] = first;
    let r = match v {
        0 => [req, required, optional, flags],
        1 => [0x0001_0000, 1, 0, 0],
        2 => [req, u64::from(u32::MAX) >> 16, u64::MAX, 0],
        3 => [0x0002_0000, required, optional, 0],
        4 => [req | 1 << 32, required, optional, 0],
        5 => [req, required | 1 << 40, optional, 0],
        _ => [req, required, optional, 1],
    };
    [r[0], r[1], r[2], r[3], 0, 0]
}

/// Valid register arguments for `d`: each passes its own check.
pub fn base_args(d: &CallDescriptor) -> [u64; 6] {
    let mut a = [0u64; 6];
    for (i, arg) in d.args.iter().enumerate().take(6) {
        a[i] = match arg.check {
            ArgCheck::Range { min, .. } => min,
            _ => 0,
        };
    }
    a
}

/// Values that fail `check` (for `vcpus` vCPUs), each once.
pub fn bad_values(check: ArgCheck, vcpus: u32, f: &mut dyn FnMut(u64)) {
    // Candidates in order; each value that fails the check is emitted once.
    let mut emitted = [0u64; 8];
    let mut n = 0;
    let mut emit = |v: u64, f: &mut dyn FnMut(u64)| {
        if check.accepts(v, vcpus) || emitted[..n].contains(&v) {
            return;
        }
        if n < emitted.len() {
            emitted[n] = v;
            n += 1;
        }
        f(v);
    };
    match check {
        ArgCheck::Any => {}
        ArgCheck::Mask(m) => {
            for b in 0..64 {
                if m & (1 << b) == 0 {
                    f(1 << b);
                }
            }
            if (!m).count_ones() > 1 {
                emit(!m, f);
            }
            if m != 0 {
                emit(u64::MAX, f);
            }
        }
        ArgCheck::Range { min, max } => {
            for v in [
                max.wrapping_add(1),
                max.wrapping_add(2),
                1 << 32,
                1 << 63,
                u64::MAX,
                min.wrapping_sub(1),
                0,
            ] {
                emit(v, f);
            }
        }
        ArgCheck::VcpuIndex => {
            let v = u64::from(vcpus);
            for v in [v, v + 1, 1 << 31, 1 << 32, u64::MAX] {
                emit(v, f);
            }
        }
    }
}

/// [`C_UNUSED_CODE`]: every code, in order.
pub fn for_each_unused_code(f: &mut dyn FnMut(u64)) {
    for code in 0..0x800u64 {
        if abi::Call::from_code(code).is_none() {
            f(code);
        }
    }
    for family in 0x08..=0xffu64 {
        f(family << 8);
        f(family << 8 | 0xff);
    }
    for d in abi::calls::all() {
        for bit in 16..64 {
            f(u64::from(d.call.code()) | 1 << bit);
        }
    }
}

/// [`C_RESERVED_ARG`]: `(call, argument index, registers)`, in order.
pub fn for_each_reserved_arg(vcpus: u32, f: &mut dyn FnMut(&CallDescriptor, usize, [u64; 6])) {
    for d in abi::calls::all() {
        for (i, arg) in d.args.iter().enumerate().take(6) {
            bad_values(arg.check, vcpus, &mut |v| {
                let mut a = base_args(d);
                a[i] = v;
                f(d, i, a);
            });
        }
    }
}

/// The arguments of `d` with its block at `addr` and of about `size` bytes (the length or
/// count argument set accordingly; structures and words have their own size). `None` if `d`
/// has no block or the size cannot be expressed.
pub fn block_args(d: &CallDescriptor, addr: u64, size: u64) -> Option<[u64; 6]> {
    let b = d.block?;
    let mut a = base_args(d);
    match b.kind {
        BlockKind::Bytes { len_arg, max } => {
            if size == 0 || size > max {
                return None;
            }
            a[len_arg] = size;
        }
        BlockKind::Array {
            elem_size,
            count_arg,
            max,
            ..
        } => {
            let count = size.div_ceil(elem_size).max(1);
            if count > max {
                return None;
            }
            a[count_arg] = count;
        }
        BlockKind::Struct(_) | BlockKind::Word | BlockKind::SharedPage { .. } => {}
    }
    a[b.addr_arg] = addr;
    keep_relations(d, &mut a);
    Some(a)
}

/// Makes the arguments that step 5 relates to each other agree again after one of them was
/// set: MULTICALL_PAGES' `count` must need exactly `pages` list pages (PVABI-BATCH-015), so that the
/// input reaches the block checks it is about.
fn keep_relations(d: &CallDescriptor, a: &mut [u64; 6]) {
    if d.call == abi::calls::Call::MulticallPages {
        // list, pages, count, start, flags
        a[2] = (a[1] * abi::batch::MULTICALL_PAGE_ENTRIES).min(abi::batch::MULTICALL_PAGES_MAX_ENTRIES);
    }
}

/// The size of `d`'s block with the registers `a` (0 without a block).
pub fn block_size(d: &CallDescriptor, a: &[u64; 6]) -> u64 {
    d.block.map_or(0, |b| b.size(a))
}

/// [`C_OUTSIDE_RAM`]: page-aligned addresses at and above the end of RAM (`mem`), each
/// block of every call with a block (at its smallest size).
pub fn for_each_outside_ram(mem: u64, f: &mut dyn FnMut(&CallDescriptor, [u64; 6])) {
    let addrs = [
        mem,
        mem + 4096,
        mem + (1 << 20),
        1 << 32,
        1 << 40,
        1 << 47,
        1 << 63,
        !0xfff,
    ];
    for d in abi::calls::all() {
        for &addr in &addrs {
            if let Some(a) = block_args(d, addr, 8) {
                f(d, a);
            }
        }
    }
}

/// [`C_CROSSES_PAGE`]: blocks that start in the guest-owned page `page` and end in the next
/// one (also guest-owned), at offsets that keep each block aligned.
pub fn for_each_crossing(page: u64, f: &mut dyn FnMut(&CallDescriptor, [u64; 6])) {
    for d in abi::calls::all() {
        let Some(b) = d.block else { continue };
        let (sizes, starts): (&[u64], &[u64]) = match b.kind {
            BlockKind::Bytes { .. } => (&[2, 16, 4096], &[4095, 4088, 1, 2048]),
            BlockKind::Array { elem_size, .. } => (&[elem_size, 2 * elem_size, 4096], &[8, 4088]),
            BlockKind::Struct(l) => (&[l.size as u64], &[8, l.size as u64 - 8]),
            BlockKind::Word | BlockKind::SharedPage { .. } => continue,
        };
        for &size in sizes {
            for &back in starts {
                // The block starts `back` bytes before the page's end (rounded to its
                // alignment) and must not fit.
                let addr = (page + 4096 - back) & !(b.align - 1);
                let Some(a) = block_args(d, addr, size) else {
                    continue;
                };
                let s = block_size(d, &a);
                if s > 1 && (addr & 0xfff) + s > 4096 && addr + s <= page + 8192 {
                    f(d, a);
                }
            }
        }
    }
}

/// [`C_WRAPS`]: blocks whose end lies at or above 2^64 (aligned), then the register ranges
/// whose end `start + pages * 4096` exceeds 2^64 (MEM_SHARE, MEM_UNSHARE,
/// MEM_FLUSH_TLB_RANGE).
pub fn for_each_wrap(f: &mut dyn FnMut(&CallDescriptor, [u64; 6])) {
    for d in abi::calls::all() {
        let Some(b) = d.block else { continue };
        for (back, size) in [(1u64, 2u64), (8, 16), (8, 4096), (64, 4096)] {
            let addr = (u64::MAX - back + 1) & !(b.align - 1);
            let Some(a) = block_args(d, addr, size) else {
                continue;
            };
            if addr.checked_add(block_size(d, &a) - 1).is_none() {
                f(d, a);
            }
        }
    }
    for d in abi::calls::all() {
        let is_range = d.args.len() == 2
            && d.args[0].name == "start"
            && d.args[1].name == "pages"
            && d.block.is_none();
        if !is_range {
            continue;
        }
        let ArgCheck::Range { max, .. } = d.args[1].check else {
            continue;
        };
        for (start_pages_below_top, pages) in [(1u64, 2u64), (1, max), (max - 1, max), (4, 5)] {
            let start = 0u64.wrapping_sub(start_pages_below_top * 4096);
            f(d, [start, pages, 0, 0, 0, 0]);
        }
    }
}

/// [`C_HOST_OWNED`]: every call's block on each host-owned page of `owned` (at the page's
/// start and, where the alignment allows, its middle).
pub fn for_each_host_owned(owned: &[u64], f: &mut dyn FnMut(&CallDescriptor, [u64; 6])) {
    for d in abi::calls::all() {
        let Some(b) = d.block else { continue };
        for &page in owned {
            for off in [0u64, 2048] {
                if off % b.align != 0 {
                    continue;
                }
                if let Some(a) = block_args(d, page + off, 8) {
                    f(d, a);
                }
            }
        }
    }
}

/// The bits of a structure field that have a meaning (the rest are reserved).
fn defined_bits(layout: &StructLayout, field: &FieldLayout) -> u64 {
    if layout.name == "RingSetup" && field.name == "flags" {
        u64::from(abi::batch::RING_FLAGS_VALID)
    } else {
        0
    }
}

/// [`C_BLOCK_FIELD`]: `(call, field offset, width in bytes, value)`, in order.
pub fn for_each_block_field(f: &mut dyn FnMut(&CallDescriptor, u32, u32, u64)) {
    for d in abi::calls::all() {
        let Some(b) = d.block else { continue };
        let BlockKind::Struct(layout) = b.kind else {
            continue;
        };
        for field in layout.fields {
            let offset = field.offset as u32;
            if field.name == "mode" {
                for v in [2u64, 3, 0xff, 0xffff_ffff] {
                    f(d, offset, 4, v);
                }
                continue;
            }
            if field.name != "flags" && field.name != "reserved" {
                continue;
            }
            let defined = defined_bits(layout, field);
            let mut off = 0;
            while off < field.size {
                let width = (field.size - off).min(8) as u32;
                for bit in 0..8 * width {
                    if off > 0 || defined & (1 << bit) == 0 {
                        f(d, offset + off as u32, width, 1 << bit);
                    }
                }
                off += 8;
            }
        }
    }
}

/// [`C_CONTEXT`]: `(call, context)`, in order; the entry's arguments are [`base_args`].
pub fn for_each_context(f: &mut dyn FnMut(&CallDescriptor, u32)) {
    for ctx in [CTX_MULTICALL, CTX_RING, CTX_DEFERRED] {
        for d in abi::calls::all() {
            let allowed = match ctx {
                CTX_DEFERRED => d.deferral != abi::calls::DeferClass::None,
                _ => d.batchable,
            };
            if !allowed {
                f(d, ctx);
            }
        }
    }
}
