//! Fuzz target `deferred`: inputs of class `Class::Deferred` through every oracle (see fuzz-support).
#![no_main]

use libfuzzer_sys::fuzz_target;
use pvabi_fuzz_support::{run, Class};

fuzz_target!(|data: &[u8]| {
    if let Err(v) = run(Class::Deferred, data) {
        panic!("oracle violation: {v}");
    }
});
