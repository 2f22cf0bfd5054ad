//! Credentials are stored as envelopes the broker cannot open: shared ones for every member,
//! personal ones only for their owner. Bad input is refused before anything is stored, changes
//! need the current revision, and a key rotation swaps every envelope of a key or nothing at all.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "helpers outside #[test] functions: a panic is the failure report"
)]

use crate::common;

use common::{
    TestBroker, TestDevice, b64, database, insert_device, insert_member, workspace_with_admin,
};
use latchkey_core::envelope::Envelope;
use latchkey_core::ids::{CredentialId, DeviceId, KeyVersion, Owner, WorkspaceId};
use latchkey_core::keys::{DeviceKeys, MemberKey, WorkspaceKey, WrappedKey};
use latchkey_server::store::credentials::EnvelopeSwap;
use serde_json::{Value, json};

/// Plaintext credentials sealed in these tests; none may ever appear in the database.
const CANARY_SHARED: &[u8] = b"ghp_CANARYsharedSHAREDshared0123456789";
const CANARY_OTHER: &[u8] = b"xoxb-CANARYotherOTHERother0123456789";
const CANARY_PERSONAL: &[u8] = b"sk-CANARYpersonalPERSONAL0123456789";
const CANARY_REPLACED: &[u8] = b"ghp_CANARYreplacedREPLACED0123456789";

#[tokio::test]
async fn an_admin_creates_a_shared_credential_whose_envelope_every_member_can_fetch_and_open() {
    let broker = TestBroker::start().await;
    let admin = workspace_with_admin(&broker).await;
    let member = insert_member(&broker, &admin, "member").await;
    let id = CredentialId::random();
    let envelope = seal(&admin, id, Owner::Shared, CANARY_SHARED);

    let (status, created) =
        create(&broker, &admin, &body(id, "github", "shared", 1, &envelope)).await;
    assert_eq!(status, 201, "an admin may create a shared credential: {created}");
    assert_eq!(created["owner"], json!({"kind": "shared"}), "{created}");
    assert_eq!(created["status"], "active", "a new credential is active");
    assert_eq!(created["revision"], 1, "a new credential starts at revision 1");
    assert_eq!(created["key_version"], 1);
    assert!(created.get("envelope").is_none(), "metadata never carries the envelope: {created}");

    let (status, fetched) = get(&broker, &member, &format!("/v1/credentials/{id}/envelope")).await;
    assert_eq!(status, 200, "any member may fetch a shared envelope: {fetched}");
    let opened = parse_envelope(&fetched)
        .open(&member.workspace_key.as_ref().unwrap().record_key(id).unwrap())
        .expect("the member's copy of the workspace key opens what the admin sealed");
    assert_eq!(opened.expose_secret(), CANARY_SHARED, "the stored envelope is the sealed one");
    broker.stop().await;
}

#[tokio::test]
async fn the_metadata_list_never_includes_an_envelope() {
    let broker = TestBroker::start().await;
    let admin = workspace_with_admin(&broker).await;
    let shared = CredentialId::random();
    let shared_envelope = seal(&admin, shared, Owner::Shared, CANARY_SHARED);
    let personal = CredentialId::random();
    let personal_envelope = seal(&admin, personal, Owner::Member(admin.member), CANARY_PERSONAL);
    assert_eq!(
        create(&broker, &admin, &body(shared, "a", "shared", 1, &shared_envelope)).await.0,
        201
    );
    assert_eq!(
        create(&broker, &admin, &body(personal, "b", "me", 1, &personal_envelope)).await.0,
        201
    );

    let (status, list) = get(&broker, &admin, "/v1/credentials").await;
    assert_eq!(status, 200, "{list}");
    assert_eq!(
        names(&list),
        ["a", "b"],
        "the admin sees the shared and their own personal credential"
    );
    let text = list.to_string();
    for envelope in [&shared_envelope, &personal_envelope] {
        assert!(!text.contains(&b64(envelope.as_bytes())), "the list leaked an envelope: {text}");
    }
    assert!(!text.contains("\"envelope\""), "no envelope field in the list: {text}");
    broker.stop().await;
}

#[tokio::test]
async fn a_personal_credential_is_invisible_to_every_other_member_admins_included() {
    let broker = TestBroker::start().await;
    let admin = workspace_with_admin(&broker).await;
    let member = insert_member(&broker, &admin, "member").await;
    let id = CredentialId::random();
    let envelope = seal(&member, id, Owner::Member(member.member), CANARY_PERSONAL);

    let (status, created) = create(&broker, &member, &body(id, "mine", "me", 1, &envelope)).await;
    assert_eq!(status, 201, "any member may create a personal credential: {created}");
    assert_eq!(created["owner"], json!({"kind": "member", "member": member.member}), "{created}");
    let (_, own) = get(&broker, &member, "/v1/credentials").await;
    assert_eq!(names(&own), ["mine"], "the owner lists it");
    let (status, _) = get(&broker, &member, &format!("/v1/credentials/{id}/envelope")).await;
    assert_eq!(status, 200, "the owner fetches its envelope");

    let (_, theirs) = get(&broker, &admin, "/v1/credentials").await;
    assert!(names(&theirs).is_empty(), "another member does not list it: {theirs}");
    let (_, named) = get(&broker, &member, "/v1/credentials?name=mine").await;
    assert_eq!(names(&named), ["mine"], "the owner finds it by name");
    let (_, named) = get(&broker, &admin, "/v1/credentials?name=mine").await;
    assert!(names(&named).is_empty(), "nor does another member find it by name: {named}");
    let (_, unknown) = get(&broker, &member, "/v1/credentials?name=nothing-here").await;
    assert!(names(&unknown).is_empty(), "an unknown name is an empty list: {unknown}");
    let (status, answer) = get(&broker, &member, "/v1/credentials?owner=canary-me").await;
    assert_eq!((status, answer["code"].as_str()), (400, Some("bad_request")), "{answer}");
    assert!(!answer["message"].as_str().unwrap().contains("canary"), "not echoed: {answer}");
    let (_, missing) =
        get(&broker, &admin, &format!("/v1/credentials/{}", CredentialId::random())).await;
    for (method, path, body) in [
        ("GET", format!("/v1/credentials/{id}"), None),
        ("GET", format!("/v1/credentials/{id}/envelope"), None),
        ("PUT", format!("/v1/credentials/{id}"), Some(replacement(1, "mine", 1, &envelope))),
        ("PATCH", format!("/v1/credentials/{id}/status"), Some(json!({"status": "disabled"}))),
        ("DELETE", format!("/v1/credentials/{id}"), None),
    ] {
        let (status, answer) =
            TestBroker::send(broker.signed(&admin, method, &path, body.as_ref())).await;
        assert_eq!(
            (status, &answer),
            (404, &missing),
            "{method} {path} must be answered exactly like a credential that does not exist"
        );
    }
    let (status, _) = get(&broker, &member, &format!("/v1/credentials/{id}/envelope")).await;
    assert_eq!(status, 200, "nothing the admin tried changed or removed it");
    broker.stop().await;
}

#[tokio::test]
async fn a_member_who_is_not_admin_cannot_create_or_change_shared_credentials() {
    let broker = TestBroker::start().await;
    let admin = workspace_with_admin(&broker).await;
    let member = insert_member(&broker, &admin, "member").await;
    let id = CredentialId::random();
    let envelope = seal(&member, id, Owner::Shared, CANARY_SHARED);
    let (status, answer) =
        create(&broker, &member, &body(id, "github", "shared", 1, &envelope)).await;
    assert_eq!((status, code(&answer)), (403, "forbidden"), "{answer}");

    assert_eq!(create(&broker, &admin, &body(id, "github", "shared", 1, &envelope)).await.0, 201);
    for (method, path, body) in [
        ("PUT", format!("/v1/credentials/{id}"), Some(replacement(1, "github", 1, &envelope))),
        ("PATCH", format!("/v1/credentials/{id}/status"), Some(json!({"status": "disabled"}))),
        ("DELETE", format!("/v1/credentials/{id}"), None),
    ] {
        let (status, answer) =
            TestBroker::send(broker.signed(&member, method, &path, body.as_ref())).await;
        assert_eq!((status, code(&answer)), (403, "forbidden"), "{method} {path}: {answer}");
    }
    let (_, shown) = get(&broker, &member, &format!("/v1/credentials/{id}")).await;
    assert_eq!(
        (shown["revision"].as_u64(), shown["status"].as_str()),
        (Some(1), Some("active")),
        "the refused changes left it as it was: {shown}"
    );
    broker.stop().await;
}

