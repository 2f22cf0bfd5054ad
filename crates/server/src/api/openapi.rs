//! The OpenAPI document, `GET /openapi.json`.
//!
//! It is generated from the code: every route is registered with `utoipa_axum::routes!` from the
//! `#[utoipa::path]` annotation on its handler, so a route cannot exist without its entry, nor an
//! entry without its route. Request and response bodies are the handlers' own types
//! (`#[derive(ToSchema)]`); types from `latchkey-core`, which knows nothing of OpenAPI, are
//! described by the stand-ins below. The document is committed as `docs/openapi.json`; a test
//! fails when it is stale (`LATCHKEY_UPDATE_OPENAPI=1 cargo test -p latchkey-server --test
//! operations` rewrites it).

use std::collections::BTreeMap;
use std::sync::OnceLock;

use axum::http::header;
use axum::response::IntoResponse;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{RefOr, Response, ResponseBuilder};
use utoipa::{IntoResponses, Modify, OpenApi};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::error::{ApiError, ErrorCode};
use crate::state::SharedState;

/// The document's root: everything that is not a route.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "Latchkey broker API",
        description = "The broker stores ciphertext it cannot open, authenticates member devices \
            (RFC 9421 request signatures) and agents (placeholder tokens), and forwards agents' \
            calls to upstream APIs under a capability and the workspace's Cedar policies. Every \
            error is `{\"code\", \"message\"}` with a stable code; see docs/api.md.",
        license(name = "Apache-2.0", identifier = "Apache-2.0"),
    ),
    components(schemas(ApiError, ErrorCode)),
    modifiers(&SecuritySchemes),
    tags(
        (name = "service", description = "Health, readiness, the broker key and this document"),
        (name = "workspaces", description = "Creating a workspace; who the caller is; pausing every agent call in it"),
        (name = "members", description = "Invites, members, devices and wrapped keys"),
        (name = "credentials", description = "Credentials (ciphertext only) and key rotation"),
        (name = "agents", description = "Agents, their tokens, and standing grants"),
        (name = "policies", description = "Cedar policies"),
        (name = "audit", description = "The hash-chained audit log"),
        (name = "approvals", description = "Agent calls held for a member's approval: listing, answering, and the devices' live stream"),
        (name = "proxy", description = "Agents' calls to upstream APIs"),
    ),
)]
struct ApiDoc;

/// Name of the device-signature security scheme.
pub(crate) const DEVICE_SIGNATURE: &str = "device_signature";

/// The root document, before the routes are added.
pub(super) fn root() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
}

pub(super) fn routes() -> OpenApiRouter<SharedState> {
    OpenApiRouter::new().routes(routes!(openapi_json))
}

/// This document.
///
/// The OpenAPI 3.1 description of every route of the broker, generated from the code.
#[utoipa::path(
    get,
    path = "/openapi.json",
    tag = "service",
    operation_id = "openapi",
    responses((status = 200, description = "The OpenAPI document", content_type = "application/json")),
)]
async fn openapi_json() -> impl IntoResponse {
    static JSON: OnceLock<String> = OnceLock::new();
    let json = JSON.get_or_init(|| {
        let document = super::documented().into_openapi();
        document.to_pretty_json().unwrap_or_else(|error| {
            tracing::error!(%error, "could not serialize the OpenAPI document");
            "{}".to_owned()
        })
    });
    ([(header::CONTENT_TYPE, "application/json")], json.as_str())
}

/// The security schemes: device signatures and agent tokens.
struct SecuritySchemes;

