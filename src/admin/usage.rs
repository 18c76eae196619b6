//! `GET /v1/orgs/{org}/keys/{id}/usage?from=&to=&granularity=hour|day&format=json|csv`
//! (SPEC §5): a key's usage, deleted keys included, for any role with access to the
//! org.
//!
//! `from` and `to` are RFC 3339 timestamps or UTC dates (`2024-05-01`); `from` is
//! rounded down and `to` up to whole buckets. Defaults: `to` now; `from` 24 hours
//! before `to` (hourly) or 30 days (daily). A range covers at most [`MAX_DAYS`] days.
//! Counts reach the store in batches (every few seconds), so the current bucket may
//! trail the live traffic slightly.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::HeaderValue;
use axum::http::header::{CACHE_CONTROL, CONTENT_DISPOSITION, CONTENT_TYPE};
use axum::response::{IntoResponse, Response};
use jiff::civil::Date;
use jiff::{SignedDuration, Timestamp};
use serde::Serialize;

use super::AdminContext;
use super::auth::{Action, Caller};
use super::error::AdminError;
use super::input::{AdminPath, QueryParams};
use super::orgs;
use crate::key::RateLimit;
use crate::limits::Window;
use crate::store::UsageRow;
use crate::store::usage::UsageCounts;
use crate::usage::report::{Granularity, Report};

/// Longest range one request may cover (usage is kept 90 days).
pub const MAX_DAYS: i64 = 100;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    Json,
    Csv,
}

/// The validated query.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Range {
    from: Timestamp,
    to: Timestamp,
    granularity: Granularity,
    format: Format,
}

fn parse_query(q: &QueryParams, now: Timestamp) -> Result<Range, AdminError> {
    q.allow(&["from", "to", "granularity", "format"])?;
    let granularity = match q.get("granularity") {
        None | Some("hour") => Granularity::Hour,
        Some("day") => Granularity::Day,
        Some(_) => return Err(AdminError::invalid("granularity", "must be hour or day")),
    };
    let format = match q.get("format") {
        None | Some("json") => Format::Json,
        Some("csv") => Format::Csv,
        Some(_) => return Err(AdminError::invalid("format", "must be json or csv")),
    };
    let to = match q.get("to") {
        Some(v) => instant("to", v)?,
        None => now,
    };
    let default_span = match granularity {
        Granularity::Hour => SignedDuration::from_hours(24),
        Granularity::Day => SignedDuration::from_hours(24 * 30),
    };
    let from = match q.get("from") {
        Some(v) => instant("from", v)?,
        None => to
            .checked_sub(default_span)
            .map_err(|_| AdminError::invalid("to", "is too early"))?,
    };
    if from >= to {
        return Err(AdminError::invalid("from", "must be before to"));
    }
    let (from, to) = (granularity.floor(from), granularity.ceil(to));
    if to.as_second() - from.as_second() > MAX_DAYS * 86_400 {
        return Err(AdminError::invalid(
            "from",
            format!("the range from..to may cover at most {MAX_DAYS} days"),
        ));
    }
    Ok(Range {
        from,
        to,
        granularity,
        format,
    })
}

/// An RFC 3339 timestamp, or a date meaning its UTC midnight.
fn instant(field: &str, value: &str) -> Result<Timestamp, AdminError> {
    if let Ok(t) = value.parse::<Timestamp>() {
        return Ok(t);
    }
    value
        .parse::<Date>()
        .ok()
        .and_then(|d| d.to_zoned(jiff::tz::TimeZone::UTC).ok())
        .map(|z| z.timestamp())
        .ok_or_else(|| {
            AdminError::invalid(
                field,
                "must be an RFC 3339 timestamp (2024-05-01T00:00:00Z) or a date (2024-05-01)",
            )
        })
}

