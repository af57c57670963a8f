//! `derm profile`: traces -> profiles, graphs and windows.

use std::path::PathBuf;

use anyhow::Context as _;
use indicatif::{ProgressBar, ProgressStyle};

use crate::graph::window::{self, ArgSpec};
use crate::pipeline::{self, Ingest};
use crate::{profile as fit, trace};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Trace files (Jaeger JSON, OTLP JSON/JSON lines/protobuf, Alibaba CSV; `.gz` too).
    #[arg(long, required = true, num_args = 1..)]
    traces: Vec<PathBuf>,
    /// Input format (auto: detect from content).
    #[arg(long, default_value = "auto", value_parser = ["auto", "jaeger", "otlp", "alibaba"])]
    format: String,
    /// Window length in seconds.
    #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(u32).range(1..))]
    window_s: u32,
    /// Sampling probability of the traces (overrides sampler tags), in (0, 1].
    #[arg(long, value_parser = parse_probability)]
    sampling: Option<f64>,
    /// Root tag carrying a request argument: `NAME` or `NAME=e1,e2,...` (numeric buckets).
    #[arg(long = "arg-tag", value_parser = ArgSpec::parse)]
    arg_tags: Vec<ArgSpec>,
    /// Output directory for profiles.json, graphs.json and windows.json.
    #[arg(long)]
    out_dir: PathBuf,
}

fn parse_probability(s: &str) -> Result<f64, String> {
    let p: f64 = s.parse().map_err(|_| format!("`{s}` is not a number"))?;
    if p > 0.0 && p <= 1.0 { Ok(p) } else { Err(format!("{p} is outside (0, 1]")) }
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let format = match args.format.as_str() {
        "jaeger" => Some(trace::Format::Jaeger),
        "otlp" => Some(trace::Format::Otlp),
        "alibaba" => Some(trace::Format::Alibaba),
        _ => None,
    };
    let config =
        window::Config { window_s: args.window_s, sampling: args.sampling, args: args.arg_tags, ..Default::default() };
    let mut ingest = Ingest::new(config);
    let bar = ProgressBar::new_spinner();
    bar.set_style(
        ProgressStyle::with_template("{spinner} {msg} [{elapsed}]")
            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
    );
    for path in &args.traces {
        ingest.read_path(path, format, &mut |n| {
            if n % 1024 == 0 {
                bar.set_message(format!("{}: {n} traces", path.display()));
                bar.tick();
            }
        })?;
    }
    bar.finish_and_clear();
    let out = ingest.finish();
    std::fs::create_dir_all(&args.out_dir).with_context(|| format!("{}: cannot create", args.out_dir.display()))?;
    let (profiles, errors) = fit::fit_all(&out.windows.samples, &fit::Config::default());
    super::write_json(&args.out_dir.join("profiles.json"), &profiles)?;
    super::write_json(&args.out_dir.join("graphs.json"), &out.windows.graphs)?;
    super::write_json(
        &args.out_dir.join("windows.json"),
        &pipeline::WindowsFile { windows: out.windows.windows.clone() },
    )?;
    print!("{}", pipeline::summary(&out, &profiles, &errors));
    Ok(())
}
