//! Members and devices: invites admit a device once, the joining device's fingerprint can be
//! compared on both sides, workspace and member keys reach new devices only wrapped by devices
//! that may hold them, removal takes effect on the next request, the workspace never loses its
//! last admin, and nothing crosses from one workspace to another.

#![allow(
    clippy::expect_used,
    clippy::unwrap_used,
    reason = "the helpers at the end of this file are test code too; a panic is the failure report"
)]

use crate::common;

use common::{TestBroker, TestDevice, b64, workspace_with_admin};
use latchkey_core::fingerprint::Fingerprint;
use latchkey_core::ids::{DeviceId, InviteId, KeyVersion, MemberId, WorkspaceId};
use latchkey_core::keys::{
    DeviceVerifyingKey, ExchangePublicKey, MemberKey, WorkspaceKey, WrappedKey,
};
use serde_json::{Value, json};

// ---------------------------------------------------------------------------------------------
// Enrolment and key distribution
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn an_invited_device_joins_shows_a_matching_fingerprint_and_opens_the_workspace_key_an_admin_wrapped_to_it()
 {
    let broker = TestBroker::start().await;
    let admin = workspace_with_admin(&broker).await;

    let (status, invite) = create_invite(&broker, &admin, json!({"role": "member"})).await;
    assert_eq!(status, 201, "an admin invites a member: {invite}");
    let code = invite["code"].as_str().expect("code in the response").to_owned();
    let groups: Vec<&str> = code.split('-').collect();
    assert_eq!(groups.len(), 7, "seven groups a human can read out: {code}");
    assert!(groups.iter().all(|g| g.len() == 4), "groups of four: {code}");
    assert_eq!(invite["expires_at"], json!(common::T0 + 24 * 60 * 60), "default lifetime is 24h");
    assert_eq!(invite["role"], "member", "{invite}");

    let newcomer = TestDevice::new(admin.workspace);
    let (status, joined) = join(&broker, &newcomer, &code, Some("Grace")).await;
    assert_eq!(status, 201, "a valid code enrols the device: {joined}");
    let own = newcomer.keys.public_keys();
    let own_fingerprint = Fingerprint::of(&own.signing.to_bytes(), &own.exchange.to_bytes());
    assert_eq!(
        joined["fingerprint"],
        json!(own_fingerprint.to_string()),
        "the broker registered exactly the keys the device holds"
    );
    assert_eq!(joined["workspace"], json!(admin.workspace), "{joined}");
    assert_eq!(joined["member"], json!(newcomer.member), "{joined}");
    assert_eq!(joined["role"], "member", "the invite's role: {joined}");
    assert_eq!(joined["new_member"], json!(true), "{joined}");

    // The admin's side: fetch the device, recompute its fingerprint from the keys received (never
    // trusting the broker's own fingerprint field), compare, then wrap the workspace key to it.
    let view = get_device(&broker, &admin, newcomer.id).await;
    let (signing, exchange) = device_keys(&view);
    assert_eq!(
        Fingerprint::of(&signing, &exchange),
        own_fingerprint,
        "the inviting side computes the same fingerprint from the keys the broker hands out"
    );
    assert_eq!(view["fingerprint"], json!(own_fingerprint.to_string()), "{view}");
    assert_eq!(view["member"], json!(newcomer.member), "{view}");
    let wk = admin.workspace_key.as_ref().expect("the admin holds the workspace key");
    let wrapped = WrappedKey::wrap_workspace_key(
        wk,
        (newcomer.id, &ExchangePublicKey::from_bytes(exchange)),
        (admin.id, &admin.keys.signing),
    )
    .expect("wrap");
    let (status, stored) = put_wrapped(&broker, &admin, &[&wrapped]).await;
    assert_eq!(status, 200, "{stored}");
    assert_eq!(stored, json!({"stored": 1, "unchanged": 0}), "stored once");
    let (status, again) = put_wrapped(&broker, &admin, &[&wrapped]).await;
    assert_eq!(
        (status, again),
        (200, json!({"stored": 0, "unchanged": 1})),
        "the same bytes again are accepted and change nothing"
    );

    // The new member creates their own member key and wraps it to themself.
    let mk = MemberKey::generate(admin.workspace, newcomer.member, KeyVersion::FIRST).expect("mk");
    let own_mk = WrappedKey::wrap_member_key(
        &mk,
        (newcomer.id, &newcomer.keys.exchange.public_key()),
        (newcomer.id, &newcomer.keys.signing),
    )
    .expect("wrap mk");
    let (status, stored) = put_wrapped(&broker, &newcomer, &[&own_mk]).await;
    assert_eq!(status, 200, "a member stores their own member key: {stored}");

    // The new device's side: fetch what is addressed to it and open the workspace key, verifying
    // the sender with the key it fetched (and whose fingerprint it compared) itself.
    let admin_view = get_device(&broker, &newcomer, admin.id).await;
    let (admin_signing, admin_exchange) = device_keys(&admin_view);
    let admin_public = admin.keys.public_keys();
    assert_eq!(
        Fingerprint::of(&admin_signing, &admin_exchange),
        Fingerprint::of(&admin_public.signing.to_bytes(), &admin_public.exchange.to_bytes()),
        "the new device sees the admin device's real keys"
    );
    let (status, delivered) =
        TestBroker::send(broker.signed(&newcomer, "GET", "/v1/wrapped-keys", None)).await;
    assert_eq!(status, 200, "{delivered}");
    let list = delivered["wrapped_keys"].as_array().expect("list");
    assert_eq!(list.len(), 2, "the workspace key and its own member key: {delivered}");
    let entry = &list[0];
    assert_eq!(entry["kind"], "workspace", "workspace keys first: {delivered}");
    assert_eq!(entry["owner"], json!({"kind": "shared"}), "{delivered}");
    assert_eq!(entry["version"], json!(1), "{delivered}");
    assert_eq!(entry["sender"]["id"], json!(admin.id), "{delivered}");
    assert_eq!(
        entry["sender"]["signing_key"],
        json!(b64(&admin_signing)),
        "the sender's key is delivered with the wrapped key"
    );
    assert_eq!(entry["sender"]["fingerprint"], admin_view["fingerprint"], "{delivered}");
    let bytes = decode(entry["bytes"].as_str().expect("bytes"));
    let received = WrappedKey::parse(&bytes).expect("framing intact");
    let opened = received
        .unwrap_workspace_key(
            (newcomer.id, &newcomer.keys.exchange),
            admin.workspace,
            &DeviceVerifyingKey::from_bytes(&admin_signing).expect("key"),
        )
        .expect("the new device opens the workspace key the admin wrapped");
    assert_eq!(
        opened.expose_secret().expose_secret(),
        wk.expose_secret().expose_secret(),
        "the same workspace key arrived"
    );
    assert_eq!(list[1]["kind"], "member", "{delivered}");
    assert_eq!(list[1]["owner"], json!({"kind": "member", "member": newcomer.member}));
    assert_eq!(list[1]["sender"]["id"], json!(newcomer.id), "{delivered}");

    // Both appear in the member list, with their devices' fingerprints.
    let (status, members) =
        TestBroker::send(broker.signed(&newcomer, "GET", "/v1/members", None)).await;
    assert_eq!(status, 200, "any member may list members: {members}");
    let members = members["members"].as_array().expect("members").clone();
    assert_eq!(members.len(), 2, "{members:?}");
    assert_eq!(members[0]["id"], json!(admin.member), "oldest first: {members:?}");
    assert_eq!(members[0]["role"], "admin", "{members:?}");
    assert_eq!(members[1]["name"], "Grace", "{members:?}");
    assert_eq!(members[1]["role"], "member", "{members:?}");
    assert_eq!(members[1]["devices"][0]["id"], json!(newcomer.id), "{members:?}");
    assert_eq!(
        members[1]["devices"][0]["fingerprint"],
        json!(own_fingerprint.to_string()),
        "{members:?}"
    );
    assert!(members[1]["devices"][0].get("signing_key").is_none(), "the list is a summary");
    broker.stop().await;
}

