//! What a key may do: routes, path rules, scopes, resources, endpoints, environments and
//! IP allow-lists. Pure functions and immutable tables built from config: no IO, no
//! clock of its own (the caller passes `now`), so every rule is unit-tested here.
//!
//! The order of checks after the key is found is fixed by SPEC §3:
//! key status → IP → environment → endpoint → resource → scope ([`check_key`], then
//! [`authorize`]).

use std::net::IpAddr;

use jiff::Timestamp;

use crate::key::{Environment, KeyView};
use crate::refusal::Refusal;

pub mod ip;
pub mod path;
pub mod resource;
pub mod routes;
pub mod scopes;

pub use routes::{Matched, Route, RouteConflict, RouteTable};
pub use scopes::ScopeSet;

/// Whether this key may authenticate with the secret that found it (its view records
/// which one was presented).
pub fn check_key(key: &KeyView, now: Timestamp) -> Result<(), Refusal> {
    if key.deleted() || !key.secret_accepted(now) {
        return Err(Refusal::InvalidApiKey("the API key is not valid"));
    }
    match key.status_at(now) {
        crate::key::KeyStatus::Active => Ok(()),
        crate::key::KeyStatus::Revoked => Err(Refusal::RevokedApiKey),
        crate::key::KeyStatus::Expired => Err(Refusal::ExpiredApiKey),
        crate::key::KeyStatus::Suspended => Err(Refusal::SuspendedApiKey),
    }
}

/// What the request is, as far as authorization is concerned.
pub struct Access<'a> {
    pub route: &'a Route,
    /// The route's resource for this request (`flow:abc`), if the route names one.
    pub resource: Option<&'a str>,
    /// `None` when the client address could not be determined (malformed forwarding).
    pub client: Option<IpAddr>,
    /// Whether the route's upstream has a `test_url`.
    pub upstream_has_test: bool,
}

/// IP → environment → endpoint → resource → scope, for a key that passed [`check_key`].
pub fn authorize(key: &KeyView, access: &Access<'_>, scopes: &ScopeSet) -> Result<(), Refusal> {
    check_ip(key, access.client)?;
    if key.environment == Environment::Test && !access.upstream_has_test {
        return Err(Refusal::EnvironmentNotAllowed(
            "test keys may not call this route: its upstream has no test_url",
        ));
    }
    if let Some(envs) = &access.route.environments
        && !envs.contains(&key.environment)
    {
        return Err(Refusal::EnvironmentNotAllowed(
            "this route is closed to keys of this environment",
        ));
    }
    if let Some(endpoints) = key.endpoints()
        && !endpoints.contains(&access.route.name)
    {
        return Err(Refusal::EndpointNotAllowed(access.route.name.clone()));
    }
    if let Some(patterns) = key.resources() {
        match access.resource {
            Some(r) if resource::matches(patterns, r) => {}
            _ => return Err(Refusal::ResourceNotAllowed),
        }
    }
    if !scopes.allows(&key.scopes, &access.route.scope) {
        return Err(Refusal::InsufficientScope(access.route.scope.clone()));
    }
    Ok(())
}

/// A key with an IP allow-list needs a known client address inside it.
fn check_ip(key: &KeyView, client: Option<IpAddr>) -> Result<(), Refusal> {
    match (key.ip_allow(), client) {
        (None, _) => Ok(()),
        (Some(allow), Some(c)) if ip::allowed(c, allow) => Ok(()),
        (Some(_), _) => Err(Refusal::IpNotAllowed),
    }
}

