//! The generic checks, in the spec's order ([`CHECK_ORDER`]), driven by the descriptor table.
//! Every path (direct, MULTICALL, deferred, ring) goes through these and only these.
//!
//! | step | check | status |
//! |---|---|---|
//! | entry | an entry's own `flags`/`reserved` (MULTICALL, deferred, ring; STAT-011): `batch.rs`, `ring.rs` | INVALID_PARAMETER |
//! | 1 | code known and implemented (for the served / negotiated version) | NOT_SUPPORTED |
//! | 2 | NEGOTIATE succeeded (Base exempt) | NOT_NEGOTIATED |
//! | 3 | feature granted | NOT_GRANTED |
//! | 4 | allowed in this context ([`Ctx`]) | NOT_ALLOWED_HERE |
//! | 5 | register arguments ([`ArgCheck::accepts`], plus MULTICALL `start <= count`, MULTICALL_PAGES `pages` and `start`) | INVALID_PARAMETER |
//! | - | direct sync-point calls: the drain of the deferred queue (DEFER-003, in `lib.rs`) | |
//! | 6 | block aligned | MISALIGNED |
//! | 7 | block within one page | CROSSES_PAGE |
//! | 8 | block in guest RAM | INVALID_ADDRESS |
//! | 9 | block not host-owned | ACCESS_DENIED |
//! | - | the one copy of the block ([`Block`]) | |
//!
//! Steps 10 (block contents: [`Block::parse`]) and 11 (call-specific) belong to the handlers,
//! as do the steps 6-9 of the pages MULTICALL_PAGES's page list names (`batch.rs`), which
//! come after the list's own.
//!
//! [`CHECK_ORDER`]: pvabi_abi::status::CHECK_ORDER
//! [`ArgCheck::accepts`]: pvabi_abi::calls::ArgCheck::accepts

use pvabi_abi::batch::multicall_pages_for;
use pvabi_abi::calls::{BlockKind, Call, CallDescriptor, DeferClass};
use pvabi_abi::convention::{within_one_page, MAX_BLOCK_SIZE};
use pvabi_abi::status::Status;
use pvabi_abi::version::Version;
use zerocopy::TryFromBytes;

use crate::faults::injected;
use crate::guest_mem;
use crate::machine::Machine;
use crate::state::Inner;

/// Where a call is made: decides which calls are allowed (check 4).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Ctx {
    /// Through the doorbell.
    Direct,
    /// As a MULTICALL entry: only batchable calls (MULTICALL itself is not: no nesting).
    Multicall,
    /// From the deferred queue: only calls with a deferral class.
    Deferred,
    /// As a ring submission: only batchable calls.
    Ring,
}

impl Ctx {
    /// Whether the call `d` may be made in this context.
    pub fn allows(self, d: &CallDescriptor) -> bool {
        match self {
            Ctx::Direct => true,
            Ctx::Multicall | Ctx::Ring => d.batchable,
            Ctx::Deferred => d.deferral != DeferClass::None,
        }
    }
}

/// A call's memory block after checks 6-9.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Block {
    /// The call takes no block.
    None,
    /// The one copy of a structure, byte buffer or array (empty for a zero-length buffer).
    Copy(Vec<u8>),
    /// The address of an aligned 64-bit word the call writes (MEM_UPDATE_PTE).
    Word(u64),
    /// A page to register as a host-owned shared area (`None`: address 0, unregister).
    Page(Option<u64>),
}

impl Block {
    /// The copied bytes (empty unless [`Block::Copy`]).
    pub fn bytes(&self) -> &[u8] {
        match self {
            Block::Copy(b) => b,
            _ => &[],
        }
    }

    /// The page of a shared-area registration (`None`: unregister, or not a page block).
    pub fn page_arg(&self) -> Option<u64> {
        match self {
            Block::Page(p) => *p,
            _ => None,
        }
    }

    /// Check 10: parses the copy as `T`; a wrong size, a non-zero reserved field or an
    /// invalid enum value is INVALID_PARAMETER.
    pub fn parse<T: TryFromBytes>(&self) -> Result<T, Status> {
        T::try_read_from_bytes(self.bytes()).map_err(|_| Status::InvalidParameter)
    }
}

