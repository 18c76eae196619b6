//! Reading requests: JSON bodies, query strings and path parameters, each turned into
//! an [`AdminError`] that names what is wrong (400 for malformed JSON, 422 naming the
//! field for a bad, missing or unknown field, 413 for an oversized body).
//!
//! Bodies are read field by field from a JSON object rather than into one serde
//! struct, so that every error names its field, unknown fields are refused, and a
//! field that is absent can be told apart from one that is `null` (JSON Merge Patch).

use std::collections::BTreeMap;

use axum::extract::{FromRequest, FromRequestParts, Path, Request};
use axum::http::request::Parts;
use http_body_util::{BodyExt, LengthLimitError, Limited};
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use super::error::AdminError;

/// Largest admin request body; a key's settings fit in a few KiB.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// A request body that is a JSON object (an empty body reads as `{}`).
#[derive(Debug, Default)]
pub struct JsonObject(pub Map<String, Value>);

impl<S: Send + Sync> FromRequest<S> for JsonObject {
    type Rejection = AdminError;

    async fn from_request(req: Request, _state: &S) -> Result<Self, Self::Rejection> {
        let bytes = Limited::new(req.into_body(), MAX_BODY_BYTES)
            .collect()
            .await
            .map_err(|e| {
                if e.downcast_ref::<LengthLimitError>().is_some() {
                    AdminError::BodyTooLarge(MAX_BODY_BYTES)
                } else {
                    AdminError::BadRequest("the request body could not be read".into())
                }
            })?
            .to_bytes();
        JsonObject::parse(&bytes)
    }
}

impl JsonObject {
    pub fn parse(bytes: &[u8]) -> Result<Self, AdminError> {
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(JsonObject::default());
        }
        match serde_json::from_slice::<Value>(bytes) {
            Ok(Value::Object(map)) => Ok(JsonObject(map)),
            Ok(_) => Err(AdminError::BadRequest(
                "the request body must be a JSON object".into(),
            )),
            Err(e) => Err(AdminError::BadRequest(format!(
                "the request body is not valid JSON: {e}"
            ))),
        }
    }

    /// Refuses any field not in `allowed`, then hands the fields out one by one.
    pub fn fields(self, allowed: &[&str]) -> Result<Fields, AdminError> {
        if let Some(unknown) = self.0.keys().find(|k| !allowed.contains(&k.as_str())) {
            return Err(AdminError::invalid(
                unknown.clone(),
                format!("unknown field; allowed fields are {}", allowed.join(", ")),
            ));
        }
        Ok(Fields(self.0))
    }
}

/// A field of a JSON Merge Patch (RFC 7396).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Patch<T> {
    /// Not in the patch: leave as is.
    Absent,
    /// `null`: remove (back to the default).
    Null,
    Set(T),
}

/// The fields of a JSON object whose names were already checked.
#[derive(Debug)]
pub struct Fields(Map<String, Value>);

impl Fields {
    /// Absent or `null` → `None`.
    pub fn optional<T: DeserializeOwned>(&mut self, name: &str) -> Result<Option<T>, AdminError> {
        match self.patch(name)? {
            Patch::Set(v) => Ok(Some(v)),
            Patch::Absent | Patch::Null => Ok(None),
        }
    }

    pub fn required<T: DeserializeOwned>(&mut self, name: &str) -> Result<T, AdminError> {
        self.optional(name)?
            .ok_or_else(|| AdminError::invalid(name, "is required"))
    }

    pub fn patch<T: DeserializeOwned>(&mut self, name: &str) -> Result<Patch<T>, AdminError> {
        match self.0.remove(name) {
            None => Ok(Patch::Absent),
            Some(Value::Null) => Ok(Patch::Null),
            Some(v) => decode(name, v).map(Patch::Set),
        }
    }

    pub fn contains(&self, name: &str) -> bool {
        self.0.contains_key(name)
    }
}

/// Decodes one JSON value, naming `field` in the error.
pub fn decode<T: DeserializeOwned>(field: &str, value: Value) -> Result<T, AdminError> {
    serde_json::from_value(value).map_err(|e| AdminError::invalid(field, e.to_string()))
}

/// Applies a JSON Merge Patch (RFC 7396) to `target`: objects merge member by member,
/// `null` removes a member, anything else replaces.
pub fn merge_patch(target: &mut Value, patch: &Value) {
    let Value::Object(patch) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    if let Value::Object(t) = target {
        for (name, value) in patch {
            if value.is_null() {
                t.remove(name);
            } else {
                merge_patch(t.entry(name.clone()).or_insert(Value::Null), value);
            }
        }
    }
}

/// A query string read into names and values; unknown names are refused with 422.
#[derive(Debug)]
pub struct QueryParams(BTreeMap<String, String>);

impl<S: Send + Sync> FromRequestParts<S> for QueryParams {
    type Rejection = AdminError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let mut params = BTreeMap::new();
        for (name, value) in form_urlencoded::parse(parts.uri.query().unwrap_or("").as_bytes()) {
            if params.insert(name.to_string(), value.to_string()).is_some() {
                return Err(AdminError::invalid(
                    name.to_string(),
                    "query parameter given more than once",
                ));
            }
        }
        Ok(QueryParams(params))
    }
}

