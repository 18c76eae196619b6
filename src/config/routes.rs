//! Route checks (SPEC §3 "Routes", §8): names, methods, path patterns, hosts,
//! resources, environments, and the upstream and scope each route names.
//!
//! These rules agree with `policy::routes` and `policy::resource`, which trust them:
//! a pattern that passes here is one matchit accepts and a request path can match;
//! route conflicts between patterns are left to the route table.

use std::collections::BTreeMap;
use std::net::Ipv6Addr;

use http::Method;

use super::raw;
use super::validate::{Problems, check_name, check_rate_limit, known};
use super::{RouteConfig, UpstreamConfig};
use crate::key::Environment;

pub(super) fn routes(
    raw: Vec<raw::RawRoute>,
    upstreams: &BTreeMap<String, UpstreamConfig>,
    scopes: &BTreeMap<String, Vec<String>>,
    p: &mut Problems,
) -> Vec<RouteConfig> {
    let mut names: BTreeMap<String, usize> = BTreeMap::new();
    let mut out = Vec::with_capacity(raw.len());
    for (i, r) in raw.into_iter().enumerate() {
        let field = format!("routes[{i}]");
        if let Err(e) = check_name(&r.name, "") {
            p.add(format!("{field}.name"), format!("route name {e}"));
        } else if let Some(first) = names.get(&r.name) {
            p.add(
                format!("{field}.name"),
                format!(
                    "{:?} is already the name of routes[{first}]; route names must be unique",
                    r.name
                ),
            );
        } else {
            names.insert(r.name.clone(), i);
        }
        out.push(route(&field, r, upstreams, scopes, p));
    }
    out
}

fn route(
    field: &str,
    r: raw::RawRoute,
    upstreams: &BTreeMap<String, UpstreamConfig>,
    scopes: &BTreeMap<String, Vec<String>>,
    p: &mut Problems,
) -> RouteConfig {
    let mut methods: Vec<Method> = Vec::new();
    if r.methods.is_empty() {
        p.add(
            format!("{field}.methods"),
            "needs at least one method, e.g. [GET]",
        );
    }
    for (j, m) in r.methods.iter().enumerate() {
        match method(m) {
            Ok(m) if methods.contains(&m) => p.add(
                format!("{field}.methods[{j}]"),
                format!("{m} is listed twice"),
            ),
            Ok(m) => methods.push(m),
            Err(e) => p.add(format!("{field}.methods[{j}]"), e),
        }
    }

    let params = check_path(&r.path)
        .map_err(|e| p.add(format!("{field}.path"), e))
        .ok();
    // Without a valid path the parameters are unknown; the path error says enough.
    if let (Some(res), Some(params)) = (&r.resource, &params)
        && let Err(e) = check_resource(res, params)
    {
        p.add(format!("{field}.resource"), e);
    }

    let host = r.host.as_deref().and_then(|h| {
        normalize_host(h)
            .map_err(|e| p.add(format!("{field}.host"), e))
            .ok()
    });

    let environments = r
        .environments
        .as_ref()
        .map(|envs| environments(&format!("{field}.environments"), envs, p));

    match upstreams.get(&r.upstream) {
        None => p.add(
            format!("{field}.upstream"),
            format!(
                "unknown upstream {:?}; {}",
                r.upstream,
                known("upstreams", upstreams.keys())
            ),
        ),
        // Test keys only reach a test_url: a test-only route without one is dead.
        Some(u)
            if u.test_url.is_none() && environments.as_deref() == Some(&[Environment::Test]) =>
        {
            p.add(
                format!("{field}.environments"),
                format!(
                    "is [test] but upstream {:?} has no test_url, so no key could use this route",
                    r.upstream
                ),
            );
        }
        Some(_) => {}
    }
    if !scopes.contains_key(&r.scope) {
        p.add(
            format!("{field}.scope"),
            format!(
                "unknown scope {:?}; {}",
                r.scope,
                known("scopes", scopes.keys())
            ),
        );
    }
    if let Some(rl) = &r.rate_limit {
        check_rate_limit(&format!("{field}.rate_limit"), rl, p);
    }

    RouteConfig {
        name: r.name,
        methods,
        path: r.path,
        host,
        upstream: r.upstream,
        scope: r.scope,
        resource: r.resource,
        query_key: r.query_key.unwrap_or(false),
        environments,
        rate_limit: r.rate_limit,
    }
}

