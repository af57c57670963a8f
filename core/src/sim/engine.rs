//! The discrete-event engine: Poisson arrivals, FIFO containers with worker threads, calls in
//! sequential stages of parallel calls, container start-up and draining, spans.
//!
//! Timeline of one call to service `i` issued at time `t` (its span starts at `t`):
//! a fixed delay `l0_i` (network and processing, no worker held), then the call joins the
//! FIFO queue of one *ready* container of `i`, picked uniformly at random (as a Kubernetes
//! Service spreads connections), waits for a free worker, is served for a time drawn from
//! the service's law, releases the worker, and only then makes its child calls, stage by
//! stage (the calls of a stage in parallel). The span ends when the last stage returns.
//! Workers are not held while children run (asynchronous RPC), so the span's exclusive time
//! is exactly `l0 + wait + service`: with one worker and exponential service at per-container
//! load `w`, the M/M/1 sojourn gives `l0 + Exp(mu - w/1000)` (1/ms), i.e. Derm's model with
//! `a = -1/1000`, `b = mu`.
//!
//! Determinism: one ChaCha8 stream per concern. Arrivals, request types, arguments and the
//! sampling decision use one stream in arrival order, so every policy sees the same requests;
//! service times and container choice use their own streams. Event ties break by insertion
//! sequence.
//!
//! Nodes and the network ([`Network`]): every container runs on a cluster node (all on node 0
//! with [`Engine::new`]; [`Engine::placed`] takes a placement). A call whose caller runs on
//! another node than the container it is routed to pays `hop_ms` before joining the queue and
//! again before its reply reaches the caller (the ingress call of a request pays nothing).
//! Routing is uniform over the ready containers, or, with `prefer_same_node` (a Service's
//! `trafficDistribution: PreferSameNode`), uniform over those on the caller's node when there
//! are any. Containers added by [`Engine::set_replicas`] go to the node with the fewest live
//! containers (kube-scheduler's spreading).

use std::cmp::Ordering;
use std::collections::{BinaryHeap, VecDeque};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Exp, LogNormal};

use super::Pattern;
use super::app::{App, ServiceTime};
use crate::trace::{Config as TraceConfig, Parent, RefKind, Span, Trace};

const NONE: u32 = u32::MAX;

/// Engine options.
#[derive(Debug, Clone)]
pub struct Config {
    /// Probability that a request's spans are emitted (head sampling).
    pub sampling: f64,
    /// Seconds from a container's creation to ready.
    pub startup_s: f64,
    pub seed: u64,
    /// Unix seconds of scenario time 0 (span timestamps).
    pub origin_s: i64,
    /// Scenario time at which the engine starts, s.
    pub start_s: f64,
    /// Arrivals stop at this time, s.
    pub stop_s: f64,
    /// Latencies are kept for requests starting in `[record_from_s, stop_s)`, in windows.
    pub record_from_s: f64,
    pub window_s: f64,
}

/// The network between cluster nodes.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Network {
    /// Delay of a cross-node call in each direction (request and reply), ms.
    pub hop_ms: f64,
    /// Route to a ready container on the caller's node when there is one.
    pub prefer_same_node: bool,
}

/// Fate of a container.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Starting,
    Ready,
    /// Removed: takes no new calls, finishes its queue, then dies.
    Draining,
    Dead,
}

#[derive(Debug, Clone)]
struct Container {
    service: u32,
    /// Cluster node.
    node: u32,
    name: String,
    state: State,
    busy: u32,
    queue: VecDeque<u32>,
    /// Integral of busy workers over time, worker-ms.
    busy_ms: f64,
    last_change_ms: f64,
    /// Position in the service's `ready` list.
    ready_pos: u32,
    /// Utilisation bookkeeping: `busy_ms` and time at the last sample.
    sample_busy_ms: f64,
    sample_ms: f64,
}

#[derive(Debug, Clone, Default)]
struct ServiceState {
    ready: Vec<u32>,
    starting: Vec<u32>,
    created: u32,
}

#[derive(Debug, Clone, Copy)]
struct Call {
    req: u32,
    node: u32,
    parent: u32,
    container: u32,
    /// Node of the caller's container (NONE for the ingress call).
    from_node: u32,
    /// Routed to another node than the caller's.
    cross: bool,
    start_ms: f64,
    stage: u32,
    pending: u32,
    span_id: u32,
}