/// Check 5: every register argument the call declares passes its [`ArgCheck`], and the
/// cross-argument rules the table cannot express hold.
///
/// [`ArgCheck`]: pvabi_abi::calls::ArgCheck
#[inline]
pub fn register_args(d: &CallDescriptor, args: &[u64; 6], vcpus: u32) -> Result<(), Status> {
    if d.args
        .iter()
        .zip(args.iter())
        .any(|(a, &v)| !a.check.accepts(v, vcpus))
    {
        return Err(Status::InvalidParameter);
    }
    // MULTICALL: the resume index may not pass the count.
    if d.call == Call::Multicall && args[2] > args[1] {
        return Err(Status::InvalidParameter);
    }
    // MULTICALL_PAGES (list, pages, count, start, flags): the list names exactly the pages
    // `count` entries fill, and the resume index may not pass the count (BATCH-016).
    if d.call == Call::MulticallPages
        && (args[1] != multicall_pages_for(args[2]) || args[3] > args[2])
    {
        return Err(Status::InvalidParameter);
    }
    Ok(())
}

impl<M: Machine> Inner<M> {
    /// The descriptor of `code` if this host implements it for `version` (the negotiated
    /// version, or before NEGOTIATE the highest served): check 1.
    #[inline]
    pub(crate) fn known(
        &self,
        code: u64,
        version: Option<Version>,
    ) -> Option<&'static CallDescriptor> {
        let slot = self.calls.get(code)?;
        let limit = version.unwrap_or_else(|| self.config.highest());
        (slot.implemented && slot.descriptor.since <= limit).then_some(slot.descriptor)
    }

    /// Checks 1-4.
    #[inline]
    pub(crate) fn gate(&self, code: u64, ctx: Ctx) -> Result<&'static CallDescriptor, Status> {
        let negotiated = self.negotiated();
        let unknown = if injected!(self, UnknownCodeIsInvalidParameter) {
            Status::InvalidParameter
        } else {
            Status::NotSupported
        };
        let d = self
            .known(code, negotiated.map(|n| n.version))
            .ok_or(unknown)?;
        if injected!(self, ContextCheckedBeforeFeature) && !ctx.allows(d) {
            return Err(Status::NotAllowedHere);
        }
        if let Some(feature) = d.feature {
            if negotiated.is_none() && injected!(self, UngatedBeforeNegotiate) {
                return Ok(d);
            }
            let n = negotiated.ok_or(Status::NotNegotiated)?;
            if !n.granted.contains(feature) {
                return Err(Status::NotGranted);
            }
        }
        let accepts_any = ctx == Ctx::Multicall && injected!(self, MulticallAcceptsNonBatchable);
        if !ctx.allows(d) && !accepts_any {
            return Err(Status::NotAllowedHere);
        }
        Ok(d)
    }

    /// Checks 6-9 on the block the descriptor declares, then the one copy.
    pub(crate) fn fetch_block(&self, d: &CallDescriptor, args: &[u64; 6]) -> Result<Block, Status> {
        let Some(b) = d.block else {
            return Ok(Block::None);
        };
        let gpa = args[b.addr_arg];
        let shared_page = matches!(b.kind, BlockKind::SharedPage { .. });
        if shared_page && gpa == 0 {
            return Ok(Block::Page(None));
        }
        let size = b.size(args);
        if size > MAX_BLOCK_SIZE {
            // Unreachable with the 1.0 table (lengths and counts are range-checked), kept so
            // that a table change cannot make the host copy more than a page.
            return Err(Status::InvalidParameter);
        }
        if size == 0 {
            // An empty buffer touches no memory: nothing to align, cross, map or own.
            return Ok(Block::Copy(Vec::new()));
        }
        if !gpa.is_multiple_of(b.align) {
            return Err(Status::Misaligned);
        }
        if !within_one_page(gpa, size) {
            return Err(Status::CrossesPage);
        }
        let mem = self.machine.memory();
        if !guest_mem::in_ram(mem, gpa, size) {
            return Err(Status::InvalidAddress);
        }
        if self.overlaps_owned(gpa, size) {
            return Err(Status::AccessDenied);
        }
        match b.kind {
            BlockKind::SharedPage { .. } => Ok(Block::Page(Some(gpa))),
            BlockKind::Word => Ok(Block::Word(gpa)),
            BlockKind::Struct(_) | BlockKind::Bytes { .. } | BlockKind::Array { .. } => {
                // `size` <= 4096, checked above.
                Ok(Block::Copy(guest_mem::copy_in(mem, gpa, size as usize)?))
            }
        }
    }
}