/// The verify API's scope form (SPEC §9): IP (when the key has an allow-list, the
/// client must be given and in it) → every scope of `needed`. The first scope the key
/// lacks is named.
pub fn authorize_scopes(
    key: &KeyView,
    client: Option<IpAddr>,
    needed: &[String],
    scopes: &ScopeSet,
) -> Result<(), Refusal> {
    check_ip(key, client)?;
    match needed.iter().find(|s| !scopes.allows(&key.scopes, s)) {
        Some(missing) => Err(Refusal::InsufficientScope(missing.clone())),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::key::{KeyHash, KeyRecord, PreviousSecret, Shared};

    /// The view the data plane gets of `k` when its current secret is presented.
    fn view(k: &KeyRecord) -> KeyView {
        view_by(k, &KeyHash::of("current"))
    }

    /// The view the data plane gets of `k` when `presented` is presented.
    fn view_by(k: &KeyRecord, presented: &KeyHash) -> KeyView {
        k.clone().into_view(presented, &Shared::default())
    }

    fn key() -> KeyRecord {
        KeyRecord::sample(KeyHash::of("current"))
    }

    fn route(name: &str, scope: &str) -> Route {
        Route {
            name: name.into(),
            upstream: "u".into(),
            scope: scope.into(),
            resource: None,
            query_key: false,
            environments: None,
            rate_limit: None,
        }
    }

    fn scopes() -> ScopeSet {
        let mut d = BTreeMap::new();
        d.insert("read".to_string(), vec![]);
        d.insert("write".to_string(), vec!["read".to_string()]);
        ScopeSet::new(&d)
    }

    fn access<'a>(r: &'a Route, resource: Option<&'a str>) -> Access<'a> {
        Access {
            route: r,
            resource,
            client: Some("127.0.0.1".parse().unwrap()),
            upstream_has_test: false,
        }
    }

    fn code(r: Result<(), Refusal>) -> &'static str {
        r.err().map_or("allowed", |e| e.code())
    }

    #[test]
    fn key_status() {
        let now = Timestamp::now();
        let cur = KeyHash::of("current");
        let mut k = key();
        assert_eq!(code(check_key(&view_by(&k, &cur), now)), "allowed");
        assert_eq!(
            code(check_key(&view_by(&k, &KeyHash::of("x")), now)),
            "invalid_api_key"
        );
        k.previous_secret = Some(PreviousSecret {
            hash: KeyHash::of("old"),
            expires_at: now + jiff::SignedDuration::from_secs(60),
        });
        assert_eq!(
            code(check_key(&view_by(&k, &KeyHash::of("old")), now)),
            "allowed"
        );
        let later = now + jiff::SignedDuration::from_secs(61);
        assert_eq!(
            code(check_key(&view_by(&k, &KeyHash::of("old")), later)),
            "invalid_api_key"
        );
        k.expires_at = Some(now);
        assert_eq!(code(check_key(&view_by(&k, &cur), now)), "expired_api_key");
        k.revoked_at = Some(now);
        assert_eq!(code(check_key(&view_by(&k, &cur), now)), "revoked_api_key");
        k.deleted_at = Some(now);
        assert_eq!(code(check_key(&view_by(&k, &cur), now)), "invalid_api_key");
        let mut s = key();
        s.creator_suspended = true;
        assert_eq!(
            code(check_key(&view_by(&s, &cur), now)),
            "suspended_api_key"
        );
    }

    #[test]
    fn order_and_each_rule() {
        let s = scopes();
        let read = route("list", "read");
        let write = route("refresh", "write");
        let mut k = key();
        assert_eq!(
            code(authorize(&view(&k), &access(&read, None), &s)),
            "allowed"
        );
        assert_eq!(
            code(authorize(&view(&k), &access(&write, None), &s)),
            "insufficient_scope"
        );
        k.scopes = vec!["write".into()];
        assert_eq!(
            code(authorize(&view(&k), &access(&read, None), &s)),
            "allowed"
        );

        k.resources = Some(vec!["feed:*".into()]);
        assert_eq!(
            code(authorize(&view(&k), &access(&read, None), &s)),
            "resource_not_allowed"
        );
        assert_eq!(
            code(authorize(&view(&k), &access(&read, Some("feed:1")), &s)),
            "allowed"
        );
        assert_eq!(
            code(authorize(&view(&k), &access(&read, Some("flow:1")), &s)),
            "resource_not_allowed"
        );

        k.endpoints = Some(vec!["other".into()]);
        assert_eq!(
            code(authorize(&view(&k), &access(&read, Some("feed:1")), &s)),
            "endpoint_not_allowed"
        );

        k.environment = Environment::Test;
        assert_eq!(
            code(authorize(&view(&k), &access(&read, Some("feed:1")), &s)),
            "environment_not_allowed"
        );

        k.ip_allow = Some(vec!["10.0.0.0/8".parse().unwrap()]);
        assert_eq!(
            code(authorize(&view(&k), &access(&read, None), &s)),
            "ip_not_allowed"
        );
        let mut a = access(&read, None);
        a.client = None;
        assert_eq!(code(authorize(&view(&k), &a, &s)), "ip_not_allowed");
    }

    #[test]
    fn route_environments() {
        let s = scopes();
        let mut live_only = route("runs", "read");
        live_only.environments = Some(vec![Environment::Live]);
        let mut k = key();
        k.environment = Environment::Test;
        let mut a = access(&live_only, None);
        a.upstream_has_test = true;
        assert_eq!(
            code(authorize(&view(&k), &a, &s)),
            "environment_not_allowed"
        );
        k.environment = Environment::Live;
        assert_eq!(code(authorize(&view(&k), &a, &s)), "allowed");
    }
}
