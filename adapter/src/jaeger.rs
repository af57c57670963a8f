//! Jaeger trace source: one poller per DermApp with `spec.traceSource.jaeger`, run by the
//! leader only, feeding the app's online loop ([`crate::controller::Apps::feed`]) as the OTLP
//! receiver does.
//!
//! Each poll asks for the traces of the app's entry service that started in
//! `[cursor - OVERLAP_S, now - lag)`, at most [`MAX_STEP_S`] past the cursor:
//! - api `v3` (Jaeger v2, or v1.4x's api_v3): `GET {url}/api/v3/traces?query.service_name=S&
//!   query.start_time_min=RFC3339&query.start_time_max=RFC3339&query.num_traces=N`, answered
//!   `{"result": {"resourceSpans": [...]}}` (or a stream of such objects, one per line), and 404
//!   `{"error": {"message": "No traces found"}}` for an empty range; decoded by
//!   [`derm_core::trace::otlp`].
//! - api `v1`: `GET {url}/api/traces?service=S&start=µs&end=µs&limit=N`, answered
//!   `{"data": [trace, ...]}`; decoded by [`derm_core::trace::jaeger`].
//!
//! Parameter names as Jaeger's query service reads them: `cmd/query/app/apiv3/http_gateway.go`
//! (`paramServiceName`, `paramTimeMin`, `paramTimeMax`, `paramNumTraces`, RFC 3339 with
//! nanoseconds) and `cmd/query/app/query_parser.go` (`service`, `start`, `end` in Unix
//! microseconds, `limit`) of jaegertracing/jaeger.
//!
//! Why the lag and the overlap: spans are stored when they finish, so a trace is queried
//! only once it is [`Source::lag_s`] old, and the previous few seconds are asked again in case the
//! storage wrote them late; traces already delivered are recognised by id and dropped, so none
//! is counted twice.
//!
//! Faults (Jaeger down, HTTP errors, bodies that do not decode) are counted in
//! `derm_adapter_trace_source_errors_total{app, reason}` and logged; the cursor does not move,
//! so the next successful poll fetches what was missed (up to [`MAX_LOOKBACK_S`] back; a
//! longer outage skips ahead to a window boundary). The loop ticks only windows the poller has
//! fetched completely and holds otherwise, so an outage never lowers a published count.
//!
//! Bounded memory: a poll asks for at most [`MAX_TRACES`] traces. Jaeger then returns an
//! arbitrary subset of a busier range, which would undercount the load; so a full answer is
//! dropped and the new part of the range halved until it fits (later requests keep the
//! smaller step until answers get sparse). A single second that still holds more is kept as
//! it came and counted (`reason="Saturated"`): trace fewer requests (head sampling in the
//! application or the collector) and set `samplingRatio` to match, which scales the load back
//! up as for OTLP.

mod client;
#[cfg(test)]
mod tests;

pub use client::{Client, REQUEST_TIMEOUT};

use std::collections::HashMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use derm_core::trace::{self, Skips, Trace};
use http::StatusCode;
use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::registry::Registry;

use crate::controller::Apps;
use crate::crd::{DermAppSpec, JaegerApi};

/// Seconds a trace must be old before it is fetched (at most half the interval).
pub const LAG_S: i64 = 15;
/// Seconds before the cursor asked again in every poll.
pub const OVERLAP_S: i64 = 5;
/// Most seconds one request covers (a poller that is behind catches up in steps).
pub const MAX_STEP_S: i64 = 60;
/// How far back a poller catches up after an outage (at least two intervals).
pub const MAX_LOOKBACK_S: i64 = 900;
/// Most traces asked for in one request.
pub const MAX_TRACES: usize = 2_000;
/// Requests one poller makes per period at most while catching up.
const CATCH_UP: usize = 16;
const US: i64 = 1_000_000;

/// Why a poll failed; a metric label.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq, EncodeLabelValue)]
pub enum Reason {
    /// Connection refused, DNS, TLS.
    Unreachable,
    /// No complete answer within the timeout.
    Timeout,
    /// An HTTP error status.
    Status,
    /// The body could not be read (cut, too large).
    Body,
    /// The body is not the API's JSON.
    Decode,
    /// A one-second range held more than [`MAX_TRACES`] traces.
    Saturated,
    /// An outage longer than the lookback: a range was skipped.
    Skipped,
}

