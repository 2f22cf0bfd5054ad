//! Workspaces are created from their first device, and every device request is authenticated by
//! an RFC 9421 signature: unknown keys, bad signatures, stale or replayed requests are refused.

use crate::common;

use common::{TestBroker, TestDevice, workspace_with_admin};
use latchkey_core::ids::WorkspaceId;
use serde_json::json;

#[tokio::test]
async fn a_workspace_is_created_from_its_first_device_which_becomes_admin() {
    let broker = TestBroker::start().await;
    let admin = workspace_with_admin(&broker).await;
    let (status, me) = TestBroker::send(broker.signed(&admin, "GET", "/v1/me", None)).await;
    assert_eq!(status, 200, "{me}");
    assert_eq!(me["workspace"], json!(admin.workspace));
    assert_eq!(me["workspace_name"], "Acme", "the name given at creation");
    assert_eq!(me["device"], json!(admin.id));
    assert_eq!(me["role"], "admin", "the creating member administers the workspace");
    broker.stop().await;
}

#[tokio::test]
async fn a_replayed_signed_request_is_refused() {
    let broker = TestBroker::start().await;
    let admin = workspace_with_admin(&broker).await;
    let request = broker.signed(&admin, "GET", "/v1/me", None);
    let copy = request.try_clone().expect("cloneable request");
    assert_eq!(TestBroker::send(request).await.0, 200);
    let (status, body) = TestBroker::send(copy).await;
    assert_eq!((status, body["code"].as_str()), (401, Some("replayed_request")), "{body}");
    broker.stop().await;
}

#[tokio::test]
async fn unsigned_stale_and_tampered_requests_are_refused_with_specific_codes() {
    let broker = TestBroker::start().await;
    let admin = workspace_with_admin(&broker).await;

    let (status, body) = TestBroker::send(broker.http.get(broker.url("/v1/me"))).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (401, Some("signature_invalid")),
        "unsigned: {body}"
    );

    // Signed for 60 seconds; the broker tolerates 60 more of clock skew, and not a second beyond.
    let stale = broker.signed(&admin, "GET", "/v1/me", None);
    broker.clock.advance(60 + 60 + 1);
    let (status, body) = TestBroker::send(stale).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (401, Some("signature_invalid")),
        "expired: {body}"
    );
    assert!(body["message"].as_str().unwrap().contains("expired"), "says why: {body}");

    let tampered =
        broker.signed(&admin, "POST", "/v1/workspaces", Some(&json!({"a": 1}))).body("{\"a\":2}");
    let (status, body) = TestBroker::send(tampered).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (401, Some("signature_invalid")),
        "altered body: {body}"
    );
    broker.stop().await;
}

#[tokio::test]
async fn a_device_that_is_not_enrolled_is_unknown() {
    let broker = TestBroker::start().await;
    let stranger = TestDevice::new(WorkspaceId::random());
    let (status, body) = TestBroker::send(broker.signed(&stranger, "GET", "/v1/me", None)).await;
    assert_eq!((status, body["code"].as_str()), (401, Some("unknown_device")), "{body}");
    broker.stop().await;
}

#[tokio::test]
async fn workspace_creation_refuses_foreign_signers_bad_keys_and_duplicates() {
    let broker = TestBroker::start().await;

    // Signed by another key than the one registered.
    let mut device = TestDevice::new(WorkspaceId::random());
    let body = device.create_workspace_body("Acme");
    let impostor = TestDevice { id: device.id, ..TestDevice::new(device.workspace) };
    let (status, response) =
        TestBroker::send(broker.signed(&impostor, "POST", "/v1/workspaces", Some(&body))).await;
    assert_eq!((status, response["code"].as_str()), (401, Some("signature_invalid")), "{response}");

    // Wrapped keys addressed to another device.
    let other = TestDevice::new(device.workspace);
    let mut other_body = body.clone();
    other_body["device"] = other.registration("other");
    let (status, response) =
        TestBroker::send(broker.signed(&other, "POST", "/v1/workspaces", Some(&other_body))).await;
    assert_eq!((status, response["code"].as_str()), (400, Some("invalid_request")), "{response}");

    // Missing member key.
    let mut partial = body.clone();
    partial["wrapped_keys"].as_array_mut().unwrap().pop();
    let (status, response) =
        TestBroker::send(broker.signed(&device, "POST", "/v1/workspaces", Some(&partial))).await;
    assert_eq!((status, response["code"].as_str()), (400, Some("invalid_request")), "{response}");

    // Bad name, unknown field, malformed JSON.
    let mut unnamed = body.clone();
    unnamed["workspace"]["name"] = json!("  ");
    let (status, response) =
        TestBroker::send(broker.signed(&device, "POST", "/v1/workspaces", Some(&unnamed))).await;
    assert_eq!(status, 400, "{response}");
    assert!(response["message"].as_str().unwrap().contains("workspace.name"), "{response}");
    let mut extra = body.clone();
    extra["surprise"] = json!(true);
    let (status, response) =
        TestBroker::send(broker.signed(&device, "POST", "/v1/workspaces", Some(&extra))).await;
    assert_eq!((status, response["code"].as_str()), (400, Some("bad_request")), "{response}");

    // Success, then the same ids again.
    let (status, response) =
        TestBroker::send(broker.signed(&device, "POST", "/v1/workspaces", Some(&body))).await;
    assert_eq!(status, 201, "{response}");
    let (status, response) =
        TestBroker::send(broker.signed(&device, "POST", "/v1/workspaces", Some(&body))).await;
    assert_eq!((status, response["code"].as_str()), (409, Some("conflict")), "{response}");
    device.workspace_key = None;
    broker.stop().await;
}
