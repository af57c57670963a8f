//! A discrete-event simulator of microservice applications that emits traces, the scaling
//! policies Derm is compared with, and the evaluation behind `derm simulate`.
//!
//! Module map:
//! - [`pattern`]: time-varying request rates (constant, steps, diurnal, CSV replay).
//! - [`app`]: the ground truth of an application: services, graphs, request types and the
//!   function from (type, argument, load) to a request's graph.
//! - [`scenario`]: the built-in applications (`trainticket`, `socialnetwork`, `alibaba`).
//! - [`engine`]: the event loop: arrivals, FIFO containers with workers, calls in stages,
//!   container start-up and draining, sampled spans ([`crate::trace::Trace`]).
//! - [`policy`]: `derm`, `derm-oracle`, `derm-static`, `uniform`, `hpa-cpu`, `static-peak`.
//! - [`profiling`]: the load sweep that gives profile-based policies their first profiles.
//! - [`run`]: one policy on one scenario; [`eval`]: all policies, results and plots.
//! - [`placement`]: nodes, a per-hop network cost, kube-like spreading vs Derm's extender
//!   (`derm placement`).
//! - [`tradeoff`]: containers against violations as each policy's knob turns (`derm tradeoff`).
//! - [`windows`]: windows sampled from a scenario's ground truth (graph-mix predictor data).
//!
//! Times inside the engine are milliseconds on the scenario clock (0 = start of the measured
//! run); spans carry Unix microseconds from a fixed origin.

pub mod app;
pub mod engine;
pub mod eval;
pub mod pattern;
pub mod placement;
pub mod plot;
pub mod policy;
pub mod profiling;
pub mod run;
pub mod scenario;
pub mod tradeoff;
pub mod windows;

use std::path::PathBuf;

pub use engine::Engine;
pub use pattern::Pattern;
pub use scenario::Scenario;

/// Errors; each names the flag, field, scenario, policy or file at fault.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// `--scenario` names no built-in scenario.
    #[error("--scenario: unknown scenario `{name}` (expected one of: trainticket, socialnetwork, alibaba)")]
    UnknownScenario { name: String },
    /// `--policies` names an unknown policy.
    #[error(
        "--policies: unknown policy `{name}` (expected any of: derm, derm-oracle, derm-static, uniform, hpa-cpu, static-peak)"
    )]
    UnknownPolicy { name: String },
    /// A number or setting outside its domain.
    #[error("{field}: got {value}, expected {expected}")]
    Invalid { field: String, value: String, expected: &'static str },
    /// A rate CSV lacks a required column.
    #[error("{path}: missing column `{column}` (the header must name `time_s` and `rps`)", path = path.display())]
    MissingColumn { path: PathBuf, column: &'static str },
    /// A rate CSV row that cannot be used.
    #[error("{path}:{line}: {detail}", path = path.display())]
    Csv { path: PathBuf, line: u64, detail: String },
    /// A plot could not be drawn or written.
    #[error("{path}: cannot draw plot: {detail}", path = path.display())]
    Plot { path: PathBuf, detail: String },
    /// A file could not be read or written.
    #[error("{path}: {source}", path = path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}
