//! Which fields each section of the file takes, read from the raw serde types
//! themselves, so the list can never drift from what `raw` accepts.
//!
//! serde stops at the first unknown field; [`unknown_fields`] walks the whole document
//! (the [`Locator`] tree) and finds every one, each with its line, so a file with three
//! misspellings is fixed in one run. The same [`SECTIONS`] table lets a test check that
//! docs/config.md documents every field.
//!
//! A section whose fields are free-form (`upstreams` names, `scopes`) has no entry; a
//! new struct-typed section of `RawConfig` needs one (the test below says so).

use serde::Deserialize;
use serde::de::{self, Deserializer, Visitor};

use super::locate::{Locator, Step};
use super::raw::{
    RawAdmin, RawAuthz, RawCache, RawConfig, RawIdentityHeaders, RawKeys, RawLimits, RawListen, RawMetrics,
    RawRoute, RawStore, RawTlsFiles, RawUpstream,
};
use crate::key::RateLimit;

/// Field names of a struct as its `Deserialize` impl declares them.
type Fields = fn() -> &'static [&'static str];

/// Each section as a path pattern (`upstreams.NAME`, `routes[]`) and its fields.
pub(super) const SECTIONS: &[(&str, Fields)] = &[
    ("", fields_of::<RawConfig>),
    ("listen", fields_of::<RawListen>),
    ("listen.tls", fields_of::<RawTlsFiles>),
    ("admin", fields_of::<RawAdmin>),
    ("admin.tls", fields_of::<RawTlsFiles>),
    ("metrics", fields_of::<RawMetrics>),
    ("authz", fields_of::<RawAuthz>),
    ("authz.tls", fields_of::<RawTlsFiles>),
    ("store", fields_of::<RawStore>),
    ("cache", fields_of::<RawCache>),
    ("keys", fields_of::<RawKeys>),
    ("identity_headers", fields_of::<RawIdentityHeaders>),
    ("rate_limit", fields_of::<RateLimit>),
    ("limits", fields_of::<RawLimits>),
    ("upstreams.NAME", fields_of::<RawUpstream>),
    ("routes[]", fields_of::<RawRoute>),
    ("routes[].rate_limit", fields_of::<RateLimit>),
];

/// Sections whose keys are names the user chooses: `upstreams.<name>`.
const NAMED: &[&str] = &["upstreams"];

/// One unknown field: its path (`routes[2].scopes`), line, and the field names it
/// could have meant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Unknown {
    pub field: String,
    pub key: String,
    pub line: usize,
    pub expected: &'static [&'static str],
}

impl Unknown {
    /// The message, in the words serde uses for the first one.
    pub fn message(&self) -> String {
        let list = self
            .expected
            .iter()
            .map(|f| format!("`{f}`"))
            .collect::<Vec<_>>()
            .join(", ");
        format!("unknown field `{}`; expected one of {list}", self.key)
    }
}

/// Every mapping key of the document that its section does not take, in file order.
pub(super) fn unknown_fields(locator: &Locator) -> Vec<Unknown> {
    let mut out = Vec::new();
    locator.visit_maps(&mut |steps, keys| {
        let Some(fields) = section_at(steps) else {
            return;
        };
        let parent = concrete(steps);
        for (key, line) in keys {
            if !fields.contains(&key.as_str()) {
                out.push(Unknown {
                    field: if parent.is_empty() {
                        key.clone()
                    } else {
                        format!("{parent}.{key}")
                    },
                    key: key.clone(),
                    line: *line,
                    expected: fields,
                });
            }
        }
    });
    out.sort_by_key(|u| u.line);
    out
}

/// The fields of the section at `steps`, if it is one with fixed fields.
fn section_at(steps: &[Step]) -> Option<&'static [&'static str]> {
    let p = pattern(steps);
    SECTIONS
        .iter()
        .find(|(path, _)| *path == p)
        .map(|(_, fields)| fields())
}

/// `routes[0].rate_limit` → `routes[].rate_limit`; `upstreams.feeds` → `upstreams.NAME`.
fn pattern(steps: &[Step]) -> String {
    let mut out = String::new();
    let mut parent_named = false;
    for step in steps {
        match step {
            Step::Index(_) => {
                out.push_str("[]");
                parent_named = false;
            }
            Step::Key(k) => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(if parent_named { "NAME" } else { k });
                parent_named = out.len() == k.len() && NAMED.contains(&k.as_str());
            }
        }
    }
    out
}

/// The field path as messages write it: `routes[0].rate_limit`, `upstreams.feeds`.
fn concrete(steps: &[Step]) -> String {
    let mut out = String::new();
    for step in steps {
        match step {
            Step::Index(i) => out.push_str(&format!("[{i}]")),
            Step::Key(k) => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(k);
            }
        }
    }
    out
}