impl Modify for SecuritySchemes {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        let mut signature = ApiKeyValue::new("Signature");
        signature.description = Some(
            "An RFC 9421 HTTP message signature made with the device's Ed25519 key; the format \
             is in docs/protocol.md, \"Device request signatures (RFC 9421)\". Three headers \
             travel together: `Content-Digest: sha-256=:<base64 SHA-256 of the body>:` (RFC \
             9530; also for an empty body), `Signature-Input: lk=(\"@method\" \"@target-uri\" \
             \"content-digest\" [\"content-type\"]);created=..;expires=..;nonce=\"..\";\
             keyid=\"<device id>\";alg=\"ed25519\";tag=\"latchkey\"` and `Signature: \
             lk=:<base64 signature>:`. `content-type` is covered whenever the request has it. \
             The target URI is the broker's public origin plus the path and query. A signature \
             lives at most 300 s (`expires - created`), the broker allows 60 s of clock skew, \
             and each `(keyid, nonce)` is accepted once. Workspace creation and joining are \
             signed by the device being registered, whose key is in the body."
                .to_owned(),
        );
        components.security_schemes.insert(
            DEVICE_SIGNATURE.to_owned(),
            SecurityScheme::ApiKey(ApiKey::Header(signature)).into(),
        );
        let bearer = HttpBuilder::new()
            .scheme(HttpAuthScheme::Bearer)
            .bearer_format("lk_ agent token")
            .description(Some(
                "The agent's placeholder token (`lk_...`), sent where the provider's SDK sends its \
                 key: `Authorization: Bearer` (or `token`). A capability may be appended after a \
                 `.`.",
            ))
            .build();
        components
            .security_schemes
            .insert("agent_token".to_owned(), SecurityScheme::Http(bearer).into());
        let mut header = ApiKeyValue::new("x-api-key");
        header.description = Some(
            "The agent token in `x-api-key` (also accepted: `api-key`, `x-goog-api-key`), for \
             SDKs that send their key there."
                .to_owned(),
        );
        components.security_schemes.insert(
            "agent_token_header".to_owned(),
            SecurityScheme::ApiKey(ApiKey::Header(header)).into(),
        );
        // Shared by every operation signed by an enrolled device (see `DeviceErrors`).
        components.responses.insert(RATE_LIMITED.to_owned(), rate_limited());
    }
}

// ---------------------------------------------------------------------------------------------
// Error responses shared by many operations
// ---------------------------------------------------------------------------------------------

/// The body of every error response: an `ApiError` as JSON.
fn api_error_content() -> utoipa::openapi::Content {
    utoipa::openapi::ContentBuilder::new()
        .schema(Some(utoipa::openapi::Ref::from_schema_name("ApiError")))
        .build()
}

/// An error response with the codes it may carry.
pub(crate) fn error(codes: &str) -> RefOr<Response> {
    ResponseBuilder::new()
        .description(format!("Error; `code` is one of: {codes}"))
        .content("application/json", api_error_content())
        .build()
        .into()
}

/// What every request signed by an enrolled device may be answered with besides its own errors:
/// those of [`RegistrationErrors`], and the device's rate limit.
pub(crate) struct DeviceErrors;

impl IntoResponses for DeviceErrors {
    fn responses() -> BTreeMap<String, RefOr<Response>> {
        let mut responses = RegistrationErrors::responses();
        let rate_limited = utoipa::openapi::Ref::from_response_name(RATE_LIMITED);
        responses.insert("429".to_owned(), rate_limited.into());
        responses
    }
}

/// What every signed device request may be answered with besides its own errors, a request
/// signed by the device being registered (workspace creation, joining) included: the signature
/// checks, an oversized body, and failures of the broker itself.
pub(crate) struct RegistrationErrors;

impl IntoResponses for RegistrationErrors {
    fn responses() -> BTreeMap<String, RefOr<Response>> {
        BTreeMap::from([
            (
                "401".to_owned(),
                error(
                    "`signature_invalid` (missing, malformed, expired or wrong signature or \
                     digest), `unknown_device` (the key id is not an active device), \
                     `replayed_request` (the nonce was used)",
                ),
            ),
            ("413".to_owned(), error("`payload_too_large` (body over 1 MiB)")),
            ("500".to_owned(), error("`internal`")),
        ])
    }
}

/// Name of the shared `429 rate_limited` response among the document's components.
const RATE_LIMITED: &str = "RateLimited";

/// `429 rate_limited`, with its `Retry-After` header.
fn rate_limited() -> RefOr<Response> {
    let retry_after = utoipa::openapi::HeaderBuilder::new()
        .schema(Some(
            utoipa::openapi::ObjectBuilder::new().schema_type(utoipa::openapi::Type::Integer),
        ))
        .description(Some("Whole seconds (at least 1) until the device may send a request again"))
        .build();
    ResponseBuilder::new()
        .description(
            "Error; `code` is `rate_limited`: the device sent more requests than the broker \
             accepts from one device (by default 3000 at once, then 10 a second); nothing was \
             done. Retry after `Retry-After` seconds",
        )
        .header("Retry-After", retry_after)
        .content("application/json", api_error_content())
        .build()
        .into()
}