#[tokio::test]
async fn invalid_names_providers_urls_hosts_and_scopes_are_refused_and_nothing_is_stored() {
    let broker = TestBroker::start().await;
    let admin = workspace_with_admin(&broker).await;
    let id = CredentialId::random();
    let envelope = seal(&admin, id, Owner::Shared, CANARY_SHARED);
    let valid = body(id, "github", "shared", 1, &envelope);
    let long_name = "a".repeat(65);
    let mut cases: Vec<(&str, Value)> = Vec::new();
    for name in ["", "GitHub", "-github", ".github", "git hub", "git/hub", "gïthub", &long_name] {
        cases.push(("name", json!(name)));
    }
    for provider in ["", "Git Hub", "github/x"] {
        cases.push(("provider", json!(provider)));
    }
    for url in [
        "http://api.github.com",
        "ftp://api.github.com",
        "api.github.com",
        "https://",
        "https://user:secret-in-url@api.github.com",
        "https://api.github.com?token=1",
        "https://api.github.com/v3?token=1",
        "https://api.github.com/#frag",
        "https://api.github.com/a/../b",
        "https://api.github.com//b",
        "https://*.github.com",
        "https://api.github.com:0",
        "https://api.github.com:65536",
        "https://[2001:db8::1]",
        "http://10.0.0.1",
        "HTTPS://api.github.com",
    ] {
        cases.push(("upstream_base_url", json!(url)));
    }
    for hosts in [
        json!([]),
        json!(["https://api.github.com"]),
        json!(["api.github.com/repos"]),
        json!(["*"]),
        json!(["*.com"]),
        json!(["api.*.com"]),
        json!(["*.github.com:443"]),
        json!(["api.github.com:0"]),
        json!(["user@api.github.com"]),
        json!([""]),
        json!(["-api.github.com"]),
    ] {
        cases.push(("allowed_hosts", hosts));
    }
    cases.push(("allowed_hosts", json!(vec!["a.example.com"; 33])));
    cases.push(("scopes", json!(["repo read"])));
    cases.push(("scopes", json!([""])));
    cases.push(("scopes", json!(["say \"hi\""])));
    cases.push(("key_version", json!(0)));
    let long_account = "é".repeat(201);
    for account in [
        "",
        " octocat",
        "octocat\n",
        "octo\u{7}cat",
        "octo\u{202e}tac",
        "octo\u{2066}cat",
        long_account.as_str(),
    ] {
        cases.push(("account", json!(account)));
    }

    for (field, value) in cases {
        let mut request = valid.clone();
        request[field] = value.clone();
        let (status, answer) = create(&broker, &admin, &request).await;
        assert_eq!(
            (status, code(&answer)),
            (400, "invalid_request"),
            "{field} = {value} must be refused: {answer}"
        );
        if let Some(text) = value.as_str().filter(|t| t.len() > 10) {
            assert!(
                !answer["message"].as_str().unwrap().contains(text),
                "the message must not echo the submitted value: {answer}"
            );
        }
    }
    let (_, list) = get(&broker, &admin, "/v1/credentials").await;
    assert!(names(&list).is_empty(), "no refused request stored anything: {list}");
    assert_eq!(create(&broker, &admin, &valid).await.0, 201, "the unaltered request is accepted");
    broker.stop().await;
}

