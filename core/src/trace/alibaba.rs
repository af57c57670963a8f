//! Alibaba cluster-trace-microservices-v2021 call graphs (`MSCallGraph_*.csv`).
//!
//! Header `,traceid,timestamp,rpcid,um,rpctype,dm,interface,rt`: columns are found by name
//! (the leading unnamed index column may be missing; column order may differ, as the dataset's
//! README shows); `traceid`, `timestamp`, `rpcid`, `dm` and `rt` are required, and a missing
//! one is an [`Error::Format`] naming it. Fields are read as bytes: names that are not UTF-8
//! are kept lossily.
//!
//! Rules:
//! - One row is one call, from the caller `um` to the callee `dm`; the span of row `rpcid` is
//!   the callee's, service `dm`. `um` is not needed: a caller is its parent rpcid's `dm`. The
//!   root call (`um` = `USER`/`UNKNOWN`) has the entry service as `dm`.
//! - `rpcid` is a dotted path: the parent of `0.1.1` is `0.1`. The root is the rpcid with the
//!   fewest components (normally `0`); several such rpcids make several roots (the tree builder
//!   skips the trace, [`Reason::MultipleRoots`]).
//! - A call usually appears twice, on the caller side (`rt` > 0) and the callee side
//!   (`rt` < 0): rows are deduplicated by (traceid, rpcid), preferring the caller side, then a
//!   row with `rt` = 0 (calls under 1 ms), then the callee side. A service name missing from
//!   the chosen row is taken from its twin.
//! - `timestamp` is the call's start in ms since the trace set's origin; duration = |`rt`| ms
//!   (0 allowed).
//! - Span ids number the trace's distinct rpcids (sorted), then the rpcids of missing parents.
//! - A call whose service is `NAN`, `(?)`, `UNKNOWN` or empty is dropped and counted
//!   ([`Reason::NoService`]). Its children then have no parent in the trace, so the tree
//!   builder skips the trace as [`Reason::Orphan`]; a dropped leaf only shrinks the graph.
//! - A row with an unreadable `timestamp`, `rt` or `rpcid` drops its trace
//!   ([`Reason::Malformed`], with file:line); one without a `traceid` is dropped alone.
//! - `rpctype` and `interface` become tags when [`Config::keeps`] them. No container is known.
//!
//! The dataset is sorted by timestamp, not by trace, so rows are grouped by an [`Assembler`]
//! (a trace is complete once the rows' clock is [`Config::flush_after_us`] past its last call).

use super::{Assembler, Config, Error, MAX_TIME_US, Parent, Reason, RefKind, Skips, Span, Trace};
use std::borrow::Cow;
use std::collections::HashMap;
use std::io::Read;

const FORMAT: &str = "Alibaba CSV";

/// Names that mean "service unknown" in the dataset.
const NO_SERVICE: [&str; 4] = ["", "NAN", "(?)", "UNKNOWN"];

/// One row, kept until its trace is complete.
#[derive(Debug)]
struct Row {
    rpcid: String,
    /// Callee service (may be one of [`NO_SERVICE`]).
    dm: String,
    start_us: i64,
    duration_us: i64,
    /// 0 for the caller side (rt > 0), 1 for rt = 0, 2 for the callee side (rt < 0).
    side: u8,
    line: u64,
    tags: Vec<(String, String)>,
}

/// Column positions.
#[derive(Debug)]
struct Columns {
    traceid: usize,
    timestamp: usize,
    rpcid: usize,
    dm: usize,
    rt: usize,
    rpctype: Option<usize>,
    interface: Option<usize>,
}

impl Columns {
    fn new(header: &csv::ByteRecord, origin: &str) -> Result<Self, Error> {
        let names: Vec<String> = header
            .iter()
            .map(|f| String::from_utf8_lossy(f).trim().trim_start_matches('\u{feff}').to_ascii_lowercase())
            .collect();
        let find = |name: &str| names.iter().position(|n| n == name);
        let need = |name: &str| {
            find(name).ok_or_else(|| {
                let detail = format!("missing column `{name}` (header: {})", names.join(","));
                Error::format(origin, FORMAT, 1, 1, detail)
            })
        };
        Ok(Columns {
            traceid: need("traceid")?,
            timestamp: need("timestamp")?,
            rpcid: need("rpcid")?,
            dm: need("dm")?,
            rt: need("rt")?,
            rpctype: find("rpctype"),
            interface: find("interface"),
        })
    }
}

