//! The call-count source: one poller per DermApp with `spec.callCounts.prometheus`, run by the
//! leader only, feeding each interval's per-service call rates to the app's online loop
//! ([`crate::controller::Apps::count`]; the mix is fitted there: [`crate::online`]).
//!
//! For every interval `[end - interval, end)` that ended at least [`Source::lag_s`] ago it
//! asks `GET {url}/api/v1/query?query=Q&time=end` (Prometheus's instant query; `$interval` in
//! the query becomes `{interval}s`), answered `{"status": "success", "data": {"resultType":
//! "vector", "result": [{"metric": {...}, "value": [t, "rate"]}]}}`. Each series' service is
//! its `serviceLabel`; series without it, and values that are not finite non-negative
//! numbers, are skipped and counted (`reason="Decode"` once per answer that had any).
//!
//! Why a lag of a few seconds: Prometheus stores a counter's sample when it scrapes, so a rate
//! evaluated at `end` sees the scrapes up to `end`; later ones belong to the next interval.
//!
//! Faults (Prometheus down, error answers, bodies that do not decode) are counted in
//! `derm_adapter_call_count_errors_total{app, reason}` and logged; the cursor stays, so the
//! next poll asks for the same interval again. A new poller (a restart, a new leader) starts
//! [`crate::online::counts::KEEP`] intervals back, so the counted history is read again from
//! Prometheus rather than stored. The loop waits a few seconds for the interval that just
//! ended and otherwise plans from older counts or the traces ([`crate::online`]): an outage
//! never stops the traces' plans, and never lowers a count by itself.

use std::collections::BTreeMap;
use std::time::Duration;

use axum::body::Bytes;
use prometheus_client::registry::Registry;
use serde::Deserialize;

use crate::controller::Apps;
use crate::crd::{CallCounts, DermAppSpec};
use crate::jaeger::{Client, Error, Reason};

/// Seconds after an interval's end before it is asked for (at most a quarter interval).
pub const LAG_S: i64 = 3;
/// Most intervals asked for in one period while catching up.
const CATCH_UP: usize = 8;

/// The pollers' metrics on the admin registry: `derm_adapter_call_count_errors_total` and
/// `derm_adapter_call_count_windows_total` (intervals read).
pub type Metrics = crate::tasks::Counters;

/// Registers the pollers' metrics.
pub fn register(registry: &mut Registry) -> Metrics {
    let help = ["Failed call-count queries by app and reason", "Intervals whose call rates were read, by app"];
    crate::tasks::Counters::register(registry, "call_count", "windows", help)
}

/// What a poller asks for, from a DermApp's spec; a change restarts the poller.
#[derive(Debug, Clone, PartialEq)]
pub struct Source {
    /// Base URL without a trailing `/`.
    pub url: String,
    /// The query with `$interval` replaced.
    pub query: String,
    pub service_label: String,
    pub interval_s: u32,
}

impl Source {
    /// The call-count source of `spec`, if it has one.
    pub fn of(spec: &DermAppSpec) -> Option<Self> {
        let CallCounts { prometheus: p } = spec.call_counts.as_ref()?;
        let interval_s = spec.interval_seconds.max(1);
        Some(Source {
            url: p.url.trim_end_matches('/').to_owned(),
            query: p.query.replace("$interval", &format!("{interval_s}s")),
            service_label: p.service_label.clone(),
            interval_s,
        })
    }

    /// Seconds after an interval's end before it is asked for: [`LAG_S`], at most a quarter
    /// of the interval.
    pub fn lag_s(&self) -> i64 {
        LAG_S.min(i64::from(self.interval_s) / 4)
    }

    /// The instant query at Unix time `end_s`.
    fn uri(&self, end_s: i64) -> String {
        let mut q = form_urlencoded::Serializer::new(String::new());
        q.append_pair("query", &self.query).append_pair("time", &end_s.to_string());
        format!("{}/api/v1/query?{}", self.url, q.finish())
    }
}

/// The rates of one interval.
#[derive(Debug, Clone, PartialEq)]
pub struct Counted {
    pub start_s: i64,
    pub calls_rps: BTreeMap<String, f64>,
}

/// The poll state of one app: intervals that end at or before `cursor_s` have been read.
#[derive(Debug)]
pub struct Poller {
    app: String,
    source: Source,
    client: Client,
    metrics: Metrics,
    cursor_s: i64,
}

