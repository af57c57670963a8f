//! derm-core: Derm's model of a microservice application, with no Kubernetes and no async.
//!
//! Module map (data flows top to bottom):
//! - [`trace`]: decoders (Jaeger JSON, OTLP JSON/protobuf, Alibaba v2021 CSV) into spans, and
//!   call trees per request ([`trace::Request`]).
//! - [`graph`]: canonical call-graph form and ids, the catalog, per-window load / graph mix /
//!   argument mix and latency samples ([`graph::Windows`]).
//! - [`profile`]: per-service shifted-exponential fits, `rate = a * w + b` by regression.
//! - [`latency`]: E2E latency distribution of a call graph, `P(Z <= SLA)` and its gradient.
//! - [`generate`]: synthetic traces with known parameters, for tests, benches and demos.
//! - [`predict`]: the next window's graph mix ([`predict::Predictor`]): baselines, ARIMA, the
//!   attention LSTM (feature `lstm`, libtorch) and their time-split evaluation.
//! - [`placement`]: call-affinity node scores (the extender's formula; the simulator's placement
//!   study uses it too).
//! - [`sim`]: discrete-event simulator that emits traces, scaling policies, `derm simulate`.
//! - [`audit`]: do the HPAs on a DermApp's metric land exactly on Derm's count (controller Events
//!   and condition).
//! - [`migrate`]: `derm migrate`'s rewrite of existing HPAs onto Derm's metric (JSON in, JSON
//!   out; the command's cluster I/O sits behind the `cluster` feature, outside the model).
//!
//! Units everywhere: milliseconds for latency, 1/ms for rates, requests/s for load.

pub mod audit;
pub mod cli;
pub mod generate;
pub mod graph;
pub mod latency;
pub mod migrate;
pub mod optimize;
pub mod pipeline;
pub mod placement;
pub mod predict;
pub mod profile;
pub mod sim;
pub mod trace;
