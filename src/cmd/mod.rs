//! One module per `pvabi` subcommand.

pub mod abi;
pub mod bench;
pub mod conform;
pub mod header;
pub mod run;
pub mod spec;
