//! The provider catalog's schema test: the compiled-in catalog parses and every entry keeps the
//! rules; every rule refuses a broken entry with a message naming it; search ranks sensibly;
//! `docs/providers.md` is generated from the catalog and must be current
//! (`LATCHKEY_UPDATE_DOCS=1 cargo test -p latchkey-client --test catalog` rewrites it).

#![allow(
    clippy::expect_used,
    clippy::unwrap_used,
    clippy::panic,
    reason = "the helpers in this file are test code too; a panic is the failure report"
)]

use std::fmt::Write as _;

use latchkey_client::catalog::{CATALOG_TOML, Catalog, CatalogError, Kind, RefreshBehaviour};
use latchkey_core::payload::Injection;

#[test]
fn the_builtin_catalog_is_valid_and_covers_the_well_known_providers() {
    let catalog = Catalog::parse(CATALOG_TOML).expect("the compiled-in catalog keeps every rule");
    let named: Vec<_> = catalog.iter().filter(|p| !p.custom).collect();
    assert!(named.len() >= 30, "at least 30 well-known providers, found {}", named.len());
    for id in [
        "github",
        "gitlab",
        "slack",
        "linear",
        "notion",
        "google",
        "microsoft-graph",
        "atlassian",
        "asana",
        "figma",
        "dropbox",
        "salesforce",
        "hubspot",
        "zendesk",
        "stripe",
        "openai",
        "anthropic",
        "mistral",
    ] {
        assert!(catalog.get(id).is_some(), "the catalog must include {id}");
    }
    for id in ["custom-oauth2", "custom-api-key"] {
        assert!(catalog.get(id).is_some_and(|p| p.custom), "{id} exists and is custom");
    }
    let oauth = catalog.iter().filter(|p| p.kind == Kind::Oauth && !p.custom).count();
    assert!(oauth >= 15, "OAuth providers: {oauth}");
    assert_eq!(Catalog::builtin().iter().count(), catalog.iter().count(), "builtin() is this file");

    let anthropic = catalog.get("anthropic").unwrap();
    assert_eq!(
        anthropic.injection,
        Injection::Header { name: "x-api-key".into(), prefix: String::new() },
        "Anthropic's SDK sends its key in x-api-key"
    );
    let google = catalog.get("google").unwrap().oauth.as_ref().unwrap();
    assert_eq!(google.refresh, RefreshBehaviour::Reusable);
    assert_eq!(
        google.extra_authorize_params.get("access_type").map(String::as_str),
        Some("offline")
    );
}

#[test]
fn search_ranks_id_and_name_prefixes_first_then_keywords() {
    let catalog = Catalog::builtin();
    let ids = |q: &str| catalog.search(q).into_iter().map(|p| p.id.as_str()).collect::<Vec<_>>();
    let git = ids("git");
    assert_eq!(&git[..2], ["github", "gitlab"], "prefix matches first: {git:?}");
    assert!(git.contains(&"bitbucket"), "then keyword matches: {git:?}");
    assert_eq!(ids("CLAUDE"), ["anthropic"], "search is case-insensitive and uses keywords");
    assert!(ids("no such provider at all").is_empty());
    assert_eq!(ids("").len(), catalog.iter().count(), "an empty query lists everything");
}

/// A valid entry to break one rule at a time.
const GOOD: &str = r#"
[[provider]]
id = "example"
name = "Example"
kind = "oauth"
api_base_url = "https://api.example.com/v1"
allowed_hosts = ["api.example.com"]
injection = { header = "authorization", prefix = "Bearer " }
[provider.oauth]
authorize_url = "https://example.com/oauth/authorize"
token_url = "https://example.com/oauth/token"
default_scopes = ["read"]
refresh = "rotating"
client_auth = "none"
pkce = true
"#;