fn environments(field: &str, envs: &[String], p: &mut Problems) -> Vec<Environment> {
    if envs.is_empty() {
        p.add(
            field,
            "is empty, so no key could use this route; list live and/or test, or leave it out for both",
        );
    }
    let mut list: Vec<Environment> = Vec::new();
    for (j, e) in envs.iter().enumerate() {
        match Environment::parse(e) {
            Some(env) if list.contains(&env) => {
                p.add(format!("{field}[{j}]"), format!("{e} is listed twice"))
            }
            Some(env) => list.push(env),
            None => p.add(
                format!("{field}[{j}]"),
                format!("expected live or test, got {e:?}"),
            ),
        }
    }
    list
}

fn method(s: &str) -> Result<Method, String> {
    let upper = s.to_ascii_uppercase();
    if upper.is_empty() {
        return Err("is empty".into());
    }
    Method::from_bytes(upper.as_bytes())
        .map_err(|_| format!("{s:?} is not an HTTP method (e.g. GET, POST, PUT, PATCH, DELETE)"))
}

/// Checks a route path pattern; returns its parameter names in order.
fn check_path(path: &str) -> Result<Vec<String>, String> {
    let Some(rest) = path.strip_prefix('/') else {
        return Err(format!("{path:?} must start with /"));
    };
    if path.contains(['?', '#']) {
        return Err(format!(
            "{path:?} contains ? or #; a route path has no query or fragment"
        ));
    }
    let segments: Vec<&str> = rest.split('/').collect();
    let last = segments.len() - 1;
    let mut params: Vec<String> = Vec::new();
    for (i, seg) in segments.iter().enumerate() {
        if seg.is_empty() {
            // `/` alone and a trailing slash are legitimate; `//` never matches,
            // since keygate refuses such request paths.
            if i == last {
                continue;
            }
            return Err(format!(
                "{path:?} has an empty segment (//), which no request can match"
            ));
        }
        if *seg == "." || *seg == ".." {
            return Err(format!(
                "{path:?} has a dot segment, which no request can match"
            ));
        }
        if !seg.contains(['{', '}']) {
            if let Some(c) = seg.chars().find(|c| !is_path_char(*c)) {
                return Err(format!(
                    "{path:?} contains {c:?}, which a request path cannot contain unencoded"
                ));
            }
            check_escapes(path, seg)?;
            continue;
        }
        let inner = seg
            .strip_prefix('{')
            .and_then(|s| s.strip_suffix('}'))
            .ok_or_else(|| {
                format!("{path:?}: a parameter must be a whole segment ({{name}} or {{*name}}), got {seg:?}")
            })?;
        let (name, catch_all) = match inner.strip_prefix('*') {
            Some(n) => (n, true),
            None => (inner, false),
        };
        if catch_all && i != last {
            return Err(format!("{path:?}: {{*{name}}} must be the last segment"));
        }
        let ident = name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !ident {
            return Err(format!(
                "{path:?}: parameter name {name:?} must be letters, digits and _ (not starting with a digit)"
            ));
        }
        if params.iter().any(|p| p == name) {
            return Err(format!("{path:?}: parameter {{{name}}} appears twice"));
        }
        params.push(name.to_string());
    }
    Ok(params)
}

/// `%` must start an escape, and escapes that keygate refuses in request paths
/// (encoded `/`, `\`, `.`, NUL) would make the route unreachable.
fn check_escapes(path: &str, seg: &str) -> Result<(), String> {
    let bytes = seg.as_bytes();
    for (i, _) in seg.match_indices('%') {
        let hex = bytes
            .get(i + 1..i + 3)
            .filter(|h| h.iter().all(u8::is_ascii_hexdigit))
            .ok_or_else(|| format!("{path:?}: '%' must start an escape such as %20"))?;
        let byte = u8::from_str_radix(std::str::from_utf8(hex).unwrap_or("00"), 16).unwrap_or(0);
        if matches!(byte, b'/' | b'\\' | b'.' | 0) {
            return Err(format!(
                "{path:?}: %{} is refused in request paths, so this route could never match",
                String::from_utf8_lossy(hex)
            ));
        }
    }
    Ok(())
}

