//! The graph mix from per-service call counters.
//!
//! A service mesh counts every call each service receives; sampled traces see a few percent
//! of the requests. Each graph of the catalog calls each service a known number of times per
//! request, so the calls per entry request are linear in the mix: `c_i = sum_g p_g n_ig`.
//! The mix that explains the counters best is a small convex problem, solved with clarabel
//! (interior point): weighted least squares over the simplex,
//!
//! `min_p sum_i (sum_g n_ig p_g - c_i)^2 / (c_i + EPS)  s.t.  p >= 0, sum_g p_g = 1`,
//!
//! weighted by the inverse of each counter (a count's Poisson variance is its mean). Over one
//! 30 s interval this is several times closer to the true mix than a sampled window, and it
//! describes the interval that just ended, where the traced window is one interval older (its
//! slow requests need time to finish). In `derm simulate` (seed 3) the mix `derm` plans for
//! is 0.027 from the true one in total variation on `alibaba` (5% sampling) against 0.097
//! from the traces, 0.043 against 0.091 on `trainticket` (`decisions.json`'s `mix_error`).
//!
//! Graphs whose per-service call counts are the same (or linearly dependent) cannot be told
//! apart by counters; the solver then splits their share. Requests of graphs missing from
//! the catalog show up as calls no mix explains: [`Estimate::unexplained`], for callers to
//! fall back to traces.

use std::collections::BTreeMap;

use clarabel::algebra::CscMatrix;
use clarabel::solver::{DefaultSettingsBuilder, DefaultSolver, IPSolver, NonnegativeConeT, SolverStatus, ZeroConeT};

use super::Node;

/// Added to each counter in its weight: services with no calls get a large, finite weight.
const EPS: f64 = 1e-3;