#[tokio::test]
async fn the_account_name_is_stored_listed_and_replaced_with_the_rest_of_the_metadata() {
    let broker = TestBroker::start().await;
    let admin = workspace_with_admin(&broker).await;
    let id = CredentialId::random();
    let envelope = seal(&admin, id, Owner::Shared, CANARY_SHARED);
    let longest = "é".repeat(200);
    let mut request = body(id, "github", "shared", 1, &envelope);
    request["account"] = json!(longest);
    let (status, created) = create(&broker, &admin, &request).await;
    assert_eq!(status, 201, "200 characters (400 bytes) is the limit, not over it: {created}");
    assert_eq!(created["account"], json!(longest), "the answer carries the account: {created}");

    let path = format!("/v1/credentials/{id}");
    let mut renamed = replacement(1, "github", 1, &envelope);
    renamed["account"] = json!("ana@example.com");
    let (status, replaced) =
        TestBroker::send(broker.signed(&admin, "PUT", &path, Some(&renamed))).await;
    assert_eq!(status, 200, "{replaced}");
    let (_, list) = get(&broker, &admin, "/v1/credentials").await;
    assert_eq!(
        list["credentials"][0]["account"], "ana@example.com",
        "a reconnect as another account shows the new one in the listing: {list}"
    );

    let cleared = replacement(2, "github", 1, &envelope);
    let (status, replaced) =
        TestBroker::send(broker.signed(&admin, "PUT", &path, Some(&cleared))).await;
    assert_eq!(status, 200, "{replaced}");
    assert_eq!(
        replaced["account"],
        Value::Null,
        "a replacement is whole: without an account the old one is not kept to mislead: {replaced}"
    );

    let (_, log) = get(&broker, &admin, "/v1/audit?credential=github&order=oldest_first").await;
    let subjects: Vec<(&str, &Value)> = log["records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["record"]["kind"].as_str().unwrap(), &r["record"]["subject"]))
        .collect();
    // A record's text fields are cut at 256 bytes, on a character boundary.
    let cut = format!("account {}", "é".repeat(124));
    assert_eq!(
        subjects,
        [
            ("credential_created", &json!(cut)),
            ("credential_updated", &json!("account ana@example.com")),
            ("credential_updated", &Value::Null),
        ],
        "the chain shows whose account each version acted as: {log}"
    );

    let unnamed = CredentialId::random();
    let request =
        body(unnamed, "slack", "shared", 1, &seal(&admin, unnamed, Owner::Shared, CANARY_OTHER));
    let (status, created) = create(&broker, &admin, &request).await;
    assert_eq!(
        (status, &created["account"]),
        (201, &Value::Null),
        "the account is optional: {created}"
    );
    broker.stop().await;
}

#[tokio::test]
async fn accepted_urls_and_hosts_are_stored_in_one_normal_form() {
    let broker = TestBroker::start().await;
    let admin = workspace_with_admin(&broker).await;
    for (url, hosts, stored_url, stored_hosts) in [
        (
            "https://API.GitHub.com:443/v3/",
            json!(["API.github.com", "*.GitHub.com", "api.github.com", "uploads.github.com:8443"]),
            "https://api.github.com/v3",
            json!(["api.github.com", "*.github.com", "uploads.github.com:8443"]),
        ),
        (
            "http://127.0.0.1:8080",
            json!(["127.0.0.1:8080"]),
            "http://127.0.0.1:8080",
            json!(["127.0.0.1:8080"]),
        ),
        (
            "http://localhost:80/api",
            json!(["localhost"]),
            "http://localhost/api",
            json!(["localhost"]),
        ),
        ("http://[::1]:9000", json!(["[::1]:9000"]), "http://[::1]:9000", json!(["[::1]:9000"])),
    ] {
        let id = CredentialId::random();
        let envelope = seal(&admin, id, Owner::Shared, CANARY_SHARED);
        let mut request = body(id, &format!("c{}", &id.to_string()[..8]), "shared", 1, &envelope);
        request["upstream_base_url"] = json!(url);
        request["allowed_hosts"] = hosts;
        let (status, created) = create(&broker, &admin, &request).await;
        assert_eq!(status, 201, "{url} is acceptable: {created}");
        assert_eq!(created["upstream_base_url"], stored_url, "{url} is normalised");
        assert_eq!(created["allowed_hosts"], stored_hosts, "hosts are lowercased and deduplicated");
    }
    broker.stop().await;
}

#[tokio::test]
async fn envelopes_with_bad_framing_or_a_mismatched_key_version_are_refused() {
    let broker = TestBroker::start().await;
    let admin = workspace_with_admin(&broker).await;
    let id = CredentialId::random();
    let good = seal(&admin, id, Owner::Shared, CANARY_SHARED).into_bytes();
    let mut unknown_format = good.clone();
    unknown_format[0] = 2;
    let mut version_zero = good.clone();
    version_zero[1..5].copy_from_slice(&[0, 0, 0, 0]);
    for (why, bytes) in [
        ("too short", good[..32].to_vec()),
        ("too long", vec![1u8; latchkey_core::envelope::MAX_LEN + 1]),
        ("unknown format version", unknown_format),
        ("key version 0", version_zero),
    ] {
        let mut request = body(id, "github", "shared", 1, &seal(&admin, id, Owner::Shared, b"x"));
        request["envelope"] = json!(b64(&bytes));
        let (status, answer) = create(&broker, &admin, &request).await;
        assert_eq!((status, code(&answer)), (400, "invalid_request"), "{why}: {answer}");
    }

    let mut request = body(id, "github", "shared", 1, &seal(&admin, id, Owner::Shared, b"x"));
    request["envelope"] = json!("not base64url!");
    let (status, answer) = create(&broker, &admin, &request).await;
    assert_eq!((status, code(&answer)), (400, "bad_request"), "not base64url: {answer}");

    let mut request = body(id, "github", "shared", 2, &seal(&admin, id, Owner::Shared, b"x"));
    let (status, answer) = create(&broker, &admin, &request).await;
    assert_eq!(
        (status, code(&answer)),
        (400, "invalid_request"),
        "key_version must name the envelope's header version: {answer}"
    );

    let wk2 = WorkspaceKey::generate(admin.workspace, KeyVersion::new(2).unwrap()).unwrap();
    let v2 = Envelope::seal(&wk2.record_key(id).unwrap(), CANARY_SHARED).unwrap();
    request["envelope"] = json!(b64(v2.as_bytes()));
    let (status, answer) = create(&broker, &admin, &request).await;
    assert_eq!(
        (status, code(&answer)),
        (409, "conflict"),
        "a version the workspace key is not at is refused: {answer}"
    );

    let other =
        MemberKey::generate(admin.workspace, admin.member, KeyVersion::new(2).unwrap()).unwrap();
    let personal =
        body(id, "mine", "me", 2, &Envelope::seal(&other.record_key(id).unwrap(), b"x").unwrap());
    let (status, answer) = create(&broker, &admin, &personal).await;
    assert_eq!((status, code(&answer)), (409, "conflict"), "the member key is at 1: {answer}");

    let (_, list) = get(&broker, &admin, "/v1/credentials").await;
    assert!(names(&list).is_empty(), "nothing was stored: {list}");
    broker.stop().await;
}

#[tokio::test]
async fn ids_and_names_are_unique_in_a_workspace() {
    let broker = TestBroker::start().await;
    let admin = workspace_with_admin(&broker).await;
    let member = insert_member(&broker, &admin, "member").await;
    let id = CredentialId::random();
    let envelope = seal(&admin, id, Owner::Shared, CANARY_SHARED);
    assert_eq!(create(&broker, &admin, &body(id, "github", "shared", 1, &envelope)).await.0, 201);

    let (status, answer) =
        create(&broker, &admin, &body(id, "other", "shared", 1, &envelope)).await;
    assert_eq!((status, code(&answer)), (409, "conflict"), "same id: {answer}");
    assert!(answer["message"].as_str().unwrap().contains("id"), "says which: {answer}");

    let second = CredentialId::random();
    let personal = seal(&member, second, Owner::Member(member.member), CANARY_PERSONAL);
    let (status, answer) =
        create(&broker, &member, &body(second, "github", "me", 1, &personal)).await;
    assert_eq!(
        (status, code(&answer)),
        (409, "conflict"),
        "agents address credentials by name, so a personal one cannot take a shared one's name: {answer}"
    );
    assert!(answer["message"].as_str().unwrap().contains("name"), "says which: {answer}");

    let elsewhere = TestBroker::start().await;
    let stranger = workspace_with_admin(&elsewhere).await;
    let (status, answer) = create(
        &elsewhere,
        &stranger,
        &body(id, "github", "shared", 1, &seal(&stranger, id, Owner::Shared, CANARY_OTHER)),
    )
    .await;
    assert_eq!(status, 201, "ids and names are per workspace: {answer}");
    elsewhere.stop().await;
    broker.stop().await;
}

#[tokio::test]
async fn replacing_a_credential_needs_its_current_revision() {
    let broker = TestBroker::start().await;
    let admin = workspace_with_admin(&broker).await;
    let id = CredentialId::random();
    let first = seal(&admin, id, Owner::Shared, CANARY_SHARED);
    assert_eq!(create(&broker, &admin, &body(id, "github", "shared", 1, &first)).await.0, 201);
    let other = CredentialId::random();
    let other_envelope = seal(&admin, other, Owner::Shared, CANARY_OTHER);
    assert_eq!(
        create(&broker, &admin, &body(other, "slack", "shared", 1, &other_envelope)).await.0,
        201
    );
    let path = format!("/v1/credentials/{id}");

    let second = seal(&admin, id, Owner::Shared, CANARY_REPLACED);
    let mut request = replacement(1, "github-ci", 1, &second);
    request["status"] = json!("reconnect_needed");
    request["scopes"] = json!(["repo", "read:org"]);
    let (status, replaced) =
        TestBroker::send(broker.signed(&admin, "PUT", &path, Some(&request))).await;
    assert_eq!(status, 200, "{replaced}");
    assert_eq!(replaced["revision"], 2, "every change bumps the revision");
    assert_eq!(replaced["name"], "github-ci");
    assert_eq!(replaced["status"], "reconnect_needed");
    assert_eq!(replaced["scopes"], json!(["repo", "read:org"]));

    let stale = replacement(1, "github", 1, &first);
    let (status, answer) =
        TestBroker::send(broker.signed(&admin, "PUT", &path, Some(&stale))).await;
    assert_eq!((status, code(&answer)), (409, "conflict"), "revision 1 is stale: {answer}");

    let taken = replacement(2, "slack", 1, &first);
    let (status, answer) =
        TestBroker::send(broker.signed(&admin, "PUT", &path, Some(&taken))).await;
    assert_eq!((status, code(&answer)), (409, "conflict"), "the name is taken: {answer}");

    let wk2 = WorkspaceKey::generate(admin.workspace, KeyVersion::new(2).unwrap()).unwrap();
    let v2 = Envelope::seal(&wk2.record_key(id).unwrap(), CANARY_REPLACED).unwrap();
    let ahead = replacement(2, "github-ci", 2, &v2);
    let (status, answer) =
        TestBroker::send(broker.signed(&admin, "PUT", &path, Some(&ahead))).await;
    assert_eq!((status, code(&answer)), (409, "conflict"), "not the current key version: {answer}");

    let mut invalid = replacement(2, "github-ci", 1, &first);
    invalid["allowed_hosts"] = json!([]);
    let (status, answer) =
        TestBroker::send(broker.signed(&admin, "PUT", &path, Some(&invalid))).await;
    assert_eq!((status, code(&answer)), (400, "invalid_request"), "{answer}");

    let (_, fetched) = get(&broker, &admin, &format!("{path}/envelope")).await;
    assert_eq!(fetched["revision"], 2, "none of the refused replacements applied: {fetched}");
    let opened = parse_envelope(&fetched)
        .open(&admin.workspace_key.as_ref().unwrap().record_key(id).unwrap())
        .unwrap();
    assert_eq!(opened.expose_secret(), CANARY_REPLACED, "the accepted replacement is stored");
    let (_, log) = get(&broker, &admin, "/v1/audit?kind=credential_updated").await;
    let updates: Vec<&Value> = log["records"].as_array().unwrap().iter().collect();
    assert_eq!(updates.len(), 1, "the one accepted replacement is on the chain, no refused one");
    assert_eq!(updates[0]["record"]["credential_name"], "github-ci", "{log}");
    assert_eq!(updates[0]["record"]["device"], json!(admin.id), "{log}");
    broker.stop().await;
}

#[tokio::test]
async fn status_changes_apply_and_an_optional_revision_guards_them() {
    let broker = TestBroker::start().await;
    let admin = workspace_with_admin(&broker).await;
    let id = CredentialId::random();
    let envelope = seal(&admin, id, Owner::Shared, CANARY_SHARED);
    assert_eq!(create(&broker, &admin, &body(id, "github", "shared", 1, &envelope)).await.0, 201);
    let path = format!("/v1/credentials/{id}/status");

    let (status, changed) = TestBroker::send(broker.signed(
        &admin,
        "PATCH",
        &path,
        Some(&json!({"status": "disabled"})),
    ))
    .await;
    assert_eq!((status, changed["status"].as_str()), (200, Some("disabled")), "{changed}");
    assert_eq!(changed["revision"], 2);

    let stale = json!({"status": "active", "revision": 1});
    let (status, answer) =
        TestBroker::send(broker.signed(&admin, "PATCH", &path, Some(&stale))).await;
    assert_eq!((status, code(&answer)), (409, "conflict"), "{answer}");

    let unknown = json!({"status": "paused"});
    let (status, answer) =
        TestBroker::send(broker.signed(&admin, "PATCH", &path, Some(&unknown))).await;
    assert_eq!((status, code(&answer)), (400, "bad_request"), "{answer}");

    let current = json!({"status": "active", "revision": 2});
    let (status, changed) =
        TestBroker::send(broker.signed(&admin, "PATCH", &path, Some(&current))).await;
    assert_eq!((status, changed["status"].as_str()), (200, Some("active")), "{changed}");

    let store = open_store(&broker).await;
    let record = store.credential_by_name(admin.workspace, "github").await.unwrap().unwrap();
    assert_eq!(
        record.status,
        latchkey_server::store::credentials::CredentialStatus::Active,
        "the proxy's lookup sees the status"
    );
    let (_, log) = get(&broker, &admin, "/v1/audit?kind=credential_status_changed").await;
    let statuses: Vec<&str> = log["records"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|r| r["record"]["subject"].as_str())
        .collect();
    assert_eq!(
        statuses,
        ["active", "disabled"],
        "each accepted change is on the chain with the new status, newest first: {log}"
    );
    broker.stop().await;
}

#[tokio::test]
async fn a_deleted_credential_is_gone_at_once() {
    let broker = TestBroker::start().await;
    let admin = workspace_with_admin(&broker).await;
    let id = CredentialId::random();
    let envelope = seal(&admin, id, Owner::Shared, CANARY_SHARED);
    assert_eq!(create(&broker, &admin, &body(id, "github", "shared", 1, &envelope)).await.0, 201);
    let path = format!("/v1/credentials/{id}");

    let (status, _) = TestBroker::send(broker.signed(&admin, "DELETE", &path, None)).await;
    assert_eq!(status, 204);
    let store = open_store(&broker).await;
    assert!(
        store.credential_by_name(admin.workspace, "github").await.unwrap().is_none(),
        "the proxy's next lookup finds nothing"
    );
    for (method, path) in [("GET", format!("{path}/envelope")), ("DELETE", path.clone())] {
        let (status, answer) = TestBroker::send(broker.signed(&admin, method, &path, None)).await;
        assert_eq!((status, code(&answer)), (404, "not_found"), "{method} {path}: {answer}");
    }
    let (status, _) =
        create(&broker, &admin, &body(CredentialId::random(), "github", "shared", 1, &envelope))
            .await;
    assert_eq!(status, 201, "the name is free again");
    broker.stop().await;
}

#[tokio::test]
async fn another_workspace_and_malformed_ids_get_no_credential() {
    let broker = TestBroker::start().await;
    let admin = workspace_with_admin(&broker).await;
    let id = CredentialId::random();
    let envelope = seal(&admin, id, Owner::Shared, CANARY_SHARED);
    assert_eq!(create(&broker, &admin, &body(id, "github", "shared", 1, &envelope)).await.0, 201);

    let mut stranger = TestDevice::new(WorkspaceId::random());
    let request = stranger.create_workspace_body("Elsewhere");
    assert_eq!(
        TestBroker::send(broker.signed(&stranger, "POST", "/v1/workspaces", Some(&request)))
            .await
            .0,
        201
    );
    let (_, list) = get(&broker, &stranger, "/v1/credentials").await;
    assert!(names(&list).is_empty(), "another workspace lists nothing of ours: {list}");
    for path in [format!("/v1/credentials/{id}"), format!("/v1/credentials/{id}/envelope")] {
        let (status, answer) = get(&broker, &stranger, &path).await;
        assert_eq!((status, code(&answer)), (404, "not_found"), "{path}: {answer}");
    }
    let (status, answer) = TestBroker::send(broker.signed(
        &stranger,
        "DELETE",
        &format!("/v1/credentials/{id}"),
        None,
    ))
    .await;
    assert_eq!((status, code(&answer)), (404, "not_found"), "{answer}");

    let (status, answer) = get(&broker, &admin, "/v1/credentials/not-a-uuid").await;
    assert_eq!((status, code(&answer)), (400, "bad_request"), "{answer}");
    let (status, answer) = TestBroker::send(broker.http.get(broker.url("/v1/credentials"))).await;
    assert_eq!((status, code(&answer)), (401, "signature_invalid"), "unsigned: {answer}");
    broker.stop().await;
}

/// A workspace with an admin (two devices), a member, two shared credentials and a personal one
/// of the admin.
struct Team {
    broker: TestBroker,
    admin: TestDevice,
    laptop: TestDevice,
    member: TestDevice,
    shared: [CredentialId; 2],
    personal: CredentialId,
}

async fn team() -> Team {
    let broker = TestBroker::start().await;
    let admin = workspace_with_admin(&broker).await;
    let laptop = insert_device(&broker, &admin).await;
    let member = insert_member(&broker, &admin, "member").await;
    let shared = [CredentialId::random(), CredentialId::random()];
    for (id, name, canary) in
        [(shared[0], "github", CANARY_SHARED), (shared[1], "slack", CANARY_OTHER)]
    {
        let envelope = seal(&admin, id, Owner::Shared, canary);
        assert_eq!(create(&broker, &admin, &body(id, name, "shared", 1, &envelope)).await.0, 201);
    }
    let personal = CredentialId::random();
    let envelope = seal(&admin, personal, Owner::Member(admin.member), CANARY_PERSONAL);
    assert_eq!(create(&broker, &admin, &body(personal, "mine", "me", 1, &envelope)).await.0, 201);
    Team { broker, admin, laptop, member, shared, personal }
}

impl Team {
    /// A rotation of the workspace key to v2 by `sender`, re-sealing `credentials` and wrapping
    /// the new key to `recipients`.
    fn shared_rotation(
        &self,
        wk2: &WorkspaceKey,
        sender: &TestDevice,
        credentials: &[CredentialId],
        recipients: &[(DeviceId, &DeviceKeys)],
    ) -> Value {
        let resealed: Vec<Value> = credentials
            .iter()
            .map(|id| {
                let plaintext = self.plaintext(*id);
                let envelope = Envelope::seal(&wk2.record_key(*id).unwrap(), &plaintext).unwrap();
                json!({"id": id, "envelope": b64(envelope.as_bytes())})
            })
            .collect();
        let wrapped: Vec<String> = recipients
            .iter()
            .map(|(id, keys)| {
                let exchange = keys.exchange.public_key();
                b64(WrappedKey::wrap_workspace_key(
                    wk2,
                    (*id, &exchange),
                    (sender.id, &sender.keys.signing),
                )
                .unwrap()
                .as_bytes())
            })
            .collect();
        json!({
            "scope": "shared", "from_version": 1, "to_version": 2,
            "credentials": resealed, "wrapped_keys": wrapped,
        })
    }

    /// What the admin's device would decrypt from a shared credential before re-sealing it.
    fn plaintext(&self, id: CredentialId) -> Vec<u8> {
        [(self.shared[0], CANARY_SHARED), (self.shared[1], CANARY_OTHER)]
            .into_iter()
            .find(|(c, _)| *c == id)
            .map_or_else(|| b"unknown".to_vec(), |(_, canary)| canary.to_vec())
    }

    fn every_device(&self) -> Vec<(DeviceId, &DeviceKeys)> {
        vec![
            (self.admin.id, &self.admin.keys),
            (self.laptop.id, &self.laptop.keys),
            (self.member.id, &self.member.keys),
        ]
    }

    /// Everything a rotation could change: credentials, envelopes, key versions, wrapped keys.
    async fn snapshot(&self) -> Value {
        let (_, list) = get(&self.broker, &self.admin, "/v1/credentials").await;
        let mut envelopes = Vec::new();
        for id in self.shared.iter().chain([&self.personal]) {
            let (_, e) =
                get(&self.broker, &self.admin, &format!("/v1/credentials/{id}/envelope")).await;
            envelopes.push(e);
        }
        let db = database(&self.broker).await;
        let versions: Vec<(String, i64)> = sqlx::query_as(
            "SELECT 'workspace', key_version FROM workspaces UNION ALL SELECT id, key_version FROM members ORDER BY 1",
        )
        .fetch_all(&db)
        .await
        .unwrap();
        let wrapped: i64 =
            sqlx::query_scalar("SELECT count(*) FROM wrapped_keys").fetch_one(&db).await.unwrap();
        db.close().await;
        json!({"list": list, "envelopes": envelopes, "versions": versions, "wrapped": wrapped})
    }

    async fn rotate(&self, device: &TestDevice, request: &Value) -> (u16, Value) {
        TestBroker::send(self.broker.signed(device, "POST", "/v1/rotations", Some(request))).await
    }
}

#[tokio::test]
async fn a_full_shared_rotation_swaps_every_envelope_and_bumps_the_workspace_key_version() {
    let t = team().await;
    let wk2 = WorkspaceKey::generate(t.admin.workspace, KeyVersion::new(2).unwrap()).unwrap();
    let request = t.shared_rotation(&wk2, &t.admin, &t.shared, &t.every_device());
    let (status, answer) = t.rotate(&t.admin, &request).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(
        (answer["key_version"].as_u64(), answer["credentials"].as_u64()),
        (Some(2), Some(2)),
        "{answer}"
    );

    for (id, canary) in [(t.shared[0], CANARY_SHARED), (t.shared[1], CANARY_OTHER)] {
        let (_, fetched) =
            get(&t.broker, &t.member, &format!("/v1/credentials/{id}/envelope")).await;
        assert_eq!(fetched["key_version"], 2, "{fetched}");
        let opened = parse_envelope(&fetched).open(&wk2.record_key(id).unwrap()).unwrap();
        assert_eq!(opened.expose_secret(), canary, "the re-sealed envelope opens under v2");
    }
    let (_, personal) =
        get(&t.broker, &t.admin, &format!("/v1/credentials/{}/envelope", t.personal)).await;
    assert_eq!(personal["key_version"], 1, "a personal credential is not under the workspace key");

    let db = database(&t.broker).await;
    let (version, wrapped): (i64, i64) = sqlx::query_as(
        "SELECT (SELECT key_version FROM workspaces), (SELECT count(*) FROM wrapped_keys WHERE kind = 'workspace' AND key_version = 2)",
    )
    .fetch_one(&db)
    .await
    .unwrap();
    db.close().await;
    assert_eq!(
        (version, wrapped),
        (2, 3),
        "the version is bumped and every device got the new key"
    );

    let id = CredentialId::random();
    let old = seal(&t.admin, id, Owner::Shared, CANARY_SHARED);
    let (status, answer) = create(&t.broker, &t.admin, &body(id, "late", "shared", 1, &old)).await;
    assert_eq!((status, code(&answer)), (409, "conflict"), "v1 is no longer current: {answer}");
    let new = Envelope::seal(&wk2.record_key(id).unwrap(), CANARY_SHARED).unwrap();
    let (status, answer) = create(&t.broker, &t.admin, &body(id, "late", "shared", 2, &new)).await;
    assert_eq!(status, 201, "v2 is: {answer}");

    let (status, answer) = t.rotate(&t.admin, &request).await;
    assert_eq!(
        (status, code(&answer)),
        (409, "conflict"),
        "the same rotation twice is stale: {answer}"
    );
    t.broker.stop().await;
}

#[tokio::test]
async fn a_refused_rotation_changes_nothing() {
    let t = team().await;
    let before = t.snapshot().await;
    let wk2 = WorkspaceKey::generate(t.admin.workspace, KeyVersion::new(2).unwrap()).unwrap();
    let devices = t.every_device();
    let full = t.shared_rotation(&wk2, &t.admin, &t.shared, &devices);
    let stranger = DeviceKeys::generate().unwrap();
    let stranger_id = DeviceId::random();

    let wk3 = WorkspaceKey::generate(t.admin.workspace, KeyVersion::new(3).unwrap()).unwrap();
    // (why, sender, request, status, code, an id the refusal must name)
    type Case<'a> = (&'a str, &'a TestDevice, Value, u16, &'a str, Option<String>);
    let mut cases: Vec<Case<'_>> = Vec::new();
    cases.push((
        "a credential left out",
        &t.admin,
        t.shared_rotation(&wk2, &t.admin, &t.shared[..1], &devices),
        409,
        "conflict",
        Some(t.shared[1].to_string()),
    ));
    let extra = CredentialId::random();
    cases.push((
        "a credential that is not the workspace's",
        &t.admin,
        t.shared_rotation(&wk2, &t.admin, &[t.shared[0], t.shared[1], extra], &devices),
        409,
        "conflict",
        Some(extra.to_string()),
    ));
    cases.push((
        "a personal credential in a shared rotation",
        &t.admin,
        t.shared_rotation(&wk2, &t.admin, &[t.shared[0], t.shared[1], t.personal], &devices),
        409,
        "conflict",
        Some(t.personal.to_string()),
    ));
    cases.push((
        "a device without the new key",
        &t.admin,
        t.shared_rotation(&wk2, &t.admin, &t.shared, &devices[..2]),
        409,
        "conflict",
        Some(t.member.id.to_string()),
    ));
    let mut with_stranger = devices.clone();
    with_stranger.push((stranger_id, &stranger));
    cases.push((
        "a key wrapped to a device that is not in the workspace",
        &t.admin,
        t.shared_rotation(&wk2, &t.admin, &t.shared, &with_stranger),
        409,
        "conflict",
        Some(stranger_id.to_string()),
    ));
    let mut stale = t.shared_rotation(&wk3, &t.admin, &t.shared, &devices);
    stale["from_version"] = json!(2);
    stale["to_version"] = json!(3);
    cases.push(("a from_version that is not current", &t.admin, stale, 409, "conflict", None));
    let mut skip = full.clone();
    skip["to_version"] = json!(3);
    cases.push(("a to_version that skips one", &t.admin, skip, 400, "invalid_request", None));
    let mut wrong_envelopes = t.shared_rotation(&wk3, &t.admin, &t.shared, &devices);
    wrong_envelopes["wrapped_keys"] = full["wrapped_keys"].clone();
    cases.push((
        "envelopes at another version",
        &t.admin,
        wrong_envelopes,
        400,
        "invalid_request",
        None,
    ));
    let mut wrong_keys = full.clone();
    wrong_keys["wrapped_keys"] =
        t.shared_rotation(&wk3, &t.admin, &[], &devices)["wrapped_keys"].clone();
    cases.push((
        "wrapped keys for another version",
        &t.admin,
        wrong_keys,
        400,
        "invalid_request",
        None,
    ));
    let mut duplicated = full.clone();
    duplicated["credentials"].as_array_mut().unwrap().push(full["credentials"][0].clone());
    cases.push(("a credential twice", &t.admin, duplicated, 400, "invalid_request", None));
    let mut twice = full.clone();
    twice["wrapped_keys"].as_array_mut().unwrap().push(full["wrapped_keys"][0].clone());
    cases.push(("a device twice", &t.admin, twice, 400, "invalid_request", None));
    let mut member_keys = full.clone();
    let mk2 = MemberKey::generate(t.admin.workspace, t.admin.member, KeyVersion::new(2).unwrap())
        .unwrap();
    member_keys["wrapped_keys"] = json!(
        devices
            .iter()
            .map(|(id, keys)| b64(WrappedKey::wrap_member_key(
                &mk2,
                (*id, &keys.exchange.public_key()),
                (t.admin.id, &t.admin.keys.signing)
            )
            .unwrap()
            .as_bytes()))
            .collect::<Vec<_>>()
    );
    cases.push((
        "member keys in a shared rotation",
        &t.admin,
        member_keys,
        400,
        "invalid_request",
        None,
    ));
    cases.push((
        "keys wrapped by another device than the sender",
        &t.admin,
        t.shared_rotation(&wk2, &t.laptop, &t.shared, &devices),
        400,
        "invalid_request",
        None,
    ));
    cases.push((
        "a member who is not admin",
        &t.member,
        t.shared_rotation(&wk2, &t.member, &t.shared, &devices),
        403,
        "forbidden",
        None,
    ));
    let mut garbage = full.clone();
    garbage["credentials"][0]["envelope"] = json!(b64(b"short"));
    cases.push(("a malformed envelope", &t.admin, garbage, 400, "invalid_request", None));
    let mut garbage = full.clone();
    garbage["wrapped_keys"][0] = json!(b64(&[1u8; 10]));
    cases.push(("a malformed wrapped key", &t.admin, garbage, 400, "invalid_request", None));

    for (why, device, request, status, expected, named) in cases {
        let (got, answer) = t.rotate(device, &request).await;
        assert_eq!((got, code(&answer)), (status, expected), "{why}: {answer}");
        if let Some(id) = named {
            assert!(
                answer["message"].as_str().unwrap().contains(&id),
                "{why}: the refusal names {id}: {answer}"
            );
        }
        assert_eq!(t.snapshot().await, before, "{why}: a refused rotation must change nothing");
    }

    let (status, answer) = t.rotate(&t.admin, &full).await;
    assert_eq!(status, 200, "the complete rotation still goes through: {answer}");
    assert_ne!(t.snapshot().await, before, "and it does change things");
    let (_, log) = get(&t.broker, &t.admin, "/v1/audit?kind=keys_rotated").await;
    assert_eq!(
        log["records"].as_array().map(Vec::len),
        Some(1),
        "only the rotation that happened is in the audit log: {log}"
    );
    t.broker.stop().await;
}