#[tokio::test]
async fn a_member_enrols_a_second_device_of_their_own_which_receives_their_member_key() {
    let broker = TestBroker::start().await;
    let admin = workspace_with_admin(&broker).await;
    let (laptop, mk) = enrol_with_member_key(&broker, &admin, "member").await;

    let (status, invite) = create_invite(&broker, &laptop, json!({"member": laptop.member})).await;
    assert_eq!(status, 201, "a member invites a device of their own: {invite}");
    assert_eq!(invite["member"], json!(laptop.member), "{invite}");
    assert!(invite.get("role").is_none(), "a device invite has no role of its own: {invite}");
    let desktop = second_device(&laptop);
    let (status, joined) = join(&broker, &desktop, invite["code"].as_str().unwrap(), None).await;
    assert_eq!(status, 201, "a device joins an existing member without a name: {joined}");
    assert_eq!(joined["member"], json!(laptop.member), "{joined}");
    assert_eq!(joined["role"], "member", "the member keeps their role: {joined}");
    assert_eq!(joined["new_member"], json!(false), "{joined}");

    let view = get_device(&broker, &laptop, desktop.id).await;
    let (_, exchange) = device_keys(&view);
    let wrapped = WrappedKey::wrap_member_key(
        &mk,
        (desktop.id, &ExchangePublicKey::from_bytes(exchange)),
        (laptop.id, &laptop.keys.signing),
    )
    .unwrap();
    let (status, stored) = put_wrapped(&broker, &laptop, &[&wrapped]).await;
    assert_eq!(status, 200, "a member wraps their member key to their own device: {stored}");
    let (status, delivered) =
        TestBroker::send(broker.signed(&desktop, "GET", "/v1/wrapped-keys", None)).await;
    assert_eq!(status, 200, "{delivered}");
    let entry = &delivered["wrapped_keys"][0];
    let sender_key = decode(entry["sender"]["signing_key"].as_str().unwrap());
    let opened = WrappedKey::parse(&decode(entry["bytes"].as_str().unwrap()))
        .unwrap()
        .unwrap_member_key(
            (desktop.id, &desktop.keys.exchange),
            admin.workspace,
            &DeviceVerifyingKey::from_bytes(&sender_key.try_into().unwrap()).unwrap(),
        )
        .expect("the second device opens the member key");
    assert_eq!(opened.member(), laptop.member, "the member's own key");
    assert_eq!(opened.expose_secret().expose_secret(), mk.expose_secret().expose_secret());

    let (_, members) = TestBroker::send(broker.signed(&admin, "GET", "/v1/members", None)).await;
    let devices = &members["members"][1]["devices"];
    assert_eq!(devices.as_array().map(Vec::len), Some(2), "two devices, one member: {members}");
    broker.stop().await;
}

#[tokio::test]
async fn a_device_invite_admits_only_the_member_it_was_created_for() {
    let broker = TestBroker::start().await;
    let admin = workspace_with_admin(&broker).await;
    let (member, _) = enrol_with_member_key(&broker, &admin, "member").await;

    let (status, invite) = create_invite(&broker, &admin, json!({"member": member.member})).await;
    assert_eq!(status, 201, "an admin may invite a device for any member: {invite}");
    let code = invite["code"].as_str().unwrap().to_owned();
    let intruder = TestDevice::new(admin.workspace);
    let (status, body) = join(&broker, &intruder, &code, Some("Mallory")).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (400, Some("invalid_request")),
        "a device invite cannot create a new member: {body}"
    );
    let mut as_admin = second_device(&member);
    as_admin.member = admin.member;
    let (status, body) = join(&broker, &as_admin, &code, None).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (400, Some("invalid_request")),
        "nor add a device to another member: {body}"
    );
    let (status, body) = join(&broker, &second_device(&member), &code, None).await;
    assert_eq!(status, 201, "the refusals above did not use the invite up: {body}");
    broker.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Invite codes
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn a_used_expired_unknown_or_garbled_code_is_refused_with_one_uniform_answer() {
    let broker = TestBroker::start().await;
    let admin = workspace_with_admin(&broker).await;
    let (_, invite) = create_invite(&broker, &admin, json!({})).await;
    let code = invite["code"].as_str().unwrap().to_owned();
    let (status, body) = join(&broker, &TestDevice::new(admin.workspace), &code, Some("A")).await;
    assert_eq!(status, 201, "first use: {body}");

    let mut answers = Vec::new();
    let (status, reused) = join(&broker, &TestDevice::new(admin.workspace), &code, Some("B")).await;
    answers.push(("reused", status, reused));

    let (_, short) = create_invite(&broker, &admin, json!({"expires_in_secs": 60})).await;
    broker.clock.advance(60);
    let short_code = short["code"].as_str().unwrap();
    let (status, expired) =
        join(&broker, &TestDevice::new(admin.workspace), short_code, Some("C")).await;
    answers.push(("expired", status, expired));

    let unknown = "ABCD-EFGH-JKMN-PQRS-TVWX-YZ01-2345";
    let (status, body) = join(&broker, &TestDevice::new(admin.workspace), unknown, Some("D")).await;
    answers.push(("unknown", status, body));
    let (status, body) =
        join(&broker, &TestDevice::new(admin.workspace), "open sesame", Some("E")).await;
    answers.push(("garbled", status, body));

    for (what, status, body) in &answers {
        assert_eq!(status, &403, "{what}: {body}");
        assert_eq!(body, &answers[0].2, "{what} gets exactly the answer a reused code gets");
    }
    assert_eq!(answers[0].2["code"], "invite_invalid", "{}", answers[0].2);
    let message = answers[0].2["message"].as_str().unwrap();
    assert!(!message.contains(&code), "the code is never echoed: {message}");
    assert!(message.contains("new one"), "says what to do next: {message}");

    let (_, members) = TestBroker::send(broker.signed(&admin, "GET", "/v1/members", None)).await;
    assert_eq!(members["members"].as_array().map(Vec::len), Some(2), "only one join: {members}");
    broker.stop().await;
}

#[tokio::test]
async fn two_devices_racing_with_one_code_admit_exactly_one() {
    let broker = TestBroker::start().await;
    let admin = workspace_with_admin(&broker).await;
    let (_, invite) = create_invite(&broker, &admin, json!({})).await;
    let code = invite["code"].as_str().unwrap().to_owned();
    let devices: Vec<TestDevice> = (0..8).map(|_| TestDevice::new(admin.workspace)).collect();
    let requests = devices.iter().map(|d| {
        TestBroker::send(broker.signed(
            d,
            "POST",
            "/v1/join",
            Some(&join_body(d, &code, Some("R"))),
        ))
    });
    let results = futures_util::future::join_all(requests).await;
    let admitted = results.iter().filter(|(status, _)| *status == 201).count();
    assert_eq!(admitted, 1, "one code, one device: {results:?}");
    assert!(
        results.iter().all(|(s, b)| *s == 201 || b["code"] == "invite_invalid"),
        "the others are told the code is not valid: {results:?}"
    );
    broker.stop().await;
}

#[tokio::test]
async fn an_invite_is_valid_until_its_last_second_and_read_forgivingly() {
    let broker = TestBroker::start().await;
    let admin = workspace_with_admin(&broker).await;
    let (status, invite) = create_invite(&broker, &admin, json!({"expires_in_secs": 60})).await;
    assert_eq!(status, 201, "{invite}");
    assert_eq!(invite["expires_at"], json!(common::T0 + 60), "{invite}");
    broker.clock.advance(59);
    let sloppy = invite["code"].as_str().unwrap().replace('-', " ").to_lowercase();
    let (status, body) = join(&broker, &TestDevice::new(admin.workspace), &sloppy, Some("A")).await;
    assert_eq!(status, 201, "lower case with spaces reads as the same code, in time: {body}");
    broker.stop().await;
}

#[tokio::test]
async fn invite_requests_with_bad_lifetimes_or_contradictory_fields_are_refused() {
    let broker = TestBroker::start().await;
    let admin = workspace_with_admin(&broker).await;
    for (body, code, why) in [
        (json!({"expires_in_secs": 59}), "invalid_request", "shorter than a minute"),
        (json!({"expires_in_secs": 7 * 24 * 3600 + 1}), "invalid_request", "longer than 7 days"),
        (
            json!({"member": admin.member, "role": "admin"}),
            "invalid_request",
            "a device invite keeps the member's role",
        ),
        (json!({"role": "owner"}), "bad_request", "no such role"),
        (json!({"surprise": 1}), "bad_request", "unknown field"),
    ] {
        let (status, response) = create_invite(&broker, &admin, body).await;
        assert_eq!((status, response["code"].as_str()), (400, Some(code)), "{why}: {response}");
    }
    let (status, response) = create_invite(&broker, &admin, json!({"role": "owner"})).await;
    assert!(
        !response["message"].as_str().unwrap().contains("owner"),
        "submitted values are not echoed ({status}): {response}"
    );
    let (status, response) =
        create_invite(&broker, &admin, json!({"member": MemberId::random()})).await;
    assert_eq!(
        (status, response["code"].as_str()),
        (404, Some("not_found")),
        "a device invite for nobody: {response}"
    );
    let (status, response) =
        create_invite(&broker, &admin, json!({"expires_in_secs": 604_800})).await;
    assert_eq!(status, 201, "exactly 7 days is allowed: {response}");
    broker.stop().await;
}

