//! A fake host for the integration tests: it records every call and answers with a closure.
#![allow(dead_code)]

use std::cell::RefCell;

use pvabi_guest::abi::Call;
use pvabi_guest::transport::{RawResult, Transport};
use pvabi_guest::Pvabi;

type Responder = Box<dyn FnMut(u32, [u64; 6]) -> RawResult>;

/// A transport that records `(code, args)` and answers with `respond`.
pub struct Mock {
    log: RefCell<Vec<(u32, [u64; 6])>>,
    respond: RefCell<Responder>,
}

impl Mock {
    /// Answers every call with `f`.
    pub fn with(f: impl FnMut(u32, [u64; 6]) -> RawResult + 'static) -> Self {
        Mock {
            log: RefCell::new(Vec::new()),
            respond: RefCell::new(Box::new(f)),
        }
    }

    /// Answers every call with SUCCESS and `results`.
    pub fn ok(results: [u64; 4]) -> Self {
        Mock::with(move |_, _| RawResult::ok(results))
    }

    /// Answers every call with SUCCESS and results a conforming host could give.
    pub fn plausible() -> Self {
        Mock::with(|code, a| {
            let r = match Call::from_code(code.into()) {
                Some(Call::GetSpecVersion) => [0x1_0000, 0x1_0000, 0, 0],
                Some(Call::ProbeCall) => [2, 0, 0, 0],
                Some(Call::Negotiate) => [0x1_0000, a[1] | a[2], 0, 0],
                Some(Call::ConsoleWriteRegs) => [a[0], 0, 0, 0],
                Some(Call::ConsoleWrite) => [a[1], 0, 0, 0],
                Some(Call::MemBalloonRelease | Call::MemBalloonReclaim) => [a[1], 0, 0, 0],
                Some(Call::VcpuHalt) => [1, 0, 0, 0],
                Some(Call::VcpuInfo) => [0, 2, 0, 0],
                Some(Call::Multicall) => [a[1], a[1] - a[2], 0, 0],
                Some(Call::MulticallPages) => [a[2], a[2] - a[3], 0, 0],
                _ => [0; 4],
            };
            RawResult::ok(r)
        })
    }

    /// Every call so far.
    pub fn calls(&self) -> Vec<(u32, [u64; 6])> {
        self.log.borrow().clone()
    }

    /// The last call, decoded.
    pub fn last(&self) -> (Call, [u64; 6]) {
        let (code, args) = *self.log.borrow().last().expect("no call made");
        (Call::from_code(code.into()).expect("unknown code"), args)
    }

    /// Forgets the calls so far.
    pub fn clear(&self) {
        self.log.borrow_mut().clear();
    }
}

impl Transport for Mock {
    unsafe fn call(&self, code: u32, args: [u64; 6]) -> RawResult {
        self.log.borrow_mut().push((code, args));
        (self.respond.borrow_mut())(code, args)
    }
}

/// A client over a mock.
pub fn client(mock: Mock) -> Pvabi<Mock> {
    Pvabi::new(mock)
}
