//! The `derm` command line: one module per subcommand, each with its own clap `Args`.

mod generate;
mod latency;
mod migrate;
mod placement;
mod predict;
mod profile;
mod simulate;
mod solve;
mod tradeoff;
mod train;

use std::io::IsTerminal as _;
use std::path::Path;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Parser, Subcommand};

/// Derm: SLA-aware resource management for dynamic microservices (offline tools).
#[derive(Debug, Parser)]
#[command(name = "derm", version, about)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Log filter (tracing EnvFilter syntax).
    #[arg(long, env = "DERM_LOG", default_value = "warn", global = true)]
    log: String,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Traces -> profiles.json, graphs.json, windows.json.
    Profile(profile::Args),
    /// P(E2E latency <= SLA) per graph for given per-container loads.
    Latency(latency::Args),
    /// Fewest containers meeting the SLA: profiles + graph mix + load -> plan.json.
    Solve(solve::Args),
    /// Simulate an application under scaling policies: results table, JSON and plots.
    Simulate(simulate::Args),
    /// Containers against window violations as each policy's safety knob turns (trade-off curves).
    Tradeoff(tradeoff::Args),
    /// Write synthetic traces with known parameters (tests, benchmarks, demos).
    Generate(generate::Args),
    /// Train the attention LSTM graph-mix predictor on windows.json (feature `lstm`).
    Train(train::Args),
    /// Next window's graph mix from a model, or `--evaluate`: predictors compared on a time split.
    Predict(predict::Args),
    /// Turn HPAs on a DermApp's workloads into HPAs on Derm's count (diff; --apply to write).
    Migrate(migrate::Args),
    /// Kube-like spreading vs Derm's extender placement, simulated with a per-hop network cost.
    Placement(placement::Args),
}

/// Entry point of the `derm` binary.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(&cli.log))
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    let result = match cli.command {
        Command::Profile(args) => profile::run(args),
        Command::Latency(args) => latency::run(args),
        Command::Generate(args) => generate::run(args),
        Command::Solve(args) => solve::run(args),
        Command::Simulate(args) => simulate::run(args),
        Command::Tradeoff(args) => tradeoff::run(args),
        Command::Train(args) => train::run(args),
        Command::Predict(args) => predict::run(args),
        Command::Migrate(args) => migrate::run(args),
        Command::Placement(args) => placement::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// The model files `derm profile` writes, as inputs of `derm latency` and `derm solve`.
#[derive(Debug, clap::Args)]
pub(crate) struct ModelFiles {
    /// profiles.json from `derm profile`.
    #[arg(long)]
    profiles: std::path::PathBuf,
    /// graphs.json from `derm profile` (the graph mix: shares and call trees).
    #[arg(long)]
    graphs: std::path::PathBuf,
}

impl ModelFiles {
    pub(crate) fn load(&self) -> anyhow::Result<(crate::profile::Profiles, crate::graph::catalog::Graphs)> {
        Ok((read_json(&self.profiles)?, read_json(&self.graphs)?))
    }
}

/// Read and parse a JSON file, naming it in errors.
pub(crate) fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> anyhow::Result<T> {
    let file = std::fs::File::open(path).with_context(|| format!("{}: cannot open", path.display()))?;
    serde_json::from_reader(std::io::BufReader::new(file)).with_context(|| format!("{}: invalid JSON", path.display()))
}

/// Write a JSON file atomically (temporary file, then rename).
pub(crate) fn write_json<T: serde::Serialize>(path: &Path, value: &T) -> anyhow::Result<()> {
    let tmp = path.with_extension("json.tmp");
    let file = std::fs::File::create(&tmp).with_context(|| format!("{}: cannot create", tmp.display()))?;
    let mut w = std::io::BufWriter::new(file);
    serde_json::to_writer_pretty(&mut w, value)?;
    std::io::Write::flush(&mut w)?;
    drop(w);
    std::fs::rename(&tmp, path).with_context(|| format!("{}: cannot write", path.display()))
}
