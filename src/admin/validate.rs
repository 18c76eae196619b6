//! Field rules shared by the admin endpoints. Each function takes the JSON name of the
//! field it checks, so that a 422 always names the field (and the list index) at fault.
//!
//! These rules protect the data plane from settings it would read differently than the
//! admin meant: an empty restriction list (which would silently widen a key), a CIDR
//! with host bits set, an IPv4-mapped IPv6 network (the data plane compares such
//! addresses as IPv4), a scope, route or resource type the config does not know.

use std::collections::BTreeSet;

use ipnet::{IpNet, Ipv4Net};
use jiff::{SignedDuration, Timestamp};

use super::error::AdminError;
use crate::config::Config;
use crate::key::RateLimit;

/// Longest `name` of a key, org or principal (SPEC §1: 1–100 characters).
pub const MAX_NAME_CHARS: usize = 100;
/// Longest key `description`.
pub const MAX_DESCRIPTION_CHARS: usize = 1000;
/// Longest `max_key_lifetime_days` and `expires_in_days`: 100 years.
pub const MAX_LIFETIME_DAYS: u32 = 36_500;
/// Longest regenerate grace (SPEC §1: 7 days).
pub const MAX_GRACE_SECONDS: u64 = 7 * 24 * 3600;

/// 1–100 characters, not blank, no control characters.
pub fn name(field: &str, value: String) -> Result<String, AdminError> {
    let chars = value.chars().count();
    if value.trim().is_empty() {
        return Err(AdminError::invalid(field, "must not be empty"));
    }
    if chars > MAX_NAME_CHARS {
        return Err(AdminError::invalid(
            field,
            format!("must be at most {MAX_NAME_CHARS} characters, got {chars}"),
        ));
    }
    if value.chars().any(char::is_control) {
        return Err(AdminError::invalid(
            field,
            "must not contain control characters",
        ));
    }
    Ok(value)
}

/// Up to 1000 characters; an empty description is no description.
pub fn description(field: &str, value: String) -> Result<Option<String>, AdminError> {
    let chars = value.chars().count();
    if chars > MAX_DESCRIPTION_CHARS {
        return Err(AdminError::invalid(
            field,
            format!("must be at most {MAX_DESCRIPTION_CHARS} characters, got {chars}"),
        ));
    }
    if value
        .chars()
        .any(|c| c.is_control() && c != '\n' && c != '\t')
    {
        return Err(AdminError::invalid(
            field,
            "must not contain control characters",
        ));
    }
    Ok(Some(value).filter(|v| !v.trim().is_empty()))
}

/// Org ids appear in paths, audit records and the `X-Org-Id` header: a slug.
pub fn org_id(field: &str, value: String) -> Result<String, AdminError> {
    let ok = (1..=64).contains(&value.len())
        && value
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        && value
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
    if ok {
        Ok(value)
    } else {
        Err(AdminError::invalid(
            field,
            "must be 1 to 64 lowercase letters, digits, `-` or `_`, starting with a letter or digit",
        ))
    }
}

/// A list that, when given, holds at least one entry; duplicates are dropped.
fn non_empty_list(field: &str, values: Vec<String>) -> Result<Vec<String>, AdminError> {
    if values.is_empty() {
        return Err(AdminError::invalid(
            field,
            "must not be empty: leave it out (or null) for no restriction",
        ));
    }
    let mut seen = BTreeSet::new();
    Ok(values
        .into_iter()
        .filter(|v| seen.insert(v.clone()))
        .collect())
}

/// At least one scope, each named in `config.scopes`.
pub fn scopes(config: &Config, values: Vec<String>) -> Result<Vec<String>, AdminError> {
    if values.is_empty() {
        return Err(AdminError::invalid(
            "scopes",
            "must name at least one scope",
        ));
    }
    let values = non_empty_list("scopes", values)?;
    for (i, s) in values.iter().enumerate() {
        if !config.scopes.contains_key(s) {
            let known: Vec<&str> = config.scopes.keys().map(String::as_str).collect();
            return Err(AdminError::invalid(
                format!("scopes[{i}]"),
                format!("unknown scope `{s}`; known scopes: {}", known.join(", ")),
            ));
        }
    }
    Ok(values)
}

/// Route names from `config.routes`.
pub fn endpoints(config: &Config, values: Vec<String>) -> Result<Vec<String>, AdminError> {
    let values = non_empty_list("endpoints", values)?;
    for (i, e) in values.iter().enumerate() {
        if !config.routes.iter().any(|r| &r.name == e) {
            return Err(AdminError::invalid(
                format!("endpoints[{i}]"),
                format!("unknown route `{e}`: endpoints are route names from the config"),
            ));
        }
    }
    Ok(values)
}

