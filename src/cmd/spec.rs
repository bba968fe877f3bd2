//! `pvabi spec`.

use std::process::ExitCode;

/// Arguments of `pvabi spec`.
#[derive(Debug, clap::Args)]
pub struct Args {}

/// Runs `pvabi spec`.
pub fn run(_args: Args) -> anyhow::Result<ExitCode> {
    anyhow::bail!("not yet implemented")
}