#[derive(Debug, Clone, Default)]
struct Request {
    graph: u32,
    start_ms: f64,
    sampled: bool,
    next_span: u32,
    spans: Vec<Span>,
    tags: Vec<(String, String)>,
}

#[derive(Debug, Clone, Copy)]
enum Kind {
    Arrival,
    Enqueue(u32),
    Done(u32),
    Ready(u32),
    /// A cross-node call reaches its container after the hop.
    Arrive(u32),
    /// A cross-node reply reaches the parent call after the hop.
    Reply(u32),
}

#[derive(Debug, Clone, Copy)]
struct Ev {
    t: f64,
    seq: u64,
    kind: Kind,
}

impl PartialEq for Ev {
    fn eq(&self, o: &Self) -> bool {
        self.cmp(o) == Ordering::Equal
    }
}
impl Eq for Ev {}
impl PartialOrd for Ev {
    fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Ev {
    /// Reversed: the heap pops the earliest event, ties by insertion order.
    fn cmp(&self, o: &Self) -> Ordering {
        o.t.total_cmp(&self.t).then_with(|| o.seq.cmp(&self.seq))
    }
}

#[derive(Debug, Clone)]
enum Sampler {
    Exp(Exp<f64>),
    LogNormal(LogNormal<f64>),
}

impl Sampler {
    fn new(time: ServiceTime) -> Self {
        match time {
            ServiceTime::Exponential { mean_ms } => {
                Sampler::Exp(Exp::new(1.0 / mean_ms).unwrap_or_else(|_| unreachable_dist()))
            }
            ServiceTime::LogNormal { mean_ms, cv } => {
                let s2 = (1.0 + cv * cv).ln();
                let mu = mean_ms.ln() - 0.5 * s2;
                Sampler::LogNormal(LogNormal::new(mu, s2.sqrt()).unwrap_or_else(|_| unreachable_lognormal()))
            }
        }
    }

    fn sample(&self, rng: &mut ChaCha8Rng) -> f64 {
        match self {
            Sampler::Exp(d) => d.sample(rng),
            Sampler::LogNormal(d) => d.sample(rng),
        }
    }
}

// App::new validated the parameters; these keep the engine panic-free all the same.
fn unreachable_dist() -> Exp<f64> {
    Exp::new(1.0).unwrap_or_else(|_| unreachable_dist())
}
fn unreachable_lognormal() -> LogNormal<f64> {
    LogNormal::new(0.0, 1.0).unwrap_or_else(|_| unreachable_lognormal())
}

/// Per-window E2E latencies of the requests that started in the window.
#[derive(Debug, Clone, Default)]
pub struct Recorder {
    pub from_ms: f64,
    pub window_ms: f64,
    /// Latencies (ms) per window, in completion order.
    pub windows: Vec<Vec<f32>>,
    /// Requests started in the recorded range that had not finished when the run ended.
    pub unfinished: u64,
}

/// A running simulation of one application under one deployment.
#[derive(Debug)]
pub struct Engine<'a> {
    app: &'a App,
    pattern: &'a Pattern,
    config: Config,
    now_ms: f64,
    heap: BinaryHeap<Ev>,
    seq: u64,
    services: Vec<ServiceState>,
    containers: Vec<Container>,
    calls: Vec<Call>,
    free_calls: Vec<u32>,
    requests: Vec<Request>,
    free_requests: Vec<u32>,
    in_flight: u64,
    arrivals: ChaCha8Rng,
    service_rng: ChaCha8Rng,
    route_rng: ChaCha8Rng,
    samplers: Vec<Sampler>,
    gap: Exp<f64>,
    max_rps: f64,
    alive: u32,
    alive_ms: f64,
    alive_since_ms: f64,
    recorder: Recorder,
    traces: Vec<Trace>,
    trace_seq: u64,
    trace_prefix: u64,
    sampler_param: String,
    /// Requests started (all, recorded or not).
    pub started: u64,
    arrivals_mark: u64,
    /// Calls that arrived at each service since the last [`Engine::take_calls`].
    calls_in: Vec<u64>,
    network: Network,
    /// Live containers per node.
    node_pods: Vec<u32>,
    /// Calls between containers (not ingress) issued in the recorded range: same node, cross.
    hops: (u64, u64),
}