impl Poller {
    /// A poller that first reads the last [`crate::online::counts::KEEP`] intervals ended by
    /// `now_s`.
    pub fn new(app: String, source: Source, client: Client, metrics: Metrics, now_s: i64) -> Self {
        let interval = i64::from(source.interval_s);
        let last_end = (now_s - source.lag_s()).div_euclid(interval) * interval;
        let cursor_s = last_end - crate::online::counts::KEEP as i64 * interval;
        Poller { app, source, client, metrics, cursor_s }
    }

    /// Intervals ending at or before this have been read.
    pub fn cursor_s(&self) -> i64 {
        self.cursor_s
    }

    /// Reads the next interval if it ended at least the lag before `now_s` (`None`: none is
    /// due). On error the cursor stays.
    pub async fn poll(&mut self, now_s: i64) -> Result<Option<Counted>, Error> {
        let interval = i64::from(self.source.interval_s);
        let end = self.cursor_s + interval;
        if end > now_s - self.source.lag_s() {
            return Ok(None);
        }
        let uri = self.source.uri(end);
        let url = format!("{}/api/v1/query", self.source.url);
        let (status, body) = self.client.get(&uri).await?;
        if !status.is_success() {
            let text = String::from_utf8_lossy(&body[..body.len().min(256)]).trim().to_owned();
            return Err(Error::Status { url, status, body: text });
        }
        let (calls_rps, skipped) =
            decode(&body, &self.source.service_label).map_err(|message| Error::Decode { url, message })?;
        if skipped > 0 {
            tracing::debug!(app = %self.app, skipped, "series without the service label or a usable value");
            self.metrics.error(&self.app, Reason::Decode);
        }
        self.cursor_s = end;
        self.metrics.delivered(&self.app, 1);
        Ok(Some(Counted { start_s: end - interval, calls_rps }))
    }
}

#[derive(Deserialize)]
struct Answer {
    status: String,
    #[serde(default)]
    data: Option<Data>,
    #[serde(default)]
    error: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Data {
    result_type: String,
    result: Vec<Sample>,
}

#[derive(Deserialize)]
struct Sample {
    #[serde(default)]
    metric: BTreeMap<String, String>,
    value: (f64, String),
}

/// One answer's rates by service (summed over series of one service), and how many series
/// were skipped.
pub fn decode(body: &Bytes, label: &str) -> Result<(BTreeMap<String, f64>, usize), String> {
    let answer: Answer = serde_json::from_slice(body).map_err(|e| format!("not a Prometheus query answer: {e}"))?;
    if answer.status != "success" {
        return Err(format!("status {}: {}", answer.status, answer.error.unwrap_or_default()));
    }
    let data = answer.data.ok_or("no data in a successful answer")?;
    if data.result_type != "vector" {
        return Err(format!("resultType {} (the query must give an instant vector)", data.result_type));
    }
    let (mut rates, mut skipped) = (BTreeMap::new(), 0);
    for s in data.result {
        let value = s.value.1.parse::<f64>().ok().filter(|v| v.is_finite() && *v >= 0.0);
        match (s.metric.get(label), value) {
            (Some(service), Some(v)) if !service.is_empty() => *rates.entry(service.clone()).or_insert(0.0) += v,
            _ => skipped += 1,
        }
    }
    Ok((rates, skipped))
}

fn unix_now_s() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64)
}

/// Polls until aborted: every second, reading every interval that is due.
async fn run(key: (String, String), mut poller: Poller, apps: Apps) {
    let mut timer = tokio::time::interval(Duration::from_secs(1));
    timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let duration = poller.source.interval_s;
    loop {
        timer.tick().await;
        for _ in 0..CATCH_UP {
            match poller.poll(unix_now_s()).await {
                Ok(Some(c)) => apps.count(&key, c.start_s, duration, c.calls_rps),
                Ok(None) => break,
                Err(e) => {
                    tracing::warn!(error = %e, "call-count query failed; asking again");
                    poller.metrics.error(&poller.app, e.reason());
                    break;
                }
            }
        }
    }
}

/// The running call-count pollers, owned by the controller's loop.
pub type Pollers = crate::tasks::Pollers<Source>;

impl crate::tasks::Source for Source {
    const KIND: &'static str = "call-count";
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
        run(key, Poller::new(app, self, client.clone(), metrics.clone(), unix_now_s()), apps)
    }
}

#[cfg(test)]
mod tests;