/// `GET /v1/orgs/{org}/keys/{id}/usage`.
pub async fn get(
    State(ctx): State<Arc<AdminContext>>,
    caller: Caller,
    AdminPath((org_id, id)): AdminPath<(String, String)>,
    query: QueryParams,
) -> Result<Response, AdminError> {
    caller.authorize(Action::Read, Some(&org_id))?;
    let range = parse_query(&query, Timestamp::now())?;
    let org = orgs::load(&ctx, &org_id).await?;
    let key = ctx
        .store
        .key_by_id(&id)
        .await?
        .filter(|k| k.org == org.id)
        .ok_or_else(|| AdminError::not_found(format!("no key `{id}` in org `{}`", org.id)))?;
    let rows = ctx.store.usage(&key.id, range.from, range.to).await?;
    let report = Report::build(&key.id, &rows, range.from, range.to, range.granularity);
    Ok(match range.format {
        Format::Json => Json(report).into_response(),
        Format::Csv => {
            let mut response = report.csv().into_response();
            let h = response.headers_mut();
            h.insert(
                CONTENT_TYPE,
                HeaderValue::from_static("text/csv; charset=utf-8"),
            );
            // Key ids are `key_` and base32 characters: always a valid header value.
            if let Ok(v) =
                HeaderValue::from_str(&format!("attachment; filename=\"usage-{}.csv\"", key.id))
            {
                h.insert(CONTENT_DISPOSITION, v);
            }
            h.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
            response
        }
    })
}

/// Refusal codes counted as failed authentications of a key: the key itself refused
/// (401) or used from an address outside its `ip_allow` (403).
pub const FAILED_AUTH_CODES: &[&str] = &[
    "invalid_api_key",
    "expired_api_key",
    "revoked_api_key",
    "suspended_api_key",
    "ip_not_allowed",
];

/// One window of a key's limits and how much of it is used.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct WindowStanding {
    /// `per_second` … `per_month`, the field name of `rate_limit`.
    pub window: &'static str,
    /// The limit in force: the key's value, else the org's, else the global one.
    pub limit: Option<u64>,
    /// Where `limit` comes from: `key`, `org` or `global`; null without a limit.
    pub source: Option<&'static str>,
    /// Requests admitted in the current window, from the usage rows (hour, day,
    /// month); null for the second and minute windows, which only the limiter counts.
    pub used: Option<u64>,
    /// The end of the current window.
    pub resets_at: Timestamp,
}

/// Refusals and failed authentications of the last 24 hours.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Recent {
    pub requests: u64,
    /// Refusals with one of [`FAILED_AUTH_CODES`].
    pub failed_auth: u64,
    pub failed_auth_by_code: BTreeMap<String, u64>,
    pub rate_limited: u64,
}

/// `GET …/keys/{id}/limits`: where a key stands against each window, and its recent
/// failed authentications.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Standing {
    pub key_id: String,
    pub at: Timestamp,
    pub windows: Vec<WindowStanding>,
    pub last_24h: Recent,
}

fn window_name(w: Window) -> &'static str {
    match w {
        Window::Second => "per_second",
        Window::Minute => "per_minute",
        Window::Hour => "per_hour",
        Window::Day => "per_day",
        Window::Month => "per_month",
    }
}

/// Requests of `c` that the limiter admitted: keygate's refusals never count.
fn admitted(c: &UsageCounts) -> u64 {
    c.requests.saturating_sub(c.denied.values().sum())
}

/// The first hour whose usage [`Standing::build`] reads at `now`.
fn standing_from(now: Timestamp) -> Timestamp {
    let month = Window::Month.span(now).start;
    let day_ago = Granularity::Hour.floor(now).as_second() - 23 * 3_600;
    Timestamp::from_second(month.min(day_ago)).unwrap_or(now)
}

impl Standing {
    /// Pure: from the key's, org's and global limits and the usage rows since
    /// [`standing_from`]. Usage reaches the store in batches, so `used` may trail the
    /// live count by a few seconds.
    pub fn build(
        key_id: &str,
        key: Option<&RateLimit>,
        org: Option<&RateLimit>,
        global: &RateLimit,
        rows: &[UsageRow],
        now: Timestamp,
    ) -> Standing {
        let windows = Window::ALL
            .iter()
            .map(|&w| {
                let (limit, source) = match (
                    key.and_then(|l| w.of(l)),
                    org.and_then(|l| w.of(l)),
                    w.of(global),
                ) {
                    (Some(l), _, _) => (Some(l), Some("key")),
                    (None, Some(l), _) => (Some(l), Some("org")),
                    (None, None, Some(l)) => (Some(l), Some("global")),
                    (None, None, None) => (None, None),
                };
                let span = w.span(now);
                let used = matches!(w, Window::Hour | Window::Day | Window::Month).then(|| {
                    rows.iter()
                        .filter(|r| (span.start..span.end).contains(&r.hour.as_second()))
                        .map(|r| admitted(&r.counts))
                        .sum()
                });
                WindowStanding {
                    window: window_name(w),
                    limit,
                    source,
                    used,
                    resets_at: Timestamp::from_second(span.end).unwrap_or(now),
                }
            })
            .collect();
        let since = Granularity::Hour.floor(now).as_second() - 23 * 3_600;
        let mut recent = Recent::default();
        for row in rows.iter().filter(|r| r.hour.as_second() >= since) {
            recent.requests += row.counts.requests;
            recent.rate_limited += row.counts.rate_limited;
            for (code, n) in &row.counts.denied {
                if FAILED_AUTH_CODES.contains(&code.as_str()) {
                    recent.failed_auth += n;
                    *recent.failed_auth_by_code.entry(code.clone()).or_default() += n;
                }
            }
        }
        Standing {
            key_id: key_id.to_string(),
            at: now,
            windows,
            last_24h: recent,
        }
    }
}

