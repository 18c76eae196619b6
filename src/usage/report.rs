//! A key's usage over a time range, as the admin API shows it: totals, a dense series
//! of hourly or daily points (zeros included, so charts and spreadsheets need no gap
//! filling), all routes and the top resources by requests. Pure: built from stored
//! rows.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use jiff::Timestamp;
use serde::Serialize;

use crate::store::UsageRow;
use crate::store::usage::{OTHER, RESOURCES_PER_HOUR, UsageCounts};

/// Resources listed in a report; the rest are summed under `other`.
pub const TOP_RESOURCES: usize = RESOURCES_PER_HOUR;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Granularity {
    Hour,
    Day,
}

impl Granularity {
    pub fn seconds(self) -> i64 {
        match self {
            Granularity::Hour => 3_600,
            Granularity::Day => 86_400,
        }
    }

    /// The start of the bucket holding `t` (UTC hours and days).
    pub fn floor(self, t: Timestamp) -> Timestamp {
        let s = t.as_second();
        Timestamp::from_second(s - s.rem_euclid(self.seconds())).unwrap_or(t)
    }

    /// The first bucket start at or after `t`.
    pub fn ceil(self, t: Timestamp) -> Timestamp {
        let floor = self.floor(t);
        if floor == t && t.subsec_nanosecond() == 0 {
            t
        } else {
            Timestamp::from_second(floor.as_second() + self.seconds()).unwrap_or(t)
        }
    }
}

/// The scalar counters of a period.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Totals {
    pub requests: u64,
    pub successes: u64,
    pub client_errors: u64,
    pub upstream_errors: u64,
    pub rate_limited: u64,
    /// Refusal code → count.
    pub denied: BTreeMap<String, u64>,
}

impl Totals {
    fn add(&mut self, c: &UsageCounts) {
        self.requests += c.requests;
        self.successes += c.successes;
        self.client_errors += c.client_errors;
        self.upstream_errors += c.upstream_errors;
        self.rate_limited += c.rate_limited;
        for (code, n) in &c.denied {
            *self.denied.entry(code.clone()).or_default() += n;
        }
    }

