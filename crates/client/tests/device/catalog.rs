//! The provider catalog's schema test, and its authority: every file in `providers/` parses and
//! keeps the rules; every rule refuses a broken file with a message naming the file and the
//! field; search ranks sensibly; `providers/schema.json` agrees with the files; and
//! `docs/providers.md` is generated from the catalog and must be current
//! (`LATCHKEY_UPDATE_DOCS=1 cargo test -p latchkey-client --test device catalog::` rewrites it).

#![allow(
    clippy::expect_used,
    clippy::unwrap_used,
    clippy::panic,
    reason = "the helpers in this file are test code too; a panic is the failure report"
)]

use std::collections::BTreeSet;
use std::fmt::Write as _;

use latchkey_client::catalog::{
    CUSTOM_API_KEY, CUSTOM_OAUTH2, Catalog, CatalogError, ClientAuth, FieldError, KeyFormat,
    OAuthProvider, Provider, ProviderId, ProviderKind, RefreshBehaviour, builtin_files,
};
use latchkey_core::payload::Injection;
use latchkey_core::secret::SecretBytes;

// --- The built-in catalog --------------------------------------------------------------------

#[test]
fn every_provider_file_parses_keeps_the_rules_and_is_named_after_its_id() {
    let files = builtin_files();
    assert!(!files.is_empty(), "the build script found the provider files");
    for (name, text) in files {
        let provider = Provider::from_file(name, text)
            .unwrap_or_else(|e| panic!("every provider file keeps the rules: {e}"));
        assert_eq!(format!("{}.toml", provider.id), *name, "the file stem is the id");
        provider.validate().unwrap_or_else(|e| panic!("validate agrees with from_file: {e}"));
    }
    let catalog = Catalog::from_files(files.iter().copied()).expect("ids are unique");
    assert_eq!(catalog.iter().count(), files.len(), "one provider per file");
    assert_eq!(
        Catalog::builtin().iter().map(|p| &p.id).collect::<Vec<_>>(),
        catalog.iter().map(|p| &p.id).collect::<Vec<_>>(),
        "builtin() is these files"
    );
    let ids: Vec<&str> = catalog.iter().map(|p| p.id.as_str()).collect();
    let mut sorted = ids.clone();
    sorted.sort_unstable();
    assert_eq!(ids, sorted, "iter() is in id order");
}

#[test]
fn the_catalog_covers_the_well_known_providers_and_the_custom_templates() {
    let catalog = Catalog::builtin();
    let named = catalog.iter().filter(|p| !p.custom).count();
    assert!(named >= 30, "at least 30 well-known providers, found {named}");
    for id in [
        "github",
        "gitlab",
        "bitbucket",
        "slack",
        "linear",
        "notion",
        "google",
        "microsoft-graph",
        "atlassian",
        "asana",
        "figma",
        "dropbox",
        "box",
        "salesforce",
        "hubspot",
        "zendesk",
        "intercom",
        "airtable",
        "discord",
        "zoom",
        "stripe",
        "twilio",
        "sendgrid",
        "openai",
        "anthropic",
        "mistral",
        "cohere",
        "groq",
        "together",
        "perplexity",
        "huggingface",
        "replicate",
        "elevenlabs",
        "pinecone",
        "datadog",
        "pagerduty",
        "sentry",
        "cloudflare",
        "digitalocean",
        "vercel",
        "netlify",
    ] {
        assert!(catalog.get(id).is_some_and(|p| !p.custom), "the catalog includes {id}");
    }
    let api_key = catalog.get(CUSTOM_API_KEY).expect("custom-api-key exists");
    assert!(api_key.custom && api_key.api_key().is_some() && api_key.api_base_url.is_none());
    let oauth = catalog.get(CUSTOM_OAUTH2).expect("custom-oauth2 exists");
    assert!(oauth.custom && oauth.oauth().is_some() && oauth.api_base_url.is_none());
    assert_eq!(
        catalog.iter().filter(|p| p.custom).map(|p| p.id.as_str()).collect::<Vec<_>>(),
        [CUSTOM_API_KEY, CUSTOM_OAUTH2],
        "only the two templates are custom"
    );
    assert!(catalog.get("no-such-provider").is_none());

    let anthropic = catalog.get("anthropic").unwrap();
    assert_eq!(
        anthropic.injection,
        Injection::Header { name: "x-api-key".into(), prefix: String::new() },
        "Anthropic takes its key in x-api-key"
    );
    let google = catalog.get("google").unwrap().oauth().unwrap();
    assert_eq!(google.refresh, RefreshBehaviour::Reusable);
    assert!(google.extra_authorize_params.contains(&("access_type".into(), "offline".into())));
    assert_eq!(catalog.get("slack").unwrap().oauth().unwrap().scope_separator, ",");
}