/// The field names `T`'s `Deserialize` impl passes to `deserialize_struct`.
fn fields_of<T: for<'de> Deserialize<'de>>() -> &'static [&'static str] {
    let mut names = FieldNames(&[]);
    let _ = T::deserialize(&mut names);
    names.0
}

/// A deserializer that only records the field names of the struct asked of it.
struct FieldNames(&'static [&'static str]);

impl<'de> Deserializer<'de> for &mut FieldNames {
    type Error = de::value::Error;

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        fields: &'static [&'static str],
        _visitor: V,
    ) -> Result<V::Value, Self::Error> {
        self.0 = fields;
        Err(de::Error::custom("field names read"))
    }

    fn deserialize_any<V: Visitor<'de>>(self, _visitor: V) -> Result<V::Value, Self::Error> {
        Err(de::Error::custom("not a struct"))
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes
        byte_buf option unit unit_struct newtype_struct seq tuple tuple_struct map enum
        identifier ignored_any
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn field_names_come_from_the_serde_types() {
        assert_eq!(fields_of::<RawKeys>(), &["prefix"]);
        assert!(fields_of::<RawConfig>().contains(&"routes"));
        assert!(fields_of::<RawRoute>().contains(&"query_key"));
        for (path, fields) in SECTIONS {
            assert!(!fields().is_empty(), "section `{path}` has no fields");
        }
    }

    /// A struct-typed top-level section without an entry would escape both the
    /// one-run unknown-field report and the docs test.
    #[test]
    fn every_top_level_section_is_in_the_table() {
        const NOT_SECTIONS: &[&str] = &["trusted_proxies", "scopes", "upstreams", "routes"];
        for field in fields_of::<RawConfig>() {
            assert!(
                NOT_SECTIONS.contains(field) || SECTIONS.iter().any(|(p, _)| p == field),
                "`{field}` of RawConfig: add it to SECTIONS (a struct) or NOT_SECTIONS"
            );
        }
    }

    #[test]
    fn every_unknown_field_is_found_with_its_line() {
        type Case = (&'static str, &'static [(&'static str, usize)]);
        let cases: &[Case] = &[
            ("listen: { tls: none }\n", &[]),
            (
                "listen: { tls: none, adress: x }\ncache:\n  tll: 5s\n",
                &[("listen.adress", 1), ("cache.tll", 3)],
            ),
            (
                "upstreams:\n  feeds.v2: { url: x, timout: 1s }\n",
                &[("upstreams.feeds.v2.timout", 2)],
            ),
            (
                "routes:\n  - name: a\n    scopes: x\n    rate_limit: { per_week: 1 }\n",
                &[
                    ("routes[0].scopes", 3),
                    ("routes[0].rate_limit.per_week", 4),
                ],
            ),
            // Misplaced by indentation: `path` ends up at the top level.
            (
                "routes:\n  - name: a\n    scope: read\npath: /x\n",
                &[("path", 4)],
            ),
            // Free-form sections are not checked here.
            (
                "scopes: { anything: [] }\nupstreams: { any-name: { url: x } }\n",
                &[],
            ),
            (
                "listen: { tls: { cert: a, key: b, chain: c } }\n",
                &[("listen.tls.chain", 1)],
            ),
        ];
        for (text, want) in cases {
            let got: Vec<(String, usize)> = unknown_fields(&Locator::new(text))
                .into_iter()
                .map(|u| (u.field, u.line))
                .collect();
            let want: Vec<(String, usize)> =
                want.iter().map(|(f, l)| (f.to_string(), *l)).collect();
            assert_eq!(got, want, "{text}");
        }
    }

    /// docs/config.md lists every field keygate accepts as `section.field`, and no
    /// field it does not accept.
    #[test]
    fn docs_config_md_documents_exactly_these_fields() {
        // A route's limits take the same windows as the global `rate_limit`, documented
        // there once.
        const SAME_AS_ELSEWHERE: &[&str] = &["routes[].rate_limit"];
        let mut expected = std::collections::BTreeSet::new();
        for (path, fields) in SECTIONS {
            if SAME_AS_ELSEWHERE.contains(path) {
                continue;
            }
            for f in fields() {
                expected.insert(if path.is_empty() {
                    f.to_string()
                } else {
                    format!("{path}.{f}")
                });
            }
        }
        let doc_path = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/config.md");
        let doc = std::fs::read_to_string(doc_path).expect("read docs/config.md");
        let documented: std::collections::BTreeSet<String> = doc
            .lines()
            .filter_map(|l| l.strip_prefix("| `"))
            .filter_map(|l| l.split_once("` |"))
            .map(|(field, _)| field.to_string())
            .collect();
        let missing: Vec<&String> = expected.difference(&documented).collect();
        let unknown: Vec<&String> = documented.difference(&expected).collect();
        assert!(
            missing.is_empty(),
            "fields not documented in docs/config.md: {missing:?}"
        );
        assert!(
            unknown.is_empty(),
            "docs/config.md documents fields keygate does not accept: {unknown:?}"
        );
    }
}
