//! `cocoon-fuzz`: runs the fuzz targets long and reports executions and findings.

#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use clap::Parser;
use cocoon_fuzz::{fuzz, targets};

/// Mutation-fuzz every decoder that reads a peer's bytes; exit 1 if any input panicked.
#[derive(Parser)]
struct Args {
    /// Mutated inputs per target.
    #[arg(long, default_value_t = 1_000_000)]
    cases: u64,
    /// Random seed of the mutations (the same seed replays the same inputs).
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Run only these targets (default: all).
    #[arg(long = "target", value_name = "NAME")]
    targets: Vec<String>,
    /// Write each panicking input to this directory.
    #[arg(long, value_name = "DIR")]
    findings: Option<PathBuf>,
}

fn main() -> anyhow::Result<ExitCode> {
    let args = Args::parse();
    let chosen: Vec<_> = if args.targets.is_empty() {
        targets::ALL.iter().collect()
    } else {
        args.targets
            .iter()
            .map(|name| {
                targets::by_name(name).ok_or_else(|| {
                    let names: Vec<_> = targets::ALL.iter().map(|t| t.name).collect();
                    anyhow::anyhow!("no target `{name}`; targets: {}", names.join(", "))
                })
            })
            .collect::<anyhow::Result<_>>()?
    };
    let mut failed = false;
    for target in chosen {
        let started = Instant::now();
        let report = fuzz(target, args.cases, args.seed);
        println!(
            "{:<16} {:>10} executions {:>8.1} s {:>6} panics",
            report.target,
            report.executions,
            started.elapsed().as_secs_f64(),
            report.panics
        );
        for (i, finding) in report.findings.iter().enumerate() {
            failed = true;
            println!("  panic: {}", finding.message);
            if let Some(dir) = &args.findings {
                std::fs::create_dir_all(dir)?;
                std::fs::write(dir.join(format!("{}-{i}", report.target)), &finding.input)?;
            }
        }
    }
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}