/// `type:id` or `type:*`, where `type` is a resource type some route names.
pub fn resources(config: &Config, values: Vec<String>) -> Result<Vec<String>, AdminError> {
    let values = non_empty_list("resources", values)?;
    let templates: Vec<&str> = config
        .routes
        .iter()
        .filter_map(|r| r.resource.as_deref())
        .filter_map(|t| t.split_once(':').map(|(ty, _)| ty))
        .collect();
    // A template whose type is itself a path parameter accepts any type.
    let any_type = templates.iter().any(|t| t.contains('{'));
    for (i, r) in values.iter().enumerate() {
        let field = format!("resources[{i}]");
        let Some((ty, id)) = r.split_once(':') else {
            return Err(AdminError::invalid(
                field,
                format!("`{r}` is not shaped `type:id` or `type:*`"),
            ));
        };
        let type_ok = !ty.is_empty()
            && ty
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
        let id_ok = id == "*"
            || (!id.is_empty()
                && id
                    .chars()
                    .all(|c| !c.is_whitespace() && !c.is_control() && !"*:/".contains(c)));
        if !type_ok || !id_ok {
            return Err(AdminError::invalid(
                field,
                format!(
                    "`{r}` is not shaped `type:id` or `type:*` (no spaces, `/`, `:` or `*` in the id)"
                ),
            ));
        }
        if !any_type && !templates.contains(&ty) {
            let mut known: Vec<&str> = templates.clone();
            known.sort_unstable();
            known.dedup();
            let known = if known.is_empty() {
                "no route names a resource".to_string()
            } else {
                format!("routes name {}", known.join(", "))
            };
            return Err(AdminError::invalid(
                field,
                format!("unknown resource type `{ty}`; {known}"),
            ));
        }
    }
    Ok(values)
}

/// IPv4/IPv6 CIDRs (a bare address means that one address).
pub fn ip_allow(values: Vec<String>) -> Result<Vec<IpNet>, AdminError> {
    let values = non_empty_list("ip_allow", values)?;
    let mut nets: Vec<IpNet> = Vec::with_capacity(values.len());
    for (i, v) in values.iter().enumerate() {
        let field = format!("ip_allow[{i}]");
        let net = match v.parse::<IpNet>() {
            Ok(net) => net,
            Err(_) => match v.parse::<std::net::IpAddr>() {
                Ok(addr) => IpNet::from(addr),
                Err(_) => {
                    return Err(AdminError::invalid(
                        field,
                        format!("`{v}` is not an IPv4 or IPv6 CIDR such as 10.0.0.0/8"),
                    ));
                }
            },
        };
        if net.trunc() != net {
            return Err(AdminError::invalid(
                field,
                format!("`{v}` has host bits set; did you mean {}?", net.trunc()),
            ));
        }
        let net = unmap_ipv4(net);
        if !nets.contains(&net) {
            nets.push(net);
        }
    }
    Ok(nets)
}

/// `::ffff:10.0.0.0/104` → `10.0.0.0/8`: the data plane compares mapped addresses as IPv4.
fn unmap_ipv4(net: IpNet) -> IpNet {
    if let IpNet::V6(v6) = net
        && v6.prefix_len() >= 96
        && let Some(v4) = v6.addr().to_ipv4_mapped()
        && let Ok(v4net) = Ipv4Net::new(v4, v6.prefix_len() - 96)
    {
        return IpNet::V4(v4net);
    }
    net
}

/// Every window that is set is at least 1 (a key is stopped by revoking it, not by a 0).
pub fn rate_limit(field: &str, limit: RateLimit) -> Result<Option<RateLimit>, AdminError> {
    let windows = [
        ("per_second", limit.per_second),
        ("per_minute", limit.per_minute),
        ("per_hour", limit.per_hour),
        ("per_day", limit.per_day),
        ("per_month", limit.per_month),
    ];
    for (name, value) in windows {
        if value == Some(0) {
            return Err(AdminError::invalid(
                format!("{field}.{name}"),
                "must be at least 1 (null for no limit)",
            ));
        }
    }
    Ok(Some(limit).filter(|l| *l != RateLimit::default()))
}

/// 1 to 36500 days.
pub fn lifetime_days(field: &str, days: u32) -> Result<u32, AdminError> {
    if (1..=MAX_LIFETIME_DAYS).contains(&days) {
        Ok(days)
    } else {
        Err(AdminError::invalid(
            field,
            format!("must be from 1 to {MAX_LIFETIME_DAYS} days"),
        ))
    }
}

/// An RFC 3339 timestamp such as `2030-01-31T00:00:00Z`.
pub fn timestamp(field: &str, value: &str) -> Result<Timestamp, AdminError> {
    value.parse::<Timestamp>().map_err(|_| {
        AdminError::invalid(
            field,
            "must be an RFC 3339 timestamp with an offset, such as 2030-01-31T00:00:00Z",
        )
    })
}

fn days_after(now: Timestamp, days: u32) -> Result<Timestamp, AdminError> {
    now.checked_add(SignedDuration::from_hours(i64::from(days) * 24))
        .map_err(|_| AdminError::invalid("expires_in_days", "is too far in the future"))
}

/// How a request asks for an expiry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExpiryRequest {
    /// Neither `expires_at` nor `expires_in_days`.
    Unset,
    /// `expires_at: null`: never expires.
    Never,
    At(Timestamp),
    InDays(u32),
}