/// A poll's failure; nothing of the range was delivered.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No connection, or the request failed on it.
    #[error("cannot reach {url}: {message}")]
    Unreachable { url: String, message: String },
    /// The exchange took longer than the client's timeout.
    #[error("{url}: no answer within {timeout:?}")]
    Timeout { url: String, timeout: Duration },
    /// Jaeger answered an error status.
    #[error("{url} answered {status}: {body}")]
    Status { url: String, status: StatusCode, body: String },
    /// The body could not be read.
    #[error("reading the answer of {url}: {message}")]
    Body { url: String, message: String },
    /// The body is not Jaeger's JSON.
    #[error("decoding the answer of {url}: {message}")]
    Decode { url: String, message: String },
}

impl Error {
    /// The metric label.
    pub fn reason(&self) -> Reason {
        match self {
            Error::Unreachable { .. } => Reason::Unreachable,
            Error::Timeout { .. } => Reason::Timeout,
            Error::Status { .. } => Reason::Status,
            Error::Body { .. } => Reason::Body,
            Error::Decode { .. } => Reason::Decode,
        }
    }
}

/// Labels of trace-source errors. `app` is `namespace/name`: one series per Jaeger-sourced
/// DermApp and reason, a handful per cluster.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    pub app: String,
    pub reason: Reason,
}

/// Labels of delivered traces.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AppLabels {
    pub app: String,
}

/// The pollers' metrics on the admin registry.
#[derive(Debug, Clone, Default)]
pub struct Metrics {
    /// `derm_adapter_trace_source_errors_total` and `derm_adapter_trace_source_traces_total`.
    pub polls: crate::tasks::Counters,
    /// Decoded traces and rejected records (source `jaeger`).
    pub decoded: crate::telemetry::LoopMetrics,
}

impl Metrics {
    /// Registers `derm_adapter_trace_source_errors_total` and
    /// `derm_adapter_trace_source_traces_total`.
    pub fn register(registry: &mut Registry, decoded: crate::telemetry::LoopMetrics) -> Self {
        let help = ["Failed trace-source polls by app and reason", "Traces fetched from the trace source, by app"];
        Self { polls: crate::tasks::Counters::register(registry, "trace_source", "traces", help), decoded }
    }

    fn error(&self, app: &str, reason: Reason) {
        self.polls.error(app, reason);
    }
}

/// What a poller asks for, from a DermApp's spec; a change restarts the poller.
#[derive(Debug, Clone, PartialEq)]
pub struct Source {
    /// Base URL without a trailing `/`.
    pub url: String,
    pub api: JaegerApi,
    pub service: String,
    pub arg_tags: Vec<String>,
    pub interval_s: u32,
}

impl Source {
    /// The Jaeger source of `spec`, if it has one.
    pub fn of(spec: &DermAppSpec) -> Option<Self> {
        let j = spec.trace_source.jaeger.as_ref()?;
        Some(Source {
            url: j.url.trim_end_matches('/').to_owned(),
            api: j.api,
            service: spec.entry_service.clone(),
            arg_tags: spec.argument_tags.iter().map(|t| t.name.clone()).collect(),
            interval_s: spec.interval_seconds.max(1),
        })
    }

    /// Seconds a trace waits before it is fetched: [`LAG_S`], at most half the interval so
    /// that a window is fetched before the tick that ingests it.
    pub fn lag_s(&self) -> i64 {
        LAG_S.min(i64::from(self.interval_s) / 2)
    }

    /// Seconds between polls: a quarter of the interval, 1 to 10.
    pub fn period(&self) -> Duration {
        Duration::from_secs(u64::from(self.interval_s / 4).clamp(1, 10))
    }

    /// The query for traces that started in `[start_us, end_us)`.
    fn uri(&self, start_us: i64, end_us: i64, limit: usize) -> String {
        let mut q = form_urlencoded::Serializer::new(String::new());
        match self.api {
            JaegerApi::V3 => {
                q.append_pair("query.service_name", &self.service)
                    .append_pair("query.start_time_min", &rfc3339(start_us))
                    .append_pair("query.start_time_max", &rfc3339(end_us - 1))
                    .append_pair("query.num_traces", &limit.to_string());
                format!("{}/api/v3/traces?{}", self.url, q.finish())
            }
            JaegerApi::V1 => {
                q.append_pair("service", &self.service)
                    .append_pair("start", &start_us.to_string())
                    .append_pair("end", &(end_us - 1).to_string())
                    .append_pair("limit", &limit.to_string());
                format!("{}/api/traces?{}", self.url, q.finish())
            }
        }
    }
}