#[tokio::test]
async fn a_refused_join_writes_nothing_and_leaves_the_code_usable() {
    let broker = TestBroker::start().await;
    let admin = workspace_with_admin(&broker).await;
    let (_, invite) = create_invite(&broker, &admin, json!({})).await;
    let code = invite["code"].as_str().unwrap().to_owned();
    let device = TestDevice::new(admin.workspace);

    // Signed by a key other than the one it registers.
    let body = join_body(&device, &code, Some("Grace"));
    let impostor = TestDevice { id: device.id, ..TestDevice::new(admin.workspace) };
    let (status, response) =
        TestBroker::send(broker.signed(&impostor, "POST", "/v1/join", Some(&body))).await;
    assert_eq!((status, response["code"].as_str()), (401, Some("signature_invalid")), "{response}");

    let (status, response) = join(&broker, &device, &code, None).await;
    assert_eq!(
        (status, response["code"].as_str()),
        (400, Some("invalid_request")),
        "a new member needs a name: {response}"
    );

    let mut taken_member = TestDevice::new(admin.workspace);
    taken_member.member = admin.member;
    let (status, response) = join(&broker, &taken_member, &code, Some("Copycat")).await;
    assert_eq!(
        (status, response["code"].as_str()),
        (409, Some("conflict")),
        "a new member cannot take an existing member's id: {response}"
    );

    let taken_device = TestDevice { id: admin.id, ..TestDevice::new(admin.workspace) };
    let (status, response) = join(&broker, &taken_device, &code, Some("Copycat")).await;
    assert_eq!(
        (status, response["code"].as_str()),
        (409, Some("conflict")),
        "a device id is taken: {response}"
    );

    let mut bad_name = join_body(&device, &code, Some("Grace"));
    bad_name["device"]["name"] = json!("\u{7}");
    let (status, response) =
        TestBroker::send(broker.signed(&device, "POST", "/v1/join", Some(&bad_name))).await;
    assert_eq!((status, response["code"].as_str()), (400, Some("invalid_request")), "{response}");

    let (_, members) = TestBroker::send(broker.signed(&admin, "GET", "/v1/members", None)).await;
    assert_eq!(members["members"].as_array().map(Vec::len), Some(1), "no one joined: {members}");
    let (status, response) = join(&broker, &device, &code, Some("Grace")).await;
    assert_eq!(status, 201, "the code survived every refusal: {response}");
    broker.stop().await;
}

#[tokio::test]
async fn an_invite_dies_with_the_authority_of_whoever_created_it() {
    let broker = TestBroker::start().await;
    let admin = workspace_with_admin(&broker).await;
    let (deputy, _) = enrol_with_member_key(&broker, &admin, "admin").await;

    let (_, for_member) = create_invite(&broker, &deputy, json!({})).await;
    let (_, for_own_device) =
        create_invite(&broker, &deputy, json!({"member": deputy.member})).await;
    let (status, body) = set_role(&broker, &admin, deputy.member, "member").await;
    assert_eq!(status, 200, "{body}");
    let (_, listed) = get(&broker, &admin, "/v1/invites").await;
    let ids: Vec<&Value> = listed["invites"].as_array().unwrap().iter().map(|i| &i["id"]).collect();
    assert_eq!(
        ids,
        [&for_own_device["id"]],
        "a demoted admin's member invite is no longer pending; their own device's is: {listed}"
    );
    let (status, body) = join(
        &broker,
        &TestDevice::new(admin.workspace),
        for_member["code"].as_str().unwrap(),
        Some("Late"),
    )
    .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (403, Some("invite_invalid")),
        "a demoted admin's member invites no longer admit anyone: {body}"
    );

    let (_, from_device) = create_invite(&broker, &deputy, json!({"member": deputy.member})).await;
    let (status, body) = remove_device(&broker, &admin, deputy.id).await;
    assert_eq!(status, 200, "{body}");
    let (status, body) =
        join(&broker, &second_device(&deputy), from_device["code"].as_str().unwrap(), None).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (403, Some("invite_invalid")),
        "an invite dies with the device that created it: {body}"
    );
    // The earlier device invite was created by the same removed device: dead as well.
    let (status, _) =
        join(&broker, &second_device(&deputy), for_own_device["code"].as_str().unwrap(), None)
            .await;
    assert_eq!(status, 403, "every invite of a removed device is void");
    let (_, listed) = get(&broker, &admin, "/v1/invites").await;
    assert_eq!(
        listed["invites"],
        json!([]),
        "a removed device's invites are not pending: {listed}"
    );
    broker.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Listing and revoking invites
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn pending_invites_are_listed_to_who_may_revoke_them_and_a_revoked_code_admits_no_one() {
    let broker = TestBroker::start().await;
    let admin = workspace_with_admin(&broker).await;
    let (member, _) = enrol_with_member_key(&broker, &admin, "member").await;
    let (status, for_newcomer) =
        create_invite(&broker, &admin, json!({"role": "admin", "expires_in_secs": 3600})).await;
    assert_eq!(status, 201, "{for_newcomer}");
    // A second apart: invites made within one second are listed by id.
    broker.clock.advance(1);
    let (status, for_laptop) =
        create_invite(&broker, &member, json!({"member": member.member})).await;
    assert_eq!(status, 201, "{for_laptop}");
    let newcomer_id = for_newcomer["id"].as_str().expect("an invite id").to_owned();
    let laptop_id = for_laptop["id"].as_str().expect("an invite id").to_owned();
    assert!(newcomer_id.parse::<InviteId>().is_ok(), "the id is a UUID: {for_newcomer}");

    let (status, listed) = get(&broker, &admin, "/v1/invites").await;
    assert_eq!(status, 200, "{listed}");
    assert_eq!(
        listed["invites"],
        json!([
            {
                "id": newcomer_id, "role": "admin", "created_by": admin.id,
                "created_by_member": admin.member, "created_at": common::T0,
                "expires_at": common::T0 + 3600,
            },
            {
                "id": laptop_id, "member": member.member, "created_by": member.id,
                "created_by_member": member.member, "created_at": common::T0 + 1,
                "expires_at": common::T0 + 1 + 24 * 3600,
            },
        ]),
        "an admin sees every pending invite, oldest first, the one enrolling the member used \
         already gone"
    );
    for code in [&for_newcomer["code"], &for_laptop["code"]] {
        let code = code.as_str().unwrap();
        assert!(!listed.to_string().contains(code), "codes are never listed: {listed}");
    }
    let (_, own) = get(&broker, &member, "/v1/invites").await;
    let ids: Vec<&Value> = own["invites"].as_array().unwrap().iter().map(|i| &i["id"]).collect();
    assert_eq!(ids, [&json!(laptop_id)], "a member sees only their own invites: {own}");

    let (status, body) = revoke_invite(&broker, &member, &newcomer_id).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (403, Some("forbidden")),
        "a member cannot revoke an admin's invite: {body}"
    );
    assert!(body["message"].as_str().unwrap().contains("admin"), "says who can: {body}");

    let (status, body) = revoke_invite(&broker, &member, &laptop_id).await;
    assert_eq!(status, 204, "a member revokes their own invite: {body}");
    let (status, body) =
        join(&broker, &second_device(&member), for_laptop["code"].as_str().unwrap(), None).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (403, Some("invite_invalid")),
        "a revoked code admits no one: {body}"
    );
    let (status, body) = revoke_invite(&broker, &member, &laptop_id).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (404, Some("not_found")),
        "revoking twice finds nothing the second time: {body}"
    );

    let (status, body) = revoke_invite(&broker, &admin, &newcomer_id).await;
    assert_eq!(status, 204, "an admin revokes any invite: {body}");
    let (status, body) = join(
        &broker,
        &TestDevice::new(admin.workspace),
        for_newcomer["code"].as_str().unwrap(),
        Some("Mallory"),
    )
    .await;
    assert_eq!((status, body["code"].as_str()), (403, Some("invite_invalid")), "{body}");
    let (_, listed) = get(&broker, &admin, "/v1/invites").await;
    assert_eq!(listed["invites"], json!([]), "nothing is pending any more: {listed}");
    let (_, members) = get(&broker, &admin, "/v1/members").await;
    assert_eq!(members["members"].as_array().map(Vec::len), Some(2), "no one joined: {members}");
    broker.stop().await;
}