/// The expiry to store: in the future, and within the org's `max_key_lifetime_days`
/// from now. With a maximum and nothing asked for, the maximum.
pub fn expiry(
    now: Timestamp,
    request: ExpiryRequest,
    max_days: Option<u32>,
) -> Result<Option<Timestamp>, AdminError> {
    let (field, at) = match request {
        ExpiryRequest::Unset => return max_days.map(|d| days_after(now, d)).transpose(),
        ExpiryRequest::Never => {
            return match max_days {
                None => Ok(None),
                Some(d) => Err(AdminError::invalid(
                    "expires_at",
                    format!("this org's keys must expire within {d} days"),
                )),
            };
        }
        ExpiryRequest::At(at) => ("expires_at", at),
        ExpiryRequest::InDays(days) => (
            "expires_in_days",
            days_after(now, lifetime_days("expires_in_days", days)?)?,
        ),
    };
    if at <= now {
        return Err(AdminError::invalid(field, "is in the past"));
    }
    if let Some(d) = max_days
        && at > days_after(now, d)?
    {
        return Err(AdminError::invalid(
            field,
            format!("is beyond this org's max_key_lifetime_days ({d} days from now)"),
        ));
    }
    Ok(Some(at))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field_of(e: AdminError) -> String {
        match e {
            AdminError::Invalid { field, .. } => field,
            other => panic!("not a 422: {other:?}"),
        }
    }

    #[test]
    fn names() {
        assert!(name("name", "ci deploy".into()).is_ok());
        assert!(name("name", "é".repeat(100)).is_ok());
        assert_eq!(field_of(name("name", "".into()).unwrap_err()), "name");
        assert!(name("name", "  ".into()).is_err());
        assert!(name("name", "x".repeat(101)).is_err());
        assert!(name("name", "a\u{0}b".into()).is_err());
    }

    #[test]
    fn cidrs() {
        let nets = ip_allow(vec![
            "10.0.0.0/8".into(),
            "192.168.1.7".into(),
            "2001:db8::/32".into(),
            "::ffff:10.1.0.0/112".into(),
            "10.0.0.0/8".into(),
        ])
        .unwrap();
        let shown: Vec<String> = nets.iter().map(ToString::to_string).collect();
        assert_eq!(
            shown,
            [
                "10.0.0.0/8",
                "192.168.1.7/32",
                "2001:db8::/32",
                "10.1.0.0/16"
            ]
        );
        assert_eq!(
            field_of(ip_allow(vec!["10.0.0.0/8".into(), "10.0.0.1/8".into()]).unwrap_err()),
            "ip_allow[1]"
        );
        assert_eq!(
            field_of(ip_allow(vec!["nope".into()]).unwrap_err()),
            "ip_allow[0]"
        );
        assert_eq!(
            field_of(ip_allow(vec!["10.0.0.0/33".into()]).unwrap_err()),
            "ip_allow[0]"
        );
        assert_eq!(field_of(ip_allow(vec![]).unwrap_err()), "ip_allow");
    }

    #[test]
    fn expiries() {
        let now: Timestamp = "2030-01-01T00:00:00Z".parse().unwrap();
        let day = SignedDuration::from_hours(24);
        assert_eq!(expiry(now, ExpiryRequest::Unset, None).unwrap(), None);
        assert_eq!(
            expiry(now, ExpiryRequest::Unset, Some(30)).unwrap(),
            Some(now + day * 30)
        );
        assert_eq!(expiry(now, ExpiryRequest::Never, None).unwrap(), None);
        assert!(expiry(now, ExpiryRequest::Never, Some(30)).is_err());
        assert_eq!(
            expiry(now, ExpiryRequest::InDays(30), Some(30)).unwrap(),
            Some(now + day * 30)
        );
        assert_eq!(
            field_of(expiry(now, ExpiryRequest::InDays(31), Some(30)).unwrap_err()),
            "expires_in_days"
        );
        assert_eq!(
            field_of(expiry(now, ExpiryRequest::InDays(0), None).unwrap_err()),
            "expires_in_days"
        );
        assert_eq!(
            field_of(expiry(now, ExpiryRequest::At(now - day), None).unwrap_err()),
            "expires_at"
        );
        assert_eq!(
            field_of(expiry(now, ExpiryRequest::At(now + day * 31), Some(30)).unwrap_err()),
            "expires_at"
        );
    }

    #[test]
    fn rate_limits() {
        let zero = RateLimit {
            per_minute: Some(0),
            ..RateLimit::default()
        };
        assert_eq!(
            field_of(rate_limit("rate_limit", zero).unwrap_err()),
            "rate_limit.per_minute"
        );
        assert_eq!(
            rate_limit("rate_limit", RateLimit::default()).unwrap(),
            None
        );
    }

    #[test]
    fn org_ids() {
        assert!(org_id("id", "acme".into()).is_ok());
        assert!(org_id("id", "acme-2_b".into()).is_ok());
        for bad in ["", "*", "Acme", "-acme", "a/b", &"a".repeat(65)] {
            assert!(org_id("id", bad.to_string()).is_err(), "{bad}");
        }
    }
}
