//! One module per `pvabi` subcommand.

pub mod abi;
pub mod header;
pub mod spec;