#[tokio::test]
async fn a_member_rotates_their_own_member_key_and_only_their_personal_credentials() {
    let t = team().await;
    let mk = t.admin.member_key.as_ref().unwrap();
    let mk2 = MemberKey::generate(t.admin.workspace, t.admin.member, KeyVersion::new(2).unwrap())
        .unwrap();
    let resealed = Envelope::seal(&mk2.record_key(t.personal).unwrap(), CANARY_PERSONAL).unwrap();
    let wrap = |d: &TestDevice| {
        b64(WrappedKey::wrap_member_key(
            &mk2,
            (d.id, &d.keys.exchange.public_key()),
            (t.admin.id, &t.admin.keys.signing),
        )
        .unwrap()
        .as_bytes())
    };
    let mut request = json!({
        "scope": "member", "from_version": 1, "to_version": 2,
        "credentials": [{"id": t.personal, "envelope": b64(resealed.as_bytes())}],
        "wrapped_keys": [wrap(&t.admin)],
    });
    let before = t.snapshot().await;
    let (status, answer) = t.rotate(&t.admin, &request).await;
    assert_eq!(
        (status, code(&answer)),
        (409, "conflict"),
        "the admin's laptop needs the key too: {answer}"
    );
    assert!(answer["message"].as_str().unwrap().contains(&t.laptop.id.to_string()), "{answer}");
    assert_eq!(t.snapshot().await, before, "nothing changed");

    let wrong_owner =
        MemberKey::generate(t.admin.workspace, t.member.member, KeyVersion::new(2).unwrap())
            .unwrap();
    let mut foreign = request.clone();
    foreign["wrapped_keys"] = json!([b64(WrappedKey::wrap_member_key(
        &wrong_owner,
        (t.admin.id, &t.admin.keys.exchange.public_key()),
        (t.admin.id, &t.admin.keys.signing)
    )
    .unwrap()
    .as_bytes())]);
    let (status, answer) = t.rotate(&t.admin, &foreign).await;
    assert_eq!((status, code(&answer)), (400, "invalid_request"), "another member's key: {answer}");

    let mut both = request.clone();
    both["wrapped_keys"] = json!([wrap(&t.admin), wrap(&t.laptop)]);
    both["left_out"] = json!([t.laptop.id]);
    let (status, answer) = t.rotate(&t.admin, &both).await;
    assert_eq!(
        (status, code(&answer)),
        (400, "invalid_request"),
        "a device is sent the key or left out, not both: {answer}"
    );
    let mut stranger = request.clone();
    stranger["left_out"] = json!([t.laptop.id, t.member.id]);
    let (status, answer) = t.rotate(&t.admin, &stranger).await;
    assert_eq!(
        (status, code(&answer)),
        (409, "conflict"),
        "only the scope's own devices can be left out: {answer}"
    );
    assert!(answer["message"].as_str().unwrap().contains(&t.member.id.to_string()), "{answer}");
    assert_eq!(t.snapshot().await, before, "nothing changed");

    request["wrapped_keys"] = json!([wrap(&t.admin), wrap(&t.laptop)]);
    let (status, answer) = t.rotate(&t.admin, &request).await;
    assert_eq!(status, 200, "{answer}");
    let (_, fetched) =
        get(&t.broker, &t.laptop, &format!("/v1/credentials/{}/envelope", t.personal)).await;
    assert_eq!(fetched["key_version"], 2);
    assert!(
        parse_envelope(&fetched).open(&mk.record_key(t.personal).unwrap()).is_err(),
        "v1 no longer opens it"
    );
    let (_, shared) =
        get(&t.broker, &t.admin, &format!("/v1/credentials/{}/envelope", t.shared[0])).await;
    assert_eq!(shared["key_version"], 1, "shared credentials are untouched");

    let db = database(&t.broker).await;
    let versions: Vec<(String, i64)> =
        sqlx::query_as("SELECT id, key_version FROM members ORDER BY key_version")
            .fetch_all(&db)
            .await
            .unwrap();
    db.close().await;
    assert_eq!(
        versions,
        vec![(t.member.member.to_string(), 1), (t.admin.member.to_string(), 2)],
        "only the rotating member's key version moved"
    );

    let (status, answer) = t.rotate(&t.member, &json!({
        "scope": "member", "from_version": 1, "to_version": 2, "credentials": [{"id": t.personal, "envelope": b64(resealed.as_bytes())}],
        "wrapped_keys": [],
    })).await;
    assert_eq!(
        (status, code(&answer)),
        (409, "conflict"),
        "another member's credential is not in my set: {answer}"
    );
    t.broker.stop().await;
}

