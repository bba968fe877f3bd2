//! Raw pvabi calls for the test guests: a conformance check looks at the host's exact answer
//! (status and every result register), not at a typed wrapper's interpretation of it.

use pvabi_guest::transport::{RawResult, Transport};
use pvabi_guest::{Call, PortTransport};

/// `call` with `args` (at most six; missing ones are 0).
pub fn raw(t: &PortTransport, call: Call, args: &[u64]) -> RawResult {
    raw_code(t, call.code(), args)
}

/// A raw call code (defined or not) with `args`.
pub fn raw_code(t: &PortTransport, code: u32, args: &[u64]) -> RawResult {
    let mut a = [0u64; 6];
    a[..args.len()].copy_from_slice(args);
    // SAFETY: the test guests make only calls whose memory effects land in pages they give
    // the host for that purpose (their own statics), and unknown codes perform nothing.
    unsafe { t.call(code, a) }
}