impl<'a> Engine<'a> {
    /// A deployment with `replicas[i]` ready containers of every service at `config.start_s`,
    /// all on one node.
    pub fn new(app: &'a App, pattern: &'a Pattern, config: Config, replicas: &[u32]) -> Self {
        let nodes: Vec<Vec<u32>> = replicas.iter().map(|n| vec![0; (*n).max(1) as usize]).collect();
        Self::placed(app, pattern, config, &nodes, Network::default())
    }

    /// A deployment with one ready container of service `i` on node `n` for every entry `n`
    /// of `nodes[i]` (at least one container per service: an empty list means one on node 0).
    pub fn placed(app: &'a App, pattern: &'a Pattern, config: Config, nodes: &[Vec<u32>], network: Network) -> Self {
        let max_rps = pattern.max_rps().max(1e-9);
        let seed = config.seed;
        let start_ms = config.start_s * 1000.0;
        let n_windows = (((config.stop_s - config.record_from_s) / config.window_s).ceil().max(0.0)) as usize;
        let mut engine = Engine {
            app,
            pattern,
            now_ms: start_ms,
            heap: BinaryHeap::new(),
            seq: 0,
            services: vec![ServiceState::default(); app.services.len()],
            containers: Vec::new(),
            calls: Vec::new(),
            free_calls: Vec::new(),
            requests: Vec::new(),
            free_requests: Vec::new(),
            in_flight: 0,
            arrivals: ChaCha8Rng::seed_from_u64(seed ^ 0x00a1_0000),
            service_rng: ChaCha8Rng::seed_from_u64(seed ^ 0x5e41_0000),
            route_rng: ChaCha8Rng::seed_from_u64(seed ^ 0x0f00_7e00),
            samplers: app.services.iter().map(|s| Sampler::new(s.time)).collect(),
            gap: Exp::new(max_rps / 1000.0).unwrap_or_else(|_| unreachable_dist()),
            max_rps,
            alive: 0,
            alive_ms: 0.0,
            alive_since_ms: start_ms,
            recorder: Recorder {
                from_ms: config.record_from_s * 1000.0,
                window_ms: config.window_s * 1000.0,
                windows: vec![Vec::new(); n_windows],
                unfinished: 0,
            },
            traces: Vec::new(),
            trace_seq: 0,
            trace_prefix: seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1,
            sampler_param: config.sampling.to_string(),
            started: 0,
            arrivals_mark: 0,
            calls_in: vec![0; app.services.len()],
            config,
            network,
            node_pods: vec![0; nodes.iter().flatten().max().map_or(1, |n| *n as usize + 1)],
            hops: (0, 0),
        };
        for (i, on) in nodes.iter().enumerate() {
            for &node in on.iter().chain(on.is_empty().then_some(&0)) {
                let c = engine.create(i as u32, node);
                engine.make_ready(c);
            }
        }
        let first = start_ms + engine.gap.sample(&mut engine.arrivals);
        engine.push(first, Kind::Arrival);
        engine
    }

    pub fn now_s(&self) -> f64 {
        self.now_ms / 1000.0
    }

    fn push(&mut self, t: f64, kind: Kind) {
        self.seq += 1;
        self.heap.push(Ev { t, seq: self.seq, kind });
    }

    /// Process every event before `t_s` and move the clock to `t_s`.
    pub fn run_until(&mut self, t_s: f64) {
        let until = t_s * 1000.0;
        while let Some(ev) = self.heap.peek().copied() {
            if ev.t >= until {
                break;
            }
            self.heap.pop();
            self.now_ms = ev.t;
            match ev.kind {
                Kind::Arrival => self.arrival(),
                Kind::Enqueue(call) => self.enqueue(call),
                Kind::Done(call) => self.done(call),
                Kind::Ready(c) => {
                    if self.containers[c as usize].state == State::Starting {
                        self.make_ready(c);
                    }
                }
                Kind::Arrive(call) => self.arrive(call),
                Kind::Reply(parent) => self.returned(parent),
            }
        }
        self.now_ms = self.now_ms.max(until);
    }

    /// After arrivals stopped: run until no request is in flight or `limit_s` passes.
    pub fn drain(&mut self, limit_s: f64) {
        let step = 1.0;
        let mut t = self.now_s();
        while self.in_flight > 0 && t < limit_s {
            t = (t + step).min(limit_s);
            self.run_until(t);
        }
    }

