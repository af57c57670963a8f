//! TrainTicket (FudanSELab): 32 services, eight request types.
//!
//! The ticket query (`distance` 1 to 6 legs, geometric with a ratio drifting between 0.25 and
//! 0.75 over 25 minutes) calls the travel service directly for one or two legs and goes
//! through the travel-plan and route-plan services from three legs on; each leg queries
//! ticket info (basic: station, train, price in parallel) and then seat availability. Above
//! 180 requests/s (90% of peak) the query skips seat availability and booking skips food and
//! notification (degraded mode). Booking and payment grow with load, order lists shrink.
//! Most services have one worker and exponential service (Derm's model holds); seat and order
//! have two workers, basic and seat lognormal service times (model mismatch).

use super::super::app::{App, Argument, Curve, RequestType};
use super::super::{Error, Pattern};
use super::{Scenario, leaf, par, seq};
use crate::graph::Node;

/// Multiplies the table's service times: the table gives relative costs, the scale puts them
/// where TrainTicket's Spring Boot services with MongoDB sit (20 to 120 ms per call), so that
/// at 200 requests/s the busiest services need tens of containers rather than one (with
/// one container per service the comparison would only measure the one-replica floor).
pub const SERVICE_TIME_SCALE: f64 = 20.0;

/// `(name, l0_ms, mean service ms before scaling, workers, lognormal cv or 0)`.
const SERVICES: [super::ServiceRow; 32] = [
    ("ts-ui-dashboard", 0.3, 1.0, 2, 0.0),
    ("ts-auth-service", 0.5, 4.0, 1, 0.0),
    ("ts-user-service", 0.5, 2.5, 1, 0.0),
    ("ts-verification-code-service", 0.4, 1.5, 1, 0.0),
    ("ts-travel-service", 0.5, 3.0, 1, 0.0),
    ("ts-travel2-service", 0.5, 3.0, 1, 0.0),
    ("ts-travel-plan-service", 0.6, 4.0, 1, 0.0),
    ("ts-route-plan-service", 0.6, 5.0, 1, 0.0),
    ("ts-ticketinfo-service", 0.4, 2.0, 1, 0.0),
    ("ts-basic-service", 0.5, 3.5, 1, 1.5),
    ("ts-station-service", 0.3, 1.5, 1, 0.0),
    ("ts-train-service", 0.3, 1.2, 1, 0.0),
    ("ts-route-service", 0.4, 2.5, 1, 0.0),
    ("ts-price-service", 0.3, 1.5, 1, 0.0),
    ("ts-seat-service", 0.5, 6.0, 2, 1.2),
    ("ts-config-service", 0.3, 1.0, 1, 0.0),
    ("ts-order-service", 0.5, 5.0, 2, 0.0),
    ("ts-order-other-service", 0.5, 5.0, 2, 0.0),
    ("ts-contacts-service", 0.4, 2.0, 1, 0.0),
    ("ts-preserve-service", 0.6, 6.0, 1, 0.0),
    ("ts-security-service", 0.4, 2.0, 1, 0.0),
    ("ts-assurance-service", 0.3, 1.5, 1, 0.0),
    ("ts-food-service", 0.5, 3.0, 1, 0.0),
    ("ts-food-map-service", 0.4, 2.0, 1, 0.0),
    ("ts-consign-service", 0.4, 2.5, 1, 0.0),
    ("ts-consign-price-service", 0.3, 1.0, 1, 0.0),
    ("ts-inside-payment-service", 0.5, 3.0, 1, 0.0),
    ("ts-payment-service", 0.5, 4.0, 1, 0.0),
    ("ts-cancel-service", 0.5, 3.0, 1, 0.0),
    ("ts-notification-service", 0.4, 2.0, 1, 0.0),
    ("ts-execute-service", 0.4, 2.0, 1, 0.0),
    ("ts-rebook-service", 0.5, 3.0, 1, 0.0),
];

/// Peak and trough of the default diurnal load (one cycle per hour), requests/s.
pub const PEAK_RPS: f64 = 200.0;
pub const TROUGH_RPS: f64 = 60.0;
/// Degraded mode above this entry rate.
pub const HIGH_LOAD_RPS: f64 = 0.9 * PEAK_RPS;

fn basic(with_route: bool) -> Node {
    let mut calls = vec![leaf("ts-station-service"), leaf("ts-train-service"), leaf("ts-price-service")];
    if with_route {
        calls.push(leaf("ts-route-service"));
    }
    par("ts-basic-service", calls)
}

fn ticketinfo() -> Node {
    leaf("ts-ticketinfo-service").then(basic(false))
}

fn seat() -> Node {
    leaf("ts-seat-service").then(leaf("ts-config-service"))
}

/// The ticket query for `legs` legs; `seats`: with seat availability.
fn query(legs: usize, seats: bool) -> Node {
    if legs <= 2 {
        let mut travel = leaf("ts-travel-service").then(leaf("ts-route-service"));
        for _ in 0..legs {
            travel = travel.then(ticketinfo());
            if seats {
                travel = travel.then(seat());
            }
        }
        return leaf("ts-ui-dashboard").then(travel);
    }
    let mut plan = leaf("ts-route-plan-service").then(leaf("ts-route-service"));
    for _ in 0..legs {
        let mut leg = leaf("ts-travel-service").then(ticketinfo());
        if seats {
            leg = leg.then(seat());
        }
        plan = plan.then(leg);
    }
    leaf("ts-ui-dashboard").then(leaf("ts-travel-plan-service").then(plan))
}

