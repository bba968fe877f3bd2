//! `pvabi`: the command-line front door of the pvabi project.
//!
//! Each subcommand lives in its own module under `cmd/`.

use clap::{Parser, Subcommand};

mod bench;
mod cmd;
mod conform;

/// pvabi: an open, versioned paravirtual hypercall interface for x86-64 guests.
#[derive(Debug, Parser)]
#[command(name = "pvabi", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Write the C header generated from the ABI crate.
    Header(cmd::header::Args),
    /// Render the specification to HTML.
    Spec(cmd::spec::Args),
    /// Check or snapshot the ABI against released versions.
    Abi(cmd::abi::Args),
    /// Boot a guest (default: the built-in demo guest) under the reference host on KVM.
    Run(cmd::run::Args),
    /// Measure the cost of pvabi calls against bare exits on this machine's KVM.
    Bench(cmd::bench::Args),
    /// Run the conformance suite against the reference host on KVM.
    Conform(cmd::conform::Args),
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Header(args) => cmd::header::run(args),
        Command::Spec(args) => cmd::spec::run(args),
        Command::Abi(args) => cmd::abi::run(args),
        Command::Run(args) => cmd::run::run(args),
        Command::Bench(args) => cmd::bench::run(args),
        Command::Conform(args) => cmd::conform::run(args),
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("pvabi: error: {err:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