    // ---- containers ----------------------------------------------------------------

    fn account(&mut self) {
        self.alive_ms += f64::from(self.alive) * (self.now_ms - self.alive_since_ms);
        self.alive_since_ms = self.now_ms;
    }

    fn create(&mut self, service: u32, node: u32) -> u32 {
        self.account();
        self.node_pods[node as usize] += 1;
        let s = &mut self.services[service as usize];
        s.created += 1;
        let name = format!("{}-{:04}", self.app.services[service as usize].name, s.created);
        let id = self.containers.len() as u32;
        self.containers.push(Container {
            service,
            node,
            name,
            state: State::Starting,
            busy: 0,
            queue: VecDeque::new(),
            busy_ms: 0.0,
            last_change_ms: self.now_ms,
            ready_pos: NONE,
            sample_busy_ms: 0.0,
            sample_ms: self.now_ms,
        });
        self.services[service as usize].starting.push(id);
        self.alive += 1;
        id
    }

    fn make_ready(&mut self, c: u32) {
        let svc = self.containers[c as usize].service as usize;
        let s = &mut self.services[svc];
        s.starting.retain(|x| *x != c);
        let ct = &mut self.containers[c as usize];
        ct.state = State::Ready;
        ct.ready_pos = s.ready.len() as u32;
        ct.sample_busy_ms = ct.busy_ms;
        ct.sample_ms = self.now_ms;
        s.ready.push(c);
        // Calls queued while it started (only when no container was ready) start now.
        self.fill(c);
    }

    fn kill(&mut self, c: u32) {
        self.account();
        self.containers[c as usize].state = State::Dead;
        self.node_pods[self.containers[c as usize].node as usize] -= 1;
        self.alive -= 1;
    }

    fn remove_ready(&mut self, c: u32) {
        let svc = self.containers[c as usize].service as usize;
        let pos = self.containers[c as usize].ready_pos as usize;
        let s = &mut self.services[svc];
        s.ready.swap_remove(pos);
        if let Some(&moved) = s.ready.get(pos) {
            self.containers[moved as usize].ready_pos = pos as u32;
        }
        self.containers[c as usize].ready_pos = NONE;
    }

    /// Scale a service to `n` (>= 1) containers that are ready or starting: new ones become
    /// ready after the start-up delay; removals take starting containers first (newest
    /// first), then the newest ready ones, which drain.
    pub fn set_replicas(&mut self, service: usize, n: u32) {
        let n = n.max(1);
        let s = &self.services[service];
        let current = (s.ready.len() + s.starting.len()) as u32;
        if n > current {
            for _ in current..n {
                let node = (0..self.node_pods.len()).min_by_key(|&k| self.node_pods[k]).unwrap_or(0) as u32;
                let c = self.create(service as u32, node);
                let at = self.now_ms + self.config.startup_s * 1000.0;
                self.push(at, Kind::Ready(c));
            }
            return;
        }
        for _ in n..current {
            if let Some(c) = self.services[service].starting.pop() {
                // Nothing can be queued at a starting container while another is ready.
                let queued: Vec<u32> = self.containers[c as usize].queue.drain(..).collect();
                self.kill(c);
                for call in queued {
                    self.enqueue(call);
                }
                continue;
            }
            let newest = self.services[service].ready.iter().copied().max();
            let Some(c) = newest else { break };
            self.remove_ready(c);
            let ct = &mut self.containers[c as usize];
            ct.state = State::Draining;
            if ct.busy == 0 && ct.queue.is_empty() {
                self.kill(c);
            }
        }
    }

    /// Ready and starting containers of a service.
    pub fn replicas(&self, service: usize) -> (u32, u32) {
        let s = &self.services[service];
        (s.ready.len() as u32, s.starting.len() as u32)
    }

    /// Mean CPU utilisation (busy workers / workers) of the service's ready containers since
    /// the previous call (or since each became ready); `None` without ready containers.
    pub fn utilisation(&mut self, service: usize) -> Option<f64> {
        let now = self.now_ms;
        let workers = f64::from(self.app.services[service].workers);
        let ready = self.services[service].ready.clone();
        if ready.is_empty() {
            return None;
        }
        let mut sum = 0.0;
        for c in ready {
            let ct = &mut self.containers[c as usize];
            let busy = ct.busy_ms + f64::from(ct.busy) * (now - ct.last_change_ms);
            let dt = now - ct.sample_ms;
            if dt > 0.0 {
                sum += (busy - ct.sample_busy_ms) / (workers * dt);
            }
            ct.sample_busy_ms = busy;
            ct.sample_ms = now;
        }
        Some(sum / self.services[service].ready.len() as f64)
    }