/// The rules restated independently of the validator, over the real files: a bug in the
/// validator that lets a bad entry through still fails here.
#[test]
fn every_provider_keeps_the_rules_restated_independently() {
    const HOP_BY_HOP_AND_FRAMING: [&str; 11] = [
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "host",
        "content-length",
    ];
    let dns_label = |l: &str| {
        !l.is_empty()
            && l.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    for p in Catalog::builtin().iter() {
        let id = p.id.as_str();
        let oauth = p.oauth();
        let urls = [
            p.api_base_url.as_ref(),
            p.docs_url.as_ref(),
            oauth.and_then(|o| o.authorize_url.as_ref()),
            oauth.and_then(|o| o.token_url.as_ref()),
            oauth.and_then(|o| o.revocation_url.as_ref()),
        ];
        for url in urls.into_iter().flatten() {
            assert_eq!(url.scheme(), "https", "{id}: {url} is https");
            assert!(url.username().is_empty() && url.password().is_none(), "{id}: {url}");
        }
        if let Some(issuer) = oauth.and_then(|o| o.issuer.as_deref()) {
            assert!(issuer.starts_with("https://"), "{id}: issuer {issuer} is https");
        }
        for host in &p.allowed_hosts {
            let name = host.strip_prefix("*.").unwrap_or(host);
            let labels: Vec<&str> = name.split('.').collect();
            assert!(
                labels.len() >= 2 && labels.iter().all(|l| dns_label(l)),
                "{id}: allowed host {host:?} is a plain DNS name or `*.` and one"
            );
            assert!(!labels.last().unwrap().bytes().all(|b| b.is_ascii_digit()), "{id}: {host}");
        }
        match (&p.api_base_url, p.custom || p.account_specific) {
            (Some(base), false) => {
                let host = base.host_str().unwrap();
                assert!(
                    p.allowed_hosts.iter().any(|h| h == host),
                    "{id}: the API host {host} is listed exactly in allowed_hosts"
                );
            }
            (None, true) => {}
            _ => panic!(
                "{id}: a base URL exactly when the provider is neither custom nor per-account"
            ),
        }
        if p.account_specific {
            assert!(p.allowed_hosts.iter().any(|h| h.starts_with("*.")), "{id}: a wildcard");
        }
        match &p.injection {
            Injection::Header { name, prefix } => {
                assert!(
                    !name.is_empty()
                        && name
                            .bytes()
                            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-'),
                    "{id}: header {name:?} is a lowercase token"
                );
                assert!(!HOP_BY_HOP_AND_FRAMING.contains(&name.as_str()), "{id}: header {name}");
                assert!(!name.starts_with("latchkey-"), "{id}: the broker's own header");
                assert!(prefix.len() <= 32 && prefix.bytes().all(|b| (0x20..0x7f).contains(&b)));
            }
            Injection::Query { name } => assert!(
                !name.is_empty()
                    && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-'),
                "{id}: query parameter {name:?}"
            ),
        }
        if let Some(o) = oauth {
            let endpoints = o.authorize_url.is_some() && o.token_url.is_some();
            // Only the custom template and Zendesk (endpoints on each account's subdomain) lack
            // them; a new exception must be argued here.
            assert_eq!(endpoints, !matches!(id, "custom-oauth2" | "zendesk"), "{id}: endpoints");
        }
    }
}

#[test]
fn search_ranks_id_and_name_matches_before_keywords() {
    let catalog = Catalog::builtin();
    let ids = |q: &str| catalog.search(q).into_iter().map(|p| p.id.as_str()).collect::<Vec<_>>();
    let git = ids("git");
    assert_eq!(&git[..2], ["github", "gitlab"], "id prefixes first: {git:?}");
    assert!(git.contains(&"bitbucket"), "then the keyword `git`: {git:?}");
    assert_eq!(ids("GitHub")[0], "github", "case-insensitive, exact id first");
    assert_eq!(ids("CLAUDE"), ["anthropic"], "keywords match, case-insensitively");
    assert_eq!(ids("graph")[0], "microsoft-graph", "a word of the name");
    let jira = ids("jira");
    assert_eq!(jira, ["atlassian"], "Jira is Atlassian's: {jira:?}");
    assert_eq!(ids("google llm"), ["google-gemini"], "every word must match");
    assert!(ids("no such provider at all").is_empty());
    assert_eq!(ids("").len(), catalog.iter().count(), "an empty query lists everything");
    assert_eq!(ids("  ").len(), catalog.iter().count(), "so does a blank one");
}

// --- Every rejection, with its exact message -------------------------------------------------

/// A valid OAuth file to break one rule at a time.
const GOOD_OAUTH: &str = r#"
id = "example"
name = "Example"
api_base_url = "https://api.example.com/v1"
allowed_hosts = ["api.example.com", "uploads.example.com"]
injection = { header = "authorization", prefix = "Bearer " }
docs_url = "https://docs.example.com/api"
keywords = ["sample", "demo"]

[oauth]
authorize_url = "https://example.com/oauth/authorize"
token_url = "https://example.com/oauth/token"
revocation_url = "https://example.com/oauth/revoke"
issuer = "https://example.com"
default_scopes = ["read", "profile:read"]
refresh = "rotating"
client_auth = "none"
pkce = true
extra_authorize_params = { access_type = "offline" }
"#;

/// A valid API-key file to break one rule at a time.
const GOOD_KEY: &str = r#"
id = "example"
name = "Example"
api_base_url = "https://api.example.com"
allowed_hosts = ["api.example.com"]
injection = { header = "x-api-key" }

[api_key]
label = "API key"
prefix_hint = "ex_"

[account]
path = "/v2/me"
fields = ["/user/email", "/user/id"]
"#;

/// A valid account-specific file.
const GOOD_ACCOUNT: &str = r#"
id = "example"
name = "Example"
account_specific = true
allowed_hosts = ["*.example.com"]
injection = { header = "authorization", prefix = "Bearer " }

[oauth]
default_scopes = []
refresh = "reusable"
client_auth = "post"
pkce = false
"#;

/// A valid custom template.
const GOOD_TEMPLATE: &str = r#"
id = "example"
name = "Example"
custom = true
injection = { header = "authorization", prefix = "Bearer " }

[oauth]
default_scopes = []
refresh = "reusable"
client_auth = "none"
pkce = true
"#;

/// Twilio's key is entered as `<API key SID>:<secret>` and stored as the HTTP Basic credential
/// the broker injects after `Basic `; every other catalog key is stored as entered.
#[test]
fn a_basic_key_is_entered_in_two_parts_and_stored_as_the_basic_credential() {
    let catalog = Catalog::builtin();
    let twilio = catalog.get("twilio").and_then(Provider::api_key).expect("twilio takes a key");
    assert_eq!(twilio.format, KeyFormat::Basic, "twilio.toml says format = \"basic\"");
    for p in catalog.iter().filter(|p| p.id.as_str() != "twilio") {
        if let Some(key) = p.api_key() {
            assert_eq!(key.format, KeyFormat::Verbatim, "{} stores its key as entered", p.id);
        }
    }
    let store = |entered: &str| {
        twilio.format.stored_secret(SecretBytes::copy_from(entered.as_bytes()), &twilio.key_label)
    };
    let stored = store("SK0123456789abcdef:s3cr3t").expect("two parts are encoded");
    assert_eq!(
        stored.expose_secret(),
        b"U0swMTIzNDU2Nzg5YWJjZGVmOnMzY3IzdA==",
        "standard Base64 with padding of the SID, a colon and the secret"
    );
    let kept = store("U0swMTIzNDU2Nzg5YWJjZGVmOnMzY3IzdA==").expect("an encoded key is kept");
    assert_eq!(
        kept.expose_secret(),
        stored.expose_secret(),
        "a key stored the old way (already Base64) is not encoded twice"
    );
    for wrong in ["s3cr3t", ":s3cr3t", "SK0123:", "bm9jb2xvbg=="] {
        let error = store(wrong).expect_err("one part is not a Basic credential").to_string();
        assert!(
            error.contains("`<user>:<password>` (API key SID:secret)"),
            "{wrong:?} is refused with what to enter: {error}"
        );
        assert!(!error.contains(wrong), "and the message never echoes the key: {error}");
    }
    let verbatim = KeyFormat::Verbatim
        .stored_secret(SecretBytes::copy_from(b"sk-anything"), "API key")
        .unwrap();
    assert_eq!(verbatim.expose_secret(), b"sk-anything");

    let unknown = GOOD_KEY.replace("prefix_hint = \"ex_\"", "format = \"hex\"");
    assert!(
        refused("example.toml", &unknown).contains("unknown variant `hex`"),
        "a format the client does not know is refused: {}",
        refused("example.toml", &unknown)
    );
}

fn refused(file: &str, text: &str) -> String {
    match Provider::from_file(file, text) {
        Ok(_) => panic!("{file} must be refused:\n{text}"),
        Err(e) => e.to_string(),
    }
}

/// `(base, replace this, with this, the exact message)`; the file is `example.toml`.
const CASES: &[(&str, &str, &str, &str)] = &[
    // Identity.
    (
        GOOD_KEY,
        r#"id = "example""#,
        r#"id = "Example!""#,
        r#"providers/example.toml: id: "Example!" is not a provider id: 1 to 64 characters of a-z, 0-9 and '-', starting and ending with a letter or digit"#,
    ),
    (
        GOOD_KEY,
        r#"id = "example""#,
        r#"id = "example-""#,
        r#"providers/example.toml: id: "example-" is not a provider id: 1 to 64 characters of a-z, 0-9 and '-', starting and ending with a letter or digit"#,
    ),
    (
        GOOD_KEY,
        r#"id = "example""#,
        r#"id = "other""#,
        r#"providers/example.toml: id: "other" must match the file name "example.toml""#,
    ),
    (
        GOOD_KEY,
        r#"name = "Example""#,
        r#"name = " ""#,
        "providers/example.toml: name: must not be empty",
    ),
    (
        GOOD_ACCOUNT,
        "account_specific = true",
        "account_specific = true\ncustom = true",
        "providers/example.toml: account_specific: a provider is custom or account-specific, not both",
    ),
    // The base URL.
    (
        GOOD_KEY,
        "https://api.example.com\"",
        "http://api.example.com\"",
        "providers/example.toml: api_base_url: http://api.example.com/ is not https",
    ),
    (
        GOOD_KEY,
        "https://api.example.com\"",
        "https://user:pw@api.example.com\"",
        "providers/example.toml: api_base_url: https://user:pw@api.example.com/ must not carry a user name or password",
    ),
    (
        GOOD_KEY,
        "https://api.example.com\"",
        "https://api.example.com/?v=1\"",
        "providers/example.toml: api_base_url: https://api.example.com/?v=1 must not carry a query or fragment",
    ),
    (
        GOOD_KEY,
        "https://api.example.com\"",
        "api.example.com\"",
        r#"providers/example.toml: api_base_url: "api.example.com" is not a URL"#,
    ),
    (
        GOOD_KEY,
        "api_base_url = \"https://api.example.com\"\n",
        "",
        "providers/example.toml: api_base_url: is required",
    ),
    (
        GOOD_KEY,
        "https://api.example.com\"",
        "https://evil.example.net\"",
        "providers/example.toml: api_base_url: the API host evil.example.net is not covered by allowed_hosts",
    ),
    (
        GOOD_ACCOUNT,
        "account_specific = true",
        "account_specific = true\napi_base_url = \"https://acme.example.com\"",
        "providers/example.toml: api_base_url: must be absent: custom and account-specific providers take it from the user",
    ),
    (
        GOOD_TEMPLATE,
        "custom = true",
        "custom = true\napi_base_url = \"https://api.example.com\"",
        "providers/example.toml: api_base_url: must be absent: custom and account-specific providers take it from the user",
    ),
    // Allowed hosts.
    (
        GOOD_KEY,
        "allowed_hosts = [\"api.example.com\"]",
        "allowed_hosts = []",
        "providers/example.toml: allowed_hosts: must not be empty",
    ),
    (
        GOOD_KEY,
        "allowed_hosts = [\"api.example.com\"]",
        "allowed_hosts = [\"api.example.com\", \"https://x.example.com\"]",
        r#"providers/example.toml: allowed_hosts[1]: "https://x.example.com" must be a lowercase DNS name without scheme, port or path"#,
    ),
    (
        GOOD_KEY,
        "allowed_hosts = [\"api.example.com\"]",
        "allowed_hosts = [\"api.example.com:443\"]",
        r#"providers/example.toml: allowed_hosts[0]: "api.example.com:443" must be a lowercase DNS name without scheme, port or path"#,
    ),
    (
        GOOD_KEY,
        "allowed_hosts = [\"api.example.com\"]",
        "allowed_hosts = [\"api.example.com/v1\"]",
        r#"providers/example.toml: allowed_hosts[0]: "api.example.com/v1" must be a lowercase DNS name without scheme, port or path"#,
    ),
    (
        GOOD_KEY,
        "allowed_hosts = [\"api.example.com\"]",
        "allowed_hosts = [\"API.example.com\"]",
        r#"providers/example.toml: allowed_hosts[0]: "API.example.com" must be a lowercase DNS name without scheme, port or path"#,
    ),
    (
        GOOD_KEY,
        "allowed_hosts = [\"api.example.com\"]",
        "allowed_hosts = [\"localhost\"]",
        r#"providers/example.toml: allowed_hosts[0]: "localhost" must be a lowercase DNS name without scheme, port or path"#,
    ),
    (
        GOOD_KEY,
        "allowed_hosts = [\"api.example.com\"]",
        "allowed_hosts = [\"127.0.0.1\"]",
        r#"providers/example.toml: allowed_hosts[0]: "127.0.0.1" must be a lowercase DNS name without scheme, port or path"#,
    ),
    (
        GOOD_KEY,
        "allowed_hosts = [\"api.example.com\"]",
        "allowed_hosts = [\"*.com\"]",
        r#"providers/example.toml: allowed_hosts[0]: "*.com": a wildcard needs at least two labels after `*.`"#,
    ),
    (
        GOOD_KEY,
        "allowed_hosts = [\"api.example.com\"]",
        "allowed_hosts = [\"api.*.example.com\"]",
        r#"providers/example.toml: allowed_hosts[0]: "api.*.example.com": only a leading `*.` wildcard is allowed"#,
    ),
    (
        GOOD_KEY,
        "allowed_hosts = [\"api.example.com\"]",
        "allowed_hosts = [\"*\"]",
        r#"providers/example.toml: allowed_hosts[0]: "*": only a leading `*.` wildcard is allowed"#,
    ),
    (
        GOOD_KEY,
        "allowed_hosts = [\"api.example.com\"]",
        "allowed_hosts = [\"api.example.com\", \"api.example.com\"]",
        r#"providers/example.toml: allowed_hosts[1]: "api.example.com" is listed twice"#,
    ),
    (
        GOOD_ACCOUNT,
        "allowed_hosts = [\"*.example.com\"]",
        "allowed_hosts = [\"acme.example.com\"]",
        "providers/example.toml: allowed_hosts: an account-specific provider needs a `*.` wildcard for its accounts' hosts",
    ),
    (
        GOOD_TEMPLATE,
        "custom = true",
        "custom = true\nallowed_hosts = [\"api.example.com\"]",
        "providers/example.toml: allowed_hosts: must be absent: custom providers take them from the user",
    ),
    // Other fields.
    (
        GOOD_OAUTH,
        "https://docs.example.com/api",
        "http://docs.example.com/api",
        "providers/example.toml: docs_url: http://docs.example.com/api is not https",
    ),
    (
        GOOD_OAUTH,
        "keywords = [\"sample\", \"demo\"]",
        "keywords = [\"sample\", \"Demo\"]",
        r#"providers/example.toml: keywords[1]: "Demo" must be lowercase, not empty and not padded"#,
    ),
    // Injection.
    (
        GOOD_KEY,
        "header = \"x-api-key\"",
        "header = \"X-Api-Key\"",
        r#"providers/example.toml: injection.header: "X-Api-Key" must be 1 to 64 characters of a-z, 0-9, '-' and '_'"#,
    ),
    (
        GOOD_KEY,
        "header = \"x-api-key\"",
        "header = \"x api key\"",
        r#"providers/example.toml: injection.header: "x api key" must be 1 to 64 characters of a-z, 0-9, '-' and '_'"#,
    ),
    (
        GOOD_KEY,
        "header = \"x-api-key\"",
        "header = \"host\"",
        r#"providers/example.toml: injection.header: "host" belongs to the connection or the broker, never to a credential"#,
    ),
    (
        GOOD_KEY,
        "header = \"x-api-key\"",
        "header = \"content-length\"",
        r#"providers/example.toml: injection.header: "content-length" belongs to the connection or the broker, never to a credential"#,
    ),
    (
        GOOD_KEY,
        "header = \"x-api-key\"",
        "header = \"transfer-encoding\"",
        r#"providers/example.toml: injection.header: "transfer-encoding" belongs to the connection or the broker, never to a credential"#,
    ),
    (
        GOOD_KEY,
        "header = \"x-api-key\"",
        "header = \"latchkey-capability\"",
        r#"providers/example.toml: injection.header: "latchkey-capability" belongs to the connection or the broker, never to a credential"#,
    ),
    (
        GOOD_KEY,
        "header = \"x-api-key\"",
        "header = \"x-api-key\", prefix = \"Bearer\\n\"",
        "providers/example.toml: injection.prefix: must be at most 32 printable ASCII characters",
    ),
    (
        GOOD_KEY,
        "{ header = \"x-api-key\" }",
        "{ query = \"api key\" }",
        r#"providers/example.toml: injection.query: "api key" must be 1 to 64 characters of A-Z, a-z, 0-9, '-' and '_'"#,
    ),
    (
        GOOD_KEY,
        "{ header = \"x-api-key\" }",
        "{ header = \"x-api-key\", query = \"key\" }",
        "providers/example.toml: injection: is either { header = .., prefix = .. } or { query = .. }",
    ),
    (
        GOOD_KEY,
        "{ header = \"x-api-key\" }",
        "{ query = \"key\", prefix = \"Bearer \" }",
        "providers/example.toml: injection: is either { header = .., prefix = .. } or { query = .. }",
    ),
    // The kind.
    (
        GOOD_KEY,
        "[api_key]\nlabel = \"API key\"\nprefix_hint = \"ex_\"\n",
        "",
        "providers/example.toml: oauth: a provider has exactly one of the [oauth] and [api_key] tables",
    ),
    (
        GOOD_OAUTH,
        "[oauth]",
        "[api_key]\nlabel = \"API key\"\n\n[oauth]",
        "providers/example.toml: oauth: a provider has exactly one of the [oauth] and [api_key] tables",
    ),
    (
        GOOD_KEY,
        "label = \"API key\"",
        "label = \"\"",
        "providers/example.toml: api_key.label: must not be empty",
    ),
    (
        GOOD_KEY,
        "prefix_hint = \"ex_\"",
        "prefix_hint = \"ex \"",
        r#"providers/example.toml: api_key.prefix_hint: "ex " must be printable and without spaces"#,
    ),
    // OAuth.
    (
        GOOD_OAUTH,
        "authorize_url = \"https://example.com/oauth/authorize\"\n",
        "",
        "providers/example.toml: oauth.authorize_url: is required",
    ),
    (
        GOOD_OAUTH,
        "token_url = \"https://example.com/oauth/token\"\n",
        "",
        "providers/example.toml: oauth.token_url: is required",
    ),
    (
        GOOD_OAUTH,
        "https://example.com/oauth/authorize",
        "http://example.com/oauth/authorize",
        "providers/example.toml: oauth.authorize_url: http://example.com/oauth/authorize is not https",
    ),
    (
        GOOD_OAUTH,
        "https://example.com/oauth/token",
        "http://example.com/oauth/token",
        "providers/example.toml: oauth.token_url: http://example.com/oauth/token is not https",
    ),
    (
        GOOD_OAUTH,
        "https://example.com/oauth/revoke",
        "http://example.com/oauth/revoke",
        "providers/example.toml: oauth.revocation_url: http://example.com/oauth/revoke is not https",
    ),
    (
        GOOD_OAUTH,
        "issuer = \"https://example.com\"",
        "issuer = \"example.com\"",
        r#"providers/example.toml: oauth.issuer: "example.com" is not a URL"#,
    ),
    (
        GOOD_OAUTH,
        "issuer = \"https://example.com\"",
        "issuer = \"http://example.com\"",
        "providers/example.toml: oauth.issuer: http://example.com/ is not https",
    ),
    (
        GOOD_OAUTH,
        "issuer = \"https://example.com\"",
        "issuer = \"https://example.com#x\"",
        "providers/example.toml: oauth.issuer: https://example.com#x must not carry a query or fragment",
    ),
    (
        GOOD_OAUTH,
        "pkce = true",
        "pkce = true\nscope_separator = \";\"",
        "providers/example.toml: oauth.scope_separator: must be \" \" or \",\"",
    ),
    (
        GOOD_OAUTH,
        "[\"read\", \"profile:read\"]",
        "[\"read\", \"read write\"]",
        r#"providers/example.toml: oauth.default_scopes[1]: "read write" is not a single scope token"#,
    ),
    (
        GOOD_OAUTH,
        "default_scopes = [\"read\", \"profile:read\"]",
        "default_scopes = [\"a,b\"]\nscope_separator = \",\"",
        r#"providers/example.toml: oauth.default_scopes[0]: "a,b" is not a single scope token"#,
    ),
    (
        GOOD_OAUTH,
        "[\"read\", \"profile:read\"]",
        "[\"\"]",
        r#"providers/example.toml: oauth.default_scopes[0]: "" is not a single scope token"#,
    ),
    (
        GOOD_OAUTH,
        "{ access_type = \"offline\" }",
        "{ redirect_uri = \"https://evil.example.net\" }",
        r#"providers/example.toml: oauth.extra_authorize_params.redirect_uri: "redirect_uri" is not a plain name, or is a parameter the client sets itself"#,
    ),
    (
        GOOD_OAUTH,
        "{ access_type = \"offline\" }",
        "{ \"a b\" = \"c\" }",
        r#"providers/example.toml: oauth.extra_authorize_params.a b: "a b" is not a plain name, or is a parameter the client sets itself"#,
    ),
    (
        GOOD_TEMPLATE,
        "[oauth]",
        "[oauth]\nauthorize_url = \"https://example.com/a\"\ntoken_url = \"https://example.com/t\"",
        "providers/example.toml: oauth.authorize_url: must be absent: custom providers take the endpoints from the user",
    ),
    (
        GOOD_ACCOUNT,
        "[oauth]",
        "[oauth]\nauthorize_url = \"https://example.com/a\"",
        "providers/example.toml: oauth.token_url: is required",
    ),
    // The account lookup: a plain path below the base URL, JSON pointers into the answer.
    (
        GOOD_KEY,
        r#"path = "/v2/me""#,
        r#"path = "v2/me""#,
        r#"providers/example.toml: account.path: "v2/me" must be an absolute path of at most 256 characters of A-Z, a-z, 0-9 and `/._~@-`, without empty, `.` or `..` segments"#,
    ),
    (
        GOOD_KEY,
        r#"path = "/v2/me""#,
        r#"path = "/v2/../../admin""#,
        r#"providers/example.toml: account.path: "/v2/../../admin" must be an absolute path of at most 256 characters of A-Z, a-z, 0-9 and `/._~@-`, without empty, `.` or `..` segments"#,
    ),
    (
        GOOD_KEY,
        r#"path = "/v2/me""#,
        r#"path = "//evil.example/me""#,
        r#"providers/example.toml: account.path: "//evil.example/me" must be an absolute path of at most 256 characters of A-Z, a-z, 0-9 and `/._~@-`, without empty, `.` or `..` segments"#,
    ),
    (
        GOOD_KEY,
        r#"path = "/v2/me""#,
        r#"path = "/v2/me?key=1""#,
        r#"providers/example.toml: account.path: "/v2/me?key=1" must be an absolute path of at most 256 characters of A-Z, a-z, 0-9 and `/._~@-`, without empty, `.` or `..` segments"#,
    ),
    (
        GOOD_KEY,
        r#"fields = ["/user/email", "/user/id"]"#,
        "fields = []",
        "providers/example.toml: account.fields: must not be empty",
    ),
    (
        GOOD_KEY,
        r#"fields = ["/user/email", "/user/id"]"#,
        r#"fields = ["/user/email", "user.id"]"#,
        r#"providers/example.toml: account.fields[1]: "user.id" must be a JSON pointer (`/login`, `/data/email`) of at most 128 printable characters"#,
    ),
    (
        GOOD_TEMPLATE,
        "[oauth]",
        "[account]\npath = \"/me\"\nfields = [\"/id\"]\n\n[oauth]",
        "providers/example.toml: account: must be absent: custom providers have no fixed API to ask",
    ),
];

#[test]
fn every_rule_refuses_a_broken_file_with_its_exact_message() {
    for good in [GOOD_OAUTH, GOOD_KEY, GOOD_ACCOUNT, GOOD_TEMPLATE] {
        Provider::from_file("example.toml", good)
            .unwrap_or_else(|e| panic!("test setup: the base file is valid: {e}\n{good}"));
    }
    let mut seen = Vec::new();
    for (base, from, to, expected) in CASES {
        assert!(base.contains(from), "test setup: {from:?} is in the base file");
        let error = match Provider::from_file("example.toml", &base.replacen(from, to, 1)) {
            Ok(_) => panic!("breaking {from:?} -> {to:?} must be refused"),
            Err(error) => error,
        };
        assert_eq!(error.to_string(), *expected, "breaking {from:?} -> {to:?}");
        if let CatalogError::Invalid { problem, .. } = error {
            seen.push(std::mem::discriminant(&problem));
        }
    }
    // Every rule the validator has is among the cases above.
    let every_rule = [
        FieldError::BadId(String::new()),
        FieldError::IdNotFileName { id: String::new(), file: String::new() },
        FieldError::Empty,
        FieldError::Missing,
        FieldError::NotApplicable(""),
        FieldError::NotAUrl(String::new()),
        FieldError::NotHttps(String::new()),
        FieldError::UserInfo(String::new()),
        FieldError::QueryOrFragment(String::new()),
        FieldError::BadHost(String::new()),
        FieldError::WildcardTooBroad(String::new()),
        FieldError::WildcardNotLeading(String::new()),
        FieldError::DuplicateHost(String::new()),
        FieldError::HostNotAllowed(String::new()),
        FieldError::NoAccountWildcard,
        FieldError::CustomAndAccountSpecific,
        FieldError::BadInjection,
        FieldError::BadHeaderName(String::new()),
        FieldError::ReservedHeader(String::new()),
        FieldError::BadPrefix,
        FieldError::BadQueryName(String::new()),
        FieldError::KindTables,
        FieldError::BadScopeSeparator,
        FieldError::BadScope(String::new()),
        FieldError::BadAuthorizeParam(String::new()),
        FieldError::BadKeyword(String::new()),
        FieldError::BadPrefixHint(String::new()),
        FieldError::BadAccountPath(String::new()),
        FieldError::BadAccountField(String::new()),
    ];
    for rule in &every_rule {
        assert!(seen.contains(&std::mem::discriminant(rule)), "a case breaks the rule {rule:?}");
    }
}

#[test]
fn a_file_that_does_not_parse_is_refused_with_its_line_and_field() {
    let unknown =
        refused("example.toml", &GOOD_KEY.replacen("[api_key]", "surprise = 1\n\n[api_key]", 1));
    assert!(
        unknown.starts_with("providers/example.toml: line 8: unknown field `surprise`"),
        "deny_unknown_fields names the file, line and field: {unknown}"
    );
    let nested =
        refused("example.toml", &GOOD_OAUTH.replacen("pkce = true", "pkce = true\nextra = 1", 1));
    assert!(
        nested.starts_with("providers/example.toml: line 19: unknown field `extra`"),
        "{nested}"
    );
    let wrong_type =
        refused("example.toml", &GOOD_OAUTH.replacen("pkce = true", "pkce = \"yes\"", 1));
    assert!(wrong_type.starts_with("providers/example.toml: line 18: "), "{wrong_type}");
    let bad_enum =
        refused("example.toml", &GOOD_OAUTH.replacen("\"rotating\"", "\"sometimes\"", 1));
    assert!(bad_enum.contains("unknown variant `sometimes`"), "{bad_enum}");
    let missing = refused("example.toml", &GOOD_KEY.replacen("name = \"Example\"\n", "", 1));
    assert!(missing.contains("missing field `name`"), "{missing}");
    let not_toml = refused("example.toml", "id = ");
    assert!(not_toml.starts_with("providers/example.toml: line 1: "), "{not_toml}");
}

#[test]
fn two_files_with_one_id_are_refused() {
    let other = GOOD_KEY.replacen("id = \"example\"", "id = \"other\"", 1);
    Catalog::from_files([("example.toml", GOOD_KEY), ("other.toml", other.as_str())])
        .expect("two ids are fine");
    let error = Catalog::from_files([("example.toml", GOOD_KEY), ("example.toml", GOOD_OAUTH)])
        .unwrap_err();
    assert_eq!(
        error,
        CatalogError::Duplicate {
            file: "providers/example.toml".into(),
            id: ProviderId::parse("example").unwrap(),
            first: "providers/example.toml".into(),
        }
    );
    assert_eq!(
        error.to_string(),
        "providers/example.toml: id: example is already defined by providers/example.toml"
    );
}

#[test]
fn provider_ids_take_only_the_id_alphabet() {
    for good in ["github", "custom-oauth2", "a", "x1-y2"] {
        assert_eq!(ProviderId::parse(good).unwrap().as_str(), good);
    }
    for bad in ["", "-github", "github-", "GitHub", "git_hub", "git.hub", "gït", &"a".repeat(65)] {
        assert_eq!(ProviderId::parse(bad), Err(FieldError::BadId(bad.to_owned())), "{bad:?}");
    }
    let id = ProviderId::parse("github").unwrap();
    assert_eq!(format!("[{id:<8}]"), "[github  ]", "Display pads for tables");
    assert_eq!(serde_json::to_string(&id).unwrap(), "\"github\"", "serialized as a string");
}

// --- Wildcards, account-specific and user-defined providers ----------------------------------

#[test]
fn a_wildcard_covers_hosts_below_its_domain_only() {
    let zendesk = Catalog::builtin().get("zendesk").unwrap();
    assert!(zendesk.account_specific && zendesk.api_base_url.is_none());
    let url = zendesk.base_url_for(Some("https://acme.zendesk.com/api/v2")).unwrap();
    assert_eq!(url.host_str(), Some("acme.zendesk.com"));
    zendesk.base_url_for(Some("https://eu.acme.zendesk.com/api/v2")).expect("any depth below");
    for outside in [
        "https://zendesk.com/api/v2",
        "https://evilzendesk.com/api/v2",
        "https://acme.zendesk.com.evil.example/api",
        "https://acme.zendesk.com:8443/api/v2",
    ] {
        let error = zendesk.base_url_for(Some(outside)).unwrap_err().to_string();
        assert!(
            error.starts_with("provider zendesk: api_base_url: the API host")
                && error.ends_with("is not covered by allowed_hosts"),
            "{outside} is outside *.zendesk.com: {error}"
        );
    }
    assert_eq!(
        zendesk.base_url_for(Some("http://acme.zendesk.com")).unwrap_err().to_string(),
        "provider zendesk: api_base_url: http://acme.zendesk.com/ is not https"
    );
    assert_eq!(
        zendesk.base_url_for(None).unwrap_err().to_string(),
        "provider zendesk: api_base_url: is required"
    );
}

#[test]
fn a_fixed_base_url_cannot_be_moved() {
    let openai = Catalog::builtin().get("openai").unwrap();
    assert_eq!(openai.base_url_for(None).unwrap().as_str(), "https://api.openai.com/");
    assert_eq!(
        openai.base_url_for(Some("https://api.openai.com")).unwrap().as_str(),
        "https://api.openai.com/",
        "repeating the catalog's base URL is fine"
    );
    assert_eq!(
        openai.base_url_for(Some("https://attacker.example")).unwrap_err().to_string(),
        "provider openai: api_base_url: must be absent: this provider's API base URL is fixed"
    );
    let custom = Catalog::builtin().get(CUSTOM_API_KEY).unwrap();
    assert_eq!(
        custom.base_url_for(Some("http://127.0.0.1:8080/v1")).unwrap().as_str(),
        "http://127.0.0.1:8080/v1",
        "a custom provider may reach a local service"
    );
    assert_eq!(
        custom.base_url_for(Some("https://internal.example/?key=1")).unwrap_err().to_string(),
        "provider custom-api-key: api_base_url: https://internal.example/?key=1 must not carry a query or fragment"
    );
    assert_eq!(
        custom.base_url_for(Some("http://internal.example")).unwrap_err().to_string(),
        "provider custom-api-key: api_base_url: http://internal.example/ is not https"
    );
}

#[test]
fn user_defined_providers_keep_the_same_rules() {
    let injection = Injection::Header { name: "x-api-key".into(), prefix: String::new() };
    let provider = Provider::custom_api_key(
        "https://api.internal.example/v2",
        vec!["api.internal.example".into()],
        injection.clone(),
    )
    .expect("a valid custom API-key provider");
    assert_eq!(provider.id, CUSTOM_API_KEY);
    assert!(provider.custom && matches!(provider.kind, ProviderKind::ApiKey(_)));
    provider.validate().expect("validate accepts what the builder built");
    Provider::custom_api_key(
        "http://127.0.0.1:9000",
        vec!["127.0.0.1:9000".into()],
        injection.clone(),
    )
    .expect("plain http on loopback is for local services");
    Provider::custom_api_key("http://localhost", vec!["localhost".into()], Injection::bearer())
        .expect("localhost too");

    let refusals: [(&str, Vec<String>, Injection, &str); 6] = [
        (
            "http://api.internal.example",
            vec!["api.internal.example".into()],
            injection.clone(),
            "custom provider: api_base_url: http://api.internal.example/ is not https",
        ),
        (
            "https://api.internal.example",
            vec!["other.internal.example".into()],
            injection.clone(),
            "custom provider: api_base_url: the API host api.internal.example is not covered by allowed_hosts",
        ),
        (
            "http://127.0.0.1:9000",
            vec!["127.0.0.1".into()],
            injection.clone(),
            "custom provider: api_base_url: the API host 127.0.0.1 is not covered by allowed_hosts",
        ),
        (
            "https://api.internal.example",
            Vec::new(),
            injection.clone(),
            "custom provider: allowed_hosts: must not be empty",
        ),
        (
            "https://api.internal.example",
            vec!["10.0.0.1".into()],
            injection.clone(),
            r#"custom provider: allowed_hosts[0]: "10.0.0.1" must be a lowercase DNS name without scheme, port or path"#,
        ),
        (
            "https://api.internal.example",
            vec!["api.internal.example".into()],
            Injection::Header { name: "connection".into(), prefix: String::new() },
            r#"custom provider: injection.header: "connection" belongs to the connection or the broker, never to a credential"#,
        ),
    ];
    for (base, hosts, injection, expected) in refusals {
        let error = Provider::custom_api_key(base, hosts, injection).unwrap_err();
        assert_eq!(error.to_string(), expected);
    }
    assert_eq!(
        Provider::custom_api_key("not a url", vec!["x.example".into()], Injection::bearer())
            .unwrap_err()
            .to_string(),
        r#"custom provider: api_base_url: "not a url" is not a URL"#
    );

    let oauth = OAuthProvider {
        authorize_url: Some("https://login.internal.example/authorize".parse().unwrap()),
        token_url: Some("https://login.internal.example/token".parse().unwrap()),
        revocation_url: None,
        issuer: Some("https://login.internal.example".into()),
        default_scopes: vec!["read".into()],
        scope_separator: " ".into(),
        refresh: RefreshBehaviour::Rotating,
        client_auth: ClientAuth::None,
        extra_authorize_params: Vec::new(),
        pkce: true,
    };
    let built = Provider::custom_oauth2(
        "https://api.internal.example",
        vec!["api.internal.example".into()],
        oauth.clone(),
    )
    .expect("a valid custom OAuth provider");
    assert_eq!(built.id, CUSTOM_OAUTH2);
    assert_eq!(built.injection, Injection::bearer(), "OAuth access tokens are bearer tokens");
    let no_endpoints = OAuthProvider { authorize_url: None, token_url: None, ..oauth.clone() };
    assert_eq!(
        Provider::custom_oauth2(
            "https://api.internal.example",
            vec!["api.internal.example".into()],
            no_endpoints
        )
        .unwrap_err()
        .to_string(),
        "custom provider: oauth.authorize_url: is required",
        "a user-defined OAuth provider names its endpoints"
    );
    let bad_scope = OAuthProvider { default_scopes: vec!["a b".into()], ..oauth };
    assert_eq!(
        Provider::custom_oauth2(
            "https://api.internal.example",
            vec!["api.internal.example".into()],
            bad_scope
        )
        .unwrap_err()
        .to_string(),
        r#"custom provider: oauth.default_scopes[0]: "a b" is not a single scope token"#
    );
}

#[test]
fn validate_names_the_provider_of_an_entry_changed_in_code() {
    let mut github = Catalog::builtin().get("github").unwrap().clone();
    github.allowed_hosts = vec!["uploads.github.com".into()];
    assert_eq!(
        github.validate().unwrap_err().to_string(),
        "provider github: api_base_url: the API host api.github.com is not covered by allowed_hosts"
    );
}

// --- schema.json -----------------------------------------------------------------------------

/// Every key every file uses is in the schema, with a value of the schema's type and enum; every
/// required key is present; and every property the schema lists is used by some file (so the
/// schema names only real fields: the files parse with `deny_unknown_fields`).
#[test]
fn the_editor_schema_agrees_with_the_files() {
    let schema: serde_json::Value =
        serde_json::from_str(include_str!("../../providers/schema.json"))
            .expect("schema.json is JSON");
    let mut used = BTreeSet::new();
    for (name, text) in builtin_files() {
        let value: toml::Value = toml::from_str(text).unwrap();
        assert!(
            text.starts_with("#:schema ./schema.json\n"),
            "{name} points editors at the schema"
        );
        check_against_schema(name, "", &value, &schema, &mut used);
    }
    let mut listed = BTreeSet::new();
    list_properties("", &schema, &mut listed);
    assert_eq!(listed, used, "the schema lists exactly the fields the files use");
}

fn check_against_schema(
    file: &str,
    path: &str,
    value: &toml::Value,
    schema: &serde_json::Value,
    used: &mut BTreeSet<String>,
) {
    if let Some(options) = schema.get("enum").and_then(|e| e.as_array()) {
        let text = value.as_str().unwrap_or_else(|| panic!("{file}: {path} is a string"));
        assert!(
            options.iter().any(|o| o == text),
            "{file}: {path} = {text:?} is one of {options:?}"
        );
    }
    match schema.get("type").and_then(|t| t.as_str()) {
        Some("object") => {
            let table = value.as_table().unwrap_or_else(|| panic!("{file}: {path} is a table"));
            let properties = schema.get("properties").and_then(|p| p.as_object());
            for required in schema.get("required").and_then(|r| r.as_array()).into_iter().flatten()
            {
                let key = required.as_str().unwrap();
                assert!(table.contains_key(key), "{file}: {path} has the required {key}");
            }
            for (key, item) in table {
                let at = if path.is_empty() { key.clone() } else { format!("{path}.{key}") };
                match (properties.and_then(|p| p.get(key)), schema.get("additionalProperties")) {
                    (Some(sub), _) => {
                        used.insert(at.clone());
                        check_against_schema(file, &at, item, sub, used);
                    }
                    (None, Some(serde_json::Value::Bool(false)) | None) => {
                        panic!("{file}: {at} is not in schema.json")
                    }
                    (None, Some(sub)) => check_against_schema(file, &at, item, sub, used),
                }
            }
        }
        Some("array") => {
            let items = value.as_array().unwrap_or_else(|| panic!("{file}: {path} is an array"));
            for item in items {
                check_against_schema(file, path, item, &schema["items"], used);
            }
        }
        Some("string") => assert!(value.is_str(), "{file}: {path} is a string"),
        Some("boolean") => assert!(value.is_bool(), "{file}: {path} is a boolean"),
        Some(other) => panic!("schema.json: {path}: a type this check does not know: {other}"),
        None => {}
    }
}

fn list_properties(path: &str, schema: &serde_json::Value, out: &mut BTreeSet<String>) {
    for (key, sub) in schema.get("properties").and_then(|p| p.as_object()).into_iter().flatten() {
        let at = if path.is_empty() { key.clone() } else { format!("{path}.{key}") };
        out.insert(at.clone());
        list_properties(&at, sub, out);
    }
}

// --- docs/providers.md -----------------------------------------------------------------------

/// A section of the page: its title and which providers it lists.
type Section = (&'static str, fn(&Provider) -> bool);

fn providers_page(catalog: &Catalog) -> String {
    let mut page = String::from(
        "# Providers\n\n\
         Generated from `crates/client/providers/` by `crates/client/tests/device/catalog.rs`; do\n\
         not edit by hand (`LATCHKEY_UPDATE_DOCS=1 cargo test -p latchkey-client --test device\n\
         catalog::`). One TOML file per provider; `crates/client/providers/schema.json` describes\n\
         the format for editors.\n\n\
         - **API base**: where agents' calls go. *Per account* providers take the account's URL\n  \
           under the listed wildcard; *custom* ones take everything from the user.\n\
         - **Injection**: where the broker puts the credential.\n\
         - **Account**: where the device reads whose account a new credential acts as, shown in\n  \
           listings: `GET <path>` below the API base and the first field present (JSON pointers);\n  \
           an OpenID Connect ID token's `email`, `preferred_username`, `name` or `sub` comes\n  \
           first when the sign-in returns one.\n\
         - **Default scopes**: what an OAuth connection asks for unless told otherwise.\n\
         - **Refresh**: *none* (long-lived token), *reusable* (the refresh token stays valid) or\n  \
           *rotating* (each refresh returns a new refresh token).\n\
         - **Revocation**: the provider has an RFC 7009 revocation endpoint, used when a\n  \
           credential is deleted.\n\n\
         Notes:\n\n\
         - Twilio takes HTTP Basic credentials, which the broker cannot assemble from two parts:\n  \
           the member enters `<API key SID>:<secret>` and the device stores the Basic credential\n  \
           itself, `base64(\"<API key SID>:<secret>\")` (`format = \"basic\"` in the catalog).\n\
         - Zendesk's OAuth endpoints live on each account's subdomain\n  \
           (`https://<subdomain>.zendesk.com/oauth/authorizations/new` and `/oauth/tokens`), so they\n  \
           come from the user along with the base URL (`latchkey connect zendesk --base-url\n  \
           https://<subdomain>.zendesk.com/api/v2 --authorize-url ... --token-url ...`), and only\n  \
           https URLs on the base URL's host are taken.\n\
         - Some APIs also want a version header the caller's SDK sends itself\n  \
           (`anthropic-version`, `notion-version`); the broker forwards it untouched.\n",
    );
    let sections: [Section; 3] = [
        ("OAuth 2.0", |p| !p.custom && p.oauth().is_some()),
        ("API keys", |p| !p.custom && p.api_key().is_some()),
        ("Custom", |p| p.custom),
    ];
    for (title, wanted) in sections {
        let oauth_columns = title != "API keys";
        write!(page, "\n## {title}\n\n| id | name | kind | API base | injection | account |")
            .unwrap();
        page.push_str(if oauth_columns {
            " default scopes | refresh | revocation |\n"
        } else {
            "\n"
        });
        page.push_str(if oauth_columns {
            "|---|---|---|---|---|---|---|---|---|\n"
        } else {
            "|---|---|---|---|---|---|\n"
        });
        for p in catalog.iter().filter(|p| wanted(p)) {
            page.push_str(&row(p, oauth_columns));
        }
    }
    page
}

fn row(p: &Provider, oauth_columns: bool) -> String {
    let kind = match &p.kind {
        ProviderKind::OAuth(o) if o.pkce => "OAuth 2.0 + PKCE".to_owned(),
        ProviderKind::OAuth(_) => "OAuth 2.0".to_owned(),
        ProviderKind::ApiKey(key) => {
            let label = match &key.key_prefix_hint {
                Some(hint) => format!("{} (`{hint}…`)", key.key_label),
                None => key.key_label.clone(),
            };
            match key.format {
                KeyFormat::Basic => format!("{label}, stored as HTTP Basic"),
                _ => label,
            }
        }
    };
    let base = match (&p.api_base_url, p.custom) {
        (Some(url), _) => format!("`{}`", url.as_str().trim_end_matches('/')),
        (None, true) => "yours".to_owned(),
        (None, false) => format!("per account (`{}`)", p.allowed_hosts.join("`, `")),
    };
    let injection = match &p.injection {
        Injection::Header { name, prefix } if prefix.is_empty() => format!("`{name}: <secret>`"),
        Injection::Header { name, prefix } => format!("`{name}: {prefix}<secret>`"),
        Injection::Query { name } => format!("`?{name}=<secret>`"),
    };
    let account = match &p.account {
        Some(lookup) => format!("`GET {}` `{}`", lookup.path, lookup.fields.join("` `")),
        None => String::new(),
    };
    let mut row =
        format!("| `{}` | {} | {kind} | {base} | {injection} | {account} |", p.id, p.name);
    match p.oauth() {
        Some(o) => {
            let scopes = if o.default_scopes.is_empty() {
                "(none)".to_owned()
            } else {
                o.default_scopes.iter().map(|s| format!("`{s}`")).collect::<Vec<_>>().join(" ")
            };
            let revocation = if o.revocation_url.is_some() { "yes" } else { "no" };
            write!(row, " {scopes} | {} | {revocation} |", o.refresh.as_str()).unwrap();
        }
        None if oauth_columns => row.push_str(" | | |"),
        None => {}
    }
    row.push('\n');
    row
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
        "docs/providers.md is stale: run LATCHKEY_UPDATE_DOCS=1 cargo test -p latchkey-client --test device catalog::"
    );
}

#[test]
fn an_allow_list_entry_keeps_an_explicit_port() {
    use latchkey_client::catalog::allowed_host_of;
    let on_port: url::Url = "http://127.0.0.1:8080/v1".parse().unwrap();
    assert_eq!(
        allowed_host_of(&on_port),
        "127.0.0.1:8080",
        "the broker matches an explicit port exactly: without it a custom API on a port is refused"
    );
    let default_port: url::Url = "https://api.example.com:443/".parse().unwrap();
    assert_eq!(
        allowed_host_of(&default_port),
        "api.example.com",
        "the scheme's own port is implied"
    );
}

/// Every account lookup in the catalog asks the credential's own API: its URL stays on the base
/// URL's host and below its path, so the credential goes nowhere it could not go anyway.
#[test]
fn every_account_lookup_stays_below_the_base_url() {
    let catalog = Catalog::builtin();
    let mut with_lookup = 0;
    for provider in catalog.iter() {
        let Some(lookup) = &provider.account else { continue };
        with_lookup += 1;
        let base = match &provider.api_base_url {
            Some(base) => base.clone(),
            None => url::Url::parse("https://acme.zendesk.com/api/v2").unwrap(),
        };
        let url = lookup.url(&base).unwrap();
        assert_eq!(
            (url.scheme(), url.host_str(), url.port()),
            ("https", base.host_str(), base.port()),
            "{}: {url} is on the base URL's origin",
            provider.id
        );
        assert!(
            url.path().starts_with(base.path().trim_end_matches('/')) && url.query().is_none(),
            "{}: {url} is below {base}",
            provider.id
        );
    }
    assert!(with_lookup >= 20, "the well-known providers name their accounts: {with_lookup}");
}