#[tokio::test]
async fn a_device_the_rotating_device_leaves_out_is_named_and_gets_nothing() {
    let t = team().await;
    let mk2 = MemberKey::generate(t.admin.workspace, t.admin.member, KeyVersion::new(2).unwrap())
        .unwrap();
    let resealed = Envelope::seal(&mk2.record_key(t.personal).unwrap(), CANARY_PERSONAL).unwrap();
    let to_admin = WrappedKey::wrap_member_key(
        &mk2,
        (t.admin.id, &t.admin.keys.exchange.public_key()),
        (t.admin.id, &t.admin.keys.signing),
    )
    .unwrap();
    let request = json!({
        "scope": "member", "from_version": 1, "to_version": 2,
        "credentials": [{"id": t.personal, "envelope": b64(resealed.as_bytes())}],
        "wrapped_keys": [b64(to_admin.as_bytes())],
        "left_out": [t.laptop.id],
    });
    let (status, answer) = t.rotate(&t.admin, &request).await;
    assert_eq!(status, 200, "a device named as left out is not owed the key: {answer}");
    let (status, delivered) = get(&t.broker, &t.laptop, "/v1/wrapped-keys").await;
    assert_eq!(status, 200, "{delivered}");
    let versions: Vec<&Value> =
        delivered["wrapped_keys"].as_array().unwrap().iter().map(|k| &k["version"]).collect();
    assert!(
        versions.iter().all(|v| **v != json!(2)),
        "the laptop was sent nothing of version 2: {delivered}"
    );
    t.broker.stop().await;
}