/// Decode `MSCallGraph` CSV from `reader`, calling `sink` for each trace.
pub fn read(
    reader: impl Read,
    origin: &str,
    config: &Config,
    skips: &mut Skips,
    sink: &mut dyn FnMut(Trace),
) -> Result<(), Error> {
    let mut csv = csv::ReaderBuilder::new().has_headers(true).flexible(true).from_reader(reader);
    let header = match csv.byte_headers() {
        Ok(h) if h.iter().any(|f| !f.is_empty()) => h.clone(),
        Ok(_) => return Err(Error::format(origin, FORMAT, 1, 1, "empty input")),
        Err(e) => return Err(csv_error(origin, e)),
    };
    let columns = Columns::new(&header, origin)?;
    let mut assembler: Assembler<Row> = Assembler::new(config.flush_after_us);
    let mut emit = |id: String, rows: Vec<Row>| {
        if let Some(trace) = assemble(id, rows, origin, skips) {
            sink(trace);
        }
    };
    // Rows are checked in `row`; skips counted there go to a separate tally, merged at the
    // end, since `emit` holds `skips`.
    let mut row_skips = Skips::default();
    let mut record = csv::ByteRecord::new();
    loop {
        match csv.read_byte_record(&mut record) {
            Ok(false) => break,
            Ok(true) => row(&record, &columns, origin, config, &mut assembler, &mut row_skips, &mut emit),
            Err(e) if matches!(e.kind(), csv::ErrorKind::Io(io) if io.kind() == std::io::ErrorKind::UnexpectedEof) => {
                let line = e.position().map_or(0, csv::Position::line);
                row_skips.add(Reason::Truncated, || format!("{origin}:{line}: input ends early"));
                break;
            }
            Err(e) => {
                if let csv::ErrorKind::Io(_) = e.kind() {
                    return Err(csv_error(origin, e));
                }
                let line = e.position().map_or(0, csv::Position::line);
                row_skips.add(Reason::Malformed, || format!("{origin}:{line}: {e}"));
            }
        }
    }
    assembler.finish(&mut emit);
    skips.merge(&row_skips);
    Ok(())
}

fn csv_error(origin: &str, e: csv::Error) -> Error {
    let line = e.position().map_or(1, |p| usize::try_from(p.line()).unwrap_or(usize::MAX));
    match e.into_kind() {
        csv::ErrorKind::Io(io) => Error::io(origin, io),
        other => Error::format(origin, FORMAT, line, 1, format!("{other:?}")),
    }
}

