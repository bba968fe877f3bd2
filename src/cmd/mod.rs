//! One module per `pvabi` subcommand.

pub mod header;
pub mod spec;