fn refused(text: &str) -> String {
    match Catalog::parse(text) {
        Ok(_) => panic!("must be refused:\n{text}"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn every_rule_refuses_a_broken_entry_with_a_message_naming_it() {
    Catalog::parse(GOOD).expect("the base entry is valid");
    let cases: [(&str, &str, &str); 14] = [
        ("id = \"example\"", "id = \"Example!\"", "the id must be 1 to 64 characters"),
        (
            "https://api.example.com/v1",
            "http://api.example.com/v1",
            "api_base_url: http://api.example.com/v1 is not https",
        ),
        (
            "allowed_hosts = [\"api.example.com\"]",
            "allowed_hosts = [\"other.example.com\"]",
            "the API host api.example.com is not in allowed_hosts",
        ),
        (
            "allowed_hosts = [\"api.example.com\"]",
            "allowed_hosts = [\"api.example.com:443\"]",
            "must be a lowercase DNS name",
        ),
        (
            "allowed_hosts = [\"api.example.com\"]",
            "allowed_hosts = [\"*.com\", \"api.example.com\"]",
            "a wildcard needs at least two labels",
        ),
        (
            "allowed_hosts = [\"api.example.com\"]",
            "allowed_hosts = [\"a.*.example.com\", \"api.example.com\"]",
            "only a leading `*.` is allowed",
        ),
        ("header = \"authorization\"", "header = \"Host\"", "must be a lowercase header name"),
        ("header = \"authorization\"", "header = \"content-length\"", "is reserved"),
        (
            "token_url = \"https://example.com/oauth/token\"\n",
            "",
            "authorize_url and token_url are required",
        ),
        (
            "https://example.com/oauth/authorize",
            "http://example.com/oauth/authorize",
            "authorize_url: http://example.com/oauth/authorize is not https",
        ),
        (
            "default_scopes = [\"read\"]",
            "default_scopes = [\"read write\"]",
            "is not a single scope token",
        ),
        ("kind = \"oauth\"", "kind = \"api_key\"", "kind \"oauth\" takes an [oauth] table"),
        ("refresh = \"rotating\"", "refresh = \"sometimes\"", "does not parse"),
        ("pkce = true", "pkce = true\nsurprise = 1", "does not parse"),
    ];
    for (from, to, expected) in cases {
        assert!(GOOD.contains(from), "test setup: {from:?}");
        let message = refused(&GOOD.replacen(from, to, 1));
        assert!(
            message.contains(expected),
            "breaking {from:?} -> {to:?}: expected {expected:?} in {message:?}"
        );
    }
    let twice = format!("{GOOD}{GOOD}");
    assert_eq!(Catalog::parse(&twice).unwrap_err(), CatalogError::Duplicate("example".into()));
}

#[test]
fn account_specific_and_custom_providers_take_the_base_url_from_the_user() {
    let catalog = Catalog::builtin();
    let zendesk = catalog.get("zendesk").unwrap();
    assert!(zendesk.account_specific);
    let url = zendesk.base_url_for(Some("https://acme.zendesk.com/api/v2")).unwrap();
    assert_eq!(url.host_str(), Some("acme.zendesk.com"));
    let wrong = zendesk.base_url_for(Some("https://evil.example.com/api")).unwrap_err();
    assert!(wrong.to_string().contains("is not one of this provider's hosts"), "{wrong}");
    assert!(zendesk.base_url_for(None).is_err(), "an account-specific base URL is required");

    let openai = catalog.get("openai").unwrap();
    assert_eq!(openai.base_url_for(None).unwrap().as_str(), "https://api.openai.com/");
    let moved = openai.base_url_for(Some("https://attacker.example.com")).unwrap_err();
    assert!(moved.to_string().contains("fixed"), "a fixed base URL cannot be redirected: {moved}");

    let custom = catalog.get("custom-api-key").unwrap();
    assert_eq!(
        custom.base_url_for(Some("https://api.internal.example")).unwrap().host_str(),
        Some("api.internal.example")
    );
}

fn providers_page(catalog: &Catalog) -> String {
    let mut page = String::from(
        "# Providers\n\nGenerated from `crates/client/providers/catalog.toml` by `crates/client/tests/catalog.rs`;\ndo not edit by hand (`LATCHKEY_UPDATE_DOCS=1 cargo test -p latchkey-client --test catalog`).\n\n| id | name | kind | API base | injected as | default scopes | refresh | revocation |\n|---|---|---|---|---|---|---|---|\n",
    );
    for p in catalog.iter() {
        let kind = match (p.kind, p.oauth.as_ref().is_some_and(|o| o.pkce)) {
            (Kind::Oauth, true) => "OAuth 2.0 + PKCE",
            (Kind::Oauth, false) => "OAuth 2.0",
            (Kind::ApiKey, _) => "API key",
        };
        let base = match (&p.api_base_url, p.custom, p.account_specific) {
            (Some(url), _, _) => format!("`{}`", url.as_str().trim_end_matches('/')),
            (None, true, _) => "yours".to_owned(),
            (None, _, _) => format!("per account ({})", p.allowed_hosts.join(", ")),
        };
        let injected = match &p.injection {
            Injection::Header { name, prefix } if prefix.is_empty() => format!("`{name}` header"),
            Injection::Header { name, prefix } => format!("`{name}: {}…`", prefix.trim_end()),
            Injection::Query { name } => format!("`?{name}=`"),
        };
        let (scopes, refresh, revocation) = match &p.oauth {
            Some(o) => (
                if o.default_scopes.is_empty() {
                    "(none)".to_owned()
                } else {
                    o.default_scopes.join(" ")
                },
                format!("{:?}", o.refresh).to_lowercase(),
                if o.revocation_url.is_some() { "RFC 7009" } else { "" }.to_owned(),
            ),
            None => (String::new(), String::new(), String::new()),
        };
        writeln!(
            page,
            "| `{}` | {} | {kind} | {base} | {injected} | {scopes} | {refresh} | {revocation} |",
            p.id, p.name
        )
        .unwrap();
    }
    page
}

#[test]
fn the_providers_page_is_generated_from_the_catalog() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/providers.md");
    let page = providers_page(Catalog::builtin());
    if std::env::var_os("LATCHKEY_UPDATE_DOCS").is_some() {
        std::fs::write(&path, &page).unwrap();
        return;
    }
    let current = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        current == page,
        "docs/providers.md is stale: run LATCHKEY_UPDATE_DOCS=1 cargo test -p latchkey-client --test catalog"
    );
}
