//! Console family: bytes in registers or in a guest buffer, to the configured sink.

use pvabi_abi::calls::Call;
use pvabi_abi::status::Status;

use crate::machine::Machine;
use crate::report::MAX_CONSOLE_BYTES;
use crate::state::Inner;
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
            h.console_out(r.vcpu, &bytes[..len]);
            done(&[len as u64])
        }
        Call::ConsoleWrite => {
            let bytes = r.block.bytes();
            h.console_out(r.vcpu, bytes);
            done(&[bytes.len() as u64])
        }
        _ => Err(Status::NotSupported),
    }
}

impl<M: Machine> Inner<M> {
    /// Sends console bytes to the sink and the report.
    pub(crate) fn console_out(&self, vcpu: u32, bytes: &[u8]) {
        if bytes.is_empty() {
            return;
        }
        self.config.console.emit(vcpu, bytes);
        self.record(|rep| {
            rep.console_bytes += bytes.len() as u64;
            let room = MAX_CONSOLE_BYTES.saturating_sub(rep.console.len());
            rep.console
                .extend_from_slice(&bytes[..bytes.len().min(room)]);
        });
    }
}
