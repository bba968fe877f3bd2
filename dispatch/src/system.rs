//! System family: shutdown, reboot, crash report. None of them returns to the caller.

use pvabi_abi::calls::Call;
use pvabi_abi::status::Status;

use crate::faults::injected;
use crate::machine::Machine;
use crate::state::Inner;
use crate::{End, Outcome, Reply, Req};

pub(crate) fn handle<M: Machine>(h: &Inner<M>, r: &Req) -> Result<Reply, Status> {
    if !matches!(
        r.call,
        Call::SystemShutdown | Call::SystemReboot | Call::SystemCrash
    ) {
        return Err(Status::NotSupported);
    }
    // The call passed its checks (none of the three has a call-specific one): the host
    // begins to handle it, so no ring consumes from here on, and a pass in progress finishes
    // its completions before the VM ends (RING-023, RING-027).
    h.stop_rings();
    let end = match r.call {
        // `code`'s bits 63:32 are reserved and were checked to be 0 (check 5).
        Call::SystemShutdown if injected!(h, ShutdownCodeTruncated) => {
            End::Shutdown(r.args[0] as u32 & 0xff)
        }
        Call::SystemShutdown => End::Shutdown(r.args[0] as u32),
        Call::SystemReboot => End::Reboot,
        // The message is the one copy of the block (at most 4096 bytes, check 5).
        Call::SystemCrash => {
            if let Some(c) = &h.checker {
                c.crash_message(r.vcpu, r.block.bytes());
            }
            let message = r.block.bytes();
            let message = if injected!(h, CrashMessageCut) {
                &message[..message.len().min(8)]
            } else {
                message
            };
            End::Crash(String::from_utf8_lossy(message).into_owned())
        }
        _ => return Err(Status::NotSupported),
    };
    h.record_end(&end);
    Ok(Reply::then(Outcome::End(end)))
}
