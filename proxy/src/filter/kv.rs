//! The per-filter counter and key-value store lent to filters. It outlives
//! every instance (instances are kept warm per caller at most, and are
//! dropped after a fault or 10k calls), so that filters can keep
//! rate-limit state shared by all callers; it is dropped when the filter is
//! reloaded.

use std::{
    collections::HashMap,
    sync::Mutex,
    time::{Duration, Instant},
};

/// Entries one filter may keep. Past this, expired entries are swept and,
/// if still full, new keys are refused (increments return the delta as if
/// new, CAS fails), so a filter cannot exhaust the sidecar's memory.
const MAX_ENTRIES: usize = 100_000;
/// Longest key or value accepted from a filter.
const MAX_ITEM_BYTES: usize = 4096;

#[derive(Debug)]
struct Entry {
    value: String,
    expires: Option<Instant>,
}

impl Entry {
    fn live(&self, now: Instant) -> bool {
        self.expires.is_none_or(|e| e > now)
    }
}

#[derive(Debug, Default)]
pub struct KvStore {
    entries: Mutex<HashMap<String, Entry>>,
}

fn expiry(now: Instant, ttl_ms: u64) -> Option<Instant> {
    (ttl_ms > 0).then(|| now + Duration::from_millis(ttl_ms))
}

impl KvStore {
    pub fn counter_add(&self, key: &str, delta: i64, ttl_ms: u64) -> i64 {
        let now = Instant::now();
        let Ok(mut map) = self.entries.lock() else {
            return delta;
        };
        if let Some(e) = map.get_mut(key).filter(|e| e.live(now)) {
            let next = e.value.parse::<i64>().unwrap_or(0).saturating_add(delta);
            e.value = next.to_string();
            return next;
        }
        if key.len() <= MAX_ITEM_BYTES && has_room(&mut map, now) {
            let entry = Entry {
                value: delta.to_string(),
                expires: expiry(now, ttl_ms),
            };
            map.insert(key.to_string(), entry);
        }
        delta
    }

    pub fn get(&self, key: &str) -> Option<String> {
        let now = Instant::now();
        let map = self.entries.lock().ok()?;
        map.get(key)
            .filter(|e| e.live(now))
            .map(|e| e.value.clone())
    }

    pub fn compare_and_swap(
        &self,
        key: &str,
        expected: Option<&str>,
        value: String,
        ttl_ms: u64,
    ) -> bool {
        if key.len() > MAX_ITEM_BYTES || value.len() > MAX_ITEM_BYTES {
            return false;
        }
        let now = Instant::now();
        let Ok(mut map) = self.entries.lock() else {
            return false;
        };
        let current = map
            .get(key)
            .filter(|e| e.live(now))
            .map(|e| e.value.as_str());
        if current != expected {
            return false;
        }
        if current.is_none() && !has_room(&mut map, now) {
            return false;
        }
        map.insert(
            key.to_string(),
            Entry {
                value,
                expires: expiry(now, ttl_ms),
            },
        );
        true
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.entries.lock().map(|m| m.len()).unwrap_or(0)
    }
}

fn has_room(map: &mut HashMap<String, Entry>, now: Instant) -> bool {
    if map.len() < MAX_ENTRIES {
        return true;
    }
    map.retain(|_, e| e.live(now));
    map.len() < MAX_ENTRIES
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_add_and_expire() {
        let kv = KvStore::default();
        assert_eq!(kv.counter_add("a", 2, 0), 2);
        assert_eq!(kv.counter_add("a", 3, 0), 5);
        assert_eq!(kv.counter_add("t", 1, 1), 1);
        std::thread::sleep(Duration::from_millis(5));
        assert_eq!(kv.counter_add("t", 1, 1), 1, "expired counter starts over");
    }

    #[test]
    fn compare_and_swap_is_conditional() {
        let kv = KvStore::default();
        assert!(kv.compare_and_swap("k", None, "1".into(), 0));
        assert!(!kv.compare_and_swap("k", None, "2".into(), 0));
        assert!(!kv.compare_and_swap("k", Some("9"), "2".into(), 0));
        assert!(kv.compare_and_swap("k", Some("1"), "2".into(), 0));
        assert_eq!(kv.get("k").as_deref(), Some("2"));
        assert!(!kv.compare_and_swap("big", None, "x".repeat(MAX_ITEM_BYTES + 1), 0));
    }

    #[test]
    fn store_is_bounded() {
        let kv = KvStore::default();
        for i in 0..(MAX_ENTRIES + 10) {
            kv.counter_add(&format!("k{i}"), 1, 0);
        }
        assert_eq!(kv.len(), MAX_ENTRIES);
    }
}
