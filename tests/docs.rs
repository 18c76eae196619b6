//! The reference under docs/ against the code it describes: every route of the admin
//! router and every operation of `/openapi.json` in docs/admin-api.md, every metric in
//! docs/metrics.md, every error code in docs/clients.md or docs/admin-api.md, and every
//! relative link of README.md and docs/ pointing at a file in the repository. (The
//! config fields are checked against the raw serde types by a unit test in
//! `config::schema`.)

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(path: &str) -> String {
    std::fs::read_to_string(root().join(path)).unwrap_or_else(|e| panic!("read {path}: {e}"))
}

/// Every string literal in `text` that follows `marker` (e.g. `.route(`), up to the
/// closing quote.
fn literals_after<'a>(text: &'a str, marker: &str) -> Vec<(&'a str, &'a str)> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(i) = rest.find(marker) {
        let after = rest[i + marker.len()..].trim_start();
        rest = &rest[i + marker.len()..];
        let Some(lit) = after.strip_prefix('"') else {
            continue;
        };
        let Some(end) = lit.find('"') else { continue };
        out.push((&lit[..end], &lit[end + 1..]));
    }
    out
}

/// `METHOD PATH` of every `.route("PATH", get(..).post(..))` in a router source file.
fn routes_in(source: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for (path, tail) in literals_after(source, ".route(") {
        // The method router runs to the `)` that closes `.route(`.
        let mut depth = 1usize;
        let mut end = tail.len();
        for (i, c) in tail.char_indices() {
            match c {
                '(' => depth += 1,
                ')' => {
                    depth -= 1;
                    if depth == 0 {
                        end = i;
                        break;
                    }
                }
                _ => {}
            }
        }
        let methods = &tail[..end];
        let mut found = false;
        for m in ["get", "post", "put", "patch", "delete", "head", "options"] {
            let called = methods.match_indices(&format!("{m}(")).any(|(i, _)| {
                i == 0
                    || !methods.as_bytes()[i - 1].is_ascii_alphanumeric()
                        && methods.as_bytes()[i - 1] != b'_'
            });
            if called {
                out.insert(format!("{} {path}", m.to_uppercase()));
                found = true;
            }
        }
        assert!(found, "no method found for route {path}: {methods}");
    }
    out
}

/// Whether the doc names `METHOD PATH` as code, alone or followed by a query string.
fn documents(doc: &str, route: &str) -> bool {
    doc.contains(&format!("`{route}`")) || doc.contains(&format!("`{route}?"))
}

#[test]
fn every_admin_route_is_in_docs_admin_api_md() {
    let doc = read("docs/admin-api.md");
    let mut routes = routes_in(&read("src/admin/mod.rs"));
    routes.extend(routes_in(&read("src/admin/web/mod.rs")));
    assert!(routes.len() >= 20, "router parse found only {routes:?}");
    assert!(routes.contains("DELETE /v1/principals/{id}"), "{routes:?}");
    let missing: Vec<&String> = routes.iter().filter(|r| !documents(&doc, r)).collect();
    assert!(
        missing.is_empty(),
        "routes of the admin router missing from docs/admin-api.md: {missing:?}"
    );

    let openapi: serde_json::Value =
        serde_json::from_str(&read("src/admin/openapi.json")).expect("openapi.json is JSON");
    let mut operations = 0;
    for (path, item) in openapi["paths"].as_object().expect("paths") {
        for method in item.as_object().expect("path item").keys() {
            if method == "parameters" {
                continue;
            }
            operations += 1;
            let route = format!("{} {path}", method.to_uppercase());
            assert!(
                documents(&doc, &route),
                "{route} of /openapi.json is missing from docs/admin-api.md"
            );
        }
    }
    assert!(operations >= 20);
    assert!(doc.contains("/openapi.json"));
}

#[test]
fn every_metric_is_in_docs_metrics_md() {
    let doc = read("docs/metrics.md");
    let source = read("src/metrics.rs");
    let names: BTreeSet<&str> = source
        .split('"')
        .filter(|s| {
            s.starts_with("keygate_") && s.bytes().all(|b| b.is_ascii_lowercase() || b == b'_')
        })
        .collect();
    assert!(names.len() >= 10, "{names:?}");
    let missing: Vec<&&str> = names
        .iter()
        .filter(|n| !doc.contains(&format!("`{n}")))
        .collect();
    assert!(
        missing.is_empty(),
        "metrics missing from docs/metrics.md: {missing:?}"
    );
}

/// The `"code"` strings a source file answers with: `=> "code"` and `code: "code"`.
fn codes_in(source: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for marker in ["=> \"", "code: \""] {
        for (i, _) in source.match_indices(marker) {
            let rest = &source[i + marker.len()..];
            if let Some(end) = rest.find('"') {
                let code = &rest[..end];
                if !code.is_empty() && code.bytes().all(|b| b.is_ascii_lowercase() || b == b'_') {
                    out.insert(code.to_string());
                }
            }
        }
    }
    out
}

#[test]
fn every_error_code_is_documented() {
    let clients = read("docs/clients.md");
    for code in codes_in(&read("src/refusal.rs")) {
        assert!(
            clients.contains(&format!("`{code}`")),
            "data-plane error code {code} is missing from docs/clients.md"
        );
    }
    let admin = read("docs/admin-api.md");
    let mut codes = codes_in(&read("src/admin/error.rs"));
    for file in [
        "keys.rs",
        "orgs.rs",
        "principals.rs",
        "usage.rs",
        "audit.rs",
    ] {
        codes.extend(codes_in(&read(&format!("src/admin/{file}"))));
    }
    assert!(
        codes.contains("invalid_field") && codes.contains("org_exists"),
        "{codes:?}"
    );
    for code in codes {
        assert!(
            admin.contains(&format!("`{code}`")),
            "admin error code {code} is missing from docs/admin-api.md"
        );
    }
}

/// `[text](target)` links of a Markdown file.
fn links(markdown: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = markdown;
    while let Some(i) = rest.find("](") {
        rest = &rest[i + 2..];
        if let Some(end) = rest.find(')') {
            out.push(rest[..end].to_string());
        }
    }
    out
}

#[test]
fn readme_and_docs_link_only_to_files_in_the_repository() {
    let mut pages = vec![PathBuf::from("README.md"), PathBuf::from("ARCHITECTURE.md")];
    for entry in std::fs::read_dir(root().join("docs")).expect("docs/") {
        let path = entry.expect("docs entry").path();
        if path.extension().is_some_and(|e| e == "md") {
            pages.push(path.strip_prefix(root()).expect("under root").to_path_buf());
        }
    }
    for page in pages {
        let text = read(page.to_str().expect("utf-8 path"));
        assert!(
            !text.contains("shared/SPEC.md"),
            "{} refers to SPEC.md, which is not in the repository",
            page.display()
        );
        let dir = page.parent().unwrap_or(Path::new(""));
        for link in links(&text) {
            if link.contains("://") || link.starts_with('#') || link.starts_with("mailto:") {
                continue;
            }
            let file = link.split('#').next().unwrap_or_default();
            let target = root().join(dir).join(file);
            assert!(
                target.exists(),
                "{} links to {link}, which does not exist",
                page.display()
            );
            let resolved = target.canonicalize().expect("canonical path");
            assert!(
                resolved.starts_with(root().canonicalize().expect("root")),
                "{} links outside the repository: {link}",
                page.display()
            );
        }
    }
}