#[tokio::test]
async fn used_expired_foreign_and_malformed_invites_are_not_revoked_and_nothing_changes() {
    let broker = TestBroker::start().await;
    let admin = workspace_with_admin(&broker).await;
    let (_, used) = create_invite(&broker, &admin, json!({})).await;
    let (status, body) =
        join(&broker, &TestDevice::new(admin.workspace), used["code"].as_str().unwrap(), Some("U"))
            .await;
    assert_eq!(status, 201, "{body}");
    let (_, short) = create_invite(&broker, &admin, json!({"expires_in_secs": 60})).await;
    let (_, kept) = create_invite(&broker, &admin, json!({"expires_in_secs": 3600})).await;
    broker.clock.advance(60);
    let outsider = workspace_with_admin(&broker).await;

    let (status, body) = revoke_invite(&broker, &admin, used["id"].as_str().unwrap()).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (409, Some("conflict")),
        "a used invite cannot be taken back: {body}"
    );
    assert!(
        body["message"].as_str().unwrap().contains("remove the device"),
        "says what undoes it: {body}"
    );
    for (by, id, why) in [
        (&admin, short["id"].as_str().unwrap().to_owned(), "an expired invite"),
        (&admin, InviteId::random().to_string(), "an unknown id"),
        (&outsider, kept["id"].as_str().unwrap().to_owned(), "another workspace's invite"),
    ] {
        let (status, body) = revoke_invite(&broker, by, &id).await;
        assert_eq!(
            (status, body["code"].as_str()),
            (404, Some("not_found")),
            "{why} is not found: {body}"
        );
    }
    for id in ["not-an-id", "7G3K-Q9M2-XW4T-8HJ1-C5RZ-0NPB-4D6F"] {
        let (status, body) = revoke_invite(&broker, &admin, id).await;
        assert_eq!(
            (status, body["code"].as_str()),
            (400, Some("invalid_request")),
            "{id:?} is not an invite id: {body}"
        );
    }

    let (_, listed) = get(&broker, &admin, "/v1/invites").await;
    let ids: Vec<&Value> = listed["invites"].as_array().unwrap().iter().map(|i| &i["id"]).collect();
    assert_eq!(ids, [&kept["id"]], "used and expired invites are not pending: {listed}");
    let (_, theirs) = get(&broker, &outsider, "/v1/invites").await;
    assert_eq!(theirs["invites"], json!([]), "another workspace sees none of them: {theirs}");
    let (status, body) =
        join(&broker, &TestDevice::new(admin.workspace), kept["code"].as_str().unwrap(), Some("K"))
            .await;
    assert_eq!(status, 201, "the refused revocations left the invite usable: {body}");
    broker.stop().await;
}