#[tokio::test]
async fn removed_devices_and_members_are_not_owed_the_new_key() {
    let t = team().await;
    let db = database(&t.broker).await;
    sqlx::query("UPDATE devices SET removed_at = 1 WHERE id = $1")
        .bind(t.laptop.id.to_string())
        .execute(&db)
        .await
        .unwrap();
    sqlx::query("UPDATE members SET removed_at = 1 WHERE id = $1")
        .bind(t.member.member.to_string())
        .execute(&db)
        .await
        .unwrap();
    db.close().await;
    let wk2 = WorkspaceKey::generate(t.admin.workspace, KeyVersion::new(2).unwrap()).unwrap();

    let to_everyone = t.shared_rotation(&wk2, &t.admin, &t.shared, &t.every_device());
    let (status, answer) = t.rotate(&t.admin, &to_everyone).await;
    assert_eq!((status, code(&answer)), (409, "conflict"), "removed devices get no key: {answer}");
    assert!(answer["message"].as_str().unwrap().contains(&t.member.id.to_string()), "{answer}");

    let to_active = t.shared_rotation(&wk2, &t.admin, &t.shared, &[(t.admin.id, &t.admin.keys)]);
    let (status, answer) = t.rotate(&t.admin, &to_active).await;
    assert_eq!(status, 200, "only the active devices need the new key: {answer}");
    t.broker.stop().await;
}

#[tokio::test]
async fn the_database_never_holds_a_plaintext_credential() {
    let t = team().await;
    let path = format!("/v1/credentials/{}", t.shared[0]);
    let replaced = seal(&t.admin, t.shared[0], Owner::Shared, CANARY_REPLACED);
    let (status, _) = TestBroker::send(t.broker.signed(
        &t.admin,
        "PUT",
        &path,
        Some(&replacement(1, "github", 1, &replaced)),
    ))
    .await;
    assert_eq!(status, 200);
    let wk2 = WorkspaceKey::generate(t.admin.workspace, KeyVersion::new(2).unwrap()).unwrap();
    let mut request = t.shared_rotation(&wk2, &t.admin, &t.shared, &t.every_device());
    let resealed = Envelope::seal(&wk2.record_key(t.shared[0]).unwrap(), CANARY_REPLACED).unwrap();
    request["credentials"][0]["envelope"] = json!(b64(resealed.as_bytes()));
    let (status, answer) = t.rotate(&t.admin, &request).await;
    assert_eq!(status, 200, "{answer}");

    let files = database_bytes(&t.broker).await;
    assert!(
        contains(&files, resealed.as_bytes()),
        "the scan reads the database: the stored envelope must be found"
    );
    for canary in [CANARY_SHARED, CANARY_OTHER, CANARY_PERSONAL, CANARY_REPLACED] {
        assert!(
            !contains(&files, canary),
            "plaintext {:?} found in the database files",
            String::from_utf8_lossy(canary)
        );
    }
    t.broker.stop().await;
}

fn swap<'a>(
    previous: &'a Envelope,
    next: &'a Envelope,
    expires_hint: Option<u64>,
    now: u64,
) -> EnvelopeSwap<'a> {
    EnvelopeSwap { previous, next, expires_hint, now }
}

