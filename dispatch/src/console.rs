//! Console family: bytes in registers or in a guest buffer, to the configured sink.

use std::borrow::Cow;
use std::io::IsTerminal;

use pvabi_abi::calls::Call;
use pvabi_abi::status::Status;

use crate::config::ConsoleSink;
use crate::faults::injected;
use crate::machine::Machine;
use crate::report::MAX_CONSOLE_BYTES;
use crate::state::Inner;
#[cfg(feature = "fault-injection")]
use crate::sync::lock;
use crate::{done, Reply, Req};

pub(crate) fn handle<M: Machine>(h: &Inner<M>, r: &Req) -> Result<Reply, Status> {
    match r.call {
        Call::ConsoleWriteRegs => {
            // `length` is 0..=32 (check 5).
            let len = r.args[0] as usize;
            let mut bytes = [0u8; 32];
            for (chunk, reg) in bytes.chunks_exact_mut(8).zip(&r.args[1..5]) {
                chunk.copy_from_slice(&reg.to_le_bytes());
            }
            let emitted = if injected!(h, ConsoleWriteRegsIgnoresLength) {
                32
            } else {
                len
            };
            h.console_out(r.vcpu, &bytes[..emitted]);
            done(&[len as u64])
        }
        Call::ConsoleWrite => {
            let bytes = r.block.bytes();
            #[cfg(feature = "fault-injection")]
            if injected!(h, ConsoleEmitsTheBufferLater) {
                lock(&h.vcpus[r.vcpu as usize].state).console_later =
                    Some((r.args[0], bytes.len()));
                return done(&[bytes.len() as u64]);
            }
            h.console_out(r.vcpu, bytes);
            done(&[bytes.len() as u64])
        }
        _ => Err(Status::NotSupported),
    }
}

/// The injected fault `ConsoleEmitsTheBufferLater`, at the start of each of the vCPU's calls:
/// emits the buffer of its last CONSOLE_WRITE as guest memory holds it now.
#[cfg(feature = "fault-injection")]
pub(crate) fn emit_later<M: Machine>(h: &Inner<M>, vcpu: u32) {
    let Some(slot) = h.vcpus.get(vcpu as usize) else {
        return;
    };
    let Some((gpa, len)) = lock(&slot.state).console_later.take() else {
        return;
    };
    if let Ok(bytes) = crate::guest_mem::copy_in(h.machine.memory(), gpa, len) {
        h.console_out(vcpu, &bytes);
    }
}

/// Whether `b` is a control byte of PVABI-CON-007: C0 other than tab, LF and CR, and DEL.
pub(crate) const fn is_control(b: u8) -> bool {
    (b < 0x20 && !matches!(b, b'\t' | b'\n' | b'\r')) || b == 0x7f
}

/// The bytes as a terminal should show them (PVABI-CON-007): each control byte as `\xNN`,
/// every other byte as it is.
pub(crate) fn escape_controls(bytes: &[u8]) -> Cow<'_, [u8]> {
    if !bytes.iter().any(|&b| is_control(b)) {
        return Cow::Borrowed(bytes);
    }
    let mut out = Vec::with_capacity(bytes.len() + 8);
    for &b in bytes {
        if is_control(b) {
            out.extend_from_slice(format!("\\x{b:02x}").as_bytes());
        } else {
            out.push(b);
        }
    }
    Cow::Owned(out)
}

/// Whether the sink is a terminal (its bytes get escaped) rather than a log, pipe or program
/// (which get them unaltered: PVABI-CON-004).
fn sink_is_terminal(sink: &ConsoleSink) -> bool {
    match sink {
        ConsoleSink::Stdout => std::io::stdout().is_terminal(),
        ConsoleSink::Stderr => std::io::stderr().is_terminal(),
        ConsoleSink::Discard | ConsoleSink::Custom(_) => false,
    }
}

impl<M: Machine> Inner<M> {
    /// Sends console bytes to the sink and the report: unaltered, except that a terminal
    /// sink gets control bytes escaped.
    pub(crate) fn console_out(&self, vcpu: u32, bytes: &[u8]) {
        if bytes.is_empty() {
            return;
        }
        if sink_is_terminal(&self.config.console) {
            self.config.console.emit(vcpu, &escape_controls(bytes));
        } else {
            self.config.console.emit(vcpu, bytes);
        }
        self.record(|rep| {
            rep.console_bytes += bytes.len() as u64;
            let room = MAX_CONSOLE_BYTES.saturating_sub(rep.console.len());
            rep.console
                .extend_from_slice(&bytes[..bytes.len().min(room)]);
        });
        if !self.config.host_events.is_empty() {
            for event in crate::host_event::requests(bytes) {
                if self.config.host_events.contains(&event) {
                    self.machine.request_host_event(vcpu, event);
                }
            }
        }
    }
}
