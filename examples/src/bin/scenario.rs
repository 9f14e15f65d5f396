//! `scenario`: the EHR → SFM → Reseptformidleren token-exchange scenario in one command.
//!
//! ```sh
//! cargo run -p segl-examples --bin scenario [-- --pid 06828399789] [--keep]
//! ```
//!
//! Segl runs in this process from the `segl-server` library (the code `segl serve` runs), on a
//! free loopback port with a temporary directory for its configuration, keys and SQLite
//! database; so do Reseptformidleren and SFM. The EHR is played twice: with
//! `client_credentials` (no person) and with a person login through the test IdP. Each time the
//! delegation chain of the token that reached Reseptformidleren is printed in words. Everything
//! is stopped and removed at the end (`--keep` leaves the directory). Exit status 1 on failure.
//! `SCENARIO_LOG=debug` shows the servers' logs on stderr.

use anyhow::{Context as _, Result};
use clap::Parser;
use segl_examples::scenario;
use std::time::Duration;

/// The EHR → SFM → Reseptformidleren token-exchange scenario.
#[derive(Debug, Parser)]
#[command(name = "scenario", version)]
struct Args {
    /// The national identity number that logs in at the test IdP in variant (b).
    #[arg(long, default_value = scenario::PERSON_PID)]
    pid: String,
    /// Keep the temporary directory (configuration, keys, database).
    #[arg(long)]
    keep: bool,
    /// Give up after this many seconds.
    #[arg(long, default_value_t = 120)]
    timeout: u64,
}

#[tokio::main]
async fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("SCENARIO_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("error")),
        )
        .init();
    let args = Args::parse();
    let (report, _) = tokio::time::timeout(
        Duration::from_secs(args.timeout),
        scenario::run(&args.pid, args.keep),
    )
    .await
    .with_context(|| format!("the scenario did not finish within {} s", args.timeout))??;
    print!("{report}");
    Ok(())
}
