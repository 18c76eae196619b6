//! The route table: method + host + raw path → the configured route (SPEC §3 "Routes").
//!
//! Matching uses matchit on the raw (still percent-encoded) path, case-sensitively, so
//! a trailing slash is part of the path. Precedence: a literal segment over `{name}`
//! over `{*name}`, compared left to right. matchit refuses some overlapping patterns in
//! one router (`/a/{x}` beside `/a/{*rest}`), so each method has a short stack of
//! routers, every route going into the first that accepts it; a lookup asks each and
//! keeps the most specific match. Two patterns that differ only in parameter names are
//! a real conflict and refused. Routes with a `host` are tried before host-less ones.

use std::collections::HashMap;
use std::sync::Arc;

use http::Method;

use crate::config::RouteConfig;
use crate::key::{Environment, RateLimit};
use crate::policy::resource::ResourceTemplate;

/// A configured route, as the data plane needs it.
#[derive(Debug, Clone)]
pub struct Route {
    pub name: String,
    pub upstream: String,
    pub scope: String,
    pub resource: Option<ResourceTemplate>,
    pub query_key: bool,
    pub environments: Option<Vec<Environment>>,
    pub rate_limit: Option<RateLimit>,
}

/// Routers per method.
#[derive(Default)]
struct ByMethod {
    /// Usually one router; more only where matchit cannot hold overlapping patterns.
    routers: HashMap<Method, Vec<matchit::Router<usize>>, crate::FastHash>,
    /// (method, pattern shape) → route index, to refuse duplicates and name them.
    shapes: HashMap<(Method, Vec<Segment>), usize, crate::FastHash>,
}

/// A pattern segment's kind, ordered by precedence (most specific first).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Segment {
    Literal(String),
    Param,
    CatchAll,
}

impl Segment {
    fn rank(&self) -> u8 {
        match self {
            Segment::Literal(_) => 0,
            Segment::Param => 1,
            Segment::CatchAll => 2,
        }
    }
}

fn shape(pattern: &str) -> Vec<Segment> {
    pattern
        .split('/')
        .map(|s| {
            if s.starts_with("{*") {
                Segment::CatchAll
            } else if s.starts_with('{') && !s.starts_with("{{") {
                Segment::Param
            } else {
                Segment::Literal(s.to_string())
            }
        })
        .collect()
}

/// A route conflict found while building the table: the index of the route that could
/// not be added, and a message naming the route it collides with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteConflict {
    pub index: usize,
    pub message: String,
}

pub struct RouteTable {
    routes: Vec<Arc<Route>>,
    /// Each route's precedence ranks, segment by segment.
    ranks: Vec<Vec<u8>>,
    by_host: HashMap<String, ByMethod, crate::FastHash>,
    any_host: ByMethod,
}

/// The result of a lookup: the route and the path parameters.
pub struct Matched<'t, 'p> {
    pub route: &'t Arc<Route>,
    pub params: matchit::Params<'t, 'p>,
}

impl RouteTable {
    pub fn new(configs: &[RouteConfig]) -> Result<Self, RouteConflict> {
        let mut table = RouteTable {
            routes: Vec::with_capacity(configs.len()),
            ranks: Vec::with_capacity(configs.len()),
            by_host: HashMap::default(),
            any_host: ByMethod::default(),
        };
        for (index, rc) in configs.iter().enumerate() {
            table.routes.push(Arc::new(Route {
                name: rc.name.clone(),
                upstream: rc.upstream.clone(),
                scope: rc.scope.clone(),
                resource: rc.resource.as_deref().map(ResourceTemplate::parse),
                query_key: rc.query_key,
                environments: rc.environments.clone(),
                rate_limit: rc.rate_limit.clone(),
            }));
            let shape = shape(&rc.path);
            table.ranks.push(shape.iter().map(Segment::rank).collect());
            let group = match &rc.host {
                Some(h) => table.by_host.entry(h.clone()).or_default(),
                None => &mut table.any_host,
            };
            for method in &rc.methods {
                if let Some(&other) = group.shapes.get(&(method.clone(), shape.clone())) {
                    return Err(RouteConflict {
                        index,
                        message: format!(
                            "path {:?} for {method} is the same as route {:?} ({:?})",
                            rc.path, configs[other].name, configs[other].path
                        ),
                    });
                }
                group.shapes.insert((method.clone(), shape.clone()), index);
                let stack = group.routers.entry(method.clone()).or_default();
                let mut last_error = None;
                let mut placed = false;
                for router in stack.iter_mut() {
                    match router.insert(rc.path.clone(), index) {
                        Ok(()) => {
                            placed = true;
                            break;
                        }
                        Err(e @ matchit::InsertError::Conflict { .. }) => last_error = Some(e),
                        Err(e) => {
                            return Err(RouteConflict {
                                index,
                                message: format!("path {:?} cannot be routed: {e}", rc.path),
                            });
                        }
                    }
                }
                if !placed {
                    let mut router = matchit::Router::new();
                    router
                        .insert(rc.path.clone(), index)
                        .map_err(|e| RouteConflict {
                            index,
                            message: format!(
                                "path {:?} cannot be routed: {}",
                                rc.path,
                                last_error.map_or(e.to_string(), |l| l.to_string())
                            ),
                        })?;
                    stack.push(router);
                }
            }
        }
        Ok(table)
    }

    /// The route for this request. `host` is the request's Host (any case, may have a
    /// port and a trailing dot: `API.example.com.:8443` is `api.example.com`).
    pub fn lookup<'t, 'p>(
        &'t self,
        method: &Method,
        host: Option<&str>,
        path: &'p str,
    ) -> Option<Matched<'t, 'p>> {
        if !self.by_host.is_empty()
            && let Some(host) = host
        {
            let name = host_name(host);
            let group = self
                .by_host
                .iter()
                .find(|(h, _)| h.eq_ignore_ascii_case(name))
                .map(|(_, g)| g);
            if let Some(m) = group.and_then(|g| self.match_in(g, method, path)) {
                return Some(m);
            }
        }
        self.match_in(&self.any_host, method, path)
    }