/// `GET /v1/orgs/{org}/keys/{id}/limits` (any role of the org).
pub async fn limits(
    State(ctx): State<Arc<AdminContext>>,
    caller: Caller,
    AdminPath((org_id, id)): AdminPath<(String, String)>,
    query: QueryParams,
) -> Result<Json<Standing>, AdminError> {
    caller.authorize(Action::Read, Some(&org_id))?;
    query.allow(&[])?;
    let org = orgs::load(&ctx, &org_id).await?;
    let key = ctx
        .store
        .key_by_id(&id)
        .await?
        .filter(|k| k.org == org.id)
        .ok_or_else(|| AdminError::not_found(format!("no key `{id}` in org `{}`", org.id)))?;
    let now = Timestamp::now();
    let to =
        Timestamp::from_second(Granularity::Hour.floor(now).as_second() + 3_600).unwrap_or(now);
    let rows = ctx.store.usage(&key.id, standing_from(now), to).await?;
    Ok(Json(Standing::build(
        &key.id,
        key.rate_limit.as_ref(),
        org.rate_limit.as_ref(),
        &ctx.config.rate_limit,
        &rows,
        now,
    )))
}

#[cfg(test)]
mod tests {
    use axum::extract::FromRequestParts;
    use axum::http::Request;

    use super::*;

