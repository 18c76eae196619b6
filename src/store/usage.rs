//! Usage as stored (SPEC §4 "Usage"): counters per key and UTC hour, written in batches
//! by each replica's usage recorder, kept [`RETENTION_DAYS`] days.
//!
//! A row holds no secret and no raw path: route names come from config and resources
//! are rendered from route templates (`flow:abc123`).

use std::collections::BTreeMap;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

/// Resources kept per key and hour; the rest are summed under [`OTHER`].
pub const RESOURCES_PER_HOUR: usize = 100;
/// Where resources outside an hour's top [`RESOURCES_PER_HOUR`] are counted. Resources
/// are `type:id`, so no real one is named like this.
pub const OTHER: &str = "other";
/// How long usage is kept.
pub const RETENTION_DAYS: i64 = 90;

/// The counters of one key over some time (an hour as stored, or a sum).
///
/// Every request is counted in `requests` and in at most one of `successes` (status
/// below 400), `client_errors` (4xx, from keygate or the upstream) and
/// `upstream_errors` (5xx from the upstream, and keygate's 502 and 504). `denied`
/// counts keygate's own refusals by code (401, 403, 429, 503 `auth_unavailable`...);
/// `rate_limited` is the part of them that is `rate_limited` or `quota_exceeded`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UsageCounts {
    #[serde(default)]
    pub requests: u64,
    #[serde(default)]
    pub successes: u64,
    #[serde(default)]
    pub client_errors: u64,
    #[serde(default)]
    pub upstream_errors: u64,
    #[serde(default)]
    pub rate_limited: u64,
    /// Refusal code → count.
    #[serde(default)]
    pub denied: BTreeMap<String, u64>,
    /// Route name → requests.
    #[serde(default)]
    pub routes: BTreeMap<String, u64>,
    /// Resource → requests (at most [`RESOURCES_PER_HOUR`] plus [`OTHER`] when stored).
    #[serde(default)]
    pub resources: BTreeMap<String, u64>,
}

impl UsageCounts {
    /// Adds every counter of `other` to this one.
    pub fn add(&mut self, other: &UsageCounts) {
        self.requests += other.requests;
        self.successes += other.successes;
        self.client_errors += other.client_errors;
        self.upstream_errors += other.upstream_errors;
        self.rate_limited += other.rate_limited;
        for (map, from) in [
            (&mut self.denied, &other.denied),
            (&mut self.routes, &other.routes),
            (&mut self.resources, &other.resources),
        ] {
            for (name, n) in from {
                *map.entry(name.clone()).or_default() += n;
            }
        }
    }

    /// Keeps the `max` most requested resources (ties by name) and sums the rest under
    /// [`OTHER`]. Done at every merge, so the top list of an hour with more than `max`
    /// resources is the top as seen at each flush: a close approximation, never an
    /// undercount of the total.
    pub fn cap_resources(&mut self, max: usize) {
        let named = self.resources.len() - usize::from(self.resources.contains_key(OTHER));
        if named <= max {
            return;
        }
        let mut ranked: Vec<(String, u64)> =
            std::mem::take(&mut self.resources).into_iter().collect();
        let mut other = 0;
        ranked.retain(|(name, n)| {
            if name == OTHER {
                other += n;
                false
            } else {
                true
            }
        });
        ranked.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        for (_, n) in ranked.drain(max..) {
            other += n;
        }
        self.resources = ranked.into_iter().collect();
        self.resources.insert(OTHER.to_string(), other);
    }
}

/// One key's counters in one UTC hour.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UsageRow {
    pub key_id: String,
    /// Start of the hour.
    pub hour: Timestamp,
    pub counts: UsageCounts,
}

/// One flush of a replica's counters. A store applies a batch id at most once, so a
/// batch retried after an unclear failure (a timeout after the write) is not counted
/// twice.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UsageBatch {
    /// `usb_<ulid>`.
    pub id: String,
    pub rows: Vec<UsageRow>,
}

/// The start of the UTC hour holding `t`.
pub fn hour_of(t: Timestamp) -> Timestamp {
    let s = t.as_second();
    Timestamp::from_second(s - s.rem_euclid(3_600)).unwrap_or(t)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resources(pairs: &[(&str, u64)]) -> BTreeMap<String, u64> {
        pairs.iter().map(|(k, v)| (k.to_string(), *v)).collect()
    }

    #[test]
    fn add_sums_every_counter() {
        let mut a = UsageCounts {
            requests: 3,
            successes: 2,
            client_errors: 1,
            denied: resources(&[("insufficient_scope", 1)]),
            routes: resources(&[("r", 3)]),
            ..UsageCounts::default()
        };
        let b = UsageCounts {
            requests: 2,
            rate_limited: 1,
            client_errors: 1,
            upstream_errors: 1,
            denied: resources(&[("rate_limited", 1), ("insufficient_scope", 1)]),
            routes: resources(&[("r", 1), ("s", 1)]),
            resources: resources(&[("flow:a", 2)]),
            ..UsageCounts::default()
        };
        a.add(&b);
        assert_eq!(a.requests, 5);
        assert_eq!(a.client_errors, 2);
        assert_eq!(a.upstream_errors, 1);
        assert_eq!(a.rate_limited, 1);
        assert_eq!(
            a.denied,
            resources(&[("insufficient_scope", 2), ("rate_limited", 1)])
        );
        assert_eq!(a.routes, resources(&[("r", 4), ("s", 1)]));
        assert_eq!(a.resources, resources(&[("flow:a", 2)]));
    }

    #[test]
    fn resources_beyond_the_top_go_to_other() {
        let mut c = UsageCounts {
            resources: resources(&[("a:1", 5), ("a:2", 1), ("a:3", 7), ("a:4", 1), ("other", 4)]),
            ..UsageCounts::default()
        };
        c.cap_resources(2);
        assert_eq!(
            c.resources,
            resources(&[("a:1", 5), ("a:3", 7), ("other", 6)])
        );
        let before = c.clone();
        c.cap_resources(2);
        assert_eq!(c, before);
    }

    #[test]
    fn hours_are_utc_hours() {
        let t: Timestamp = "2024-05-01T10:59:59.999Z".parse().unwrap();
        assert_eq!(
            hour_of(t),
            "2024-05-01T10:00:00Z".parse::<Timestamp>().unwrap()
        );
    }
}