/// Check one row and hand it to the assembler.
fn row(
    record: &csv::ByteRecord,
    columns: &Columns,
    origin: &str,
    config: &Config,
    assembler: &mut Assembler<Row>,
    skips: &mut Skips,
    emit: &mut dyn FnMut(String, Vec<Row>),
) {
    let line = record.position().map_or(0, csv::Position::line);
    let text = |i: usize| record.get(i).map(|f| String::from_utf8_lossy(f).trim().to_owned());
    let Some(trace_id) = text(columns.traceid).filter(|t| !t.is_empty()) else {
        skips.add(Reason::Malformed, || format!("{origin}:{line}: no traceid"));
        return;
    };
    let start = record.get(columns.timestamp).and_then(millis_to_us);
    let rt = record.get(columns.rt).and_then(millis_to_us);
    let rpcid = text(columns.rpcid).filter(|r| !r.is_empty() && r.split('.').all(|c| !c.is_empty()));
    let (Some(start_us), Some(rt_us), Some(rpcid)) = (start, rt, rpcid) else {
        let field = |i: usize| record.get(i).map(String::from_utf8_lossy).unwrap_or(Cow::Borrowed("(missing)"));
        let example = || {
            format!(
                "{origin}:{line}: trace {trace_id}: unreadable timestamp {:?}, rt {:?} or rpcid {:?}",
                field(columns.timestamp),
                field(columns.rt),
                field(columns.rpcid)
            )
        };
        let clock = assembler.clock().unwrap_or(i64::MIN);
        assembler.reject(&trace_id, clock, Reason::Malformed, example, skips);
        return;
    };
    let duration_us = rt_us.unsigned_abs().min(MAX_TIME_US.unsigned_abs());
    let duration_us = i64::try_from(duration_us).unwrap_or(MAX_TIME_US);
    let mut tags = Vec::new();
    for (key, column) in [("rpctype", columns.rpctype), ("interface", columns.interface)] {
        if let Some(value) = column.filter(|_| config.keeps(key)).and_then(text) {
            tags.push((key.to_owned(), value));
        }
    }
    let row = Row {
        rpcid,
        dm: text(columns.dm).unwrap_or_default(),
        start_us,
        duration_us,
        side: match rt_us.signum() {
            1 => 0,
            0 => 1,
            _ => 2,
        },
        line,
        tags,
    };
    assembler.push(&trace_id, start_us + duration_us, row, emit);
}

/// A number of milliseconds (integer or decimal) as microseconds within the accepted range.
fn millis_to_us(field: &[u8]) -> Option<i64> {
    let ms: f64 = std::str::from_utf8(field).ok()?.trim().parse().ok()?;
    let us = (ms * 1000.0).round();
    // Range check on the float: casts saturate, and NaN fails both comparisons.
    let limit = MAX_TIME_US as f64;
    (us >= -limit && us <= limit).then_some(us as i64)
}

fn usable(name: &str) -> bool {
    !NO_SERVICE.iter().any(|n| name.eq_ignore_ascii_case(n))
}

/// The rows of one trace as spans; see the module docs for the rules.
fn assemble(trace_id: String, mut rows: Vec<Row>, origin: &str, skips: &mut Skips) -> Option<Trace> {
    rows.sort_by(|a, b| (&a.rpcid, a.side, a.line).cmp(&(&b.rpcid, b.side, b.line)));
    // The preferred row of each rpcid, with a usable name from its twins if it lacks one.
    let mut calls: Vec<Row> = Vec::new();
    for row in rows {
        match calls.last_mut() {
            Some(last) if last.rpcid == row.rpcid => {
                if !usable(&last.dm) && usable(&row.dm) {
                    last.dm = row.dm;
                }
            }
            _ => calls.push(row),
        }
    }
    let depth = |rpcid: &str| rpcid.bytes().filter(|&b| b == b'.').count();
    let root_depth = calls.iter().map(|c| depth(&c.rpcid)).min()?;
    let mut ids: HashMap<&str, u64> = calls.iter().zip(1..).map(|(c, id)| (c.rpcid.as_str(), id)).collect();
    let mut spans = Vec::with_capacity(calls.len());
    for call in &calls {
        if !usable(&call.dm) {
            let (line, rpcid, dm) = (call.line, &call.rpcid, &call.dm);
            skips
                .add(Reason::NoService, || format!("{origin}:{line}: trace {trace_id}: rpcid {rpcid}: service {dm:?}"));
            continue;
        }
        let parent = match call.rpcid.rsplit_once('.') {
            Some((parent, _)) if depth(&call.rpcid) > root_depth => {
                let next = u64::try_from(ids.len()).unwrap_or(u64::MAX - 1) + 1;
                Some(Parent { id: *ids.entry(parent).or_insert(next), kind: RefKind::ChildOf })
            }
            _ => None,
        };
        spans.push(Span {
            id: ids.get(call.rpcid.as_str()).copied().unwrap_or_default(),
            parent,
            service: call.dm.clone(),
            start_us: call.start_us,
            duration_us: call.duration_us,
            container: None,
            tags: call.tags.clone(),
        });
    }
    Some(Trace { id: trace_id, spans })
}

#[cfg(test)]
mod tests;
