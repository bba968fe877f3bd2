//! `pvabi run`.

use std::process::ExitCode;

/// Arguments of `pvabi run`.
#[derive(Debug, clap::Args)]
pub struct Args {}

/// Runs `pvabi run`.
pub fn run(_args: Args) -> anyhow::Result<ExitCode> {
    anyhow::bail!("`pvabi run` is not implemented yet")
}