fn preserve(full: bool) -> Node {
    let mut p = leaf("ts-preserve-service")
        .with_parallel([
            leaf("ts-contacts-service"),
            par("ts-security-service", [leaf("ts-order-service"), leaf("ts-order-other-service")]),
        ])
        .then(leaf("ts-travel-service").then(basic(true)))
        .then(seat());
    let mut extras =
        vec![leaf("ts-assurance-service"), leaf("ts-consign-service").then(leaf("ts-consign-price-service"))];
    if full {
        extras.push(leaf("ts-food-service").then(leaf("ts-food-map-service")));
    }
    p = p.with_parallel(extras).then(leaf("ts-order-service"));
    if full {
        p = p.then(leaf("ts-notification-service"));
    }
    leaf("ts-ui-dashboard").then(p)
}

fn drift(base: f64, amplitude: f64, period_s: f64, phase_s: f64) -> Curve {
    Curve { base, amplitude, period_s, phase_s }
}

pub fn scenario() -> Result<Scenario, Error> {
    let services = super::services(&SERVICES, SERVICE_TIME_SCALE);
    let mut graphs = Vec::new();
    let mut add = |n: Node| {
        graphs.push(n);
        graphs.len() - 1
    };
    let query_graphs: Vec<[usize; 2]> = (1..=6).map(|d| [add(query(d, true)), add(query(d, false))]).collect();
    let login = add(leaf("ts-ui-dashboard")
        .then(seq("ts-auth-service", [leaf("ts-verification-code-service"), leaf("ts-user-service")])));
    let orders = add(par(
        "ts-ui-dashboard",
        [
            leaf("ts-order-service").then(leaf("ts-station-service")),
            leaf("ts-order-other-service").then(leaf("ts-station-service")),
        ],
    ));
    let book = [add(preserve(true)), add(preserve(false))];
    let pay = add(leaf("ts-ui-dashboard")
        .then(seq("ts-inside-payment-service", [leaf("ts-order-service"), leaf("ts-payment-service")])));
    let cancel = add(leaf("ts-ui-dashboard").then(seq(
        "ts-cancel-service",
        [
            leaf("ts-order-service"),
            leaf("ts-inside-payment-service").then(leaf("ts-payment-service")),
            leaf("ts-notification-service"),
        ],
    )));
    let rebook = add(leaf("ts-ui-dashboard").then(seq(
        "ts-rebook-service",
        [leaf("ts-order-service"), leaf("ts-travel2-service").then(basic(false)), seat(), leaf("ts-order-service")],
    )));
    let execute = add(leaf("ts-ui-dashboard").then(leaf("ts-execute-service").then(leaf("ts-order-service"))));
    let one = |g: usize| vec![[g, g]];
    let types = vec![
        RequestType {
            name: "ticket-query".into(),
            weight: drift(0.50, 0.08, 2400.0, 0.0),
            load_exponent: 0.0,
            argument: Some(Argument {
                tag: "distance".into(),
                values: (1..=6).map(|d| d.to_string()).collect(),
                ratio: drift(0.5, 0.25, 1500.0, 0.0),
            }),
            graphs: query_graphs,
        },
        RequestType {
            name: "login".into(),
            weight: drift(0.10, 0.03, 1800.0, 300.0),
            load_exponent: 0.0,
            argument: None,
            graphs: one(login),
        },
        RequestType {
            name: "order-list".into(),
            weight: drift(0.15, 0.05, 2000.0, 700.0),
            load_exponent: -0.5,
            argument: None,
            graphs: one(orders),
        },
        RequestType {
            name: "preserve".into(),
            weight: Curve::flat(0.10),
            load_exponent: 1.0,
            argument: None,
            graphs: vec![book],
        },
        RequestType {
            name: "payment".into(),
            weight: Curve::flat(0.07),
            load_exponent: 0.5,
            argument: None,
            graphs: one(pay),
        },
        RequestType {
            name: "cancel".into(),
            weight: Curve::flat(0.03),
            load_exponent: 0.0,
            argument: None,
            graphs: one(cancel),
        },
        RequestType {
            name: "rebook".into(),
            weight: Curve::flat(0.03),
            load_exponent: 0.0,
            argument: None,
            graphs: one(rebook),
        },
        RequestType {
            name: "execute".into(),
            weight: Curve::flat(0.02),
            load_exponent: 0.0,
            argument: None,
            graphs: one(execute),
        },
    ];
    let app = App::new("trainticket", services, graphs, types, HIGH_LOAD_RPS, PEAK_RPS)?;
    let pattern = Pattern::Diurnal { min_rps: TROUGH_RPS, max_rps: PEAK_RPS, period_s: 3600.0, phase_s: 0.0 };
    Scenario::new(app, pattern, 0.1, vec!["distance".into()])
}