#[tokio::test]
async fn invites_made_before_invites_had_ids_get_one_and_can_be_listed_used_and_revoked() {
    let broker = TestBroker::start().await;
    let admin = workspace_with_admin(&broker).await;
    let (_, first) = create_invite(&broker, &admin, json!({})).await;
    let (_, second) = create_invite(&broker, &admin, json!({})).await;
    // Take the database back to before the invite-id migration, as an older broker left it.
    let forget_migration = match broker.db {
        common::TestDatabase::Sqlite => "DELETE FROM _sqlx_migrations WHERE version IN (10, 11)",
        common::TestDatabase::Postgres(_) => "DELETE FROM _sqlx_migrations WHERE version = 11",
    };
    let pool = broker.db.privileged(broker.dir.path()).await;
    for statement in
        ["DROP INDEX invites_id", "ALTER TABLE invites DROP COLUMN id", forget_migration]
    {
        sqlx::query(statement).execute(&pool).await.expect(statement);
    }
    pool.close().await;

    broker.db.open_and_migrate(broker.dir.path()).await.close().await;
    let pool = broker.db.privileged(broker.dir.path()).await;
    let unset = sqlx::query("UPDATE invites SET id = NULL").execute(&pool).await;
    let nullable: Option<String> = match broker.db {
        common::TestDatabase::Sqlite => None,
        common::TestDatabase::Postgres(_) => Some(
            sqlx::query_scalar(
                "SELECT is_nullable::text FROM information_schema.columns \
                 WHERE table_name = 'invites' AND column_name = 'id'",
            )
            .fetch_one(&pool)
            .await
            .unwrap(),
        ),
    };
    pool.close().await;
    // PostgreSQL's row-level security lets the UPDATE reach no row, so its schema is read.
    assert!(
        unset.is_err() || nullable.as_deref() == Some("NO"),
        "after the migrations every invite must have an id: {unset:?}, nullable {nullable:?}"
    );
    let (status, listed) = get(&broker, &admin, "/v1/invites").await;
    assert_eq!(status, 200, "{listed}");
    let ids: Vec<InviteId> = listed["invites"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["id"].as_str().unwrap().parse().expect("a canonical UUID"))
        .collect();
    assert_eq!(ids.len(), 2, "both older invites are listed: {listed}");
    assert_ne!(ids[0], ids[1], "each got its own id");
    for id in &ids {
        assert_eq!(id.as_uuid().get_version_num(), 4, "a random UUID, as new invites get: {id}");
        assert!(
            id.to_string() != first["id"] && id.to_string() != second["id"],
            "ids are drawn anew, not kept from before"
        );
    }
    let (status, body) = revoke_invite(&broker, &admin, &ids[0].to_string()).await;
    assert_eq!(status, 204, "an older invite is revoked by its new id: {body}");
    let (_, listed) = get(&broker, &admin, "/v1/invites").await;
    assert_eq!(listed["invites"][0]["id"], json!(ids[1]), "the other stays pending: {listed}");
    let mut admitted = 0;
    for (invite, name) in [(&first, "A"), (&second, "B")] {
        let code = invite["code"].as_str().unwrap();
        let (status, body) =
            join(&broker, &TestDevice::new(admin.workspace), code, Some(name)).await;
        assert!(status == 201 || body["code"] == "invite_invalid", "{body}");
        admitted += usize::from(status == 201);
    }
    assert_eq!(admitted, 1, "the revoked code admits no one, the other admits its device");
    broker.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Roles and permissions
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn a_member_who_is_not_admin_cannot_invite_others_remove_others_or_change_roles() {
    let broker = TestBroker::start().await;
    let admin = workspace_with_admin(&broker).await;
    let (member, _) = enrol_with_member_key(&broker, &admin, "member").await;

    for (body, why) in [
        (json!({"role": "admin"}), "an admin"),
        (json!({"role": "member"}), "a new member"),
        (json!({}), "a new member by default"),
        (json!({"member": admin.member}), "a device for someone else"),
    ] {
        let (status, response) = create_invite(&broker, &member, body).await;
        assert_eq!(
            (status, response["code"].as_str()),
            (403, Some("forbidden")),
            "a member cannot invite {why}: {response}"
        );
    }
    let (status, response) = remove_device(&broker, &member, admin.id).await;
    assert_eq!((status, response["code"].as_str()), (403, Some("forbidden")), "{response}");
    let (status, response) = remove_member(&broker, &member, admin.member).await;
    assert_eq!((status, response["code"].as_str()), (403, Some("forbidden")), "{response}");
    let (status, response) = set_role(&broker, &member, admin.member, "member").await;
    assert_eq!((status, response["code"].as_str()), (403, Some("forbidden")), "{response}");
    let (status, response) = set_role(&broker, &member, member.member, "admin").await;
    assert_eq!(
        (status, response["code"].as_str()),
        (403, Some("forbidden")),
        "nobody promotes themself: {response}"
    );

    let (status, me) = TestBroker::send(broker.signed(&admin, "GET", "/v1/me", None)).await;
    assert_eq!((status, me["role"].as_str()), (200, Some("admin")), "nothing changed: {me}");
    let (status, me) = TestBroker::send(broker.signed(&member, "GET", "/v1/me", None)).await;
    assert_eq!((status, me["role"].as_str()), (200, Some("member")), "nothing changed: {me}");
    broker.stop().await;
}

#[tokio::test]
async fn what_a_device_was_refused_for_its_role_is_on_the_chain_and_nothing_else_is() {
    let broker = TestBroker::start().await;
    let admin = workspace_with_admin(&broker).await;
    let (member, _) = enrol_with_member_key(&broker, &admin, "member").await;
    let before = audit_kinds(&broker, &admin).await.len();

    // Refused for the member's role: each one is recorded.
    assert_eq!(create_invite(&broker, &member, json!({"role": "admin"})).await.0, 403);
    assert_eq!(remove_member(&broker, &member, admin.member).await.0, 403);
    assert_eq!(set_role(&broker, &member, member.member, "admin").await.0, 403);
    // Refused for other reasons, or not refused: nothing is recorded.
    assert_eq!(get(&broker, &member, "/v1/members").await.0, 200, "a member reads members");
    assert_eq!(create_invite(&broker, &member, json!({"expires_in_secs": 1})).await.0, 400);
    assert_eq!(remove_device(&broker, &member, DeviceId::random()).await.0, 404);
    let stranger = TestDevice::new(admin.workspace);
    let (status, _) = TestBroker::send(broker.signed(&stranger, "GET", "/v1/members", None)).await;
    assert_eq!(status, 401, "an unknown device names no workspace to record in");

    let (status, log) = get(&broker, &admin, "/v1/audit?order=oldest_first").await;
    assert_eq!(status, 200, "{log}");
    let records: Vec<&Value> =
        log["records"].as_array().unwrap().iter().skip(before).map(|r| &r["record"]).collect();
    let seen: Vec<(&str, &str, &str, &str, &str)> = records
        .iter()
        .map(|r| {
            let field = |k: &str| r[k].as_str().unwrap_or("-");
            (field("kind"), field("device"), field("reason_code"), field("method"), field("path"))
        })
        .collect();
    let m = member.id.to_string();
    assert_eq!(
        seen,
        [
            ("request_refused", m.as_str(), "forbidden", "POST", "/v1/invites"),
            ("request_refused", m.as_str(), "forbidden", "DELETE", "/v1/members/{id}"),
            ("request_refused", m.as_str(), "forbidden", "PATCH", "/v1/members/{id}"),
        ],
        "each request refused for the member's role names the device and the route it tried; \
         reads, malformed requests, misses and unknown devices add nothing"
    );
    assert!(
        records.iter().all(|r| r["member"] == json!(member.member) && r.get("decision").is_none()),
        "the member is named, and a refused request is no agent call: {records:?}"
    );
    broker.stop().await;
}

#[tokio::test]
async fn a_device_refused_in_a_loop_is_recorded_thirty_times_a_minute_and_logged_beyond() {
    let logs = common::LogCapture::default();
    // This test's runtime is single-threaded, so the broker's tasks log through this capture.
    let _guard = logs.install();
    let broker = TestBroker::start().await;
    let admin = workspace_with_admin(&broker).await;
    let (member, _) = enrol_with_member_key(&broker, &admin, "member").await;
    let refused = |kinds: &[String]| kinds.iter().filter(|k| *k == "request_refused").count();

    for _ in 0..35 {
        assert_eq!(set_role(&broker, &member, member.member, "admin").await.0, 403);
    }
    let kinds = audit_kinds(&broker, &admin).await;
    assert_eq!(refused(&kinds), 30, "the first 30 of a minute are on the chain, no more");
    let over = logs
        .text()
        .lines()
        .filter(|l| l.contains("not on the audit chain") && l.contains(&member.id.to_string()))
        .count();
    assert_eq!(over, 5, "the rest are logged with the device, for the operator");

    let other = enrol_with_member_key(&broker, &admin, "member").await.0;
    assert_eq!(set_role(&broker, &other, admin.member, "member").await.0, 403);
    let kinds = audit_kinds(&broker, &admin).await;
    assert_eq!(refused(&kinds), 31, "each device has its own budget, in the same minute");
    broker.clock.advance(60);
    assert_eq!(set_role(&broker, &member, member.member, "admin").await.0, 403);
    let kinds = audit_kinds(&broker, &admin).await;
    assert_eq!(refused(&kinds), 32, "the looping device is recorded again the next minute");
    broker.stop().await;
}

/// The kinds of the workspace's audit records, oldest first.
async fn audit_kinds(broker: &TestBroker, by: &TestDevice) -> Vec<String> {
    let (status, log) = get(broker, by, "/v1/audit?order=oldest_first").await;
    assert_eq!(status, 200, "{log}");
    log["records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["record"]["kind"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn the_last_admin_can_be_neither_removed_nor_demoted_until_another_admin_exists() {
    let broker = TestBroker::start().await;
    let admin = workspace_with_admin(&broker).await;
    let (member, _) = enrol_with_member_key(&broker, &admin, "member").await;

    let (status, body) = remove_member(&broker, &admin, admin.member).await;
    assert_eq!((status, body["code"].as_str()), (409, Some("conflict")), "removal: {body}");
    assert!(body["message"].as_str().unwrap().contains("admin first"), "says what to do: {body}");
    let (status, body) = set_role(&broker, &admin, admin.member, "member").await;
    assert_eq!((status, body["code"].as_str()), (409, Some("conflict")), "demotion: {body}");
    let (status, body) = remove_device(&broker, &admin, admin.id).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (409, Some("conflict")),
        "the last admin's last device cannot go either: {body}"
    );
    let (status, me) = TestBroker::send(broker.signed(&admin, "GET", "/v1/me", None)).await;
    assert_eq!((status, me["role"].as_str()), (200, Some("admin")), "still admin: {me}");

    let (status, body) = set_role(&broker, &admin, member.member, "admin").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body, json!({"member": member.member, "role": "admin"}), "{body}");
    let (status, body) = set_role(&broker, &admin, admin.member, "member").await;
    assert_eq!(status, 200, "with a second admin, the first may step down: {body}");
    let (_, me) = TestBroker::send(broker.signed(&admin, "GET", "/v1/me", None)).await;
    assert_eq!(me["role"], "member", "the role change applies to the next request: {me}");
    let (status, body) = remove_member(&broker, &member, admin.member).await;
    assert_eq!(status, 200, "the new admin removes the old one: {body}");
    let (status, body) = remove_member(&broker, &member, member.member).await;
    assert_eq!((status, body["code"].as_str()), (409, Some("conflict")), "{body}");
    broker.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Wrapped keys
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn wrapped_keys_with_a_forged_sender_or_for_another_workspace_are_refused() {
    let broker = TestBroker::start().await;
    let admin = workspace_with_admin(&broker).await;
    let (member, _) = enrol_with_member_key(&broker, &admin, "member").await;
    let wk = admin.workspace_key.as_ref().unwrap();

    // The member's device claims the admin device wrapped it.
    let forged = WrappedKey::wrap_workspace_key(
        wk,
        (member.id, &member.keys.exchange.public_key()),
        (admin.id, &member.keys.signing),
    )
    .unwrap();
    let (status, body) = put_wrapped(&broker, &member, &[&forged]).await;
    assert_eq!((status, body["code"].as_str()), (403, Some("forbidden")), "forged sender: {body}");

    let foreign_wk = WorkspaceKey::generate(WorkspaceId::random(), KeyVersion::FIRST).unwrap();
    let foreign = wrap_wk(&foreign_wk, &admin, &member);
    let (status, body) = put_wrapped(&broker, &admin, &[&foreign]).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (400, Some("invalid_request")),
        "a key of another workspace: {body}"
    );
    assert!(body["message"].as_str().unwrap().contains("wrapped_keys[0]"), "says which: {body}");

    let (status, body) = TestBroker::send(broker.signed(
        &admin,
        "PUT",
        "/v1/wrapped-keys",
        Some(&json!({"wrapped_keys": [b64(&[1u8; 215])]})),
    ))
    .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (400, Some("invalid_request")),
        "bad framing: {body}"
    );
    let (status, body) = TestBroker::send(broker.signed(
        &admin,
        "PUT",
        "/v1/wrapped-keys",
        Some(&json!({"wrapped_keys": []})),
    ))
    .await;
    assert_eq!((status, body["code"].as_str()), (400, Some("invalid_request")), "empty: {body}");
    let (status, body) = TestBroker::send(broker.signed(
        &admin,
        "PUT",
        "/v1/wrapped-keys",
        Some(&json!({"wrapped_keys": ["not base64!"]})),
    ))
    .await;
    assert_eq!((status, body["code"].as_str()), (400, Some("bad_request")), "not base64: {body}");

    let delivered = delivered_to(&broker, &member).await;
    assert!(
        delivered.iter().all(|k| k["kind"] == "member"),
        "no workspace key reached the member, only their own member key: {delivered:?}"
    );
    broker.stop().await;
}

