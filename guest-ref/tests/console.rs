//! Console output: chunking and packing of the register form, the memory form's page
//! splitting, and the `core::fmt::Write` adapter.

mod common;

use core::fmt::Write;

use common::{client, Mock};
use pvabi_guest::abi::{Call, Status};
use pvabi_guest::console::regs_args;
use pvabi_guest::transport::RawResult;
use pvabi_guest::Error;

/// Rebuilds the bytes of one CONSOLE_WRITE_REGS call from its registers.
fn unpack(args: [u64; 6]) -> Vec<u8> {
    let len = args[0] as usize;
    assert!(len <= 32);
    let mut bytes: Vec<u8> = args[1..5].iter().flat_map(|r| r.to_le_bytes()).collect();
    assert!(
        bytes[len..].iter().all(|&b| b == 0),
        "padding after the message is zero"
    );
    bytes.truncate(len);
    bytes
}

#[test]
fn hundred_bytes_are_four_calls_packed_little_endian() {
    let text: Vec<u8> = (0..100u8).map(|i| b'A' + i % 26).collect();
    let pv = client(Mock::plausible());
    assert_eq!(pv.console_write_regs(&text), Ok(100));
    let calls = pv.transport().calls();
    assert_eq!(calls.len(), 4);
    let code = Call::ConsoleWriteRegs.code();
    assert!(calls.iter().all(|(c, _)| *c == code));
    let lens: Vec<u64> = calls.iter().map(|(_, a)| a[0]).collect();
    assert_eq!(lens, [32, 32, 32, 4]);
    // Explicit little-endian packing of the first register: bytes 0..8 = "ABCDEFGH".
    assert_eq!(calls[0].1[1], 0x4847_4645_4443_4241);
    assert_eq!(
        calls[3].1,
        [4, u64::from_le_bytes(*b"STUV\0\0\0\0"), 0, 0, 0, 0]
    );
    assert!(calls.iter().all(|(_, a)| a[5] == 0), "a5 unused");
    let rebuilt: Vec<u8> = calls.iter().flat_map(|(_, a)| unpack(*a)).collect();
    assert_eq!(rebuilt, text);
}

#[test]
fn empty_and_exact_sizes() {
    let pv = client(Mock::plausible());
    assert_eq!(pv.console_write_regs(b""), Ok(0));
    assert!(pv.transport().calls().is_empty(), "no call for nothing");
    assert_eq!(pv.console_write_regs(&[b'z'; 32]), Ok(32));
    assert_eq!(pv.transport().calls().len(), 1);
    assert_eq!(regs_args(&[0; 33]), None);
    assert_eq!(regs_args(b""), Some([0; 6]));
}

#[test]
fn short_write_stops() {
    let pv = client(Mock::ok([16, 0, 0, 0]));
    assert_eq!(pv.console_write_regs(&[b'x'; 80]), Ok(16));
    assert_eq!(pv.transport().calls().len(), 1);
    let pv = client(Mock::ok([33, 0, 0, 0]));
    assert_eq!(
        pv.console_write_regs(&[b'x'; 40]),
        Err(Error::UnexpectedResult(33))
    );
}

#[test]
fn errors_stop_output() {
    let pv = client(Mock::with(|_, _| RawResult::error(Status::NotGranted)));
    assert_eq!(
        pv.console_write_regs(&[b'x'; 80]),
        Err(Error::Status(Status::NotGranted))
    );
    assert_eq!(pv.transport().calls().len(), 1);
    let mut con = pv.console();
    assert!(write!(con, "hello").is_err());
    assert_eq!(con.error(), Some(Error::Status(Status::NotGranted)));
}

#[test]
fn fmt_adapter_writes_everything() {
    let pv = client(Mock::plausible());
    let mut con = pv.console();
    writeln!(con, "vcpu {} of {}: {:#x}", 1, 2, 0xdead_beefu32).unwrap();
    writeln!(con, "{}", "0123456789".repeat(5)).unwrap();
    assert_eq!(con.error(), None);
    let out: Vec<u8> = pv
        .transport()
        .calls()
        .iter()
        .flat_map(|(_, a)| unpack(*a))
        .collect();
    let expected = format!("vcpu 1 of 2: 0xdeadbeef\n{}\n", "0123456789".repeat(5));
    assert_eq!(String::from_utf8(out).unwrap(), expected);
}

#[repr(C, align(4096))]
struct TwoPages([u8; 8192]);

#[test]
fn memory_form_splits_at_page_boundaries() {
    let buf = Box::new(TwoPages([b'm'; 8192]));
    let slice = &buf.0[4000..4200];
    let pv = client(Mock::plausible());
    assert_eq!(pv.console_write_slice(slice), Ok(200));
    let base = pvabi_guest::gpa_of(&buf.0);
    let code = Call::ConsoleWrite.code();
    assert_eq!(
        pv.transport().calls(),
        [
            (code, [base + 4000, 96, 0, 0, 0, 0]),
            (code, [base + 4096, 104, 0, 0, 0, 0]),
        ]
    );
    assert_eq!(pv.console_write_slice(&[]), Ok(0));
    assert_eq!(pv.transport().calls().len(), 2);
}