    fn denied_total(&self) -> u64 {
        self.denied.values().sum()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Point {
    pub start: Timestamp,
    #[serde(flatten)]
    pub totals: Totals,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RouteCount {
    pub route: String,
    pub requests: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ResourceCount {
    pub resource: String,
    pub requests: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Report {
    pub key_id: String,
    pub from: Timestamp,
    pub to: Timestamp,
    pub granularity: Granularity,
    pub totals: Totals,
    pub series: Vec<Point>,
    /// Every route called in the range, most requests first.
    pub top_routes: Vec<RouteCount>,
    /// The [`TOP_RESOURCES`] most requested resources, then `other` for the rest.
    pub top_resources: Vec<ResourceCount>,
}

impl Report {
    /// `from` and `to` must be bucket starts (see [`Granularity::floor`] and `ceil`),
    /// `from < to`. Rows outside the range are ignored.
    pub fn build(
        key_id: &str,
        rows: &[UsageRow],
        from: Timestamp,
        to: Timestamp,
        granularity: Granularity,
    ) -> Report {
        let step = granularity.seconds();
        let (first, end) = (from.as_second(), to.as_second());
        let buckets = usize::try_from((end - first).max(0) / step).unwrap_or(0);
        let mut series: Vec<Point> = (0..buckets)
            .filter_map(|i| {
                let start = Timestamp::from_second(first + step * i as i64).ok()?;
                Some(Point {
                    start,
                    totals: Totals::default(),
                })
            })
            .collect();
        let mut totals = Totals::default();
        let mut routes: BTreeMap<&str, u64> = BTreeMap::new();
        let mut resources: BTreeMap<&str, u64> = BTreeMap::new();
        for row in rows {
            let at = row.hour.as_second();
            if at < first || at >= end {
                continue;
            }
            let i = usize::try_from((at - first) / step).unwrap_or(usize::MAX);
            if let Some(p) = series.get_mut(i) {
                p.totals.add(&row.counts);
            }
            totals.add(&row.counts);
            for (r, n) in &row.counts.routes {
                *routes.entry(r).or_default() += n;
            }
            for (r, n) in &row.counts.resources {
                *resources.entry(r).or_default() += n;
            }
        }

        let mut top_routes: Vec<RouteCount> = routes
            .into_iter()
            .map(|(r, n)| RouteCount {
                route: r.to_string(),
                requests: n,
            })
            .collect();
        top_routes.sort_by(|a, b| b.requests.cmp(&a.requests).then(a.route.cmp(&b.route)));

        let mut other = resources.remove(OTHER).unwrap_or(0);
        let mut ranked: Vec<(&str, u64)> = resources.into_iter().collect();
        ranked.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
        if ranked.len() > TOP_RESOURCES {
            other += ranked.drain(TOP_RESOURCES..).map(|(_, n)| n).sum::<u64>();
        }
        let mut top_resources: Vec<ResourceCount> = ranked
            .into_iter()
            .map(|(r, n)| ResourceCount {
                resource: r.to_string(),
                requests: n,
            })
            .collect();
        if other > 0 {
            top_resources.push(ResourceCount {
                resource: OTHER.to_string(),
                requests: other,
            });
        }

        Report {
            key_id: key_id.to_string(),
            from,
            to,
            granularity,
            totals,
            series,
            top_routes,
            top_resources,
        }
    }

    /// The series as CSV: a header row, then one row per bucket. `denied` is the sum
    /// of every refusal code (JSON has them by code).
    pub fn csv(&self) -> String {
        let mut out = String::from(
            "start,end,requests,successes,client_errors,upstream_errors,rate_limited,denied\r\n",
        );
        let step = self.granularity.seconds();
        for p in &self.series {
            let end = Timestamp::from_second(p.start.as_second() + step).unwrap_or(p.start);
            let t = &p.totals;
            // Writing to a String cannot fail.
            let _ = write!(
                out,
                "{},{},{},{},{},{},{},{}\r\n",
                p.start,
                end,
                t.requests,
                t.successes,
                t.client_errors,
                t.upstream_errors,
                t.rate_limited,
                t.denied_total()
            );
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn row(hour: &str, requests: u64, route: &str, resources: &[(&str, u64)]) -> UsageRow {
        UsageRow {
            key_id: "key_a".into(),
            hour: ts(hour),
            counts: UsageCounts {
                requests,
                successes: requests - 1,
                client_errors: 1,
                denied: [("insufficient_scope".to_string(), 1)]
                    .into_iter()
                    .collect(),
                routes: [(route.to_string(), requests)].into_iter().collect(),
                resources: resources.iter().map(|(r, n)| (r.to_string(), *n)).collect(),
                ..UsageCounts::default()
            },
        }
    }

    #[test]
    fn buckets_are_utc_hours_and_days() {
        let t = ts("2024-05-01T10:30:00Z");
        assert_eq!(Granularity::Hour.floor(t), ts("2024-05-01T10:00:00Z"));
        assert_eq!(Granularity::Hour.ceil(t), ts("2024-05-01T11:00:00Z"));
        assert_eq!(Granularity::Day.floor(t), ts("2024-05-01T00:00:00Z"));
        assert_eq!(Granularity::Day.ceil(t), ts("2024-05-02T00:00:00Z"));
        let exact = ts("2024-05-01T00:00:00Z");
        assert_eq!(Granularity::Day.ceil(exact), exact);
        assert_eq!(
            Granularity::Hour.ceil(ts("2024-05-01T10:00:00.5Z")),
            ts("2024-05-01T11:00:00Z")
        );
    }

    #[test]
    fn daily_report_sums_hours_and_fills_gaps() {
        let rows = [
            row("2024-05-01T10:00:00Z", 5, "list", &[("feed:1", 5)]),
            row("2024-05-01T23:00:00Z", 3, "refresh", &[("feed:2", 3)]),
            row("2024-05-03T00:00:00Z", 2, "list", &[("feed:1", 2)]),
            // Outside the range.
            row("2024-05-04T00:00:00Z", 100, "list", &[]),
        ];
        let r = Report::build(
            "key_a",
            &rows,
            ts("2024-05-01T00:00:00Z"),
            ts("2024-05-04T00:00:00Z"),
            Granularity::Day,
        );
        assert_eq!(r.series.len(), 3);
        assert_eq!(
            r.series
                .iter()
                .map(|p| p.totals.requests)
                .collect::<Vec<_>>(),
            vec![8, 0, 2]
        );
        assert_eq!(r.totals.requests, 10);
        assert_eq!(r.totals.denied["insufficient_scope"], 3);
        assert_eq!(
            r.top_routes,
            vec![
                RouteCount {
                    route: "list".into(),
                    requests: 7
                },
                RouteCount {
                    route: "refresh".into(),
                    requests: 3
                }
            ]
        );
        assert_eq!(r.top_resources[0].resource, "feed:1");
        assert_eq!(r.top_resources[0].requests, 7);

        let csv = r.csv();
        let lines: Vec<&str> = csv.lines().collect();
        assert_eq!(lines.len(), 4);
        assert_eq!(
            lines[0],
            "start,end,requests,successes,client_errors,upstream_errors,rate_limited,denied"
        );
        assert_eq!(
            lines[1],
            "2024-05-01T00:00:00Z,2024-05-02T00:00:00Z,8,6,2,0,0,2"
        );
        assert_eq!(
            lines[2],
            "2024-05-02T00:00:00Z,2024-05-03T00:00:00Z,0,0,0,0,0,0"
        );
    }

    #[test]
    fn resources_past_the_top_are_summed_under_other() {
        let many: Vec<(String, u64)> = (0..120).map(|i| (format!("feed:{i:03}"), 1)).collect();
        let refs: Vec<(&str, u64)> = many.iter().map(|(r, n)| (r.as_str(), *n)).collect();
        let mut rows = vec![row("2024-05-01T10:00:00Z", 130, "list", &refs)];
        rows[0].counts.resources.insert(OTHER.into(), 10);
        let r = Report::build(
            "key_a",
            &rows,
            ts("2024-05-01T10:00:00Z"),
            ts("2024-05-01T11:00:00Z"),
            Granularity::Hour,
        );
        assert_eq!(r.top_resources.len(), TOP_RESOURCES + 1);
        let last = r.top_resources.last().unwrap();
        assert_eq!((last.resource.as_str(), last.requests), (OTHER, 30));
        let json = serde_json::to_value(&r).unwrap();
        assert_eq!(json["series"][0]["requests"], 130);
        assert_eq!(json["granularity"], "hour");
    }
}
