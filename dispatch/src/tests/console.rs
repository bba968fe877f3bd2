//! Console family.

use std::sync::{Arc, Mutex};

use pvabi_abi::calls::Call;
use pvabi_abi::features::Features;
use pvabi_abi::status::Status;

use super::{config, BUF, H};
use crate::{ConsoleSink, HostConfig};

fn pack(bytes: &[u8]) -> [u64; 4] {
    let mut padded = [0u8; 32];
    padded[..bytes.len()].copy_from_slice(bytes);
    let mut regs = [0u64; 4];
    for (r, c) in regs.iter_mut().zip(padded.chunks_exact(8)) {
        *r = u64::from_le_bytes(c.try_into().unwrap());
    }
    regs
}

#[test]
fn write_regs_happy_path_and_length_limits() {
    let h = H::ready(1);
    let r = pack(b"hello, world!");
    let (s, written) = h.call(0, Call::ConsoleWriteRegs, &[13, r[0], r[1], r[2], r[3]]);
    assert_eq!((s, written[0]), (Status::Success, 13));
    // Bytes past the length are not written.
    let r = pack(b"abcdefgh");
    assert_eq!(h.call(0, Call::ConsoleWriteRegs, &[3, r[0]]).1[0], 3);
    assert_eq!(h.call(0, Call::ConsoleWriteRegs, &[0]).1[0], 0);
    let full = pack(&[b'x'; 32]);
    assert_eq!(
        h.call(
            0,
            Call::ConsoleWriteRegs,
            &[32, full[0], full[1], full[2], full[3]]
        )
        .1[0],
        32
    );
    assert_eq!(
        h.status(0, Call::ConsoleWriteRegs, &[33]),
        Status::InvalidParameter
    );
    assert_eq!(
        h.status(0, Call::ConsoleWriteRegs, &[u64::MAX]),
        Status::InvalidParameter
    );
    let rep = h.d.report();
    assert_eq!(
        rep.console_text(),
        format!("hello, world!abc{}", "x".repeat(32))
    );
    assert_eq!(rep.console_bytes, 48);
}

#[test]
fn write_buffer_happy_path_and_errors() {
    let h = H::ready(1);
    h.write(BUF + 100, b"from memory");
    let (s, written) = h.call(0, Call::ConsoleWrite, &[BUF + 100, 11]);
    assert_eq!((s, written[0]), (Status::Success, 11));
    // A whole page.
    h.write(BUF, &[b'p'; 4096]);
    assert_eq!(h.call(0, Call::ConsoleWrite, &[BUF, 4096]).1[0], 4096);
    assert_eq!(
        h.status(0, Call::ConsoleWrite, &[BUF, 4097]),
        Status::InvalidParameter
    );
    assert_eq!(
        h.status(0, Call::ConsoleWrite, &[BUF + 1, 4096]),
        Status::CrossesPage
    );
    assert_eq!(h.call(0, Call::ConsoleWrite, &[0, 0]).1[0], 0);
    let rep = h.d.report();
    assert_eq!(rep.console_bytes, 11 + 4096);
    assert!(rep.console_text().starts_with("from memoryppp"));
    assert_eq!(rep.count(Call::ConsoleWrite, Status::Success), 3);
    assert_eq!(rep.count(Call::ConsoleWrite, Status::CrossesPage), 1);
}

#[test]
fn custom_sink_gets_bytes_and_vcpu() {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let sink = seen.clone();
    let h = H::ready_with(HostConfig {
        console: ConsoleSink::Custom(Arc::new(move |vcpu, bytes: &[u8]| {
            sink.lock().unwrap().push((vcpu, bytes.to_vec()));
        })),
        ..config(2)
    });
    let r = pack(b"hi");
    h.call(1, Call::ConsoleWriteRegs, &[2, r[0]]);
    assert_eq!(*seen.lock().unwrap(), [(1, b"hi".to_vec())]);
}

#[test]
fn console_needs_its_feature() {
    let h = H::new(1);
    h.negotiate(Features::TIME);
    assert_eq!(
        h.status(0, Call::ConsoleWriteRegs, &[1]),
        Status::NotGranted
    );
    assert_eq!(
        h.status(0, Call::ConsoleWrite, &[BUF, 1]),
        Status::NotGranted
    );
}

/// PVABI-CON-004: a sink that is not a terminal (here, the embedding program) gets every
/// byte as the guest wrote it, control bytes included.
#[test]
fn a_non_terminal_sink_gets_control_bytes_unaltered() {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let sink = seen.clone();
    let h = H::ready_with(HostConfig {
        console: ConsoleSink::Custom(Arc::new(move |_, bytes: &[u8]| {
            sink.lock().unwrap().extend_from_slice(bytes);
        })),
        ..config(1)
    });
    let all: Vec<u8> = (0..=255).collect();
    h.write(BUF, &all[..]);
    assert_eq!(
        h.status(0, Call::ConsoleWrite, &[BUF, 256]),
        Status::Success
    );
    assert_eq!(*seen.lock().unwrap(), all);
}

/// PVABI-CON-007: what a terminal sink gets: control bytes escaped, tab, LF, CR and every
/// other byte as they are.
#[test]
fn control_bytes_are_escaped_for_a_terminal() {
    use crate::console::escape_controls;
    assert_eq!(
        &*escape_controls(b"a\x1b[2Jb\tc\r\n\x00\x7f\xc3\xa9"),
        b"a\\x1b[2Jb\tc\r\n\\x00\\x7f\xc3\xa9"
    );
    assert!(matches!(
        escape_controls(b"plain text\n"),
        std::borrow::Cow::Borrowed(_)
    ));
}

/// PVABI-CON-006: the host emits the bytes of its one copy of the buffer. A guest store to the
/// buffer while the host emits (made here from the sink, at every piece it is handed) reaches
/// neither the sink nor the report, however the host splits its output: a host that emitted
/// line by line from guest memory, or read the buffer again to emit it, would hand on the
/// `X`s. (A second read between the copy and the emission, with no store in between, cannot
/// be told from one read by any test.)
#[test]
fn the_output_is_the_one_copy_even_if_the_buffer_changes_while_it_is_emitted() {
    use crate::machine::Machine as _;
    use crate::FakeMachine;
    use std::sync::OnceLock;
    use vm_memory::{Bytes, GuestAddress};

    let machine: Arc<OnceLock<Arc<FakeMachine>>> = Arc::default();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let (m, sink) = (machine.clone(), seen.clone());
    let h = H::ready_with(HostConfig {
        console: ConsoleSink::Custom(Arc::new(move |_, bytes: &[u8]| {
            sink.lock().unwrap().extend_from_slice(bytes);
            if let Some(m) = m.get() {
                m.memory()
                    .write_slice(&[b'X'; 64], GuestAddress(BUF))
                    .unwrap();
            }
        })),
        ..config(1)
    });
    machine.set(h.m.clone()).ok().unwrap();
    let text = b"first line\nsecond line\nthird line\n";
    h.write(BUF, &text[..]);
    assert_eq!(
        h.status(0, Call::ConsoleWrite, &[BUF, text.len() as u64]),
        Status::Success
    );
    assert_eq!(
        h.read_bytes(BUF, 8),
        b"XXXXXXXX",
        "the sink changed the buffer"
    );
    assert_eq!(
        String::from_utf8_lossy(&seen.lock().unwrap()),
        String::from_utf8_lossy(text)
    );
    assert_eq!(h.d.report().console_text(), String::from_utf8_lossy(text));
}