#[tokio::test]
async fn a_member_key_moves_only_between_devices_of_its_own_member() {
    let broker = TestBroker::start().await;
    let admin = workspace_with_admin(&broker).await;
    let (alice, alice_mk) = enrol_with_member_key(&broker, &admin, "member").await;
    let (bob, _) = enrol_with_member_key(&broker, &admin, "member").await;

    // Bob's device wraps (a key claiming to be) Alice's member key.
    let fake = MemberKey::generate(admin.workspace, alice.member, KeyVersion::FIRST).unwrap();
    let by_bob = WrappedKey::wrap_member_key(
        &fake,
        (alice.id, &alice.keys.exchange.public_key()),
        (bob.id, &bob.keys.signing),
    )
    .unwrap();
    let (status, body) = put_wrapped(&broker, &bob, &[&by_bob]).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (403, Some("forbidden")),
        "another member's member key: {body}"
    );
    let admin_mk = admin.member_key.as_ref().unwrap();
    let by_admin = WrappedKey::wrap_member_key(
        admin_mk,
        (alice.id, &alice.keys.exchange.public_key()),
        (admin.id, &admin.keys.signing),
    );
    let (status, body) = put_wrapped(&broker, &admin, &[&by_admin.unwrap()]).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (403, Some("forbidden")),
        "not even an admin's own member key goes to another member's device: {body}"
    );
    let to_bob = WrappedKey::wrap_member_key(
        &alice_mk,
        (bob.id, &bob.keys.exchange.public_key()),
        (alice.id, &alice.keys.signing),
    )
    .unwrap();
    let (status, body) = put_wrapped(&broker, &alice, &[&to_bob]).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (403, Some("forbidden")),
        "a member cannot hand their personal key to another member's device: {body}"
    );
    assert_eq!(delivered_to(&broker, &bob).await.len(), 1, "Bob holds only his own member key");
    assert_eq!(delivered_to(&broker, &alice).await.len(), 1, "Alice holds only her own");
    broker.stop().await;
}

#[tokio::test]
async fn wrapped_keys_for_removed_or_foreign_devices_are_refused_as_not_found() {
    let broker = TestBroker::start().await;
    let admin = workspace_with_admin(&broker).await;
    let (member, _) = enrol_with_member_key(&broker, &admin, "member").await;
    let (status, body) = remove_device(&broker, &admin, member.id).await;
    assert_eq!(status, 200, "{body}");
    let wk = admin.workspace_key.as_ref().unwrap();
    let (status, body) = put_wrapped(&broker, &admin, &[&wrap_wk(wk, &admin, &member)]).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (404, Some("not_found")),
        "a removed device gets nothing: {body}"
    );

    let other = workspace_with_admin(&broker).await;
    let (status, body) = put_wrapped(&broker, &admin, &[&wrap_wk(wk, &admin, &other)]).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (404, Some("not_found")),
        "a device of another workspace is no recipient: {body}"
    );
    let stranger = TestDevice::new(admin.workspace);
    let (status, body) = put_wrapped(&broker, &admin, &[&wrap_wk(wk, &admin, &stranger)]).await;
    assert_eq!((status, body["code"].as_str()), (404, Some("not_found")), "nobody: {body}");
    broker.stop().await;
}

#[tokio::test]
async fn different_bytes_for_stored_coordinates_conflict_and_a_refused_batch_stores_nothing() {
    let broker = TestBroker::start().await;
    let admin = workspace_with_admin(&broker).await;
    let (alice, _) = enrol_with_member_key(&broker, &admin, "member").await;
    let (bob, _) = enrol_with_member_key(&broker, &admin, "member").await;
    let wk = admin.workspace_key.as_ref().unwrap();
    let (status, _) = put_wrapped(&broker, &admin, &[&wrap_wk(wk, &admin, &alice)]).await;
    assert_eq!(status, 200);

    // Wrapping again draws a fresh HPKE ephemeral key: same coordinates, different bytes.
    let rewrapped = wrap_wk(wk, &admin, &alice);
    let for_bob = wrap_wk(wk, &admin, &bob);
    let (status, body) = put_wrapped(&broker, &admin, &[&for_bob, &rewrapped]).await;
    assert_eq!((status, body["code"].as_str()), (409, Some("conflict")), "{body}");
    assert!(body["message"].as_str().unwrap().contains("wrapped_keys[1]"), "says which: {body}");
    assert_eq!(
        delivered_to(&broker, &bob).await.len(),
        1,
        "Bob's key from the refused batch was not stored (he has only his member key)"
    );
    let alice_keys = delivered_to(&broker, &alice).await;
    let stored_wk = alice_keys.iter().find(|k| k["kind"] == "workspace").expect("still there");
    assert_eq!(
        decode(stored_wk["bytes"].as_str().unwrap()),
        wrap_bytes_of(&broker, &admin, &alice).await,
        "the first upload stands"
    );
    broker.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Removal
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn a_removed_device_is_unknown_on_its_next_request_and_its_wrapped_keys_are_gone() {
    let broker = TestBroker::start().await;
    let admin = workspace_with_admin(&broker).await;
    let (member, _) = enrol_with_member_key(&broker, &admin, "member").await;
    let wk = admin.workspace_key.as_ref().unwrap();
    let (status, _) = put_wrapped(&broker, &admin, &[&wrap_wk(wk, &admin, &member)]).await;
    assert_eq!(status, 200);
    assert_eq!(delivered_to(&broker, &member).await.len(), 2, "workspace and member key");

    let (status, body) = remove_device(&broker, &admin, member.id).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body,
        json!({"devices_removed": 1, "rotation_recommended": true, "agents_revoked": 0, "personal_credentials_deleted": 0}),
        "{body}"
    );
    let (status, body) = TestBroker::send(broker.signed(&member, "GET", "/v1/me", None)).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (401, Some("unknown_device")),
        "the very next request is refused: {body}"
    );
    let store = broker.store().await;
    let left = store.wrapped_keys_for(admin.workspace, member.id).await.unwrap();
    assert!(left.is_empty(), "the keys addressed to the device are deleted: {left:?}");
    store.close().await;

    let (status, body) = get(&broker, &admin, &format!("/v1/devices/{}", member.id)).await;
    assert_eq!((status, body["code"].as_str()), (404, Some("not_found")), "{body}");
    let (status, body) = remove_device(&broker, &admin, member.id).await;
    assert_eq!((status, body["code"].as_str()), (404, Some("not_found")), "twice: {body}");
    let (_, members) = TestBroker::send(broker.signed(&admin, "GET", "/v1/members", None)).await;
    assert_eq!(
        members["members"][1]["devices"],
        json!([]),
        "the member stays, without the device: {members}"
    );
    broker.stop().await;
}

#[tokio::test]
async fn a_member_may_remove_their_own_device_but_not_another_members() {
    let broker = TestBroker::start().await;
    let admin = workspace_with_admin(&broker).await;
    let (alice, _) = enrol_with_member_key(&broker, &admin, "member").await;
    let (bob, _) = enrol_with_member_key(&broker, &admin, "member").await;
    let (status, body) = remove_device(&broker, &alice, bob.id).await;
    assert_eq!((status, body["code"].as_str()), (403, Some("forbidden")), "{body}");
    let (status, _) = TestBroker::send(broker.signed(&bob, "GET", "/v1/me", None)).await;
    assert_eq!(status, 200, "Bob's device still works");

    let (_, invite) = create_invite(&broker, &alice, json!({"member": alice.member})).await;
    let spare = second_device(&alice);
    let (status, _) = join(&broker, &spare, invite["code"].as_str().unwrap(), None).await;
    assert_eq!(status, 201);
    let (status, body) = remove_device(&broker, &spare, alice.id).await;
    assert_eq!(status, 200, "a member removes their own lost laptop: {body}");
    let (status, _) = TestBroker::send(broker.signed(&alice, "GET", "/v1/me", None)).await;
    assert_eq!(status, 401, "the lost laptop is out");
    broker.stop().await;
}