#[tokio::test]
async fn a_refreshed_envelope_replaces_the_stored_one_only_while_that_is_still_current() {
    let broker = TestBroker::start().await;
    let admin = workspace_with_admin(&broker).await;
    let id = CredentialId::random();
    let first = seal(&admin, id, Owner::Shared, CANARY_SHARED);
    assert_eq!(create(&broker, &admin, &body(id, "github", "shared", 1, &first)).await.0, 201);
    let store = open_store(&broker).await;
    let stored = store.credential_by_name(admin.workspace, "github").await.unwrap().unwrap();
    assert_eq!(stored.envelope, first, "the proxy reads what the device stored");
    assert_eq!(stored.upstream_base_url, "https://api.github.com");
    assert_eq!(stored.allowed_hosts, ["api.github.com"]);

    let refreshed = seal(&admin, id, Owner::Shared, CANARY_REPLACED);
    let swapped = store
        .replace_envelope(
            admin.workspace,
            id,
            swap(&first, &refreshed, Some(1_900_000_000), 1_800_000_100),
            None,
        )
        .await
        .unwrap();
    assert!(swapped, "the stored envelope was still the previous one");
    let again = seal(&admin, id, Owner::Shared, CANARY_OTHER);
    let swapped = store
        .replace_envelope(admin.workspace, id, swap(&first, &again, None, 1_800_000_200), None)
        .await
        .unwrap();
    assert!(!swapped, "a second refresh from the same previous envelope lost the race");

    let wk2 = WorkspaceKey::generate(admin.workspace, KeyVersion::new(2).unwrap()).unwrap();
    let other_version = Envelope::seal(&wk2.record_key(id).unwrap(), CANARY_OTHER).unwrap();
    let swapped = store
        .replace_envelope(
            admin.workspace,
            id,
            swap(&refreshed, &other_version, None, 1_800_000_300),
            None,
        )
        .await
        .unwrap();
    assert!(!swapped, "a refresh never changes the key version");
    let elsewhere = WorkspaceId::random();
    let swapped = store
        .replace_envelope(elsewhere, id, swap(&refreshed, &again, None, 1_800_000_300), None)
        .await
        .unwrap();
    assert!(!swapped, "another workspace's id does not match");

    let stored = store.credential_by_name(admin.workspace, "github").await.unwrap().unwrap();
    assert_eq!(stored.envelope, refreshed, "only the first refresh was stored");
    assert_eq!((stored.expires_hint, stored.revision), (Some(1_900_000_000), 2));
    let (_, shown) = get(&broker, &admin, &format!("/v1/credentials/{id}")).await;
    assert_eq!(shown["revision"], 2, "a device holding revision 1 would now get a conflict");
    broker.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

fn seal(device: &TestDevice, id: CredentialId, owner: Owner, plaintext: &[u8]) -> Envelope {
    let key = match owner {
        Owner::Shared => {
            device.workspace_key.as_ref().expect("holds the workspace key").record_key(id)
        }
        Owner::Member(_) => {
            device.member_key.as_ref().expect("holds the member key").record_key(id)
        }
    };
    Envelope::seal(&key.expect("record key"), plaintext).expect("seal")
}

fn body(id: CredentialId, name: &str, owner: &str, key_version: u32, envelope: &Envelope) -> Value {
    json!({
        "id": id,
        "name": name,
        "provider": "github",
        "upstream_base_url": "https://api.github.com",
        "allowed_hosts": ["api.github.com"],
        "owner": owner,
        "key_version": key_version,
        "scopes": ["repo"],
        "expires_hint": null,
        "envelope": b64(envelope.as_bytes()),
    })
}

fn replacement(revision: u64, name: &str, key_version: u32, envelope: &Envelope) -> Value {
    json!({
        "revision": revision,
        "name": name,
        "provider": "github",
        "upstream_base_url": "https://api.github.com",
        "allowed_hosts": ["api.github.com"],
        "scopes": ["repo"],
        "key_version": key_version,
        "envelope": b64(envelope.as_bytes()),
    })
}

async fn create(broker: &TestBroker, device: &TestDevice, body: &Value) -> (u16, Value) {
    TestBroker::send(broker.signed(device, "POST", "/v1/credentials", Some(body))).await
}

async fn get(broker: &TestBroker, device: &TestDevice, path: &str) -> (u16, Value) {
    TestBroker::send(broker.signed(device, "GET", path, None)).await
}

fn code(answer: &Value) -> &str {
    answer["code"].as_str().unwrap_or("")
}

fn names(list: &Value) -> Vec<String> {
    list["credentials"]
        .as_array()
        .expect("a credential list")
        .iter()
        .map(|c| c["name"].as_str().unwrap().to_owned())
        .collect()
}

fn parse_envelope(answer: &Value) -> Envelope {
    use base64::Engine as _;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(answer["envelope"].as_str().expect("an envelope"))
        .expect("base64url");
    Envelope::parse(&bytes).expect("framing")
}

async fn open_store(broker: &TestBroker) -> latchkey_server::store::Store {
    broker.store().await
}

/// Everything the database holds at rest: the SQLite file with its WAL and shared-memory files,
/// or every PostgreSQL table's contents.
async fn database_bytes(broker: &TestBroker) -> Vec<u8> {
    let all: Vec<u8> =
        broker.stored_bytes().await.into_iter().flat_map(|(_, bytes)| bytes).collect();
    assert!(!all.is_empty(), "the database has contents");
    all
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

// ---------------------------------------------------------------------------------------------
// Refresh leases
// ---------------------------------------------------------------------------------------------

/// A shared credential `github` created by `admin`; its id and envelope.
async fn shared_github(broker: &TestBroker, admin: &TestDevice) -> (CredentialId, Envelope) {
    let id = CredentialId::random();
    let envelope = seal(admin, id, Owner::Shared, CANARY_SHARED);
    let (status, answer) = create(broker, admin, &body(id, "github", "shared", 1, &envelope)).await;
    assert_eq!(status, 201, "{answer}");
    (id, envelope)
}

/// `POST /v1/credentials/{id}/refresh-lease` by `device`: status, `Retry-After`, body.
async fn take_lease(
    broker: &TestBroker,
    device: &TestDevice,
    id: CredentialId,
) -> (u16, Option<String>, Value) {
    let path = format!("/v1/credentials/{id}/refresh-lease");
    let response = broker.signed(device, "POST", &path, None).send().await.expect("sent");
    let status = response.status().as_u16();
    let retry = response
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().expect("a text header").to_owned());
    (status, retry, response.json().await.expect("a JSON body"))
}

async fn release_lease(
    broker: &TestBroker,
    device: &TestDevice,
    id: CredentialId,
    lease: &str,
) -> (u16, Value) {
    let path = format!("/v1/credentials/{id}/refresh-lease/{lease}");
    TestBroker::send(broker.signed(device, "DELETE", &path, None)).await
}

fn lease_id(answer: &Value) -> String {
    answer["lease"].as_str().expect("a lease id").to_owned()
}

fn now(broker: &TestBroker) -> u64 {
    latchkey_server::clock::Clock::now(&*broker.clock)
}

#[tokio::test]
async fn a_refresh_lease_has_one_holder_until_it_is_given_back_or_lapses() {
    let broker = TestBroker::start().await;
    let admin = workspace_with_admin(&broker).await;
    let laptop = insert_device(&broker, &admin).await;
    let (id, _) = shared_github(&broker, &admin).await;

    let (status, _, taken) = take_lease(&broker, &admin, id).await;
    assert_eq!(status, 200, "a free lease is taken: {taken}");
    assert_eq!(taken["revision"], 1, "the lease names the credential's revision: {taken}");
    assert_eq!(taken["expires_at"], now(&broker) + 60, "a lease lasts 60 s: {taken}");
    let first = lease_id(&taken);

    let (status, retry, held) = take_lease(&broker, &laptop, id).await;
    assert_eq!((status, code(&held)), (409, "refresh_in_progress"), "another device: {held}");
    assert_eq!(retry.as_deref(), Some("2"), "the refusal says when to look again");
    assert!(
        held["message"].as_str().unwrap().contains("someone else is refreshing"),
        "the message says why: {held}"
    );
    assert_eq!(
        held.as_object().unwrap().keys().collect::<Vec<_>>(),
        ["code", "message"],
        "the one error shape, nothing else: {held}"
    );
    let (status, _, again) = take_lease(&broker, &admin, id).await;
    assert_eq!(
        (status, code(&again)),
        (409, "refresh_in_progress"),
        "the holder's device is refused too: two of its processes must not both refresh: {again}"
    );

    let (status, answer) = release_lease(&broker, &laptop, id, &first).await;
    assert_eq!((status, code(&answer)), (404, "not_found"), "only the holder gives it back");
    let (status, answer) = release_lease(&broker, &admin, id, &first).await;
    assert_eq!(status, 204, "the holder gives it back: {answer}");
    let (status, answer) = release_lease(&broker, &admin, id, &first).await;
    assert_eq!((status, code(&answer)), (404, "not_found"), "given back once only: {answer}");

    let (status, _, second) = take_lease(&broker, &laptop, id).await;
    assert_eq!(status, 200, "a given-back lease is free at once: {second}");
    broker.clock.advance(59);
    let (status, _, _) = take_lease(&broker, &admin, id).await;
    assert_eq!(status, 409, "a live lease is not taken over");
    broker.clock.advance(1);
    let (status, _, third) = take_lease(&broker, &admin, id).await;
    assert_eq!(status, 200, "a lapsed lease is taken over (its holder crashed): {third}");
    assert_ne!(lease_id(&third), lease_id(&second), "a lease taken over is a new lease");
    let (status, _) = release_lease(&broker, &laptop, id, &lease_id(&second)).await;
    assert_eq!(status, 404, "the lapsed holder no longer holds anything to give back");
    broker.stop().await;
}

#[tokio::test]
async fn a_refresh_stored_with_its_lease_gives_the_lease_back_in_the_same_write() {
    let broker = TestBroker::start().await;
    let admin = workspace_with_admin(&broker).await;
    let laptop = insert_device(&broker, &admin).await;
    let (id, _) = shared_github(&broker, &admin).await;
    let path = format!("/v1/credentials/{id}");
    let refreshed = seal(&admin, id, Owner::Shared, CANARY_REPLACED);
    let put = |device: &TestDevice, request: Value| {
        TestBroker::send(broker.signed(device, "PUT", &path, Some(&request)))
    };
    let with_lease = |revision: u64, lease: &str| {
        let mut request = replacement(revision, "github", 1, &refreshed);
        request["lease"] = json!(lease);
        request
    };

    // A stale revision is refused with the lease kept: the holder reads again and retries.
    let (_, _, taken) = take_lease(&broker, &admin, id).await;
    let lease = lease_id(&taken);
    let (status, answer) = put(&admin, with_lease(7, &lease)).await;
    assert_eq!((status, code(&answer)), (409, "conflict"), "the revision still decides: {answer}");
    let (status, _, _) = take_lease(&broker, &laptop, id).await;
    assert_eq!(status, 409, "a refused write keeps the writer's lease");
    let (status, stored) = put(&admin, with_lease(1, &lease)).await;
    assert_eq!(status, 200, "the holder stores its refresh: {stored}");
    assert_eq!(stored["revision"], 2);
    let (status, _, next) = take_lease(&broker, &laptop, id).await;
    assert_eq!(status, 200, "the write gave the lease back: {next}");
    assert_eq!(next["revision"], 2, "a taker sees the stored refresh's revision");

    // Another device's lease id is not this device's: refused while that lease is live.
    let (status, answer) = put(&admin, with_lease(2, &lease_id(&next))).await;
    assert_eq!(
        (status, code(&answer)),
        (409, "refresh_in_progress"),
        "a lease is its holder's: {answer}"
    );

    // Without a lease the revision alone decides (a reconnect or a rename is not a refresh):
    // the write applies and the holder's lease stays.
    let (status, renamed) = put(&admin, replacement(2, "github-ci", 1, &refreshed)).await;
    assert_eq!(status, 200, "a write without a lease is not blocked by one: {renamed}");
    let (status, _, _) = take_lease(&broker, &admin, id).await;
    assert_eq!(status, 409, "it gave back nobody's lease");

    // A lease that lapsed and was taken over no longer lets its old holder store while the new
    // holder is refreshing.
    broker.clock.advance(60);
    let (status, _, over) = take_lease(&broker, &admin, id).await;
    assert_eq!(status, 200, "taken over: {over}");
    let (status, answer) = put(&laptop, with_lease(3, &lease_id(&next))).await;
    assert_eq!(
        (status, code(&answer)),
        (409, "refresh_in_progress"),
        "the old holder's write waits for the new holder: {answer}"
    );
    let (_, fetched) = get(&broker, &admin, &format!("{path}/envelope")).await;
    assert_eq!(fetched["revision"], 3, "the refused write changed nothing: {fetched}");

    // A lapsed lease nobody took over still stores, and is given back.
    broker.clock.advance(60);
    let (status, stored) = put(&admin, with_lease(3, &lease_id(&over))).await;
    assert_eq!(status, 200, "a lapsed, not taken over lease still stores: {stored}");
    let (status, _, _) = take_lease(&broker, &laptop, id).await;
    assert_eq!(status, 200, "and was given back");
    broker.stop().await;
}

#[tokio::test]
async fn only_those_who_may_store_the_result_take_a_refresh_lease() {
    let broker = TestBroker::start().await;
    let admin = workspace_with_admin(&broker).await;
    let member = insert_member(&broker, &admin, "member").await;
    let (id, _) = shared_github(&broker, &admin).await;
    let personal = CredentialId::random();
    let envelope = seal(&member, personal, Owner::Member(member.member), CANARY_PERSONAL);
    assert_eq!(create(&broker, &member, &body(personal, "mine", "me", 1, &envelope)).await.0, 201);
    let stranger = workspace_with_admin(&broker).await;

    let (status, _, answer) = take_lease(&broker, &member, id).await;
    assert_eq!((status, code(&answer)), (403, "forbidden"), "a member may not store a shared one");
    let (status, _, answer) = take_lease(&broker, &admin, personal).await;
    assert_eq!(
        (status, code(&answer)),
        (404, "not_found"),
        "another member's personal credential does not exist for an admin either: {answer}"
    );
    let (status, _, answer) = take_lease(&broker, &stranger, id).await;
    assert_eq!((status, code(&answer)), (404, "not_found"), "another workspace's: {answer}");
    let (status, _, answer) = take_lease(&broker, &admin, CredentialId::random()).await;
    assert_eq!((status, code(&answer)), (404, "not_found"), "no such credential: {answer}");
    let (status, answer) = TestBroker::send(broker.signed(
        &admin,
        "POST",
        "/v1/credentials/not-a-uuid/refresh-lease",
        None,
    ))
    .await;
    assert_eq!((status, code(&answer)), (400, "bad_request"), "{answer}");
    let (status, _, mine) = take_lease(&broker, &member, personal).await;
    assert_eq!(status, 200, "the owner takes their own credential's lease: {mine}");

    let (status, _, taken) = take_lease(&broker, &admin, id).await;
    assert_eq!(status, 200, "{taken}");
    let lease = lease_id(&taken);
    let (status, answer) = release_lease(&broker, &stranger, id, &lease).await;
    assert_eq!((status, code(&answer)), (404, "not_found"), "another workspace: {answer}");
    let (status, answer) = release_lease(&broker, &admin, id, "not-a-uuid").await;
    assert_eq!((status, code(&answer)), (400, "bad_request"), "{answer}");
    let (status, answer) = release_lease(&broker, &admin, personal, &lease).await;
    assert_eq!((status, code(&answer)), (404, "not_found"), "the lease is of one credential");

    // Deleting the credential deletes its lease.
    let (status, _) =
        TestBroker::send(broker.signed(&admin, "DELETE", &format!("/v1/credentials/{id}"), None))
            .await;
    assert_eq!(status, 204);
    let db = database(&broker).await;
    let left: i64 =
        sqlx::query_scalar("SELECT count(*) FROM refresh_leases WHERE credential_id = $1")
            .bind(id.to_string())
            .fetch_one(&db)
            .await
            .unwrap();
    db.close().await;
    assert_eq!(left, 0, "a deleted credential's lease goes with it");
    broker.stop().await;
}

#[tokio::test]
async fn a_rotation_may_carry_more_than_other_device_requests_but_only_from_an_enrolled_device() {
    let broker = TestBroker::start().await;
    let admin = workspace_with_admin(&broker).await;
    // Two MiB: over every other endpoint's limit, within a rotation's.
    let big = json!({"junk": "x".repeat(2 << 20)});
    let (status, body) =
        TestBroker::send(broker.signed(&admin, "POST", "/v1/rotations", Some(&big))).await;
    assert_ne!(
        status, 413,
        "a rotation carries every credential of its key at once, so it is not cut at 1 MiB: {body}"
    );
    assert_eq!(status, 400, "read in full, then refused as not a rotation: {body}");
    let (status, body) =
        TestBroker::send(broker.signed(&admin, "POST", "/v1/agents", Some(&big))).await;
    assert_eq!((status, code(&body)), (413, "payload_too_large"), "{body}");
    let stranger = TestDevice::new(admin.workspace);
    let (status, body) =
        TestBroker::send(broker.signed(&stranger, "POST", "/v1/rotations", Some(&big))).await;
    assert_eq!(
        (status, code(&body)),
        (401, "unknown_device"),
        "a device that is not enrolled is refused before its body is read: {body}"
    );
    broker.stop().await;
}