    fn match_in<'t, 'p>(
        &'t self,
        group: &'t ByMethod,
        method: &Method,
        path: &'p str,
    ) -> Option<Matched<'t, 'p>> {
        let mut best: Option<(usize, matchit::Params<'t, 'p>)> = None;
        for router in group.routers.get(method)? {
            if let Ok(m) = router.at(path) {
                let better = match &best {
                    None => true,
                    Some((b, _)) => self.ranks.get(*m.value) < self.ranks.get(*b),
                };
                if better {
                    best = Some((*m.value, m.params));
                }
            }
        }
        let (index, params) = best?;
        Some(Matched {
            route: self.routes.get(index)?,
            params,
        })
    }

    pub fn routes(&self) -> &[Arc<Route>] {
        &self.routes
    }
}

/// The host without its port and one trailing dot (SPEC §3: compared without a
/// trailing dot). A bracketed IPv6 literal keeps its brackets, as configured.
pub fn host_name(host: &str) -> &str {
    let name = if host.starts_with('[') {
        host.find(']').map_or(host, |end| &host[..=end])
    } else {
        host.rsplit_once(':').map_or(host, |(h, _)| h)
    };
    name.strip_suffix('.').unwrap_or(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rc(name: &str, methods: &[&str], path: &str, host: Option<&str>) -> RouteConfig {
        RouteConfig {
            name: name.into(),
            methods: methods.iter().map(|m| m.parse().unwrap()).collect(),
            path: path.into(),
            host: host.map(Into::into),
            upstream: "u".into(),
            scope: "read".into(),
            resource: None,
            query_key: false,
            environments: None,
            rate_limit: None,
        }
    }

    fn name(t: &RouteTable, m: &str, host: Option<&str>, p: &str) -> Option<String> {
        t.lookup(&m.parse().unwrap(), host, p)
            .map(|m| m.route.name.clone())
    }

    #[test]
    fn precedence_literal_param_catchall() {
        let t = RouteTable::new(&[
            rc("rest", &["GET"], "/a/{*rest}", None),
            rc("param", &["GET"], "/a/{x}", None),
            rc("lit", &["GET"], "/a/b", None),
            rc("deep", &["GET"], "/a/{x}/c", None),
        ])
        .unwrap();
        assert_eq!(name(&t, "GET", None, "/a/b").as_deref(), Some("lit"));
        assert_eq!(name(&t, "GET", None, "/a/z").as_deref(), Some("param"));
        assert_eq!(name(&t, "GET", None, "/a/z/c").as_deref(), Some("deep"));
        assert_eq!(name(&t, "GET", None, "/a/z/d").as_deref(), Some("rest"));
        assert_eq!(name(&t, "POST", None, "/a/b"), None);
        assert_eq!(name(&t, "GET", None, "/A/b"), None);
        // Left to right: the literal first segment wins over a param there.
        let t = RouteTable::new(&[
            rc("p", &["GET"], "/{x}/b", None),
            rc("c", &["GET"], "/a/{*rest}", None),
        ])
        .unwrap();
        assert_eq!(name(&t, "GET", None, "/a/b").as_deref(), Some("c"));
        assert_eq!(name(&t, "GET", None, "/z/b").as_deref(), Some("p"));
    }

    #[test]
    fn trailing_slash_is_part_of_the_path() {
        let t = RouteTable::new(&[rc("feeds", &["GET"], "/v1/feeds", None)]).unwrap();
        assert!(name(&t, "GET", None, "/v1/feeds").is_some());
        assert!(name(&t, "GET", None, "/v1/feeds/").is_none());
    }

    #[test]
    fn host_routes_first() {
        let t = RouteTable::new(&[
            rc("any", &["GET"], "/x", None),
            rc("api", &["GET"], "/x", Some("api.example.com")),
        ])
        .unwrap();
        assert_eq!(
            name(&t, "GET", Some("API.example.com:8443"), "/x").as_deref(),
            Some("api")
        );
        assert_eq!(name(&t, "GET", Some("other"), "/x").as_deref(), Some("any"));
        for host in [
            "api.example.com.",
            "Api.Example.Com.:8443",
            "api.example.com:1",
        ] {
            assert_eq!(
                name(&t, "GET", Some(host), "/x").as_deref(),
                Some("api"),
                "{host}"
            );
        }
        assert_eq!(
            name(&t, "GET", Some("api.example.com.."), "/x").as_deref(),
            Some("any")
        );
        assert_eq!(name(&t, "GET", None, "/x").as_deref(), Some("any"));
    }

    #[test]
    fn conflicts_name_both_routes() {
        let e = RouteTable::new(&[
            rc("one", &["GET"], "/a/{x}", None),
            rc("two", &["GET", "POST"], "/a/{y}", None),
        ])
        .err()
        .unwrap();
        assert_eq!(e.index, 1);
        assert!(e.message.contains("\"one\""), "{}", e.message);
        let e = RouteTable::new(&[
            rc("one", &["GET"], "/a/b", None),
            rc("two", &["GET"], "/a/b", None),
        ])
        .err()
        .unwrap();
        assert!(e.message.contains("\"one\""), "{}", e.message);
        // Different methods do not conflict.
        assert!(
            RouteTable::new(&[
                rc("one", &["GET"], "/a/{x}", None),
                rc("two", &["POST"], "/a/{y}", None),
            ])
            .is_ok()
        );
    }
}