#[tokio::test]
async fn removing_a_member_removes_all_their_devices_and_recommends_rotation() {
    let broker = TestBroker::start().await;
    let admin = workspace_with_admin(&broker).await;
    let (member, _) = enrol_with_member_key(&broker, &admin, "member").await;
    let (_, invite) = create_invite(&broker, &member, json!({"member": member.member})).await;
    let spare = second_device(&member);
    let (status, _) = join(&broker, &spare, invite["code"].as_str().unwrap(), None).await;
    assert_eq!(status, 201);
    let (_, pending) = create_invite(&broker, &admin, json!({"member": member.member})).await;

    let (status, body) = remove_member(&broker, &admin, member.member).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body,
        json!({"devices_removed": 2, "rotation_recommended": true, "agents_revoked": 0, "personal_credentials_deleted": 0}),
        "{body}"
    );
    for device in [&member, &spare] {
        let (status, body) = TestBroker::send(broker.signed(device, "GET", "/v1/me", None)).await;
        assert_eq!((status, body["code"].as_str()), (401, Some("unknown_device")), "{body}");
    }
    let (_, members) = TestBroker::send(broker.signed(&admin, "GET", "/v1/members", None)).await;
    assert_eq!(members["members"].as_array().map(Vec::len), Some(1), "gone: {members}");
    let (status, body) = remove_member(&broker, &admin, member.member).await;
    assert_eq!((status, body["code"].as_str()), (404, Some("not_found")), "twice: {body}");
    let (status, body) = set_role(&broker, &admin, member.member, "admin").await;
    assert_eq!((status, body["code"].as_str()), (404, Some("not_found")), "{body}");
    let (status, body) =
        join(&broker, &second_device(&member), pending["code"].as_str().unwrap(), None).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (403, Some("invite_invalid")),
        "a pending invite for a removed member is dead: {body}"
    );
    let store = broker.store().await;
    for device in [member.id, spare.id] {
        let left = store.wrapped_keys_for(admin.workspace, device).await.unwrap();
        assert!(left.is_empty(), "keys addressed to the removed member's devices: {left:?}");
    }
    store.close().await;
    broker.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Workspace isolation and malformed requests
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn another_workspaces_admin_can_neither_see_nor_touch_this_workspaces_members() {
    let broker = TestBroker::start().await;
    let admin = workspace_with_admin(&broker).await;
    let (member, _) = enrol_with_member_key(&broker, &admin, "member").await;
    let outsider = workspace_with_admin(&broker).await;

    let (_, members) = TestBroker::send(broker.signed(&outsider, "GET", "/v1/members", None)).await;
    let ids: Vec<&Value> =
        members["members"].as_array().unwrap().iter().map(|m| &m["id"]).collect();
    assert_eq!(ids, vec![&json!(outsider.member)], "only their own workspace: {members}");
    for (status, body, what) in [
        {
            let (s, b) = get(&broker, &outsider, &format!("/v1/devices/{}", member.id)).await;
            (s, b, "read a device")
        },
        {
            let (s, b) = remove_device(&broker, &outsider, member.id).await;
            (s, b, "remove a device")
        },
        {
            let (s, b) = remove_member(&broker, &outsider, member.member).await;
            (s, b, "remove a member")
        },
        {
            let (s, b) = set_role(&broker, &outsider, member.member, "admin").await;
            (s, b, "change a role")
        },
        {
            let (s, b) = create_invite(&broker, &outsider, json!({"member": member.member})).await;
            (s, b, "invite a device for a member")
        },
    ] {
        assert_eq!(
            (status, body["code"].as_str()),
            (404, Some("not_found")),
            "another workspace's admin cannot {what}: {body}"
        );
    }
    let (status, body) = get(&broker, &admin, &format!("/v1/devices/{}", member.id)).await;
    assert_eq!(status, 200, "the device is still there for its own workspace: {body}");
    let (status, _) = TestBroker::send(broker.signed(&member, "GET", "/v1/me", None)).await;
    assert_eq!(status, 200, "and still works");
    broker.stop().await;
}

