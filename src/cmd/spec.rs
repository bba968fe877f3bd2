//! `pvabi spec`: render the specification to HTML, or refresh its generated tables.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use pvabi_spec::Drift;

/// Arguments of `pvabi spec`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Directory to render the HTML into (default: `spec-html` in the workspace's target
    /// directory). Its previous contents are replaced.
    #[arg(short = 'o', long = "out", value_name = "DIR")]
    out: Option<PathBuf>,

    /// Write the generated tables into `spec/text/generated` (after an ABI or prose change)
    /// instead of rendering.
    #[arg(long, conflicts_with_all = ["check", "out"])]
    update: bool,

    /// Check that the checked-in generated tables are current, instead of rendering; exits
    /// with status 1 if they are not.
    #[arg(long, conflicts_with = "out")]
    check: bool,

    /// The spec directory holding `book.toml` and `text/` (default: this checkout's `spec/`).
    #[arg(long, value_name = "DIR")]
    source: Option<PathBuf>,
}

/// Runs `pvabi spec`.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let source = args.source.unwrap_or_else(pvabi_spec::spec_dir);
    let text = source.join("text");
    if args.update {
        if !text.join("SUMMARY.md").is_file() {
            anyhow::bail!(
                "no spec sources in {}: pass --source <pvabi>/spec",
                source.display()
            );
        }
        let written =
            pvabi_spec::write_generated(&text).context("updating the generated tables")?;
        println!(
            "wrote {} generated files to {}",
            written.len(),
            text.join(pvabi_spec::GENERATED_DIR).display()
        );
        return Ok(ExitCode::SUCCESS);
    }
    if args.check {
        let drift = pvabi_spec::check_generated(&text)?;
        if drift.is_empty() {
            println!("generated tables in {} are current", text.display());
            return Ok(ExitCode::SUCCESS);
        }
        for d in &drift {
            match d {
                Drift::Missing(p) => eprintln!("missing: spec/text/{p}"),
                Drift::Changed(p) => eprintln!("out of date: spec/text/{p}"),
                Drift::Stale(p) => eprintln!("no longer generated: spec/text/{p}"),
            }
        }
        eprintln!("run `cargo run -- spec --update` to update them");
        return Ok(ExitCode::FAILURE);
    }
    let out = args.out.unwrap_or_else(pvabi_spec::default_out_dir);
    let rendered = pvabi_spec::render::render(&source, &out)?;
    println!(
        "spec rendered to {} ({} chapters, {} internal links checked)",
        rendered.index.display(),
        rendered.chapters,
        rendered.links
    );
    Ok(ExitCode::SUCCESS)
}
