//! `pvabi bench`.

use std::process::ExitCode;

/// Arguments of `pvabi bench`.
#[derive(Debug, clap::Args)]
pub struct Args {}

/// Runs `pvabi bench`.
pub fn run(_args: Args) -> anyhow::Result<ExitCode> {
    anyhow::bail!("`pvabi bench` is not implemented yet")
}