    /// Container-milliseconds of all live containers (starting, ready, draining) so far.
    pub fn container_ms(&mut self) -> f64 {
        self.account();
        self.alive_ms
    }

    /// Live containers now.
    pub fn alive(&self) -> u32 {
        self.alive
    }

    /// Calls between containers (ingress calls excluded) issued since `record_from_s`:
    /// (same node, cross-node).
    pub fn hops(&self) -> (u64, u64) {
        self.hops
    }

    /// The node each ready container runs on, by service (for placement studies).
    pub fn nodes(&self, service: usize) -> Vec<u32> {
        self.services[service].ready.iter().map(|c| self.containers[*c as usize].node).collect()
    }

    // ---- requests and calls ----------------------------------------------------------

    fn arrival(&mut self) {
        let t = self.now_ms;
        let t_s = t / 1000.0;
        let next = t + self.gap.sample(&mut self.arrivals);
        if next < self.config.stop_s * 1000.0 {
            self.push(next, Kind::Arrival);
        }
        let rps = self.pattern.rps(t_s);
        if self.arrivals.random::<f64>() * self.max_rps >= rps {
            return; // thinned
        }
        let app = self.app;
        let weights = app.type_weights(t_s, rps);
        let ty = pick(&weights, self.arrivals.random::<f64>());
        let mut tags = Vec::new();
        let arg = match &app.types[ty].argument {
            None => 0,
            Some(a) => {
                let k = pick(&a.weights(t_s), self.arrivals.random::<f64>());
                tags.push((a.tag.clone(), a.values[k].clone()));
                k
            }
        };
        let graph = app.graph_of(ty, arg, rps) as u32;
        let sampled = self.arrivals.random::<f64>() < self.config.sampling;
        self.started += 1;
        self.in_flight += 1;
        let req = Request {
            graph,
            start_ms: t,
            sampled,
            next_span: 1,
            spans: Vec::new(),
            tags: if sampled {
                tags.push(("request_type".into(), app.types[ty].name.clone()));
                tags
            } else {
                Vec::new()
            },
        };
        let r = match self.free_requests.pop() {
            Some(r) => {
                self.requests[r as usize] = req;
                r
            }
            None => {
                self.requests.push(req);
                (self.requests.len() - 1) as u32
            }
        };
        self.issue(r, 0, NONE);
    }

    fn issue(&mut self, req: u32, node: u32, parent: u32) {
        let from_node =
            if parent == NONE { NONE } else { self.containers[self.calls[parent as usize].container as usize].node };
        let r = &mut self.requests[req as usize];
        let span_id = r.next_span;
        r.next_span += 1;
        let graph = r.graph as usize;
        let call = Call {
            req,
            node,
            parent,
            container: NONE,
            from_node,
            cross: false,
            start_ms: self.now_ms,
            stage: 0,
            pending: 0,
            span_id,
        };
        let id = match self.free_calls.pop() {
            Some(id) => {
                self.calls[id as usize] = call;
                id
            }
            None => {
                self.calls.push(call);
                (self.calls.len() - 1) as u32
            }
        };
        let svc = self.app.flat[graph].nodes[node as usize].service as usize;
        let at = self.now_ms + self.app.services[svc].l0_ms;
        self.push(at, Kind::Enqueue(id));
    }

    fn enqueue(&mut self, call: u32) {
        let req = self.calls[call as usize].req as usize;
        let graph = self.requests[req].graph as usize;
        let svc = self.app.flat[graph].nodes[self.calls[call as usize].node as usize].service as usize;
        self.calls_in[svc] += 1;
        let from = self.calls[call as usize].from_node;
        let c = self.route(svc, from);
        let cross = from != NONE && self.containers[c as usize].node != from;
        if from != NONE && self.now_ms >= self.recorder.from_ms {
            if cross {
                self.hops.1 += 1;
            } else {
                self.hops.0 += 1;
            }
        }
        let ct = &mut self.calls[call as usize];
        ct.cross = cross;
        if cross && self.network.hop_ms > 0.0 {
            ct.container = c;
            self.push(self.now_ms + self.network.hop_ms, Kind::Arrive(call));
        } else {
            self.join(call, c);
        }
    }

