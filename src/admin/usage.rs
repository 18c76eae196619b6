//! `GET /v1/orgs/{org}/keys/{id}/usage?from=&to=&granularity=hour|day&format=json|csv`
//! (SPEC §5): a key's usage, deleted keys included, for any role with access to the
//! org.
//!
//! `from` and `to` are RFC 3339 timestamps or UTC dates (`2024-05-01`); `from` is
//! rounded down and `to` up to whole buckets. Defaults: `to` now; `from` 24 hours
//! before `to` (hourly) or 30 days (daily). A range covers at most [`MAX_DAYS`] days.
//! Counts reach the store in batches (every few seconds), so the current bucket may
//! trail the live traffic slightly.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::HeaderValue;
use axum::http::header::{CACHE_CONTROL, CONTENT_DISPOSITION, CONTENT_TYPE};
use axum::response::{IntoResponse, Response};
use jiff::civil::Date;
use jiff::{SignedDuration, Timestamp};

use super::AdminContext;
use super::auth::{Action, Caller};
use super::error::AdminError;
use super::input::{AdminPath, QueryParams};
use super::orgs;
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
}
