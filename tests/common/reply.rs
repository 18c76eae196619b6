//! One response type for both clients (reqwest and raw), and the assertions every
//! refusal must pass (SPEC §3).

use serde_json::Value;

#[derive(Clone)]
pub struct Reply {
    pub status: u16,
    pub version: http::Version,
    /// Header names lowercased, duplicates kept, in order.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl std::fmt::Debug for Reply {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let shown = &self.body[..self.body.len().min(500)];
        f.debug_struct("Reply")
            .field("status", &self.status)
            .field("version", &self.version)
            .field("headers", &self.headers)
            .field("body_len", &self.body.len())
            .field("body_start", &String::from_utf8_lossy(shown))
            .finish()
    }
}

impl Reply {
    pub async fn from_reqwest(r: reqwest::Response) -> Self {
        let status = r.status().as_u16();
        let version = r.version();
        let headers = r
            .headers()
            .iter()
            .map(|(n, v)| {
                (
                    n.as_str().to_string(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect();
        let body = r.bytes().await.expect("read response body").to_vec();
        Reply {
            status,
            version,
            headers,
            body,
        }
    }

    pub fn header(&self, name: &str) -> Option<String> {
        self.header_all(name).into_iter().next()
    }

    pub fn header_all(&self, name: &str) -> Vec<String> {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.clone())
            .collect()
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "body of the {} response is not JSON ({e}): {:?}",
                self.status,
                self.text()
            )
        })
    }

    /// `error.code` of a refusal body, if the body is one.
    pub fn error_code(&self) -> Option<String> {
        let v: Value = serde_json::from_slice(&self.body).ok()?;
        v.pointer("/error/code")?.as_str().map(str::to_string)
    }

    pub fn assert_status(&self, status: u16) -> &Self {
        assert_eq!(
            self.status,
            status,
            "expected status {status}, got {} with headers {:?} and body {:?}",
            self.status,
            self.headers,
            self.text()
        );
        self
    }

    /// Asserts a complete keygate refusal: status, JSON body with `error.code` and a
    /// message, `X-Request-Id`, and the `WWW-Authenticate` / `Retry-After` the code needs.
    pub fn assert_refusal(&self, status: u16, code: &str) -> &Self {
        self.assert_status(status);
        let ctype = self.header("content-type").unwrap_or_default();
        assert!(
            ctype.starts_with("application/json"),
            "a refusal is JSON, Content-Type {ctype:?}"
        );
        let body = self.json();
        assert_eq!(
            body.pointer("/error/code").and_then(Value::as_str),
            Some(code),
            "error.code of {body}"
        );
        let message = body
            .pointer("/error/message")
            .and_then(Value::as_str)
            .unwrap_or("");
        assert!(!message.is_empty(), "error.message is empty in {body}");
        let rid = self.header_all("x-request-id");
        assert_eq!(
            rid.len(),
            1,
            "one X-Request-Id on a refusal: {:?}",
            self.headers
        );
        assert!(!rid[0].is_empty(), "X-Request-Id is empty");
        if status == 401 {
            let www = self.header_all("www-authenticate");
            assert_eq!(
                www.len(),
                1,
                "one WWW-Authenticate on a 401: {:?}",
                self.headers
            );
            let www = &www[0];
            assert!(
                www.starts_with("Bearer ") && www.contains(r#"realm="keygate""#),
                "WWW-Authenticate on a 401 names Bearer realm=\"keygate\": {www:?}"
            );
            let token_given = code != "missing_api_key";
            assert_eq!(
                www.contains(r#"error="invalid_token""#),
                token_given,
                "error=\"invalid_token\" iff a token was given ({code}): {www:?}"
            );
        }
        if status == 429 || status == 503 {
            let ra = self
                .header("retry-after")
                .unwrap_or_else(|| panic!("{status} {code} needs Retry-After: {:?}", self.headers));
            assert!(
                ra.parse::<u64>().is_ok(),
                "Retry-After is a number of seconds: {ra:?}"
            );
        }
        self
    }

    /// For refusals the HTTP parser may make before a request exists: the status must
    /// match; a body, if it is keygate's JSON, must carry `code`.
    pub fn assert_parser_refusal(&self, status: u16, code: &str) -> &Self {
        self.assert_status(status);
        if let Some(c) = self.error_code() {
            assert_eq!(c, code, "error.code of {:?}", self.text());
        }
        self
    }
}