    /// The container a call from a container on node `from` (NONE: ingress) goes to.
    fn route(&mut self, svc: usize, from: u32) -> u32 {
        let s = &self.services[svc];
        if s.ready.is_empty() {
            if let Some(&c) = s.starting.first() {
                return c; // nothing ready yet: wait at the oldest starting container
            }
            // Unreachable while set_replicas keeps >= 1 container; start one to stay safe.
            let c = self.create(svc as u32, 0);
            self.make_ready(c);
            return c;
        }
        if self.network.prefer_same_node && from != NONE {
            let containers = &self.containers;
            let local = s.ready.iter().filter(|c| containers[**c as usize].node == from).count();
            if local > 0 {
                let k = self.route_rng.random_range(0..local);
                let mut on_node = s.ready.iter().filter(|c| containers[**c as usize].node == from);
                return on_node.nth(k).copied().unwrap_or(s.ready[0]);
            }
        }
        s.ready[self.route_rng.random_range(0..s.ready.len())]
    }

    /// A cross-node call reaches the node of its container (or, if that one died on the way,
    /// another container of the service).
    fn arrive(&mut self, call: u32) {
        let mut c = self.calls[call as usize].container;
        if self.containers[c as usize].state == State::Dead {
            let svc = self.containers[c as usize].service as usize;
            c = self.route(svc, NONE);
        }
        self.join(call, c);
    }

    fn join(&mut self, call: u32, c: u32) {
        self.calls[call as usize].container = c;
        self.containers[c as usize].queue.push_back(call);
        self.fill(c);
    }

    fn set_busy(&mut self, c: u32, delta: i32) {
        let now = self.now_ms;
        let ct = &mut self.containers[c as usize];
        ct.busy_ms += f64::from(ct.busy) * (now - ct.last_change_ms);
        ct.last_change_ms = now;
        ct.busy = ct.busy.wrapping_add_signed(delta);
    }

    /// Start queued calls on free workers.
    fn fill(&mut self, c: u32) {
        let svc = self.containers[c as usize].service as usize;
        let workers = self.app.services[svc].workers;
        loop {
            let ct = &self.containers[c as usize];
            if ct.state == State::Starting || ct.state == State::Dead || ct.busy >= workers {
                return;
            }
            let Some(call) = self.containers[c as usize].queue.pop_front() else {
                return;
            };
            self.set_busy(c, 1);
            let dt = self.samplers[svc].sample(&mut self.service_rng);
            self.push(self.now_ms + dt, Kind::Done(call));
        }
    }

    fn done(&mut self, call: u32) {
        let c = self.calls[call as usize].container;
        self.set_busy(c, -1);
        self.fill(c);
        let ct = &self.containers[c as usize];
        if ct.state == State::Draining && ct.busy == 0 && ct.queue.is_empty() {
            self.kill(c);
        }
        self.start_stage(call);
    }

    /// Issue the children of the call's current stage, or complete it after the last.
    fn start_stage(&mut self, call: u32) {
        let Call { req, node, stage, .. } = self.calls[call as usize];
        let graph = self.requests[req as usize].graph as usize;
        let app = self.app;
        let flat = &app.flat[graph];
        if stage >= flat.nodes[node as usize].stage_count {
            self.complete(call);
            return;
        }
        let children = flat.stage(node, stage);
        self.calls[call as usize].pending = children.len() as u32;
        for &child in children {
            self.issue(req, child, call);
        }
    }

    fn complete(&mut self, call: u32) {
        let Call { req, parent, container, start_ms, span_id, node, cross, .. } = self.calls[call as usize];
        self.free_calls.push(call);
        let r = req as usize;
        if self.requests[r].sampled {
            let graph = self.requests[r].graph as usize;
            let svc = self.app.flat[graph].nodes[node as usize].service as usize;
            let (start_us, end_us) = (self.us(start_ms), self.us(self.now_ms));
            let parent_span = (parent != NONE).then(|| self.calls[parent as usize].span_id);
            let span = Span {
                id: u64::from(span_id),
                parent: parent_span.map(|p| Parent { id: u64::from(p), kind: RefKind::ChildOf }),
                service: self.app.services[svc].name.clone(),
                start_us,
                duration_us: end_us - start_us,
                container: Some(self.containers[container as usize].name.clone()),
                tags: Vec::new(),
            };
            self.requests[r].spans.push(span);
        }
        if parent != NONE {
            if cross && self.network.hop_ms > 0.0 {
                self.push(self.now_ms + self.network.hop_ms, Kind::Reply(parent));
            } else {
                self.returned(parent);
            }
            return;
        }
        self.finish_request(req);
    }