/// A mix fitted to the counters.
#[derive(Debug, Clone, PartialEq)]
pub struct Estimate {
    /// Graph id -> share (graphs with a share above 1e-9).
    pub mix: BTreeMap<String, f64>,
    /// Share of the counted calls that the mix does not explain: `sum_i |sum_g n_ig p_g -
    /// c_i| / sum_i c_i`, where services in no graph count whole.
    pub unexplained: f64,
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum Error {
    #[error("{field}: {value} is not valid (expected {expected})")]
    Invalid { field: &'static str, value: String, expected: &'static str },
    #[error("the mix could not be fitted to the counters: {0}")]
    Solver(String),
}

/// The mix of `catalog`'s graphs that best explains `calls_rps` (service -> calls per second)
/// at `entry_rps` requests per second. Services in no graph do not move the mix (their calls
/// are [`Estimate::unexplained`]).
pub fn estimate(
    catalog: &BTreeMap<String, Node>,
    calls_rps: &BTreeMap<&str, f64>,
    entry_rps: f64,
) -> Result<Estimate, Error> {
    if !(entry_rps.is_finite() && entry_rps > 0.0) {
        return Err(Error::Invalid { field: "entry_rps", value: entry_rps.to_string(), expected: "a positive number" });
    }
    if catalog.is_empty() {
        return Err(Error::Invalid { field: "catalog", value: "no graphs".into(), expected: "at least one graph" });
    }
    if let Some((s, v)) = calls_rps.iter().find(|(_, v)| !(v.is_finite() && **v >= 0.0)) {
        return Err(Error::Invalid {
            field: "calls_rps",
            value: format!("{s}: {v}"),
            expected: "non-negative numbers",
        });
    }
    // Calls per request of every (service, graph): rows are the services some graph calls.
    let ids: Vec<&String> = catalog.keys().collect();
    let mut rows: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
    for (g, id) in ids.iter().enumerate() {
        for (service, calls) in catalog[*id].calls() {
            rows.entry(service).or_insert_with(|| vec![0.0; ids.len()])[g] = f64::from(calls);
        }
    }
    let c: Vec<f64> = rows.keys().map(|s| calls_rps.get(s).copied().unwrap_or(0.0) / entry_rps).collect();
    let n: Vec<&Vec<f64>> = rows.values().collect();
    let p = fit(&n, &c, ids.len())?;
    // Calls to services no graph calls are unexplained too (a graph the catalog lacks).
    let outside: f64 = calls_rps.iter().filter(|(s, _)| !rows.contains_key(*s)).map(|(_, v)| v / entry_rps).sum();
    let total: f64 = c.iter().sum::<f64>() + outside;
    let miss: f64 = n.iter().zip(&c).map(|(r, ci)| (dot(r, &p) - ci).abs()).sum::<f64>() + outside;
    let mix = ids.into_iter().zip(p).filter(|(_, v)| *v > 1e-9).map(|(id, v)| (id.clone(), v)).collect();
    Ok(Estimate { mix, unexplained: if total > 0.0 { miss / total } else { 0.0 } })
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// The weighted least squares over the simplex, as a QP: `P = N' W N`, `q = -N' W c`.
fn fit(n: &[&Vec<f64>], c: &[f64], graphs: usize) -> Result<Vec<f64>, Error> {
    let mut p = vec![vec![0.0; graphs]; graphs];
    let mut q = vec![0.0; graphs];
    for (row, ci) in n.iter().zip(c) {
        let w = 1.0 / (ci + EPS);
        for (a, &x) in row.iter().enumerate().filter(|(_, x)| **x != 0.0) {
            q[a] -= w * x * ci;
            for (b, &y) in row.iter().enumerate().skip(a).filter(|(_, y)| **y != 0.0) {
                p[a][b] += w * x * y;
            }
        }
    }
    // Upper triangle (clarabel's convention); a tiny ridge keeps it definite when graphs
    // cannot be told apart, so the split between them is the even one.
    for (a, row) in p.iter_mut().enumerate() {
        row[a] += 1e-9;
    }
    let p = CscMatrix::from(&p);
    // sum p = 1 (zero cone), then -p + s = 0 with s >= 0.
    let mut a = vec![vec![1.0; graphs]];
    a.extend((0..graphs).map(|g| {
        let mut r = vec![0.0; graphs];
        r[g] = -1.0;
        r
    }));
    let a = CscMatrix::from(&a);
    let mut b = vec![0.0; graphs + 1];
    b[0] = 1.0;
    let cones = [ZeroConeT(1), NonnegativeConeT(graphs)];
    // Tighter than the defaults (1e-8): shares of absent graphs then fall below 1e-7.
    let settings = DefaultSettingsBuilder::default()
        .verbose(false)
        .tol_gap_abs(1e-12)
        .tol_gap_rel(1e-12)
        .build()
        .map_err(|e| Error::Solver(e.to_string()))?;
    let mut solver =
        DefaultSolver::new(&p, &q, &a, &b, &cones, settings).map_err(|e| Error::Solver(format!("{e:?}")))?;
    solver.solve();
    match solver.solution.status {
        SolverStatus::Solved | SolverStatus::AlmostSolved => {}
        s => return Err(Error::Solver(format!("{s:?}"))),
    }
    // Interior-point solutions sit a hair inside the cone: clip and renormalise.
    let mut x: Vec<f64> = solver.solution.x.iter().map(|v| v.max(0.0)).collect();
    let sum: f64 = x.iter().sum();
    if sum.is_nan() || sum <= 0.0 {
        return Err(Error::Solver("an all-zero mix".into()));
    }
    x.iter_mut().for_each(|v| *v /= sum);
    Ok(x)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chain(services: &[&str]) -> Node {
        Node { service: services[0].into(), stages: services[1..].iter().map(|s| vec![Node::leaf(*s)]).collect() }
    }

    fn catalog() -> BTreeMap<String, Node> {
        [("short", chain(&["gw", "a"])), ("long", chain(&["gw", "a", "b", "c", "b"])), ("other", chain(&["gw", "d"]))]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .collect()
    }

    /// Calls per second of each service at `rps` requests per second of `mix`.
    fn counters(mix: &[(&str, f64)], rps: f64) -> BTreeMap<&'static str, f64> {
        let cat = catalog();
        let mut out = BTreeMap::new();
        for (g, share) in mix {
            for (service, calls) in cat[*g].calls() {
                let s: &'static str = ["gw", "a", "b", "c", "d"].into_iter().find(|x| *x == service).expect("known");
                *out.entry(s).or_insert(0.0) += share * rps * f64::from(calls);
            }
        }
        out
    }

    #[test]
    fn exact_counters_give_back_the_mix() {
        let truth = [("short", 0.6), ("long", 0.3), ("other", 0.1)];
        let est = estimate(&catalog(), &counters(&truth, 250.0), 250.0).expect("fits");
        for (g, share) in truth {
            assert!((est.mix[g] - share).abs() < 1e-5, "{g}: {} against {share}", est.mix[g]);
        }
        assert!(est.unexplained < 1e-5, "{}", est.unexplained);
    }

    #[test]
    fn an_absent_graph_gets_no_share_and_services_in_no_graph_do_not_move_the_mix() {
        let mut c = counters(&[("short", 0.75), ("long", 0.25)], 100.0);
        let clean = estimate(&catalog(), &c, 100.0).expect("fits");
        assert!(clean.mix.get("other").copied().unwrap_or(0.0) < 1e-6, "{:?}", clean.mix);
        assert!((clean.mix["long"] - 0.25).abs() < 1e-5, "{:?}", clean.mix);
        c.insert("not-in-any-graph", 450.0);
        let est = estimate(&catalog(), &c, 100.0).expect("fits");
        assert_eq!(est.mix, clean.mix);
        // 4.5 of 7.25 calls per request (the mix's 2.75 and the 4.5 outside).
        assert!((est.unexplained - 4.5 / 7.25).abs() < 1e-5, "{}", est.unexplained);
    }

    #[test]
    fn calls_of_a_graph_missing_from_the_catalog_are_unexplained() {
        let mut cat = catalog();
        let c = counters(&[("short", 0.5), ("long", 0.5)], 100.0);
        cat.remove("long");
        let est = estimate(&cat, &c, 100.0).expect("fits");
        // The long graph's calls of b and c (1.5 of 3.5 calls per request) fit no graph left.
        assert!((est.unexplained - 1.5 / 3.5).abs() < 1e-5, "{}", est.unexplained);
        assert!(clean_fit(&catalog(), &c) < 1e-5);
    }

    fn clean_fit(cat: &BTreeMap<String, Node>, c: &BTreeMap<&str, f64>) -> f64 {
        estimate(cat, c, 100.0).expect("fits").unexplained
    }

    #[test]
    fn bad_input_names_the_field() {
        let c = counters(&[("short", 1.0)], 10.0);
        let field = |r: Result<Estimate, Error>| match r {
            Err(Error::Invalid { field, .. }) => field,
            other => panic!("{other:?}"),
        };
        assert_eq!(field(estimate(&catalog(), &c, 0.0)), "entry_rps");
        assert_eq!(field(estimate(&catalog(), &c, f64::NAN)), "entry_rps");
        assert_eq!(field(estimate(&BTreeMap::new(), &c, 10.0)), "catalog");
        let mut bad = c.clone();
        bad.insert("a", f64::NAN);
        assert_eq!(field(estimate(&catalog(), &bad, 10.0)), "calls_rps");
    }
}
