//! DeathStarBench social network: 31 services (logic tiers plus their memcached, redis,
//! MongoDB and RabbitMQ backends), five request types. Graphs are static except for cache
//! misses (the `cache` argument: `hit` or `miss`, about 9% misses), which add a MongoDB read.
//! Caches and Redis are fast single-worker servers; MongoDB reads are lognormal (mismatch).
//! Load: diurnal 250-800 requests/s, one cycle per hour.

use super::super::app::{App, Argument, Curve, RequestType};
use super::super::{Error, Pattern};
use super::{Scenario, leaf, par, seq};
use crate::graph::Node;

/// Multiplies the table's service times (relative costs) to C++/Thrift services under real
/// request payloads, so that the busiest tiers need several containers at peak.
pub const SERVICE_TIME_SCALE: f64 = 4.0;

/// `(name, l0_ms, mean service ms before scaling, workers, lognormal cv or 0)`.
const SERVICES: [super::ServiceRow; 31] = [
    ("nginx-web-server", 0.3, 0.8, 4, 0.0),
    ("compose-post-service", 0.5, 3.0, 1, 0.0),
    ("text-service", 0.4, 2.0, 1, 0.0),
    ("user-mention-service", 0.4, 2.0, 1, 0.0),
    ("url-shorten-service", 0.4, 1.5, 1, 0.0),
    ("media-service", 0.4, 1.5, 1, 0.0),
    ("unique-id-service", 0.2, 0.5, 1, 0.0),
    ("user-service", 0.4, 1.5, 1, 0.0),
    ("post-storage-service", 0.4, 2.0, 1, 0.0),
    ("user-timeline-service", 0.4, 2.0, 1, 0.0),
    ("home-timeline-service", 0.4, 2.0, 1, 0.0),
    ("social-graph-service", 0.4, 2.0, 1, 0.0),
    ("write-home-timeline-service", 0.5, 3.0, 1, 0.0),
    ("post-storage-memcached", 0.2, 0.3, 1, 0.0),
    ("post-storage-mongodb", 0.5, 4.0, 2, 1.0),
    ("user-timeline-redis", 0.2, 0.4, 1, 0.0),
    ("user-timeline-mongodb", 0.5, 4.0, 2, 1.0),
    ("home-timeline-redis", 0.2, 0.4, 1, 0.0),
    ("social-graph-redis", 0.2, 0.4, 1, 0.0),
    ("social-graph-mongodb", 0.5, 3.0, 1, 0.0),
    ("url-shorten-memcached", 0.2, 0.3, 1, 0.0),
    ("url-shorten-mongodb", 0.5, 3.0, 1, 0.0),
    ("user-memcached", 0.2, 0.3, 1, 0.0),
    ("user-mongodb", 0.5, 3.0, 1, 0.0),
    ("media-memcached", 0.2, 0.3, 1, 0.0),
    ("media-mongodb", 0.5, 3.0, 1, 0.0),
    ("compose-post-redis", 0.2, 0.4, 1, 0.0),
    ("user-mention-memcached", 0.2, 0.3, 1, 0.0),
    ("write-home-timeline-rabbitmq", 0.3, 1.0, 1, 0.0),
    ("media-frontend", 0.4, 2.0, 1, 0.0),
    ("jaeger-agent-sidecar", 0.1, 0.2, 1, 0.0),
];

pub const PEAK_RPS: f64 = 800.0;
pub const TROUGH_RPS: f64 = 250.0;

fn storage(miss: bool) -> Node {
    let mut calls = vec![leaf("post-storage-memcached")];
    if miss {
        calls.push(leaf("post-storage-mongodb"));
    }
    seq("post-storage-service", calls)
}

fn home(miss: bool) -> Node {
    leaf("nginx-web-server").then(seq("home-timeline-service", [leaf("home-timeline-redis"), storage(miss)]))
}

fn user_timeline(miss: bool) -> Node {
    let mut calls = vec![leaf("user-timeline-redis")];
    if miss {
        calls.push(leaf("user-timeline-mongodb"));
    }
    calls.push(storage(miss));
    leaf("nginx-web-server").then(seq("user-timeline-service", calls))
}

fn compose() -> Node {
    let text = par(
        "text-service",
        [
            seq("url-shorten-service", [leaf("url-shorten-memcached"), leaf("url-shorten-mongodb")]),
            leaf("user-mention-service").then(leaf("user-mention-memcached")),
        ],
    );
    let post = leaf("compose-post-service")
        .with_parallel([
            leaf("unique-id-service"),
            text,
            leaf("media-service").then(leaf("media-memcached")),
            leaf("user-service").then(leaf("user-memcached")),
        ])
        .then(leaf("compose-post-redis"))
        .with_parallel([
            leaf("post-storage-service").then(leaf("post-storage-mongodb")),
            leaf("user-timeline-service").then(leaf("user-timeline-mongodb")),
            seq(
                "write-home-timeline-service",
                [
                    leaf("write-home-timeline-rabbitmq"),
                    leaf("social-graph-service").then(leaf("social-graph-redis")),
                    leaf("home-timeline-redis"),
                ],
            ),
        ]);
    leaf("nginx-web-server").then(post)
}

pub fn scenario() -> Result<Scenario, Error> {
    let services = super::services(&SERVICES, SERVICE_TIME_SCALE);
    let graphs = vec![
        home(false),
        home(true),
        user_timeline(false),
        user_timeline(true),
        compose(),
        leaf("nginx-web-server")
            .then(seq("social-graph-service", [leaf("social-graph-mongodb"), leaf("social-graph-redis")])),
        leaf("nginx-web-server").with_parallel([
            seq("user-service", [leaf("user-memcached"), leaf("user-mongodb")]),
            leaf("jaeger-agent-sidecar"),
        ]),
        leaf("nginx-web-server").then(seq("media-frontend", [leaf("media-memcached"), leaf("media-mongodb")])),
    ];
    let cache =
        || Some(Argument { tag: "cache".into(), values: vec!["hit".into(), "miss".into()], ratio: Curve::flat(0.1) });
    let t = |name: &str, w: f64, argument: Option<Argument>, graphs: Vec<[usize; 2]>| RequestType {
        name: name.into(),
        weight: Curve::flat(w),
        load_exponent: 0.0,
        argument,
        graphs,
    };
    let types = vec![
        t("read-home-timeline", 0.58, cache(), vec![[0, 0], [1, 1]]),
        t("read-user-timeline", 0.28, cache(), vec![[2, 2], [3, 3]]),
        t("compose-post", 0.09, None, vec![[4, 4]]),
        t("follow", 0.02, None, vec![[5, 5]]),
        t("login", 0.02, None, vec![[6, 6]]),
        t("upload-media", 0.01, None, vec![[7, 7]]),
    ];
    let app = App::new("socialnetwork", services, graphs, types, f64::INFINITY, PEAK_RPS)?;
    let pattern = Pattern::Diurnal { min_rps: TROUGH_RPS, max_rps: PEAK_RPS, period_s: 3600.0, phase_s: 0.0 };
    Scenario::new(app, pattern, 0.1, vec!["cache".into()])
}
