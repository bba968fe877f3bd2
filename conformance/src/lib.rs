//! `pvabi-conformance`: the model of the pvabi conformance suite.
//!
//! A conformance test is a guest image that checks rules of the specification and reports each
//! check, and its own end, over the **verdict channel** ([`channel`]): lines on the pvabi
//! console plus the code it shuts down with. Because the channel is made of pvabi calls the
//! spec defines (CONSOLE_WRITE, SYSTEM_SHUTDOWN) and nothing of the reference host, the same
//! images run under any host; the runner needs only the console bytes and how the VM ended.
//!
//! * [`verdict`]: PASS, SKIP, ERROR, FAIL, CRASH and their order (the most severe wins).
//! * [`channel`]: the line protocol, and [`channel::parse`], which turns a run's console and
//!   end into a [`TestResult`]: a run that ends without its verdict is never a PASS.
//! * [`report`]: results traced to requirement IDs, with the `"requirements"` and `"tests"`
//!   lists of the JSON report, and TAP and JUnit renderings.
//! * [`profile`]: what an implementation claims (versions, features, limits) and its known
//!   failures, held against what the suite saw.
//! * [`traceability`]: the committed data behind the spec's traceability table (what the
//!   reference host's run checked, and the rules without a test with their reasons).
//!
//! ```
//! use pvabi_conformance::channel::{parse, RunEnd};
//! use pvabi_conformance::Verdict;
//!
//! let console = "pvabi-conform: BEGIN base\n\
//!                pvabi-conform: PASS base.spec_version PVABI-BASE-001\n\
//!                pvabi-conform: END base PASS\n";
//! let result = parse("base", console.as_bytes(), RunEnd::Shutdown(0));
//! assert_eq!(result.verdict, Verdict::Pass);
//! assert_eq!(result.checks[0].requirements, ["PVABI-BASE-001"]);
//!
//! // The same output from a VM that faulted before its END line is a crash.
//! let cut = "pvabi-conform: BEGIN base\npvabi-conform: PASS base.x PVABI-BASE-001\n";
//! assert_eq!(parse("base", cut.as_bytes(), RunEnd::Fault("triple fault".into())).verdict,
//!            Verdict::Crash);
//! ```

pub mod channel;
pub mod profile;
pub mod report;
pub mod traceability;
pub mod verdict;

pub use channel::{Check, TestResult};
pub use verdict::Verdict;