// ---------------------------------------------------------------------------------------------
// Stand-ins for latchkey-core types in JSON
// ---------------------------------------------------------------------------------------------

/// Schema-only types: each describes the JSON form of a `latchkey-core` type that cannot
/// implement `ToSchema` itself (and `NamedId`, whose generic id would need one). Never
/// constructed.
#[allow(dead_code, reason = "schema descriptions only; never constructed")]
pub(crate) mod stand_in {
    use utoipa::ToSchema;

    macro_rules! uuid_schema {
        ($($(#[$doc:meta])* $name:ident),* $(,)?) => {$(
            $(#[$doc])*
            #[derive(ToSchema)]
            #[schema(value_type = String, format = "uuid", example = "0190a5b2-7c4e-7d1a-9a41-5b3f2e8c6d10")]
            pub(crate) struct $name(String);
        )*};
    }

    uuid_schema!(
        /// A workspace id: a lowercase hyphenated UUID.
        WorkspaceId,
        /// A member id: a lowercase hyphenated UUID.
        MemberId,
        /// A device id: a lowercase hyphenated UUID; also the `keyid` of its signatures.
        DeviceId,
        /// A credential id: a lowercase hyphenated UUID.
        CredentialId,
        /// An agent id: a lowercase hyphenated UUID.
        AgentId,
        /// A standing grant id: a lowercase hyphenated UUID.
        GrantId,
        /// An approval id: a lowercase hyphenated UUID.
        ApprovalId,
        /// A refresh lease id: a lowercase hyphenated UUID.
        LeaseId,
        /// An invite id: a lowercase hyphenated UUID (not the code, which is shown once).
        InviteId,
    );

    /// A key version: 1 for the first key, one more for each rotation.
    #[derive(ToSchema)]
    #[schema(value_type = u32, minimum = 1, example = 1)]
    pub(crate) struct KeyVersion(u32);

    /// A device fingerprint: 24 Crockford base32 symbols in six dashed groups, for two humans to
    /// compare at enrolment.
    #[derive(ToSchema)]
    #[schema(example = "7G3K-Q9M2-XW4T-8HJ1-C5RZ-0NPB")]
    pub(crate) struct Fingerprint(String);

    /// An id the registering device chose, with a display name (1 to 100 characters, no control
    /// characters).
    #[derive(ToSchema)]
    pub(crate) struct NamedId {
        #[schema(value_type = String, format = "uuid")]
        id: String,
        name: String,
    }

    /// Who a credential (or member key) belongs to.
    #[derive(ToSchema)]
    #[serde(tag = "kind", content = "member", rename_all = "snake_case")]
    pub(crate) enum Owner {
        /// Team-wide, under the workspace key.
        Shared,
        /// A member's own, under that member's key.
        Member(MemberId),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_document_covers_every_area_and_the_security_schemes() {
        let document = super::super::documented().into_openapi();
        let json = serde_json::to_value(&document).unwrap();
        for path in ["/v1/workspaces", "/v1/credentials/{id}", "/openapi.json", "/healthz"] {
            assert!(json["paths"].get(path).is_some(), "{path} is documented");
        }
        for scheme in [DEVICE_SIGNATURE, "agent_token", "agent_token_header"] {
            assert!(
                json["components"]["securitySchemes"].get(scheme).is_some(),
                "{scheme} is declared"
            );
        }
    }

    #[test]
    fn core_type_stand_ins_serialize_like_the_real_types() {
        use latchkey_core::ids::{MemberId, Owner};
        let member = MemberId::random();
        assert_eq!(
            serde_json::to_value(Owner::Member(member)).unwrap(),
            serde_json::json!({"kind": "member", "member": member}),
            "the Owner stand-in describes this shape"
        );
        assert_eq!(
            serde_json::to_value(Owner::Shared).unwrap(),
            serde_json::json!({"kind": "shared"})
        );
        let schema = serde_json::to_value(<stand_in::Owner as utoipa::PartialSchema>::schema())
            .unwrap()
            .to_string();
        assert!(schema.contains("\"kind\"") && schema.contains("\"member\""), "{schema}");
    }
}
