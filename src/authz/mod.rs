//! keygate as the key check of a proxy that is already there (SPEC §9): forward-auth
//! over HTTP at `/v1/authz` (nginx `auth_request`, Traefik `ForwardAuth`, Caddy
//! `forward_auth`), Envoy's `ext_authz` `Check` over gRPC, both on the authz listener,
//! and the verify API of the admin port.
//!
//! Every mode describes the original request as a [`Question`] and runs the data
//! plane's own decision ([`pipeline::decide`], [`pipeline::admit`],
//! [`pipeline::finish`]): same checks, same counting, same access log and metrics. This
//! module only reads descriptions and writes answers:
//!
//! - `forward_auth`: the `X-Original-*` / `X-Forwarded-*` description; 200 or the refusal, with
//!   `X-Keygate-Status`, `X-Keygate-Code` and `Cache-Control: no-store` on every answer.
//! - `grpc`: `CheckRequest` → question; `OkHttpResponse` / `DeniedHttpResponse`.
//! - `verify`: the verify API's JSON (the admin port reaches it through [`Verifier`]).
//!
//! *Invariants:* a decision is never cached by keygate nor cacheable by the asker; a
//! missing or malformed description is a 400, never a guess; the token goes no further
//! than the pipeline's hashing.

use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use bytes::Bytes;
use http::header::{CACHE_CONTROL, HeaderValue};
use http::{HeaderMap, Request, Response};
use hyper::body::Incoming;

use crate::key::KeyView;
use crate::limits::Quota;
use crate::proxy::pipeline::{self, Question, Trace};
use crate::proxy::{Body, DataPlane, forward, respond};
use crate::refusal::Refusal;

pub mod forward_auth;
pub mod grpc;
pub mod verify;

pub use verify::{Verifier, VerifyAnswer, VerifyRequest};

/// The path of forward-auth requests on the authz listener.
pub const AUTHZ_PATH: &str = "/v1/authz";
/// Set on every refusal answer of `/v1/authz`: the refusal's JSON body, so a proxy that
/// cannot pass the body on (nginx `auth_request`) can restore it.
pub const BODY_HEADER: &str = "x-keygate-body";

/// The decisions of the authz listener and the verify API, on the current data plane.
#[derive(Clone)]
pub struct Authz {
    current: Arc<ArcSwap<DataPlane>>,
}

impl Authz {
    pub fn new(current: Arc<ArcSwap<DataPlane>>) -> Self {
        Authz { current }
    }

    /// The authz listener's service for one connection from `peer`: gRPC `Check` for
    /// `application/grpc` requests, forward-auth at [`AUTHZ_PATH`], 404 otherwise.
    pub fn service(
        self,
        peer: SocketAddr,
    ) -> impl hyper::service::Service<
        Request<Incoming>,
        Response = Response<Body>,
        Error = Infallible,
        Future = impl Future<Output = Result<Response<Body>, Infallible>> + Send + 'static,
    > + Send
    + 'static {
        let grpc = grpc::server(self.clone(), peer);
        let authz = self;
        hyper::service::service_fn(move |req: Request<Incoming>| {
            let authz = authz.clone();
            let grpc = grpc.clone();
            async move {
                if grpc::is_grpc(&req) {
                    return Ok(grpc::call(grpc, req).await);
                }
                if req.uri().path() != AUTHZ_PATH {
                    // Not a question: answered, not counted.
                    let mut resp = respond::refusal(&Refusal::NoRoute);
                    let h = resp.headers_mut();
                    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
                    h.insert(
                        "x-request-id",
                        pipeline::request_id(req.headers(), jiff::Timestamp::now()),
                    );
                    return Ok(resp);
                }
                Ok(forward_auth::handle(&authz, peer, req)
                    .await
                    .map(respond::full))
            }
        })
    }

    fn data_plane(&self) -> Arc<DataPlane> {
        self.current.load_full()
    }
}

/// What is asked: a described request (the route checks), or the verify API's scope
/// form.
pub enum Asked<'a> {
    Route(Question<'a>),
    Scopes {
        token: &'a str,
        scopes: &'a [String],
        client: Option<IpAddr>,
        orgs: Option<&'a [String]>,
    },
}

/// An answer, before it is written in the mode's form.
pub struct Answer {
    pub response: Response<Bytes>,
    /// `allowed` or the refusal's code.
    pub outcome: &'static str,
    pub allowed: bool,
    /// The key the request named, once it authenticated (also on a 403 or 429).
    pub key: Option<Arc<KeyView>>,
    /// The rate-limit standing, when a limit applies.
    pub quota: Option<Quota>,
    pub retry_after: Option<Duration>,
}

/// Decides: [`pipeline::decide`], the identity headers, the rate limit, then
/// [`pipeline::finish`]. Allowed: 200, empty body, identity headers, `RateLimit-*`,
/// `X-Request-Id`. Refused: the data plane's response. Both with `X-Keygate-Status`,
/// `X-Keygate-Code` and `Cache-Control: no-store`; refusals also with [`BODY_HEADER`].
pub async fn answer(
    dp: &DataPlane,
    asked: Result<Asked<'_>, Refusal>,
    mut trace: Trace,
    peer: IpAddr,
) -> Answer {
    let decided = match asked {
        Ok(a) => decide(dp, &a, &mut trace).await,
        Err(r) => Err(r),
    };
    let (mut response, outcome, allowed, retry_after) = match decided {
        Ok(headers) => {
            let mut resp = Response::new(Bytes::new());
            *resp.headers_mut() = headers;
            (resp, "allowed", true, None)
        }
        Err(r) => {
            let mut resp = respond::refusal_bytes(&r);
            if let Ok(v) = HeaderValue::from_bytes(resp.body()) {
                resp.headers_mut().insert(BODY_HEADER, v);
            }
            (resp, r.code(), false, r.retry_after())
        }
    };
    let status = response.status().as_u16();
    let h = response.headers_mut();
    h.insert("x-keygate-status", HeaderValue::from(status));
    h.insert("x-keygate-code", HeaderValue::from_static(outcome));
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    let key = trace.key.clone();
    let (response, quota) = pipeline::finish(dp, trace, response, outcome, peer).await;
    Answer {
        response,
        outcome,
        allowed,
        key,
        quota,
        retry_after,
    }
}

async fn decide(
    dp: &DataPlane,
    asked: &Asked<'_>,
    trace: &mut Trace,
) -> Result<HeaderMap, Refusal> {
    let identity = |key: &Arc<KeyView>| -> Result<HeaderMap, Refusal> {
        let mut headers = HeaderMap::with_capacity(8);
        for (name, value) in forward::identity(&dp.identity, key)?.headers() {
            headers.insert(name.clone(), value.clone());
        }
        Ok(headers)
    };
    match asked {
        Asked::Route(q) => {
            let decided = pipeline::decide(dp, q, trace).await?;
            // Built before the limit counts the request: a key whose identity cannot
            // be sent is refused without consuming anything.
            let headers = identity(&decided.key)?;
            pipeline::admit(dp, &decided, trace).await?;
            Ok(headers)
        }
        Asked::Scopes {
            token,
            scopes,
            client,
            orgs,
        } => {
            let key = pipeline::decide_scopes(dp, token, scopes, *client, *orgs, trace).await?;
            identity(&key)
        }
    }
}