/// Microseconds since the epoch as RFC 3339 (UTC, microsecond precision).
fn rfc3339(us: i64) -> String {
    use k8s_openapi::jiff::Timestamp;
    // Out of jiff's range (years beyond ±9999): clamped; the poller never asks for such times.
    let t = Timestamp::from_microsecond(us).unwrap_or(if us < 0 { Timestamp::MIN } else { Timestamp::MAX });
    format!("{t:.6}")
}

/// One successful poll.
#[derive(Debug, Default)]
pub struct Poll {
    /// Traces not delivered before.
    pub traces: Vec<Trace>,
    /// The cursor reached `now - lag` (else poll again soon).
    pub caught_up: bool,
}

/// The poll state of one app: traces that started before `cursor_us` have been fetched.
#[derive(Debug)]
pub struct Poller {
    app: String,
    source: Source,
    client: Client,
    metrics: Metrics,
    cursor_us: i64,
    /// Ids of traces delivered that start in the overlap or later, with their start.
    seen: HashMap<String, i64>,
    max_traces: usize,
    /// Microseconds past the cursor one request covers: halved when an answer is full,
    /// doubled (up to [`MAX_STEP_S`]) when it is under a quarter full.
    step_us: i64,
}

impl Poller {
    /// A poller starting at the beginning of the window before the one `now_us` is in, so
    /// the first ingested window is complete.
    pub fn new(app: String, source: Source, client: Client, metrics: Metrics, now_us: i64) -> Self {
        let interval = i64::from(source.interval_s) * US;
        let cursor_us = (now_us.div_euclid(interval) - 1) * interval;
        Poller {
            app,
            source,
            client,
            metrics,
            cursor_us,
            seen: HashMap::new(),
            max_traces: MAX_TRACES,
            step_us: MAX_STEP_S * US,
        }
    }

    /// Asks for at most `n` traces per request (tests).
    pub fn with_max_traces(mut self, n: usize) -> Self {
        self.max_traces = n.max(1);
        self
    }

    /// Traces that started before this have been fetched.
    pub fn cursor_us(&self) -> i64 {
        self.cursor_us
    }

    /// Fetches the next range up to `now_us - lag`. On error the cursor stays.
    pub async fn poll(&mut self, now_us: i64) -> Result<Poll, Error> {
        let target = now_us - self.source.lag_s() * US;
        let interval = i64::from(self.source.interval_s) * US;
        let lookback = (MAX_LOOKBACK_S * US).max(2 * interval);
        if target - self.cursor_us > lookback {
            // Skip to a window boundary, so the windows after the gap are whole.
            let skip_to = (target - lookback).div_euclid(interval) * interval + interval;
            let skipped_s = (skip_to - self.cursor_us) / US;
            tracing::warn!(app = %self.app, skipped_s, "trace source was out longer than the lookback; skipping ahead");
            self.metrics.error(&self.app, Reason::Skipped);
            self.cursor_us = skip_to;
        }
        if target <= self.cursor_us {
            return Ok(Poll { traces: Vec::new(), caught_up: true });
        }
        let start = self.cursor_us - OVERLAP_S * US;
        let traces = loop {
            let end = target.min(self.cursor_us + self.step_us);
            let traces = self.fetch(start, end).await?;
            if traces.len() < self.max_traces {
                if traces.len() < self.max_traces / 4 {
                    self.step_us = (2 * self.step_us).min(MAX_STEP_S * US);
                }
                break (traces, end);
            }
            if self.step_us > US {
                // A full answer is a subset: ask for less.
                self.step_us = (self.step_us / 2).max(US);
                continue;
            }
            tracing::warn!(
                app = %self.app,
                traces = traces.len(),
                "one second holds more traces than a poll takes: the load is undercounted \
                 (sample fewer traces and lower samplingRatio to match)"
            );
            self.metrics.error(&self.app, Reason::Saturated);
            break (traces, end);
        };
        let (traces, end) = traces;
        let fresh: Vec<Trace> =
            traces.into_iter().filter(|t| self.seen.insert(t.id.clone(), start_of(t)).is_none()).collect();
        self.cursor_us = end;
        let keep_from = self.cursor_us - 2 * OVERLAP_S * US;
        self.seen.retain(|_, s| *s >= keep_from);
        self.metrics.polls.delivered(&self.app, fresh.len() as u64);
        Ok(Poll { traces: fresh, caught_up: end >= target })
    }

