//! Resources: a route names one from its path (`flow:{flow_id}`), a key may be limited
//! to patterns (`flow:abc123`, `feed:*`). Compared exactly, after percent-decoding the
//! path parameter, so that keygate judges the id the upstream will see.

use std::borrow::Cow;

use percent_encoding::percent_decode_str;

/// A parsed `type:{param}`-style template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResourceTemplate {
    parts: Vec<Part>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Literal(String),
    Param(String),
}

impl ResourceTemplate {
    /// Parses `flow:{flow_id}`; config validation has checked the params exist.
    pub fn parse(template: &str) -> Self {
        let mut parts = Vec::new();
        let mut rest = template;
        while let Some(open) = rest.find('{') {
            if open > 0 {
                parts.push(Part::Literal(rest[..open].to_string()));
            }
            let after = &rest[open + 1..];
            let close = after.find('}').unwrap_or(after.len());
            parts.push(Part::Param(after[..close].to_string()));
            rest = after.get(close + 1..).unwrap_or("");
        }
        if !rest.is_empty() {
            parts.push(Part::Literal(rest.to_string()));
        }
        ResourceTemplate { parts }
    }

    /// The resource of one request; `None` if a param is missing (fails closed).
    pub fn render<'p>(&self, param: impl Fn(&str) -> Option<&'p str>) -> Option<String> {
        let mut out = String::new();
        for p in &self.parts {
            match p {
                Part::Literal(l) => out.push_str(l),
                Part::Param(name) => {
                    let raw = param(name)?;
                    let decoded: Cow<'_, str> = percent_decode_str(raw).decode_utf8().ok()?;
                    out.push_str(&decoded);
                }
            }
        }
        Some(out)
    }
}

/// Whether `resource` (`flow:abc`) matches one of the key's patterns.
pub fn matches<S: AsRef<str>>(patterns: &[S], resource: &str) -> bool {
    let rtype = resource.split_once(':').map(|(t, _)| t);
    patterns.iter().any(|p| {
        let p = p.as_ref();
        match p.strip_suffix(":*") {
            Some(ptype) => rtype == Some(ptype),
            None => p == resource,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_and_matches() {
        let t = ResourceTemplate::parse("flow:{flow_id}");
        let r = t
            .render(|n| (n == "flow_id").then_some("abc%20123"))
            .unwrap();
        assert_eq!(r, "flow:abc 123");
        assert!(matches(&["flow:abc 123"], &r));
        assert!(matches(&["flow:*"], &r));
        assert!(!matches(&["feed:*"], &r));
        assert!(!matches(&["flow:abc"], &r));
        assert!(!matches(&["flow:ABC 123"], &r));
        assert!(t.render(|_| None).is_none());
    }
}