    /// A child of `parent` has returned.
    fn returned(&mut self, parent: u32) {
        let p = &mut self.calls[parent as usize];
        p.pending -= 1;
        if p.pending == 0 {
            p.stage += 1;
            self.start_stage(parent);
        }
    }

    fn us(&self, t_ms: f64) -> i64 {
        self.config.origin_s * 1_000_000 + (t_ms * 1000.0).floor() as i64
    }

    fn finish_request(&mut self, req: u32) {
        self.in_flight -= 1;
        self.free_requests.push(req);
        let r = &mut self.requests[req as usize];
        let latency = self.now_ms - r.start_ms;
        let rec = &mut self.recorder;
        if r.start_ms >= rec.from_ms {
            let k = ((r.start_ms - rec.from_ms) / rec.window_ms) as usize;
            if let Some(w) = rec.windows.get_mut(k) {
                w.push(latency as f32);
            }
        }
        if r.sampled {
            let mut spans = std::mem::take(&mut r.spans);
            let tags = std::mem::take(&mut r.tags);
            // The root completes last; move it first and give it the sampler and argument tags.
            if let Some(i) = spans.iter().position(|s| s.parent.is_none()) {
                spans.swap(0, i);
                let root = &mut spans[0];
                root.tags.push((TraceConfig::SAMPLER_TYPE.into(), "probabilistic".into()));
                root.tags.push((TraceConfig::SAMPLER_PARAM.into(), self.sampler_param.clone()));
                root.tags.extend(tags);
            }
            self.trace_seq += 1;
            let id = format!("{:016x}{:016x}", self.trace_prefix, self.trace_seq);
            self.traces.push(Trace { id, spans });
        }
    }

    /// Requests that arrived at the entry since the last call (an ingress request counter).
    pub fn take_arrivals(&mut self) -> u64 {
        let n = self.started - self.arrivals_mark;
        self.arrivals_mark = self.started;
        n
    }

    /// Calls that arrived at each service since the last call (per-service request counters,
    /// as a service mesh exports them).
    pub fn take_calls(&mut self) -> Vec<u64> {
        std::mem::replace(&mut self.calls_in, vec![0; self.app.services.len()])
    }

    /// Calls waiting for a worker now, per service, over all live containers (the pending
    /// requests gauge of a service mesh, e.g. Envoy's `upstream_rq_pending_active`).
    pub fn queued(&self) -> Vec<u64> {
        let mut out = vec![0; self.app.services.len()];
        for c in self.containers.iter().filter(|c| c.state != State::Dead) {
            out[c.service as usize] += c.queue.len() as u64;
        }
        out
    }

    /// Sampled traces completed since the last call.
    pub fn take_traces(&mut self) -> Vec<Trace> {
        std::mem::take(&mut self.traces)
    }

    /// Stop: count unfinished recorded requests and hand back the latencies.
    pub fn finish(mut self) -> Recorder {
        let from = self.recorder.from_ms;
        let stop = self.config.stop_s * 1000.0;
        // Requests still in flight: those not on the free list.
        let mut free = vec![false; self.requests.len()];
        for r in &self.free_requests {
            free[*r as usize] = true;
        }
        self.recorder.unfinished = self
            .requests
            .iter()
            .enumerate()
            .filter(|(i, r)| !free[*i] && r.start_ms >= from && r.start_ms < stop)
            .count() as u64;
        self.recorder
    }
}

/// Index drawn from unnormalised weights with a uniform `u` in [0, 1).
pub(crate) fn pick(weights: &[f64], u: f64) -> usize {
    let total: f64 = weights.iter().sum();
    let mut acc = 0.0;
    let target = u * total;
    for (i, w) in weights.iter().enumerate() {
        acc += w;
        if target < acc {
            return i;
        }
    }
    weights.len().saturating_sub(1)
}