    /// One request for traces that started in `[start_us, end_us)`, decoded off the runtime.
    async fn fetch(&self, start_us: i64, end_us: i64) -> Result<Vec<Trace>, Error> {
        let uri = self.source.uri(start_us, end_us, self.max_traces);
        let v3 = self.source.api == JaegerApi::V3;
        let url = format!("{}{}", self.source.url, if v3 { "/api/v3/traces" } else { "/api/traces" });
        let (status, body) = self.client.get(&uri).await?;
        if v3 && status == StatusCode::NOT_FOUND && contains(&body, b"No traces found") {
            return Ok(Vec::new());
        }
        if !status.is_success() {
            let text = String::from_utf8_lossy(&body[..body.len().min(256)]).trim().to_owned();
            return Err(Error::Status { url, status, body: text });
        }
        let config = trace::Config { arg_tags: self.source.arg_tags.clone(), ..trace::Config::default() };
        let decoded = tokio::task::spawn_blocking(move || decode(&body, v3, &config)).await;
        let (traces, skips) = match decoded {
            Ok(Ok(d)) => d,
            Ok(Err(message)) => return Err(Error::Decode { url, message }),
            Err(e) => return Err(Error::Decode { url, message: e.to_string() }),
        };
        self.metrics.decoded.decoded("jaeger", traces.len(), &skips);
        if skips.total() > 0 {
            tracing::debug!(app = %self.app, skipped = skips.total(), "malformed records in a Jaeger answer");
        }
        Ok(traces)
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// Decodes one answer: OTLP JSON (v3) or Jaeger v1 JSON.
fn decode(body: &Bytes, v3: bool, config: &trace::Config) -> Result<(Vec<Trace>, Skips), String> {
    let mut traces = Vec::new();
    let mut skips = Skips::default();
    let result = if v3 {
        // A stream may end with an error object instead of a result: the range is incomplete.
        if let Some(line) = body.split(|b| *b == b'\n').find(|l| l.trim_ascii_start().starts_with(b"{\"error\"")) {
            return Err(format!("Jaeger reported an error: {}", String::from_utf8_lossy(&line[..line.len().min(256)])));
        }
        trace::otlp::read(&body[..], "Jaeger api_v3 answer", config, &mut skips, &mut |t| traces.push(t))
    } else {
        trace::jaeger::decode(body, "Jaeger /api/traces answer", config, &mut skips, &mut |t| traces.push(t))
    };
    result.map_err(|e| e.to_string())?;
    Ok((traces, skips))
}

fn start_of(t: &Trace) -> i64 {
    t.spans.iter().map(|s| s.start_us).min().unwrap_or(i64::MIN)
}

fn unix_now_us() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_micros() as i64)
}

/// Polls until aborted: every [`Source::period`], and again at once while behind.
async fn run(key: (String, String), mut poller: Poller, apps: Apps) {
    let mut timer = tokio::time::interval(poller.source.period());
    timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        timer.tick().await;
        for _ in 0..CATCH_UP {
            match poller.poll(unix_now_us()).await {
                Ok(p) => {
                    let caught_up = p.caught_up;
                    apps.feed(&key, p.traces, poller.cursor_us());
                    if caught_up {
                        break;
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "Jaeger poll failed; retrying the same range");
                    poller.metrics.error(&poller.app, e.reason());
                    break;
                }
            }
        }
    }
}

/// The running Jaeger pollers, owned by the controller's loop.
pub type Pollers = crate::tasks::Pollers<Source>;

impl crate::tasks::Source for Source {
    const KIND: &'static str = "Jaeger";
    type Metrics = Metrics;

    fn of(spec: &DermAppSpec) -> Option<Self> {
        Source::of(spec)
    }

    fn poll(
        self,
        key: crate::tasks::Key,
        app: String,
        client: &Client,
        metrics: &Metrics,
        apps: Apps,
    ) -> impl Future<Output = ()> + Send + 'static {
        run(key, Poller::new(app, self, client.clone(), metrics.clone(), unix_now_us()), apps)
    }
}
