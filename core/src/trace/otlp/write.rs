//! Writers: traces as one OTLP `ExportTraceServiceRequest`, protobuf or JSON.

use crate::trace::{Span, Trace, ids};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1 as pb;
use prost::Message as _;
use serde::Serialize;
use std::io::Write;

/// A resource written: (service, container).
type ResourceKey<'a> = (&'a str, Option<&'a str>);

/// Spans grouped by resource, in order of first appearance.
fn by_resource(traces: &[Trace]) -> Vec<(ResourceKey<'_>, Vec<(&Trace, &Span)>)> {
    let mut groups: Vec<(ResourceKey<'_>, Vec<(&Trace, &Span)>)> = Vec::new();
    for t in traces {
        for s in &t.spans {
            let key = (s.service.as_str(), s.container.as_deref());
            match groups.iter_mut().find(|(k, _)| *k == key) {
                Some((_, spans)) => spans.push((t, s)),
                None => groups.push((key, vec![(t, s)])),
            }
        }
    }
    groups
}

fn nanos(us: i64) -> u64 {
    u64::try_from(us.saturating_mul(1000)).unwrap_or(0)
}

/// Resource attributes written: `service.name` and the container as `k8s.pod.name`.
fn resource_attributes<'a>((service, container): ResourceKey<'a>) -> Vec<(&'static str, &'a str)> {
    let mut out = vec![("service.name", service)];
    out.extend(container.map(|c| ("k8s.pod.name", c)));
    out
}

/// `traces` as one protobuf `ExportTraceServiceRequest`: a resource per (service, container)
/// with `service.name` and `k8s.pod.name`, span tags as string attributes, every parent link as
/// the span's parent (OTLP has no FOLLOWS_FROM), ids that are not hex hashed.
pub fn encode_protobuf(traces: &[Trace]) -> Vec<u8> {
    let string = |key: &str, value: &str| KeyValue {
        key: key.to_owned(),
        value: Some(AnyValue { value: Some(any_value::Value::StringValue(value.to_owned())) }),
        ..Default::default()
    };
    let resource_spans = by_resource(traces)
        .into_iter()
        .map(|(key, spans)| pb::ResourceSpans {
            resource: Some(Resource {
                attributes: resource_attributes(key).into_iter().map(|(k, v)| string(k, v)).collect(),
                ..Default::default()
            }),
            scope_spans: vec![pb::ScopeSpans {
                spans: spans
                    .into_iter()
                    .map(|(t, s)| pb::Span {
                        trace_id: ids::wire_trace_id(&t.id).padded16().to_vec(),
                        span_id: s.id.to_be_bytes().to_vec(),
                        parent_span_id: s.parent.map(|p| p.id.to_be_bytes().to_vec()).unwrap_or_default(),
                        name: s.service.clone(),
                        kind: pb::span::SpanKind::Server as i32,
                        start_time_unix_nano: nanos(s.start_us),
                        end_time_unix_nano: nanos(s.start_us.saturating_add(s.duration_us)),
                        attributes: s.tags.iter().map(|(k, v)| string(k, v)).collect(),
                        ..Default::default()
                    })
                    .collect(),
                ..Default::default()
            }],
            ..Default::default()
        })
        .collect();
    ExportTraceServiceRequest { resource_spans }.encode_to_vec()
}

/// `traces` as one OTLP JSON `ExportTraceServiceRequest` (hex ids, nanosecond strings), laid
/// out as [`encode_protobuf`] lays out the protobuf.
pub fn write_json(writer: impl Write, traces: &[Trace]) -> std::io::Result<()> {
    let resource_spans: Vec<ResourceSpansOut<'_>> = by_resource(traces)
        .into_iter()
        .map(|(key, spans)| ResourceSpansOut {
            resource: ResourceOut {
                attributes: resource_attributes(key).into_iter().map(|(k, v)| KeyValueOut::new(k, v)).collect(),
            },
            scope_spans: vec![ScopeSpansOut {
                spans: spans
                    .into_iter()
                    .map(|(t, s)| SpanOut {
                        trace_id: hex(&ids::wire_trace_id(&t.id).padded16()),
                        span_id: format!("{:016x}", s.id),
                        parent_span_id: s.parent.map(|p| format!("{:016x}", p.id)).unwrap_or_default(),
                        name: &s.service,
                        kind: pb::span::SpanKind::Server as i32,
                        start_time_unix_nano: nanos(s.start_us).to_string(),
                        end_time_unix_nano: nanos(s.start_us.saturating_add(s.duration_us)).to_string(),
                        attributes: s.tags.iter().map(|(k, v)| KeyValueOut::new(k, v)).collect(),
                    })
                    .collect(),
            }],
        })
        .collect();
    let mut writer = std::io::BufWriter::new(writer);
    serde_json::to_writer(&mut writer, &RequestOut { resource_spans })?;
    writer.flush()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct RequestOut<'a> {
    resource_spans: Vec<ResourceSpansOut<'a>>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ResourceSpansOut<'a> {
    resource: ResourceOut<'a>,
    scope_spans: Vec<ScopeSpansOut<'a>>,
}

#[derive(Serialize)]
struct ResourceOut<'a> {
    attributes: Vec<KeyValueOut<'a>>,
}

#[derive(Serialize)]
struct ScopeSpansOut<'a> {
    spans: Vec<SpanOut<'a>>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct SpanOut<'a> {
    trace_id: String,
    span_id: String,
    parent_span_id: String,
    name: &'a str,
    kind: i32,
    start_time_unix_nano: String,
    end_time_unix_nano: String,
    attributes: Vec<KeyValueOut<'a>>,
}

#[derive(Serialize)]
struct KeyValueOut<'a> {
    key: &'a str,
    value: StringValueOut<'a>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct StringValueOut<'a> {
    string_value: &'a str,
}

impl<'a> KeyValueOut<'a> {
    fn new(key: &'a str, value: &'a str) -> Self {
        KeyValueOut { key, value: StringValueOut { string_value: value } }
    }
}
