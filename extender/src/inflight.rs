//! Pods scored but not yet seen bound: each prioritize call records the pod on the node Derm
//! rated best, so the next pod of a burst sees it there (and spreads, or follows its peers)
//! before the watch reports the binding. Entries leave when the watch sees the pod bound
//! ([`InFlight::forget`]) or after a fixed time to live, whichever comes first.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

#[derive(Debug)]
struct Entry {
    service: Arc<str>,
    node: Arc<str>,
    expires: Instant,
}

#[derive(Debug, Default)]
struct Inner {
    by_pod: HashMap<String, Entry>,
    /// Counts per service key and node.
    counts: HashMap<Arc<str>, HashMap<Arc<str>, u32>>,
    /// (pod, expiry) in insertion order; the time to live is fixed, so expiries are ordered.
    queue: VecDeque<(String, Instant)>,
}

impl Inner {
    fn remove(&mut self, pod: &str) {
        let Some(e) = self.by_pod.remove(pod) else { return };
        if let Some(nodes) = self.counts.get_mut(&e.service) {
            if let Some(n) = nodes.get_mut(&e.node) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    nodes.remove(&e.node);
                }
            }
            if nodes.is_empty() {
                self.counts.remove(&e.service);
            }
        }
    }

    fn expire(&mut self, now: Instant) {
        while let Some((pod, expires)) = self.queue.front() {
            if *expires > now {
                break;
            }
            // Only the entry this queue slot created; a re-scored pod has a later expiry.
            if self.by_pod.get(pod).is_some_and(|e| e.expires == *expires) {
                let pod = pod.clone();
                self.remove(&pod);
            }
            self.queue.pop_front();
        }
    }
}

/// The in-flight cache (a small mutex-guarded map; held for microseconds).
#[derive(Debug)]
pub struct InFlight {
    ttl: Duration,
    inner: Mutex<Inner>,
}

impl InFlight {
    /// A cache whose entries live `ttl`.
    pub fn new(ttl: Duration) -> Self {
        Self { ttl, inner: Mutex::default() }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // The maps stay consistent between statements, so a panic elsewhere cannot corrupt them.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Records `pod` (uid) of `service` as heading to `node`, replacing an earlier record.
    pub fn record(&self, pod: &str, service: Arc<str>, node: Arc<str>, now: Instant) {
        if self.ttl.is_zero() {
            return;
        }
        let mut inner = self.lock();
        inner.expire(now);
        inner.remove(pod);
        let expires = now + self.ttl;
        *inner.counts.entry(service.clone()).or_default().entry(node.clone()).or_default() += 1;
        inner.by_pod.insert(pod.to_owned(), Entry { service, node, expires });
        inner.queue.push_back((pod.to_owned(), expires));
    }

    /// Drops the record of `pod` (it is bound, or gone).
    pub fn forget(&self, pod: &str) {
        self.lock().remove(pod);
    }

    /// In-flight counts per node for each of `services` (same order), at `now`.
    pub fn counts(&self, services: &[&Arc<str>], now: Instant) -> Vec<HashMap<Arc<str>, u32>> {
        let mut inner = self.lock();
        inner.expire(now);
        services.iter().map(|s| inner.counts.get(*s).cloned().unwrap_or_default()).collect()
    }

    /// Number of pods in flight.
    pub fn len(&self) -> usize {
        self.lock().by_pod.len()
    }

    /// Whether nothing is in flight.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_expire_move_and_forget() {
        let cache = InFlight::new(Duration::from_secs(10));
        let t0 = Instant::now();
        let (svc, n1, n2): (Arc<str>, Arc<str>, Arc<str>) = ("s".into(), "n1".into(), "n2".into());
        cache.record("p1", svc.clone(), n1.clone(), t0);
        cache.record("p2", svc.clone(), n1.clone(), t0 + Duration::from_secs(5));
        assert_eq!(cache.counts(&[&svc], t0)[0].get("n1"), Some(&2));
        // p1 re-scored onto n2: moves, and its first expiry no longer removes it.
        cache.record("p1", svc.clone(), n2.clone(), t0 + Duration::from_secs(6));
        let c = cache.counts(&[&svc], t0 + Duration::from_secs(11)).remove(0);
        assert_eq!((c.get("n1"), c.get("n2")), (Some(&1), Some(&1)));
        let c = cache.counts(&[&svc], t0 + Duration::from_secs(15)).remove(0);
        assert_eq!((c.get("n1"), c.get("n2")), (None, Some(&1)));
        cache.forget("p1");
        assert!(cache.is_empty());
        assert!(cache.counts(&[&svc], t0)[0].is_empty());
    }

    #[test]
    fn zero_ttl_records_nothing() {
        let cache = InFlight::new(Duration::ZERO);
        cache.record("p", "s".into(), "n".into(), Instant::now());
        assert!(cache.is_empty());
    }
}
