//! `pvabi header`.

use std::process::ExitCode;

/// Arguments of `pvabi header`.
#[derive(Debug, clap::Args)]
pub struct Args {}

/// Runs `pvabi header`.
pub fn run(_args: Args) -> anyhow::Result<ExitCode> {
    anyhow::bail!("not yet implemented")
}