impl QueryParams {
    pub fn allow(&self, allowed: &[&str]) -> Result<(), AdminError> {
        match self.0.keys().find(|k| !allowed.contains(&k.as_str())) {
            Some(unknown) => Err(AdminError::invalid(
                unknown.clone(),
                format!(
                    "unknown query parameter; allowed are {}",
                    allowed.join(", ")
                ),
            )),
            None => Ok(()),
        }
    }

    /// A non-empty value, or `None` when absent or empty.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .get(name)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    }

    /// `limit`: `default` when absent, else 1..=`max`.
    pub fn limit(&self, default: usize, max: usize) -> Result<usize, AdminError> {
        match self.get("limit") {
            None => Ok(default),
            Some(v) => v
                .parse::<usize>()
                .ok()
                .filter(|n| (1..=max).contains(n))
                .ok_or_else(|| {
                    AdminError::invalid("limit", format!("must be an integer from 1 to {max}"))
                }),
        }
    }

    /// `cursor`: an id of the given kind (`key`, `aud`) from an earlier page.
    pub fn cursor(&self, kind: &str) -> Result<Option<String>, AdminError> {
        match self.get("cursor") {
            None => Ok(None),
            Some(c) if is_id_of(kind, c) => Ok(Some(c.to_string())),
            Some(_) => Err(AdminError::invalid(
                "cursor",
                "is not a cursor from an earlier page (next_cursor)",
            )),
        }
    }
}

/// `kind_` followed by a lowercase ULID, as made by `key::new_id`.
pub fn is_id_of(kind: &str, id: &str) -> bool {
    id.strip_prefix(kind)
        .and_then(|r| r.strip_prefix('_'))
        .is_some_and(|u| {
            u.len() == 26
                && u.bytes()
                    .all(|b| b.is_ascii_digit() || b.is_ascii_lowercase())
        })
}

/// Path parameters, with a JSON 400 instead of axum's plain-text rejection.
pub struct AdminPath<T>(pub T);

impl<S: Send + Sync, T> FromRequestParts<S> for AdminPath<T>
where
    T: DeserializeOwned + Send,
{
    type Rejection = AdminError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        Path::<T>::from_request_parts(parts, state)
            .await
            .map(|Path(t)| AdminPath(t))
            .map_err(|e| AdminError::BadRequest(format!("bad path parameter: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies() {
        assert!(JsonObject::parse(b"").unwrap().0.is_empty());
        assert!(JsonObject::parse(b"  \n").unwrap().0.is_empty());
        assert!(matches!(
            JsonObject::parse(b"{\"a\":"),
            Err(AdminError::BadRequest(_))
        ));
        assert!(matches!(
            JsonObject::parse(b"[1]"),
            Err(AdminError::BadRequest(_))
        ));
        let obj = JsonObject::parse(br#"{"name":"x","extra":1}"#).unwrap();
        match obj.fields(&["name"]) {
            Err(AdminError::Invalid { field, .. }) => assert_eq!(field, "extra"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn fields_tell_absent_from_null() {
        let obj = JsonObject::parse(br#"{"a":null,"b":3,"c":"x"}"#).unwrap();
        let mut f = obj.fields(&["a", "b", "c", "d"]).unwrap();
        assert_eq!(f.patch::<u32>("a").unwrap(), Patch::Null);
        assert_eq!(f.patch::<u32>("b").unwrap(), Patch::Set(3));
        assert_eq!(f.patch::<u32>("d").unwrap(), Patch::Absent);
        match f.required::<u32>("c") {
            Err(AdminError::Invalid { field, .. }) => assert_eq!(field, "c"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn merge_patch_follows_rfc_7396() {
        // The example of RFC 7396 §3.
        let mut target = serde_json::json!({
            "title": "Goodbye!",
            "author": {"givenName": "John", "familyName": "Doe"},
            "tags": ["example", "sample"],
            "content": "This will be unchanged"
        });
        let patch = serde_json::json!({
            "title": "Hello!",
            "phoneNumber": "+01-123-456-7890",
            "author": {"familyName": null},
            "tags": ["example"]
        });
        merge_patch(&mut target, &patch);
        assert_eq!(
            target,
            serde_json::json!({
                "title": "Hello!",
                "author": {"givenName": "John"},
                "tags": ["example"],
                "content": "This will be unchanged",
                "phoneNumber": "+01-123-456-7890"
            })
        );
        let mut t = serde_json::json!({"a": 1});
        merge_patch(&mut t, &serde_json::json!({"a": {"b": null, "c": 2}}));
        assert_eq!(t, serde_json::json!({"a": {"c": 2}}));
    }

    #[test]
    fn ids() {
        assert!(is_id_of("key", "key_01j0000000000000000000000a"));
        assert!(!is_id_of("key", "aud_01j0000000000000000000000a"));
        assert!(!is_id_of("key", "key_01J0000000000000000000000A"));
        assert!(!is_id_of("key", "key_short"));
    }
}
