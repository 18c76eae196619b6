//! Envoy's `ext_authz` over gRPC (SPEC §9): `envoy.service.auth.v3.Authorization/Check`
//! on the authz listener (h2c, or h2 over `authz.tls`), with the protos of the
//! `envoy-types` crate and tonic's server glue.
//!
//! The original request comes from `attributes.request.http` (method, path with query,
//! host, headers) and the client address from `attributes.source`. Allowed: an
//! `OkHttpResponse` that sets the identity headers (overwriting any the client sent)
//! and `X-Request-Id` on the upstream request, removes `Authorization` and the
//! `api_key` query parameter, adds `RateLimit-*` to the client's response, and puts
//! the key id and org in `dynamic_metadata`. Refused: a `DeniedHttpResponse` with the
//! data plane's status, headers and JSON body.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};

use envoy_types::ext_authz::v3::CheckRequestExt;
use envoy_types::ext_authz::v3::pb::{
    Authorization, AuthorizationServer, CheckRequest, CheckResponse, DeniedHttpResponse,
    HeaderAppendAction, HeaderValue as PbHeaderValue, HeaderValueOption, HttpResponse, HttpStatus,
    OkHttpResponse,
};
use envoy_types::pb::google::protobuf::{Struct, Value, value::Kind};
use envoy_types::pb::google::rpc;
use http::header::{AUTHORIZATION, CONTENT_TYPE, HeaderName, HeaderValue};
use http::{HeaderMap, Method, Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use tonic::codegen::Service;

use super::{Answer, Asked, Authz, answer};
use crate::auth::credential::QUERY_PARAM;
use crate::policy::ip;
use crate::proxy::pipeline::{Mode, Question, Trace};
use crate::proxy::{Body, DataPlane};
use crate::refusal::Refusal;

/// The `dynamic_metadata` fields of an allowed check.
pub const METADATA_KEY_ID: &str = "key_id";
pub const METADATA_ORG: &str = "org";

/// gRPC status codes of a denied check (google.rpc.Code).
const UNAUTHENTICATED: i32 = 16;
const PERMISSION_DENIED: i32 = 7;
const RESOURCE_EXHAUSTED: i32 = 8;
const UNAVAILABLE: i32 = 14;
const INVALID_ARGUMENT: i32 = 3;

/// The check service of one connection.
pub struct Check {
    authz: Authz,
    peer: SocketAddr,
}

/// The tonic server for one connection from `peer`.
pub fn server(authz: Authz, peer: SocketAddr) -> AuthorizationServer<Check> {
    AuthorizationServer::new(Check { authz, peer })
}

/// Whether a request on the authz listener is gRPC.
pub fn is_grpc<B>(req: &Request<B>) -> bool {
    req.headers()
        .get(CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"))
}

/// Serves one gRPC request with tonic.
pub async fn call(
    mut server: AuthorizationServer<Check>,
    req: Request<Incoming>,
) -> Response<Body> {
    match server.call(req).await {
        Ok(resp) => resp.map(|b| b.map_err(Into::into).boxed_unsync()),
        Err(never) => match never {},
    }
}

#[tonic::async_trait]
impl Authorization for Check {
    async fn check(
        &self,
        request: tonic::Request<CheckRequest>,
    ) -> Result<tonic::Response<CheckResponse>, tonic::Status> {
        let dp = self.authz.data_plane();
        let req = request.into_inner();
        let described = describe(&req);
        let method = described
            .as_ref()
            .map_or(Method::POST, |d| d.method.clone());
        let trace = Trace::start(Mode::Grpc, &method, &HeaderMap::new());
        let question = match &described {
            Ok(d) => {
                let (path, query) = match d.target.split_once('?') {
                    Some((p, q)) => (p, Some(q)),
                    None => (d.target.as_str(), None),
                };
                Ok(Question {
                    method: &d.method,
                    host: d.host.as_deref(),
                    path,
                    query,
                    headers: &d.headers,
                    client: d.client,
                    failure_ip: d.client,
                    orgs: None,
                })
            }
            Err(r) => Err(r.clone()),
        };
        let a = answer(&dp, question.map(Asked::Route), trace, self.peer.ip()).await;
        Ok(tonic::Response::new(check_response(&dp, &a)))
    }
}

/// The original request as Envoy describes it.
pub struct Described {
    pub method: Method,
    /// Path and query, as Envoy's `path` attribute.
    pub target: String,
    pub host: Option<String>,
    pub headers: HeaderMap,
    pub client: Option<IpAddr>,
}

/// Reads `attributes.request.http` and `attributes.source`.
pub fn describe(req: &CheckRequest) -> Result<Described, Refusal> {
    let http = req
        .attributes
        .as_ref()
        .and_then(|a| a.request.as_ref())
        .and_then(|r| r.http.as_ref())
        .ok_or(Refusal::BadRequest(
            "the check request does not describe an HTTP request (attributes.request.http)",
        ))?;
    let method = Method::from_bytes(http.method.as_bytes())
        .map_err(|_| Refusal::BadRequest("the check request has no valid HTTP method"))?;
    if !http.path.starts_with('/') {
        return Err(Refusal::BadRequest(
            "the check request's path must start with /",
        ));
    }
    let mut headers = HeaderMap::new();
    for (name, value) in &http.headers {
        // Pseudo-headers (`:authority`, `:path`, …) are described by the fields above.
        if name.starts_with(':') {
            continue;
        }
        let name = HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| Refusal::BadRequest("the check request has a malformed header name"))?;
        let value = HeaderValue::from_str(value)
            .map_err(|_| Refusal::BadRequest("the check request has a malformed header value"))?;
        headers.append(name, value);
    }
    let client = req
        .get_client_address()
        .map(|a| {
            a.parse::<IpAddr>()
                .map(ip::canonical)
                .map_err(|_| Refusal::BadRequest("the check request's source address is malformed"))
        })
        .transpose()?;
    Ok(Described {
        method,
        target: http.path.clone(),
        host: (!http.host.is_empty()).then(|| http.host.clone()),
        headers,
        client,
    })
}

fn option(name: &str, value: &[u8], action: HeaderAppendAction) -> HeaderValueOption {
    #[allow(deprecated)]
    HeaderValueOption {
        header: Some(PbHeaderValue {
            key: name.to_string(),
            value: String::from_utf8_lossy(value).into_owned(),
            raw_value: Vec::new(),
        }),
        append: None,
        append_action: action.into(),
        keep_empty_value: false,
    }
}

/// The `CheckResponse` for an answer.
pub fn check_response(dp: &DataPlane, a: &Answer) -> CheckResponse {
    let status = a.response.status();
    let headers = a.response.headers();
    let overwrite = HeaderAppendAction::OverwriteIfExistsOrAdd;
    match a.key.as_deref().filter(|_| a.allowed) {
        Some(key) => {
            let to_upstream = [
                &dp.identity.org,
                &dp.identity.key_id,
                &dp.identity.scopes,
                &dp.identity.environment,
            ];
            let mut ok = OkHttpResponse::default();
            for name in to_upstream
                .into_iter()
                .chain([&HeaderName::from_static("x-request-id")])
            {
                if let Some(v) = headers.get(name) {
                    ok.headers
                        .push(option(name.as_str(), v.as_bytes(), overwrite));
                }
            }
            for (name, v) in headers {
                if name.as_str().starts_with("ratelimit-") {
                    ok.response_headers_to_add
                        .push(option(name.as_str(), v.as_bytes(), overwrite));
                }
            }
            ok.headers_to_remove
                .push(AUTHORIZATION.as_str().to_string());
            ok.query_parameters_to_remove.push(QUERY_PARAM.to_string());
            let text = |s: &str| Value {
                kind: Some(Kind::StringValue(s.to_string())),
            };
            let metadata = Struct {
                fields: HashMap::from([
                    (METADATA_KEY_ID.to_string(), text(&key.id)),
                    (METADATA_ORG.to_string(), text(&key.org)),
                ]),
            };
            CheckResponse {
                status: Some(rpc::Status {
                    code: 0,
                    message: String::new(),
                    details: Vec::new(),
                }),
                http_response: Some(HttpResponse::OkResponse(ok)),
                dynamic_metadata: Some(metadata),
            }
        }
        None => {
            let mut denied = DeniedHttpResponse {
                status: Some(HttpStatus {
                    code: i32::from(status.as_u16()),
                }),
                headers: Vec::new(),
                body: String::from_utf8_lossy(a.response.body()).into_owned(),
            };
            for (name, v) in headers {
                if name.as_str() != super::BODY_HEADER {
                    denied
                        .headers
                        .push(option(name.as_str(), v.as_bytes(), overwrite));
                }
            }
            let code = match status {
                StatusCode::UNAUTHORIZED => UNAUTHENTICATED,
                StatusCode::TOO_MANY_REQUESTS => RESOURCE_EXHAUSTED,
                StatusCode::SERVICE_UNAVAILABLE => UNAVAILABLE,
                StatusCode::BAD_REQUEST => INVALID_ARGUMENT,
                _ => PERMISSION_DENIED,
            };
            CheckResponse {
                status: Some(rpc::Status {
                    code,
                    message: a.outcome.to_string(),
                    details: Vec::new(),
                }),
                http_response: Some(HttpResponse::DeniedResponse(denied)),
                dynamic_metadata: None,
            }
        }
    }
}
