//! A bounded cache of decisions with a time to live per entry, shared by the SubjectAccessReview
//! authorizer ([`crate::authz`]) and the TokenReview authenticator ([`crate::auth::token`]).
//!
//! At most `max_entries` are held; when full, expired entries go first, then everything, so a
//! burst of distinct keys cannot grow memory. Errors are never stored (callers store answers).

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Entries expiring at their own deadline.
#[derive(Debug)]
pub struct TtlCache<K, V> {
    max_entries: usize,
    map: Mutex<HashMap<K, (V, Instant)>>,
}

impl<K: Eq + Hash, V: Clone> TtlCache<K, V> {
    /// An empty cache holding at most `max_entries`.
    pub fn new(max_entries: usize) -> Self {
        Self { max_entries, map: Mutex::new(HashMap::new()) }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<K, (V, Instant)>> {
        // A panic while holding the lock leaves a map that is still consistent.
        self.map.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The value stored for `key`, unless it has expired.
    pub fn get(&self, key: &K) -> Option<V> {
        let now = Instant::now();
        self.lock().get(key).filter(|(_, expires)| *expires > now).map(|(v, _)| v.clone())
    }

    /// Stores `value` for `ttl` from now.
    pub fn insert(&self, key: K, value: V, ttl: Duration) {
        let now = Instant::now();
        let mut map = self.lock();
        if map.len() >= self.max_entries {
            map.retain(|_, (_, expires)| *expires > now);
            if map.len() >= self.max_entries {
                map.clear();
            }
        }
        map.insert(key, (value, now + ttl));
    }

    /// Number of entries held (expired ones included until evicted).
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether nothing is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_expire_and_the_size_is_bounded() {
        let cache = TtlCache::new(3);
        cache.insert("a", 1, Duration::from_secs(60));
        cache.insert("z", 0, Duration::ZERO);
        assert_eq!(cache.get(&"a"), Some(1));
        assert_eq!(cache.get(&"z"), None, "a zero ttl is expired at once");
        cache.insert("b", 2, Duration::from_secs(60));
        cache.insert("c", 3, Duration::from_secs(60));
        assert_eq!(cache.len(), 3, "the expired entry went first");
        assert_eq!(cache.get(&"a"), Some(1));
        cache.insert("d", 4, Duration::from_secs(60));
        assert_eq!(cache.len(), 1, "full of live entries: cleared");
        assert_eq!(cache.get(&"d"), Some(4));
    }
}
