//! Spec chapter "Console family": debug console output.
//!
//! Two forms: `CONSOLE_WRITE_REGS` carries up to 32 bytes in four registers (no memory
//! block, so it works before the guest knows its addresses), and `CONSOLE_WRITE` takes a
//! buffer in guest memory (up to 4096 bytes, not crossing a page). [`Console`] adapts the
//! register form to `core::fmt::Write`.

use pvabi_abi::calls::Call;
use pvabi_abi::console::CONSOLE_REGS_MAX;
use pvabi_abi::convention::{MAX_ARGS, PAGE_SIZE};

use crate::error::{Error, Result};
use crate::shared::gpa_of;
use crate::transport::Transport;
use crate::Pvabi;

/// The most bytes one `CONSOLE_WRITE_REGS` carries.
pub const REGS_MAX: usize = CONSOLE_REGS_MAX as usize;

/// The arguments of `CONSOLE_WRITE_REGS` for `chunk`: `a0` = length, `a1..a4` = the bytes,
/// little-endian, 8 per register, zero-padded. `None` if `chunk` is longer than 32 bytes.
///
/// Useful for batching console output (MULTICALL entries, ring submissions).
///
/// ```
/// let args = pvabi_guest::console::regs_args(b"ABCDEFGHI").unwrap();
/// assert_eq!(args, [9, 0x4847_4645_4443_4241, 0x49, 0, 0, 0]);
/// ```
pub fn regs_args(chunk: &[u8]) -> Option<[u64; MAX_ARGS]> {
    if chunk.len() > REGS_MAX {
        return None;
    }
    let mut args = [0u64; MAX_ARGS];
    args[0] = chunk.len() as u64;
    for (i, &b) in chunk.iter().enumerate() {
        args[1 + i / 8] |= u64::from(b) << (8 * (i % 8));
    }
    Some(args)
}

impl<T: Transport> Pvabi<T> {
    /// `CONSOLE_WRITE_REGS`: writes `bytes`, in chunks of at most 32 bytes (one call each; an
    /// empty slice makes no call). Returns the bytes written; stops early when the host
    /// writes less than a whole chunk.
    #[doc(alias = "CONSOLE_WRITE_REGS")]
    pub fn console_write_regs(&self, bytes: &[u8]) -> Result<usize> {
        let mut total = 0;
        for chunk in bytes.chunks(REGS_MAX) {
            let args = regs_args(chunk).unwrap_or_default();
            // SAFETY: CONSOLE_WRITE_REGS takes its bytes in registers; no memory is involved.
            let r = unsafe { self.call_raw(Call::ConsoleWriteRegs, args) }?;
            let written = written(r[0], chunk.len())?;
            total += written;
            if written < chunk.len() {
                break;
            }
        }
        Ok(total)
    }

    /// `CONSOLE_WRITE`: writes `len` bytes (0 to 4096) at guest-physical `gpa`, which must not
    /// cross a 4 KiB page. Returns the bytes written.
    ///
    /// Safe: the host only reads the buffer.
    #[doc(alias = "CONSOLE_WRITE")]
    pub fn console_write(&self, gpa: u64, len: u64) -> Result<u64> {
        // SAFETY: the host only reads the block; a wrong address yields an error or garbage
        // output, never a write to guest memory.
        let r = unsafe { self.call_raw(Call::ConsoleWrite, [gpa, len, 0, 0, 0, 0]) }?;
        if r[0] > len {
            return Err(Error::UnexpectedResult(r[0]));
        }
        Ok(r[0])
    }

    /// `CONSOLE_WRITE` of a slice, split at 4 KiB page boundaries (one call per piece).
    /// Addresses come from [`gpa_of`], so this is **valid only under identity mapping**
    /// (otherwise the host prints whatever lies at those guest-physical addresses). Returns
    /// the bytes written; stops early on a short write.
    #[doc(alias = "CONSOLE_WRITE")]
    pub fn console_write_slice(&self, bytes: &[u8]) -> Result<usize> {
        let mut rest = bytes;
        let mut total = 0;
        while !rest.is_empty() {
            let gpa = gpa_of(rest);
            let room = (PAGE_SIZE - gpa % PAGE_SIZE) as usize;
            let (piece, tail) = rest.split_at(room.min(rest.len()));
            let written = self.console_write(gpa, piece.len() as u64)? as usize;
            total += written;
            if written < piece.len() {
                break;
            }
            rest = tail;
        }
        Ok(total)
    }

    /// A `core::fmt::Write` adapter over `CONSOLE_WRITE_REGS`.
    pub const fn console(&self) -> Console<'_, T> {
        Console {
            pvabi: self,
            error: None,
        }
    }
}

/// Checks a "bytes written" result against what was asked.
fn written(raw: u64, asked: usize) -> Result<usize> {
    match usize::try_from(raw) {
        Ok(n) if n <= asked => Ok(n),
        _ => Err(Error::UnexpectedResult(raw)),
    }
}

/// `core::fmt::Write` over `CONSOLE_WRITE_REGS`: each `write_str` becomes
/// `ceil(len / 32)` calls. A failed or short write makes `write_str` return
/// `fmt::Error`; [`Console::error`] tells why.
///
/// `core::fmt` is precompiled with `core` and may use SSE: in guests that must stay
/// SSE-free, prefer [`Pvabi::console_write_regs`] with preformatted bytes.
///
/// ```
/// use core::fmt::Write;
/// # use pvabi_guest::{transport::{RawResult, Transport}, Pvabi};
/// # struct Echo;
/// # impl Transport for Echo {
/// #     unsafe fn call(&self, _code: u32, args: [u64; 6]) -> RawResult { RawResult::ok([args[0], 0, 0, 0]) }
/// # }
/// let pv = Pvabi::new(Echo);
/// write!(pv.console(), "{} + {} = {}\n", 1, 2, 1 + 2).unwrap();
/// ```
#[derive(Debug)]
pub struct Console<'a, T> {
    pvabi: &'a Pvabi<T>,
    error: Option<Error>,
}

impl<T> Console<'_, T> {
    /// Why the last failed write failed: the call's error, or
    /// [`Error::UnexpectedResult`] with the byte count of a short write.
    pub const fn error(&self) -> Option<Error> {
        self.error
    }
}

impl<T: Transport> core::fmt::Write for Console<'_, T> {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        match self.pvabi.console_write_regs(s.as_bytes()) {
            Ok(n) if n == s.len() => Ok(()),
            Ok(n) => {
                self.error = Some(Error::UnexpectedResult(n as u64));
                Err(core::fmt::Error)
            }
            Err(e) => {
                self.error = Some(e);
                Err(core::fmt::Error)
            }
        }
    }
}