/// RFC 3986 `pchar` (unreserved, sub-delims, `:`, `@`) plus `%` for encoded octets.
fn is_path_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || "-._~!$&'()*+,;=:@%".contains(c)
}

/// `feed:{feed_id}`: a literal type, `:`, then literal text and path parameters.
fn check_resource(tmpl: &str, params: &[String]) -> Result<(), String> {
    let shape = "a resource is TYPE:ID, e.g. flow:{flow_id}";
    let (ty, id) = tmpl
        .split_once(':')
        .ok_or_else(|| format!("{tmpl:?} has no ':'; {shape}"))?;
    if ty.is_empty()
        || !ty
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    {
        return Err(format!(
            "{tmpl:?}: the type before ':' must be letters, digits, _ or -; {shape}"
        ));
    }
    if id.is_empty() {
        return Err(format!("{tmpl:?} has nothing after ':'; {shape}"));
    }
    if id.contains('*') {
        return Err(format!(
            "{tmpl:?}: '*' is for key resource patterns; a route names one resource"
        ));
    }
    if let Some(c) = id.chars().find(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!("{tmpl:?} contains {c:?}"));
    }
    let mut rest = id;
    while let Some(open) = rest.find(['{', '}']) {
        if rest[open..].starts_with('}') {
            return Err(format!("{tmpl:?} has a '}}' without '{{'"));
        }
        let after = &rest[open + 1..];
        let close = after
            .find('}')
            .ok_or_else(|| format!("{tmpl:?} has a '{{' without '}}'"))?;
        let name = &after[..close];
        if !params.iter().any(|p| p == name) {
            let have = if params.is_empty() {
                "the route's path has no parameters".to_string()
            } else {
                format!(
                    "the route's path has {}",
                    params
                        .iter()
                        .map(|p| format!("{{{p}}}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            };
            return Err(format!("{tmpl:?} uses {{{name}}}, but {have}"));
        }
        rest = &after[close + 1..];
    }
    Ok(())
}

/// Routes match the request's host without its port or a trailing dot, ignoring case.
fn normalize_host(h: &str) -> Result<String, String> {
    if let Some(inner) = h.strip_prefix('[') {
        let ok = inner
            .strip_suffix(']')
            .is_some_and(|ip| ip.parse::<Ipv6Addr>().is_ok());
        return if ok {
            Ok(h.to_ascii_lowercase())
        } else if inner.contains("]:") {
            Err(format!(
                "{h:?}: give the host without a port; routes match the request's host whatever its port"
            ))
        } else {
            Err(format!("{h:?} is not an IPv6 address in brackets"))
        };
    }
    if h.contains(':') {
        return Err(format!(
            "{h:?}: give the host without a port; routes match the request's host whatever its port"
        ));
    }
    // `api.example.com.` is the same host (a fully qualified name).
    let lower = h.strip_suffix('.').unwrap_or(h).to_ascii_lowercase();
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    if lower.is_empty() || lower.len() > 253 || !lower.split('.').all(label_ok) {
        return Err(format!("{h:?} is not a host name (e.g. api.example.com)"));
    }
    Ok(lower)
}

#[cfg(test)]
mod tests {
    use super::check_path;

    /// The patterns accepted here must be ones the route table's matchit accepts.
    #[test]
    fn accepted_patterns_are_valid_matchit_routes() {
        for pattern in [
            "/",
            "/a/",
            "/v1/feeds/{feed_id}/refresh",
            "/a/{*rest}",
            "/{x}/{y}/{*z}",
            "/v1/a:b@c",
            "/a%20b/{id}",
            "/a-b_c.d~e!$&'()*+,;=",
        ] {
            check_path(pattern).unwrap_or_else(|e| panic!("{pattern}: {e}"));
            let mut router = matchit::Router::new();
            router
                .insert(pattern, ())
                .unwrap_or_else(|e| panic!("{pattern}: {e}"));
        }
    }
}