#[tokio::test]
async fn malformed_ids_and_bodies_are_refused() {
    let broker = TestBroker::start().await;
    let admin = workspace_with_admin(&broker).await;
    let (status, body) = get(&broker, &admin, "/v1/devices/not-a-uuid").await;
    assert_eq!((status, body["code"].as_str()), (400, Some("invalid_request")), "{body}");
    assert!(!body["message"].as_str().unwrap().contains("not-a-uuid"), "not echoed: {body}");
    let (status, body) =
        TestBroker::send(broker.signed(&admin, "DELETE", "/v1/members/42", None)).await;
    assert_eq!((status, body["code"].as_str()), (400, Some("invalid_request")), "{body}");
    let path = format!("/v1/members/{}", admin.member);
    let (status, body) =
        TestBroker::send(broker.signed(&admin, "PATCH", &path, Some(&json!({"role": "root"}))))
            .await;
    assert_eq!((status, body["code"].as_str()), (400, Some("bad_request")), "{body}");
    let (status, body) = TestBroker::send(broker.signed(&admin, "PATCH", &path, None)).await;
    assert_eq!((status, body["code"].as_str()), (400, Some("bad_request")), "no body: {body}");
    let (status, body) = TestBroker::send(broker.http.get(broker.url("/v1/members"))).await;
    assert_eq!((status, body["code"].as_str()), (401, Some("signature_invalid")), "{body}");
    broker.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

async fn create_invite(broker: &TestBroker, by: &TestDevice, body: Value) -> (u16, Value) {
    TestBroker::send(broker.signed(by, "POST", "/v1/invites", Some(&body))).await
}

fn join_body(device: &TestDevice, code: &str, name: Option<&str>) -> Value {
    let mut member = json!({"id": device.member});
    if let Some(name) = name {
        member["name"] = json!(name);
    }
    json!({"code": code, "member": member, "device": device.registration("laptop")})
}

async fn join(
    broker: &TestBroker,
    device: &TestDevice,
    code: &str,
    name: Option<&str>,
) -> (u16, Value) {
    let body = join_body(device, code, name);
    TestBroker::send(broker.signed(device, "POST", "/v1/join", Some(&body))).await
}

/// Invites a new member with `role`, joins with a fresh device, and has that device create its
/// member key and wrap it to itself, as a client does right after joining.
async fn enrol_with_member_key(
    broker: &TestBroker,
    admin: &TestDevice,
    role: &str,
) -> (TestDevice, MemberKey) {
    let (status, invite) = create_invite(broker, admin, json!({"role": role})).await;
    assert_eq!(status, 201, "{invite}");
    let device = TestDevice::new(admin.workspace);
    let (status, joined) = join(broker, &device, invite["code"].as_str().unwrap(), Some("M")).await;
    assert_eq!(status, 201, "{joined}");
    let mk = MemberKey::generate(admin.workspace, device.member, KeyVersion::FIRST).unwrap();
    let own = WrappedKey::wrap_member_key(
        &mk,
        (device.id, &device.keys.exchange.public_key()),
        (device.id, &device.keys.signing),
    )
    .unwrap();
    let (status, stored) = put_wrapped(broker, &device, &[&own]).await;
    assert_eq!(status, 200, "{stored}");
    (device, mk)
}

/// A fresh device of the same member.
fn second_device(of: &TestDevice) -> TestDevice {
    TestDevice { member: of.member, ..TestDevice::new(of.workspace) }
}

fn wrap_wk(wk: &WorkspaceKey, from: &TestDevice, to: &TestDevice) -> WrappedKey {
    WrappedKey::wrap_workspace_key(
        wk,
        (to.id, &to.keys.exchange.public_key()),
        (from.id, &from.keys.signing),
    )
    .unwrap()
}

async fn put_wrapped(broker: &TestBroker, by: &TestDevice, keys: &[&WrappedKey]) -> (u16, Value) {
    let list: Vec<String> = keys.iter().map(|k| b64(k.as_bytes())).collect();
    let body = json!({"wrapped_keys": list});
    TestBroker::send(broker.signed(by, "PUT", "/v1/wrapped-keys", Some(&body))).await
}

async fn delivered_to(broker: &TestBroker, device: &TestDevice) -> Vec<Value> {
    let (status, body) =
        TestBroker::send(broker.signed(device, "GET", "/v1/wrapped-keys", None)).await;
    assert_eq!(status, 200, "{body}");
    body["wrapped_keys"].as_array().expect("list").clone()
}

/// The stored bytes of the workspace key `from` wrapped to `to`, read from the database.
async fn wrap_bytes_of(broker: &TestBroker, from: &TestDevice, to: &TestDevice) -> Vec<u8> {
    let store = broker.store().await;
    let keys = store.wrapped_keys_for(from.workspace, to.id).await.unwrap();
    store.close().await;
    let key = keys
        .into_iter()
        .find(|k| k.key.header().sender == from.id)
        .expect("a key wrapped by that device");
    key.key.as_bytes().to_vec()
}

async fn get(broker: &TestBroker, by: &TestDevice, path: &str) -> (u16, Value) {
    TestBroker::send(broker.signed(by, "GET", path, None)).await
}

async fn get_device(broker: &TestBroker, by: &TestDevice, id: DeviceId) -> Value {
    let (status, body) = get(broker, by, &format!("/v1/devices/{id}")).await;
    assert_eq!(status, 200, "{body}");
    body
}

async fn revoke_invite(broker: &TestBroker, by: &TestDevice, id: &str) -> (u16, Value) {
    TestBroker::send(broker.signed(by, "DELETE", &format!("/v1/invites/{id}"), None)).await
}

async fn remove_device(broker: &TestBroker, by: &TestDevice, id: DeviceId) -> (u16, Value) {
    TestBroker::send(broker.signed(by, "DELETE", &format!("/v1/devices/{id}"), None)).await
}

async fn remove_member(broker: &TestBroker, by: &TestDevice, id: MemberId) -> (u16, Value) {
    TestBroker::send(broker.signed(by, "DELETE", &format!("/v1/members/{id}"), None)).await
}

async fn set_role(broker: &TestBroker, by: &TestDevice, id: MemberId, role: &str) -> (u16, Value) {
    let body = json!({"role": role});
    TestBroker::send(broker.signed(by, "PATCH", &format!("/v1/members/{id}"), Some(&body))).await
}

/// An audit subject with the invite id it ends with (`, invite {uuid}`) replaced by `{id}`, after
/// checking that it is a UUID.
fn without_invite_id(subject: String) -> String {
    match subject.rsplit_once(", invite ") {
        Some((what, id)) => {
            assert!(
                id.parse::<InviteId>().is_ok(),
                "an invite subject ends with its id: {subject}"
            );
            format!("{what}, invite {{id}}")
        }
        None => subject,
    }
}

/// The signing and exchange keys of a `GET /v1/devices/{id}` answer.
fn device_keys(view: &Value) -> ([u8; 32], [u8; 32]) {
    let key = |field: &str| -> [u8; 32] {
        decode(view[field].as_str().expect("key field")).try_into().expect("32 bytes")
    };
    (key("signing_key"), key("exchange_key"))
}

fn decode(text: &str) -> Vec<u8> {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(text).expect("base64url")
}

#[tokio::test]
async fn a_key_version_ahead_of_the_current_one_is_refused_so_no_one_can_block_a_rotation() {
    let broker = TestBroker::start().await;
    let admin = workspace_with_admin(&broker).await;
    let (member, mk) = enrol_with_member_key(&broker, &admin, "member").await;
    // A plain member wraps a made-up workspace key version 2 to the admin's device: stored, it
    // would take the place the admin's rotation to version 2 needs.
    let next = WorkspaceKey::generate(admin.workspace, KeyVersion::new(2).unwrap()).unwrap();
    let (status, body) = put_wrapped(&broker, &member, &[&wrap_wk(&next, &member, &admin)]).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (409, Some("conflict")),
        "a version after the current one arrives only with its rotation: {body}"
    );
    assert!(body["message"].as_str().unwrap().contains("after the current 1"), "{body}");
    let versions: Vec<Option<u64>> =
        delivered_to(&broker, &admin).await.iter().map(|k| k["version"].as_u64()).collect();
    assert!(
        !versions.is_empty() && versions.iter().all(|v| *v == Some(1)),
        "nothing was stored for the admin, whose keys are all version 1: {versions:?}"
    );
    // Her own member key, ahead of its current version, likewise.
    let mk2 = latchkey_core::keys::MemberKey::generate(
        member.workspace,
        member.member,
        KeyVersion::new(2).unwrap(),
    )
    .unwrap();
    drop(mk);
    let own = WrappedKey::wrap_member_key(
        &mk2,
        (member.id, &member.keys.exchange.public_key()),
        (member.id, &member.keys.signing),
    )
    .unwrap();
    let (status, body) = put_wrapped(&broker, &member, &[&own]).await;
    assert_eq!((status, body["code"].as_str()), (409, Some("conflict")), "{body}");
    broker.stop().await;
}

#[tokio::test]
async fn every_membership_change_leaves_an_audit_record_naming_what_changed() {
    let broker = TestBroker::start().await;
    let admin = workspace_with_admin(&broker).await;
    let (member, _) = enrol_with_member_key(&broker, &admin, "member").await;
    let wk = admin.workspace_key.as_ref().unwrap();
    let (status, body) = put_wrapped(&broker, &admin, &[&wrap_wk(wk, &admin, &member)]).await;
    assert_eq!(status, 200, "the admission: {body}");
    assert_eq!(set_role(&broker, &admin, member.member, "admin").await.0, 200);
    assert_eq!(set_role(&broker, &admin, member.member, "member").await.0, 200);
    let second = second_device(&member);
    let (status, invite) = create_invite(&broker, &member, json!({"member": member.member})).await;
    assert_eq!(status, 201, "{invite}");
    let (status, joined) = join(&broker, &second, invite["code"].as_str().unwrap(), None).await;
    assert_eq!(status, 201, "{joined}");
    let path = format!("/v1/devices/{}", second.id);
    assert_eq!(TestBroker::send(broker.signed(&member, "DELETE", &path, None)).await.0, 200);
    let path = format!("/v1/members/{}", member.member);
    assert_eq!(TestBroker::send(broker.signed(&admin, "DELETE", &path, None)).await.0, 200);
    let (status, revoked) = create_invite(&broker, &admin, json!({"role": "admin"})).await;
    assert_eq!(status, 201, "{revoked}");
    let revoked = revoked["id"].as_str().unwrap();
    assert_eq!(revoke_invite(&broker, &admin, revoked).await.0, 204);

    let (status, log) = get(&broker, &admin, "/v1/audit?order=oldest_first").await;
    assert_eq!(status, 200, "{log}");
    let seen: Vec<(String, String, String)> = log["records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            let field = |k: &str| r["record"][k].as_str().unwrap_or("-").to_owned();
            (field("kind"), field("device"), without_invite_id(field("subject")))
        })
        .collect();
    let (a, m, s) = (admin.id.to_string(), member.id.to_string(), second.id.to_string());
    let who = member.member.to_string();
    let row = |kind: &str, by: &str, subject: &str| (kind.into(), by.into(), subject.into());
    assert_eq!(
        seen,
        [
            row("workspace_created", &a, "-"),
            row("invite_created", &a, "member, invite {id}"),
            row("member_joined", &m, &m),
            row("keys_shared", &a, &m),
            row("member_promoted", &a, &who),
            row("member_demoted", &a, &who),
            row("invite_created", &m, &format!("device of {who}, invite {{id}}")),
            row("device_joined", &s, &s),
            row("device_removed", &m, &s),
            row("member_removed", &a, &who),
            row("invite_created", &a, "admin, invite {id}"),
            row("invite_revoked", &a, "admin, invite {id}"),
        ],
        "who joined, who was let in, promoted, demoted or removed, and by which device, is on \
         the chain; a member's own member key wrapped to herself shares nothing"
    );
    let subjects = |kind: &str| -> Vec<String> {
        log["records"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r["record"]["kind"] == kind)
            .map(|r| r["record"]["subject"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(
        subjects("invite_revoked"),
        [format!("admin, invite {revoked}")],
        "the revocation names the invite"
    );
    assert_eq!(
        subjects("invite_created").last(),
        Some(&format!("admin, invite {revoked}")),
        "the creation names the same invite, so the two can be matched"
    );
    broker.stop().await;
}