    async fn query(q: &str) -> QueryParams {
        let req = Request::builder().uri(format!("/x?{q}")).body(()).unwrap();
        let (mut parts, _) = req.into_parts();
        QueryParams::from_request_parts(&mut parts, &())
            .await
            .unwrap()
    }

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn field(e: AdminError) -> String {
        match e {
            AdminError::Invalid { field, .. } => field,
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn defaults_are_the_last_day_hourly_as_json() {
        let now = ts("2024-05-10T10:30:00Z");
        let r = parse_query(&query("").await, now).unwrap();
        assert_eq!(r.granularity, Granularity::Hour);
        assert_eq!(r.format, Format::Json);
        assert_eq!(r.from, ts("2024-05-09T10:00:00Z"));
        assert_eq!(r.to, ts("2024-05-10T11:00:00Z"));
        let r = parse_query(&query("granularity=day&format=csv").await, now).unwrap();
        assert_eq!(r.from, ts("2024-04-10T00:00:00Z"));
        assert_eq!(r.to, ts("2024-05-11T00:00:00Z"));
        assert_eq!(r.format, Format::Csv);
    }

    #[tokio::test]
    async fn dates_and_timestamps_are_accepted() {
        let now = ts("2024-05-10T10:30:00Z");
        let r = parse_query(
            &query("from=2024-05-01&to=2024-05-03T12:00:00%2B02:00").await,
            now,
        )
        .unwrap();
        assert_eq!(r.from, ts("2024-05-01T00:00:00Z"));
        assert_eq!(r.to, ts("2024-05-03T10:00:00Z"));
    }

    #[tokio::test]
    async fn bad_parameters_name_their_field() {
        let now = ts("2024-05-10T10:30:00Z");
        let rows = [
            ("granularity=week", "granularity"),
            ("format=xml", "format"),
            ("from=yesterday", "from"),
            ("to=2024-13-01", "to"),
            ("from=2024-05-02&to=2024-05-01", "from"),
            ("from=2024-01-01&to=2024-05-01", "from"),
            ("limit=3", "limit"),
        ];
        for (q, want) in rows {
            let e = parse_query(&query(q).await, now).unwrap_err();
            assert_eq!(field(e), want, "{q}");
        }
    }

    #[tokio::test]
    async fn any_role_of_the_org_reads_usage_of_its_keys_even_deleted_ones() {
        use serde_json::json;

        use crate::admin::tests::Harness;
        use crate::store::{UsageBatch, UsageCounts, UsageRow};

        let h = Harness::start().await;
        h.org("acme", json!({})).await;
        h.org("other", json!({})).await;
        let (key, _) = h.read_key("acme").await;
        let id = key["id"].as_str().unwrap();
        let hour = crate::store::usage::hour_of(Timestamp::now());
        let counts = UsageCounts {
            requests: 4,
            successes: 3,
            client_errors: 1,
            denied: [("insufficient_scope".to_string(), 1)]
                .into_iter()
                .collect(),
            routes: [("list-feeds".to_string(), 4)].into_iter().collect(),
            ..UsageCounts::default()
        };
        h.store
            .add_usage(&UsageBatch {
                id: "usb_t".into(),
                rows: vec![UsageRow {
                    key_id: id.to_string(),
                    hour,
                    counts,
                }],
            })
            .await
            .unwrap();
        let (_, viewer) = h.principal("viewer", json!(["acme"]), false).await;
        let (_, outsider) = h.principal("admin", json!(["other"]), false).await;
        let path = format!("/v1/orgs/acme/keys/{id}/usage");

        let r = h.get(&path, &viewer).await;
        assert_eq!(r.status, 200, "{}", r.text);
        assert_eq!(r.body["totals"]["requests"], 4);
        assert_eq!(r.body["totals"]["denied"]["insufficient_scope"], 1);
        assert_eq!(r.body["series"].as_array().unwrap().len(), 25);
        assert_eq!(r.body["top_routes"][0]["route"], "list-feeds");

        let r = h
            .get(&format!("{path}?format=csv&granularity=day"), &viewer)
            .await;
        assert_eq!(r.status, 200);
        assert!(
            r.headers["content-type"]
                .to_str()
                .unwrap()
                .starts_with("text/csv")
        );
        let lines: Vec<&str> = r.text.lines().collect();
        assert!(lines[0].starts_with("start,end,requests"));
        let total: u64 = lines[1..]
            .iter()
            .map(|l| l.split(',').nth(2).unwrap().parse::<u64>().unwrap())
            .sum();
        assert_eq!(total, 4);

        assert_eq!(h.get(&path, &outsider).await.status, 403);
        let r = h.get(&format!("{path}?granularity=minute"), &viewer).await;
        assert_eq!((r.status, r.field()), (422, "granularity"));
        let missing = "/v1/orgs/acme/keys/key_01j0000000000000000000000a/usage";
        assert_eq!(h.get(missing, &viewer).await.status, 404);
        // Another org's key is not found through this org.
        assert_eq!(
            h.get(&format!("/v1/orgs/other/keys/{id}/usage"), &h.owner)
                .await
                .status,
            404
        );

        let r = h
            .delete(&format!("/v1/orgs/acme/keys/{id}"), &h.owner)
            .await;
        assert_eq!(r.status, 204);
        let r = h.get(&path, &viewer).await;
        assert_eq!(r.status, 200);
        assert_eq!(r.body["totals"]["requests"], 4);
    }
    fn row(hour: &str, requests: u64, denied: &[(&str, u64)]) -> UsageRow {
        UsageRow {
            key_id: "key_t".into(),
            hour: ts(hour),
            counts: UsageCounts {
                requests,
                denied: denied.iter().map(|(c, n)| (c.to_string(), *n)).collect(),
                rate_limited: denied
                    .iter()
                    .filter(|(c, _)| *c == "rate_limited" || *c == "quota_exceeded")
                    .map(|(_, n)| n)
                    .sum(),
                ..UsageCounts::default()
            },
        }
    }

    #[test]
    fn standing_resolves_each_window_and_counts_only_admitted_requests() {
        let now = ts("2024-05-10T10:30:00Z");
        let limit = |s: &str| -> RateLimit { serde_json::from_str(s).unwrap() };
        let key = limit(r#"{"per_hour": 100}"#);
        let org = limit(r#"{"per_day": 1000, "per_hour": 5}"#);
        let global = limit(r#"{"per_minute": 60, "per_day": 9}"#);
        let rows = [
            // Last month: in no window.
            row("2024-04-30T23:00:00Z", 500, &[]),
            // This month, not today.
            row("2024-05-02T08:00:00Z", 40, &[("revoked_api_key", 2)]),
            // Yesterday, within the last 24 hours.
            row(
                "2024-05-09T12:00:00Z",
                30,
                &[("ip_not_allowed", 3), ("insufficient_scope", 1)],
            ),
            // Today, an earlier hour.
            row("2024-05-10T03:00:00Z", 20, &[("quota_exceeded", 4)]),
            // This hour.
            row(
                "2024-05-10T10:00:00Z",
                90,
                &[("expired_api_key", 5), ("rate_limited", 6)],
            ),
        ];
        let s = Standing::build("key_t", Some(&key), Some(&org), &global, &rows, now);
        type Row<'a> = (&'a str, Option<u64>, Option<&'a str>, Option<u64>, String);
        let got: Vec<Row> = s
            .windows
            .iter()
            .map(|w| (w.window, w.limit, w.source, w.used, w.resets_at.to_string()))
            .collect();
        let want = vec![
            (
                "per_second",
                None,
                None,
                None,
                "2024-05-10T10:30:01Z".to_string(),
            ),
            (
                "per_minute",
                Some(60),
                Some("global"),
                None,
                "2024-05-10T10:31:00Z".into(),
            ),
            (
                "per_hour",
                Some(100),
                Some("key"),
                Some(79),
                "2024-05-10T11:00:00Z".into(),
            ),
            (
                "per_day",
                Some(1000),
                Some("org"),
                Some(79 + 16),
                "2024-05-11T00:00:00Z".into(),
            ),
            (
                "per_month",
                None,
                None,
                Some(79 + 16 + 26 + 38),
                "2024-06-01T00:00:00Z".into(),
            ),
        ];
        assert_eq!(got, want);
        assert_eq!(s.last_24h.requests, 30 + 20 + 90);
        assert_eq!(s.last_24h.failed_auth, 3 + 5);
        assert_eq!(s.last_24h.rate_limited, 4 + 6);
        let codes: Vec<(&str, u64)> = s
            .last_24h
            .failed_auth_by_code
            .iter()
            .map(|(c, n)| (c.as_str(), *n))
            .collect();
        assert_eq!(codes, [("expired_api_key", 5), ("ip_not_allowed", 3)]);
        // The first hour read covers both the month and the last 24 hours.
        assert_eq!(standing_from(now), ts("2024-05-01T00:00:00Z"));
        assert_eq!(
            standing_from(ts("2024-05-01T05:10:00Z")),
            ts("2024-04-30T06:00:00Z")
        );
    }

    #[tokio::test]
    async fn the_limits_endpoint_answers_any_role_of_the_org() {
        use serde_json::json;

        use crate::admin::tests::Harness;

        let h = Harness::start().await;
        h.org("acme", json!({ "rate_limit": { "per_day": 50 } }))
            .await;
        h.org("other", json!({})).await;
        let (key, _) = h.read_key("acme").await;
        let id = key["id"].as_str().unwrap();
        let (_, viewer) = h.principal("viewer", json!(["acme"]), false).await;
        let (_, outsider) = h.principal("admin", json!(["other"]), false).await;
        let path = format!("/v1/orgs/acme/keys/{id}/limits");
        let r = h.get(&path, &viewer).await;
        assert_eq!(r.status, 200, "{}", r.text);
        assert_eq!(r.body["windows"][3]["window"], "per_day");
        assert_eq!(r.body["windows"][3]["limit"], 50);
        assert_eq!(r.body["windows"][3]["source"], "org");
        assert_eq!(r.body["windows"][3]["used"], 0);
        assert_eq!(r.body["last_24h"]["failed_auth"], 0);
        assert_eq!(h.get(&path, &outsider).await.status, 403);
        let r = h.get(&format!("{path}?from=2024-01-01"), &viewer).await;
        assert_eq!((r.status, r.field()), (422, "from"));
        let missing = "/v1/orgs/acme/keys/key_01j0000000000000000000000a/limits";
        assert_eq!(h.get(missing, &viewer).await.status, 404);
    }
}
