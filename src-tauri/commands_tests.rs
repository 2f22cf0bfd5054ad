//! The command adapters through Tauri's IPC (mock runtime, the app's real configuration and
//! capabilities) over an in-memory backend: argument names, parsing, the error shape, and that
//! what the UI receives holds no secret.

use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use latchkey_client::api::Role;
use latchkey_client::files::NewFile;
use latchkey_core::secret::SecretBytes;
use latchkey_core::tls::TrustAnchors;
use serde_json::{Value, json};
use tauri::ipc::{CallbackFn, InvokeBody};
use tauri::test::{INVOKE_KEY, MockRuntime, get_ipc_response, mock_builder};
use tauri::webview::InvokeRequest;
use tauri::{App, WebviewWindow, WebviewWindowBuilder};

use crate::backend::*;
use crate::commands::Shell;
use crate::error::{CommandError, codes};
use crate::view::*;

const CANARY_KEY: &str = "sk-canary-0f9e8d7c6b5a4f3e2d1c";
/// A team server's workspace creation token, as its operator would hand it out.
const CANARY_CREATION_TOKEN: &str = "lkct-canary-desktop-5d4c3b2a19f8e7d6c5b4";
/// A token the fake's team server refuses, as a server in `token` mode refuses a wrong one.
const WRONG_CREATION_TOKEN: &str = "lkct-wrong-desktop-0000000000000000000000";
/// A member id as the broker spells them.
const MEMBER: &str = "0b6c3f1e-8d2a-4c5b-9e7f-1a2b3c4d5e6f";
/// A well-formed invite code (28 symbols).
const CODE: &str = "ABCDEFGHJKMNPQRSTVWXYZ234567";

/// A connection request as the fake received it: provider, issuer, base URL, authorization URL,
/// token URL.
type SeenConnection = (String, Option<String>, Option<String>, Option<String>, Option<String>);

/// What the fake received, for the assertions.
#[derive(Debug, Default)]
struct Seen {
    keys: Vec<(String, String, bool, Vec<u8>)>,
    workspaces: Vec<NewWorkspace>,
    grants: Vec<NewGrant>,
    approved_for: Vec<(String, u64)>,
    connections: Vec<SeenConnection>,
    injects: Vec<InjectCheck>,
    paused: Option<bool>,
    joins: Vec<(latchkey_client::workspace::Joining, String)>,
    /// How many certificate authorities each join was given for its server.
    join_authorities: Vec<Option<usize>>,
    /// How many certificate authorities each `set_broker_ca` asked for.
    broker_ca: Vec<Option<usize>>,
    /// Each `set_integration_account`: the integration and the account name it reached.
    accounts: Vec<(String, Option<String>)>,
    /// Each recovery kit import: the kit's length and the passphrase.
    kits: Vec<(usize, Vec<u8>)>,
    /// Each invite revoked, by id.
    revoked_invites: Vec<String>,
    /// Each invite's requested lifetime, member and device invites alike.
    invite_lifetimes: Vec<Option<u64>>,
}

#[derive(Default)]
struct Fake {
    seen: Mutex<Seen>,
}

fn refused<T>() -> Outcome<T> {
    Err(CommandError::new(codes::FAILED, "not part of this test"))
}

fn status(set_up: bool, paused: bool) -> AppStatus {
    AppStatus {
        profile: "test".into(),
        set_up,
        workspace: set_up.then(|| WorkspaceView {
            id: "w1".into(),
            name: Some("Acme".into()),
            broker_url: "http://127.0.0.1:7878".into(),
            local: true,
            member_id: "m1".into(),
            role: Role::Admin,
            device_id: "d1".into(),
            fingerprint: "4F2A-91C3".into(),
            broker_ca: Vec::new(),
            broker_ca_pem: None,
        }),
        broker: BrokerView { url: None, local: true, reachable: true, error: None },
        paused,
        pending_approvals: 0,
        locked: false,
    }
}

fn approval(id: &str, status: &'static str) -> Approval {
    Approval {
        id: id.into(),
        status,
        agent: "a".into(),
        agent_name: "ci-bot".into(),
        credential: "c".into(),
        credential_name: "github".into(),
        method: "POST".into(),
        host: "api.github.com".into(),
        path: "/repos/acme/app/issues".into(),
        query_keys: vec!["state".into()],
        body_size: Some(42),
        policy_ids: vec!["permit-granted-calls".into()],
        created_at: 1,
        expires_at: 121,
        answered_at: None,
        answered_by: None,
        answerable: true,
    }
}

#[async_trait]
impl Backend for Fake {
    async fn status(&self) -> AppStatus {
        status(false, false)
    }
    async fn create_workspace(&self, new: NewWorkspace) -> Outcome<AppStatus> {
        let wrong = new
            .creation_token
            .as_ref()
            .is_some_and(|token| token.expose_secret() == WRONG_CREATION_TOKEN);
        self.seen.lock().unwrap().workspaces.push(new);
        if wrong {
            // What the live backend answers when the server refuses the token.
            return Err(latchkey_client::workspace::WorkspaceError::CreationTokenInvalid.into());
        }
        Ok(status(true, false))
    }
    async fn join_workspace(&self, join: JoinRequest) -> Outcome<String> {
        let mut seen = self.seen.lock().unwrap();
        seen.join_authorities.push(join.server_ca.as_ref().map(|ca| ca.len()));
        seen.joins.push((join.joining, join.device_name));
        Ok("4F2A-91C3".into())
    }
    async fn finish_join(&self, _: String) -> Outcome<AppStatus> {
        Err(CommandError::new(codes::NOT_ADMITTED_YET, "no keys from that device yet"))
    }
    async fn integrations(&self) -> Outcome<Vec<Integration>> {
        Ok(vec![])
    }
    async fn add_api_key(&self, key: NewKey) -> Outcome<Integration> {
        let secret = key.secret.expose_secret().to_vec();
        self.seen.lock().unwrap().keys.push((
            key.provider.clone(),
            key.name.clone(),
            key.shared,
            secret,
        ));
        Ok(Integration {
            id: "c1".into(),
            name: key.name,
            provider: key.provider,
            provider_name: "OpenAI".into(),
            kind: "api_key",
            upstream_base_url: "https://api.openai.com".into(),
            allowed_hosts: vec!["api.openai.com".into()],
            owner: if key.shared { "shared" } else { "personal" },
            status: "active",
            scopes: vec![],
            expires_at: None,
            last_used_at: None,
            key_version: 1,
            account: key.account,
        })
    }
    async fn connect(&self, c: NewConnection) -> Outcome<Integration> {
        self.seen.lock().unwrap().connections.push((
            c.provider,
            c.issuer,
            c.base_url,
            c.authorize_url,
            c.token_url,
        ));
        refused()
    }
    async fn reconnect(&self, _: String) -> Outcome<Integration> {
        refused()
    }
    async fn cancel_connect(&self) {}
    async fn disconnect(&self, _: String, _: bool) -> Outcome<bool> {
        refused()
    }
    async fn set_integration_account(
        &self,
        id: String,
        account: Option<String>,
    ) -> Outcome<Integration> {
        self.seen.lock().unwrap().accounts.push((id, account));
        refused()
    }
    async fn agents(&self) -> Outcome<Vec<Agent>> {
        Ok(vec![])
    }
    async fn create_agent(&self, _: String) -> Outcome<NewAgent> {
        refused()
    }
    async fn regenerate_agent(&self, _: String) -> Outcome<NewAgent> {
        refused()
    }
    async fn revoke_agent(&self, _: String) -> Outcome<()> {
        refused()
    }
    async fn create_grant(&self, grant: NewGrant) -> Outcome<IssuedGrant> {
        self.seen.lock().unwrap().grants.push(grant.clone());
        let grant = Grant {
            id: "g1".into(),
            agent: grant.agent,
            credential: grant.credential,
            credential_name: "github".into(),
            methods: grant.methods,
            path_patterns: grant.path_patterns,
            expires_at: 3600,
            created_at: 0,
            revoked_at: None,
        };
        Ok(IssuedGrant { grant, capability: "AQI-capability-text".into() })
    }
    async fn revoke_grant(&self, _: String) -> Outcome<()> {
        refused()
    }
    async fn approvals(&self, all: bool) -> Outcome<Vec<Approval>> {
        let mut list = vec![approval("p1", "pending")];
        if all {
            list.push(approval("d1", "denied"));
        }
        Ok(list)
    }
    async fn approve_once(&self, _: String) -> Outcome<Approval> {
        Err(CommandError::new(codes::APPROVAL_CLOSED, "already answered"))
    }
    async fn approve_for(&self, id: String, secs: u64) -> Outcome<Approval> {
        self.seen.lock().unwrap().approved_for.push((id.clone(), secs));
        Ok(approval(&id, "approved"))
    }
    async fn deny(&self, id: String) -> Outcome<Approval> {
        Ok(approval(&id, "denied"))
    }
    async fn policies(&self) -> Outcome<Vec<Policy>> {
        Ok(vec![])
    }
    async fn save_policy(&self, _: PolicyDraft) -> Outcome<Policy> {
        Err(CommandError {
            code: codes::POLICY_INVALID.into(),
            message: "the policy does not validate".into(),
            problems: vec![crate::error::Problem {
                message: "unexpected token".into(),
                line: Some(2),
                column: Some(5),
                warning: false,
            }],
        })
    }
    async fn delete_policy(&self, _: String, _: Option<u64>) -> Outcome<()> {
        refused()
    }
    async fn check_call(&self, _: CallCheck) -> Outcome<CheckResult> {
        refused()
    }
    async fn check_inject(&self, inject: InjectCheck) -> Outcome<CheckResult> {
        self.seen.lock().unwrap().injects.push(inject);
        Ok(CheckResult {
            allowed: true,
            verdict: crate::view::Verdict::Allow,
            policy_ids: vec!["short-named-injects".into()],
            reason: "allowed: a policy permits it and none forbids it".into(),
        })
    }
    async fn audit(&self, query: AuditQuery) -> Outcome<Vec<AuditRow>> {
        assert_eq!(query.decision.as_deref(), Some("denied"));
        assert_eq!(
            query.credential_name.as_deref(),
            Some("github-main"),
            "the integration filter is its name: audit records carry names, not ids"
        );
        Ok(vec![])
    }
    async fn verify_audit(&self, _: bool) -> Outcome<AuditVerdict> {
        refused()
    }
    async fn export_audit(&self, _: bool, _: &mut NewFile) -> Outcome<u64> {
        refused()
    }
    async fn members(&self) -> Outcome<Vec<Member>> {
        Ok(vec![])
    }
    async fn create_invite(&self, role: Role, valid_for_secs: Option<u64>) -> Outcome<Invite> {
        self.seen.lock().unwrap().invite_lifetimes.push(valid_for_secs);
        Ok(Invite { id: "i1".into(), code: "ABCD".into(), role, expires_at: 10 })
    }
    async fn create_device_invite(&self, valid_for_secs: Option<u64>) -> Outcome<DeviceInvite> {
        self.seen.lock().unwrap().invite_lifetimes.push(valid_for_secs);
        Ok(DeviceInvite {
            id: "i2".into(),
            code: "EFGH".into(),
            member_id: MEMBER.into(),
            expires_at: 20,
        })
    }
    async fn invites(&self) -> Outcome<Vec<PendingInvite>> {
        let revoked = self.seen.lock().unwrap().revoked_invites.clone();
        Ok(pending_invites().into_iter().filter(|i| !revoked.contains(&i.id)).collect())
    }
    async fn revoke_invite(&self, id: String) -> Outcome<Vec<PendingInvite>> {
        if !pending_invites().iter().any(|i| i.id == id) {
            return Err(CommandError::new("not_found", "no pending invite with this id"));
        }
        self.seen.lock().unwrap().revoked_invites.push(id);
        self.invites().await
    }
    async fn admit_device(&self, _: String, _: String) -> Outcome<Vec<Member>> {
        refused()
    }
    async fn remove_member(&self, _: String, _: bool) -> Outcome<Vec<Member>> {
        refused()
    }
    async fn remove_device(&self, _: String, _: bool) -> Outcome<Vec<Member>> {
        refused()
    }
    async fn rotate_keys(
        &self,
        progress: Box<dyn Fn(RotationProgress) + Send + Sync>,
    ) -> Outcome<RotationResult> {
        progress(RotationProgress { phase: "sealing", done: 1, total: 2 });
        Ok(RotationResult {
            credentials: 2,
            not_sent: 0,
            workspace_key_version: 2,
            member_key_version: 2,
        })
    }
    async fn export_recovery_kit(
        &self,
        _: SecretBytes,
        _: std::path::PathBuf,
    ) -> Outcome<std::path::PathBuf> {
        refused()
    }
    async fn import_recovery_kit(
        &self,
        kit: zeroize::Zeroizing<String>,
        passphrase: SecretBytes,
    ) -> Outcome<KitImported> {
        self.seen.lock().unwrap().kits.push((kit.len(), passphrase.expose_secret().to_vec()));
        Ok(KitImported { workspace_keys: vec![1, 2], member_keys: vec![], already_present: 1 })
    }
    async fn lock(&self) -> Outcome<AppStatus> {
        Ok(AppStatus { locked: true, ..status(true, false) })
    }
    async fn unlock(&self) -> Outcome<AppStatus> {
        Err(CommandError::new(codes::KEYCHAIN_LOCKED, "the unlock prompt was dismissed"))
    }
    async fn set_paused(&self, paused: bool) -> Outcome<AppStatus> {
        self.seen.lock().unwrap().paused = Some(paused);
        Ok(status(true, paused))
    }
    async fn set_broker_ca(&self, authorities: Option<TrustAnchors>) -> Outcome<AppStatus> {
        self.seen.lock().unwrap().broker_ca.push(authorities.as_ref().map(TrustAnchors::len));
        Ok(status(true, false))
    }
}

struct Harness {
    _app: App<MockRuntime>,
    window: WebviewWindow<MockRuntime>,
    fake: Arc<Fake>,
}

/// The origin of the app's own pages: Tauri serves them from `http://tauri.localhost` on Windows
/// (WebView2 takes no custom URL schemes) and from `tauri://localhost` elsewhere.
const APP_ORIGIN: &str = if cfg!(windows) { "http://tauri.localhost" } else { "tauri://localhost" };

fn harness() -> Harness {
    let fake = Arc::new(Fake::default());
    let app = mock_builder()
        .invoke_handler(crate::command_handlers!())
        .build(tauri::generate_context!())
        .expect("the app builds on the mock runtime");
    tauri::Manager::manage(&app, Shell { backend: fake.clone() });
    let window = WebviewWindowBuilder::new(&app, "main", Default::default())
        .build()
        .expect("the main window opens on the mock runtime");
    Harness { _app: app, window, fake }
}

impl Harness {
    fn invoke(&self, cmd: &str, args: Value) -> Result<Value, Value> {
        self.invoke_from(APP_ORIGIN, cmd, args)
    }

    fn invoke_from(&self, origin: &str, cmd: &str, args: Value) -> Result<Value, Value> {
        get_ipc_response(
            &self.window,
            InvokeRequest {
                cmd: cmd.into(),
                callback: CallbackFn(0),
                error: CallbackFn(1),
                url: origin.parse().expect("a valid URL"),
                body: InvokeBody::Json(args),
                headers: Default::default(),
                invoke_key: INVOKE_KEY.to_string(),
            },
        )
        .map(|body| body.deserialize::<Value>().expect("every command answers JSON"))
    }
}

#[test]
fn create_workspace_takes_camel_case_arguments_and_this_computer_by_default() {
    let h = harness();
    let status = h
        .invoke(
            "create_workspace",
            json!({"workspaceName": "Acme", "memberName": "Ada", "deviceName": "laptop", "teamServerUrl": "  "}),
        )
        .expect("create_workspace succeeds");
    assert_eq!(status["setUp"], true);
    let seen = h.fake.seen.lock().unwrap();
    assert_eq!(seen.workspaces.len(), 1);
    assert_eq!(
        seen.workspaces[0].team_server_url, None,
        "a blank team server URL means this computer's embedded broker"
    );
    assert_eq!(seen.workspaces[0].workspace_name, "Acme");
}

#[test]
fn the_status_names_the_workspace_in_camel_case() {
    let h = harness();
    let status = h
        .invoke(
            "create_workspace",
            json!({"workspaceName": "Acme", "memberName": "Ada", "deviceName": "laptop", "teamServerUrl": null}),
        )
        .expect("create_workspace succeeds");
    assert_eq!(status["workspace"]["name"], "Acme", "{status}");
    assert_eq!(status["workspace"]["brokerUrl"], "http://127.0.0.1:7878");
    let fresh = h.invoke("app_status", json!({})).expect("app_status succeeds");
    assert_eq!(fresh["workspace"], Value::Null, "no workspace, no name: {fresh}");
}

#[test]
fn an_api_key_reaches_the_backend_intact_and_never_comes_back() {
    let h = harness();
    let shown = h
        .invoke(
            "add_api_key",
            json!({"provider": "openai", "name": "openai", "secret": CANARY_KEY, "shared": true, "baseUrl": null, "account": "ci@acme.example"}),
        )
        .expect("add_api_key succeeds");
    assert_eq!(shown["account"], "ci@acme.example", "the account typed reaches the backend");
    let seen = h.fake.seen.lock().unwrap();
    assert_eq!(seen.keys[0].3, CANARY_KEY.as_bytes(), "the key is sealed exactly as typed");
    assert!(seen.keys[0].2, "shared is passed through");
    assert!(
        !shown.to_string().contains(CANARY_KEY),
        "the UI gets metadata only, never the key: {shown}"
    );
    assert_eq!(shown["owner"], "shared");
}

#[test]
fn an_account_name_is_trimmed_and_a_blank_one_forgets_it() {
    let h = harness();
    for (typed, reached) in [
        (json!("  ops@acme.example "), Some("ops@acme.example")),
        (json!("   "), None),
        (Value::Null, None),
    ] {
        let _ = h.invoke("set_integration_account", json!({"id": "c1", "account": typed}));
        let seen = h.fake.seen.lock().unwrap().accounts.pop();
        assert_eq!(
            seen,
            Some(("c1".to_owned(), reached.map(str::to_owned))),
            "{typed} reaches the backend as {reached:?}"
        );
    }
}

#[test]
fn errors_reach_the_ui_as_code_and_message() {
    let h = harness();
    let error = h.invoke("approve_once", json!({"id": "p1"})).expect_err("the fake refuses");
    assert_eq!(error, json!({"code": "approval_closed", "message": "already answered"}));
    let error = h.invoke("finish_join", json!({"adminFingerprint": "x"})).expect_err("not yet");
    assert_eq!(error["code"], "not_admitted_yet");
}

#[test]
fn a_device_invite_names_the_member_the_new_device_joins_as() {
    let h = harness();
    let invite = h.invoke("create_device_invite", json!({})).expect("a device invite");
    assert_eq!(invite, json!({"id": "i2", "code": "EFGH", "memberId": MEMBER, "expiresAt": 20}));
}

/// The fake's pending invites: a new admin's, and a device of another member's.
fn pending_invites() -> Vec<PendingInvite> {
    vec![
        PendingInvite {
            id: "i1".into(),
            role: Some(Role::Admin),
            device_of: None,
            made_by: "Ada".into(),
            yours: true,
            created_at: 1,
            expires_at: 10,
        },
        PendingInvite {
            id: "i3".into(),
            role: None,
            device_of: Some("Grace".into()),
            made_by: "Grace".into(),
            yours: false,
            created_at: 2,
            expires_at: 20,
        },
    ]
}

#[test]
fn an_invite_lasts_as_long_as_the_ui_chose_or_the_brokers_default() {
    let h = harness();
    let invite = h
        .invoke("create_invite", json!({"role": "admin", "validForSecs": 3600}))
        .expect("an invite for an hour");
    assert_eq!(invite["role"], "admin", "{invite}");
    h.invoke("create_invite", json!({"role": "member"})).expect("an invite for the default");
    h.invoke("create_invite", json!({"role": "member", "validForSecs": null})).expect("default");
    h.invoke("create_device_invite", json!({"validForSecs": 604800})).expect("a week");
    assert_eq!(
        h.fake.seen.lock().unwrap().invite_lifetimes,
        [Some(3600), None, None, Some(604_800)],
        "each invite's lifetime is passed on as chosen"
    );
    let error = h
        .invoke("create_invite", json!({"role": "member", "validForSecs": -1}))
        .expect_err("not a duration");
    assert!(error.to_string().contains("validForSecs"), "the argument is named: {error}");
}

#[test]
fn pending_invites_reach_the_ui_without_codes_and_a_revocation_passes_the_id_on() {
    let h = harness();
    let listed = h.invoke("list_invites", json!({})).expect("the pending invites");
    assert_eq!(
        listed[1],
        json!({"id": "i3", "role": null, "deviceOf": "Grace", "madeBy": "Grace", "yours": false,
               "createdAt": 2, "expiresAt": 20}),
        "what the Members screen shows, in its spelling"
    );
    let after = h.invoke("revoke_invite", json!({"id": "i3"})).expect("revoked");
    assert_eq!(h.fake.seen.lock().unwrap().revoked_invites, ["i3"], "the id is passed on as is");
    let ids: Vec<&Value> = after.as_array().unwrap().iter().map(|i| &i["id"]).collect();
    assert_eq!(ids, [&json!("i1")], "the list after the revocation comes back with the answer");
    let error = h.invoke("revoke_invite", json!({"id": "nope"})).expect_err("unknown");
    assert_eq!(error["code"], "not_found", "the broker's refusal reaches the UI: {error}");
    let error = h.invoke("revoke_invite", json!({})).expect_err("no id");
    assert!(error.to_string().contains("id"), "a missing argument is named: {error}");
}

#[test]
fn joining_as_another_device_of_a_member_passes_the_member_id_on() {
    let h = harness();
    let started = h
        .invoke(
            "join_workspace",
            json!({"serverUrl": "https://latchkey.example", "inviteCode": CODE,
                   "memberName": " ", "deviceOf": format!(" {} ", MEMBER.to_uppercase()), "deviceName": "desk"}),
        )
        .expect("a member id and a blank name join as another device");
    assert_eq!(started, json!({"fingerprint": "4F2A-91C3"}));
    let _ = h
        .invoke(
            "join_workspace",
            json!({"serverUrl": "https://latchkey.example", "inviteCode": CODE,
                   "memberName": "Ada", "deviceName": "laptop"}),
        )
        .expect("a name without a member id joins as a new member");
    let seen = h.fake.seen.lock().unwrap();
    let member = MEMBER.parse().expect("a member id");
    assert_eq!(
        seen.joins,
        [
            (latchkey_client::workspace::Joining::ExistingMember(member), "desk".to_owned()),
            (
                latchkey_client::workspace::Joining::NewMember { name: "Ada".into() },
                "laptop".to_owned()
            ),
        ],
        "the id is read in any case, trimmed; an absent deviceOf is a new member"
    );
}

#[test]
fn a_malformed_member_id_is_refused_before_the_backend_is_asked() {
    let h = harness();
    let join = |name: Value, device_of: Value| {
        h.invoke(
            "join_workspace",
            json!({"serverUrl": "https://latchkey.example", "inviteCode": CODE,
                   "memberName": name, "deviceOf": device_of, "deviceName": "desk"}),
        )
        .expect_err("refused")
    };
    let malformed = join(Value::Null, json!("ada"));
    assert_eq!(malformed["code"], "invalid_member_id", "the UI puts it under the member id field");
    assert!(
        malformed["message"].as_str().is_some_and(|m| m.contains("\"ada\" is not a member id"))
    );
    let cut = join(Value::Null, json!(&MEMBER[..35]));
    assert_eq!(cut["code"], "invalid_member_id", "one character short");
    assert_eq!(join(json!("Ada"), json!(MEMBER))["code"], "invalid_input", "not both");
    assert_eq!(join(json!("  "), Value::Null)["code"], "invalid_input", "not neither");
    assert!(h.fake.seen.lock().unwrap().joins.is_empty(), "nothing reached the backend");
}

/// A private certificate authority's certificate, as a person would paste it.
fn private_ca_pem() -> String {
    let key = rcgen::KeyPair::generate().expect("a key");
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("parameters");
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params.self_signed(&key).expect("a self-signed CA").pem()
}

#[test]
fn a_pasted_certificate_authority_reaches_the_backend_only_when_it_is_usable() {
    let h = harness();
    let create = |url: Value, ca: Value| {
        h.invoke(
            "create_workspace",
            json!({"workspaceName": "Acme", "memberName": "Ada", "deviceName": "laptop",
                   "teamServerUrl": url, "teamServerCa": ca}),
        )
    };
    let pem = private_ca_pem();
    create(json!("https://lk.acme.internal"), json!(pem)).expect("a team server and its CA");
    create(json!("https://lk.acme.dev"), json!(" \n")).expect("a blank CA is none");
    let refused = create(json!("https://lk.acme.internal"), json!("see the wiki"))
        .expect_err("text without a certificate");
    assert_eq!(refused["code"], "broker_ca_unusable", "{refused}");
    assert!(
        refused["message"].as_str().is_some_and(|m| m.contains("no certificate found")),
        "the message says what is wrong: {refused}"
    );
    let key_too = create(
        json!("https://lk.acme.internal"),
        json!(format!("{pem}{}", rcgen::KeyPair::generate().unwrap().serialize_pem())),
    )
    .expect_err("a private key pasted with the certificate");
    assert_eq!(key_too["code"], "broker_ca_unusable", "{key_too}");
    assert!(!key_too.to_string().contains("PRIVATE KEY"), "the key is never echoed: {key_too}");
    let local = create(Value::Null, json!(pem)).expect_err("a CA without a team server");
    assert_eq!(local["code"], "invalid_input", "{local}");
    {
        let seen = h.fake.seen.lock().unwrap();
        let authorities: Vec<Option<usize>> =
            seen.workspaces.iter().map(|w| w.team_server_ca.as_ref().map(|ca| ca.len())).collect();
        assert_eq!(authorities, [Some(1), None], "only the two accepted creations arrived");
    }

    let join = |ca: Value| {
        h.invoke(
            "join_workspace",
            json!({"serverUrl": "https://lk.acme.internal", "serverCa": ca, "inviteCode": CODE,
                   "memberName": "Bea", "deviceName": "desk"}),
        )
    };
    join(json!(pem)).expect("joining with the CA");
    join(Value::Null).expect("joining without one");
    assert_eq!(
        join(json!("-----BEGIN CERTIFICATE-----\nMIIB\n")).expect_err("damaged PEM")["code"],
        "broker_ca_unusable"
    );
    assert_eq!(h.fake.seen.lock().unwrap().join_authorities, [Some(1), None]);
}

#[test]
fn a_creation_token_goes_one_way_to_the_backend_and_never_comes_back() {
    let h = harness();
    let create = |url: Value, token: Value| {
        h.invoke(
            "create_workspace",
            json!({"workspaceName": "Acme", "memberName": "Ada", "deviceName": "laptop",
                   "teamServerUrl": url, "creationToken": token}),
        )
    };
    let shown = create(json!("https://lk.acme.dev"), json!(format!("  {CANARY_CREATION_TOKEN}\n")))
        .expect("a team server with its creation token");
    assert!(
        !shown.to_string().contains(CANARY_CREATION_TOKEN),
        "the UI never receives the token back: {shown}"
    );
    create(json!("https://lk.acme.dev"), json!(" ")).expect("a blank token is none");
    create(json!("https://lk.acme.dev"), Value::Null).expect("and so is an absent one");
    {
        let seen = h.fake.seen.lock().unwrap();
        let tokens: Vec<Option<&str>> = seen
            .workspaces
            .iter()
            .map(|w| w.creation_token.as_ref().map(|t| t.expose_secret()))
            .collect();
        assert_eq!(
            tokens,
            [Some(CANARY_CREATION_TOKEN), None, None],
            "the token as pasted, without the whitespace around it"
        );
        assert!(
            !format!("{:?}", seen.workspaces[0]).contains(CANARY_CREATION_TOKEN),
            "the backend's input prints the token redacted"
        );
    }

    let local = create(Value::Null, json!(CANARY_CREATION_TOKEN)).expect_err("no team server");
    assert_eq!(local["code"], "invalid_input", "a token is for a team server: {local}");
    let malformed = create(json!("https://lk.acme.dev"), json!("ask Sam for it"))
        .expect_err("words are not a token");
    assert_eq!(malformed["code"], "invalid_creation_token", "{malformed}");
    assert!(!malformed.to_string().contains("Sam"), "the paste is not echoed: {malformed}");
    assert_eq!(h.fake.seen.lock().unwrap().workspaces.len(), 3, "neither reached the backend");

    let refused = create(json!("https://lk.acme.dev"), json!(WRONG_CREATION_TOKEN))
        .expect_err("the server refuses the token");
    assert_eq!(refused["code"], "creation_token_invalid", "the broker's code reaches the UI");
    assert!(
        refused["message"].as_str().is_some_and(|m| m.contains("operator")),
        "with the message that says whom to ask: {refused}"
    );
    assert!(!refused.to_string().contains(WRONG_CREATION_TOKEN), "{refused}");
}

#[test]
fn a_refused_policy_carries_its_problems_with_positions() {
    let h = harness();
    let error = h
        .invoke(
            "save_policy",
            json!({"id": "p", "description": "", "source": "permit(", "enabled": true}),
        )
        .expect_err("the fake refuses");
    assert_eq!(error["code"], "policy_invalid");
    assert_eq!(
        error["problems"][0],
        json!({"message": "unexpected token", "line": 2, "column": 5, "warning": false})
    );
}

#[test]
fn grants_need_a_method_and_a_path_before_the_backend_is_asked() {
    let h = harness();
    let none = h.invoke(
        "create_grant",
        json!({"agent": "a", "credential": "c", "methods": [], "pathPatterns": ["/x"], "durationSecs": 60}),
    );
    assert_eq!(none.expect_err("no method")["code"], "invalid_input");
    let blank = h.invoke(
        "create_grant",
        json!({"agent": "a", "credential": "c", "methods": ["GET"], "pathPatterns": [" "], "durationSecs": 60}),
    );
    assert_eq!(blank.expect_err("no path")["code"], "invalid_input");
    assert!(h.fake.seen.lock().unwrap().grants.is_empty(), "nothing reached the backend");
    let made = h
        .invoke(
            "create_grant",
            json!({"agent": "a", "credential": "c", "methods": ["GET"], "pathPatterns": ["/repos/*", ""], "durationSecs": 3600}),
        )
        .expect("a valid grant is made");
    assert_eq!(made["grant"]["pathPatterns"], json!(["/repos/*"]), "blank patterns are dropped");
    assert_eq!(
        made["capability"], "AQI-capability-text",
        "the agent needs the grant's capability: the UI gets it this once to hand over"
    );
}

#[test]
fn an_inject_check_needs_a_lifetime_within_a_day_and_a_command_before_the_backend_is_asked() {
    let h = harness();
    for (lifetime, command, what) in
        [(0, "gh", "no lifetime"), (86_401, "gh", "over a day"), (3600, "  ", "no command")]
    {
        let refused = h.invoke(
            "check_inject",
            json!({"agent": "a", "credential": "c", "lifetimeSecs": lifetime, "command": command}),
        );
        assert_eq!(refused.expect_err(what)["code"], "invalid_input", "{what}");
    }
    assert!(h.fake.seen.lock().unwrap().injects.is_empty(), "nothing reached the backend");
    let result = h
        .invoke(
            "check_inject",
            json!({"agent": "a", "credential": "c", "lifetimeSecs": 86_400, "command": " gh "}),
        )
        .expect("a valid inject is checked");
    assert_eq!(result["allowed"], true);
    assert_eq!(result["verdict"], "allow", "the tester reads the three-way verdict");
    assert_eq!(result["policyIds"], json!(["short-named-injects"]));
    let seen = h.fake.seen.lock().unwrap();
    assert_eq!(
        (seen.injects[0].lifetime_secs, seen.injects[0].command.as_str()),
        (86_400, "gh"),
        "the lifetime as given, the command trimmed"
    );
    assert_eq!((seen.injects[0].agent.as_str(), seen.injects[0].credential.as_str()), ("a", "c"));
}

#[test]
fn approvals_list_and_answers_use_the_contract_names() {
    let h = harness();
    let all = h.invoke("list_approvals", json!({"all": true})).expect("listing works");
    assert_eq!(all.as_array().map(Vec::len), Some(2));
    assert_eq!(all[0]["queryKeys"], json!(["state"]), "query parameter names only");
    assert_eq!(all[0]["agentName"], "ci-bot");
    let answered =
        h.invoke("approve_for", json!({"id": "p1", "durationSecs": 900})).expect("approved");
    assert_eq!(answered["status"], "approved");
    assert_eq!(h.fake.seen.lock().unwrap().approved_for, [("p1".to_owned(), 900)]);
}

#[test]
fn the_audit_listing_refuses_an_unknown_decision() {
    let h = harness();
    let error = h
        .invoke("list_audit", json!({"agent": null, "credentialName": null, "decision": "maybe", "since": null, "limit": 50}))
        .expect_err("maybe is not a decision");
    assert_eq!(error["code"], "invalid_input");
    h.invoke("list_audit", json!({"agent": null, "credentialName": "github-main", "decision": "denied", "since": null, "limit": 50}))
        .expect("denied is a decision");
}

#[test]
fn pause_and_resume_go_to_the_backend_and_report_the_new_state() {
    let h = harness();
    let status = h.invoke("set_paused", json!({"paused": true})).expect("paused");
    assert_eq!(status["paused"], true);
    assert_eq!(h.fake.seen.lock().unwrap().paused, Some(true));
}

#[test]
fn the_broker_authorities_are_replaced_or_cleared_and_an_unusable_paste_never_reaches_the_backend()
{
    let h = harness();
    let pem = private_ca_pem();
    let status = h.invoke("set_broker_ca", json!({"pem": pem})).expect("a usable authority");
    assert_eq!(status["setUp"], true, "the new status comes back: {status}");
    h.invoke("set_broker_ca", json!({"pem": null})).expect("none: the system's alone");
    h.invoke("set_broker_ca", json!({"pem": "  "})).expect("blank is none");
    let refused =
        h.invoke("set_broker_ca", json!({"pem": "ask IT"})).expect_err("no certificate in it");
    assert_eq!(refused["code"], "broker_ca_unusable", "{refused}");
    assert_eq!(
        h.fake.seen.lock().unwrap().broker_ca,
        [Some(1), None, None],
        "the refused paste was never passed on"
    );
}

#[test]
fn lock_reports_the_locked_state_and_a_dismissed_unlock_says_so() {
    let h = harness();
    let locked = h.invoke("lock", json!({})).expect("locks");
    assert_eq!(locked["locked"], true, "the UI shows its lock screen on this flag");
    let refused = h.invoke("unlock", json!({})).expect_err("the fake's prompt is dismissed");
    assert_eq!(refused["code"], "keychain_locked");
}

#[test]
fn a_per_account_provider_asks_for_its_endpoints_and_gets_them_passed_on() {
    let h = harness();
    let zendesk = h.invoke("list_providers", json!({"query": "zendesk"})).expect("search");
    assert_eq!(zendesk[0]["id"], "zendesk");
    assert_eq!(zendesk[0]["accountSpecific"], true, "the UI asks for the account's base URL");
    assert_eq!(zendesk[0]["needsEndpoints"], true, "and for its OAuth endpoints");
    let github = h.invoke("list_providers", json!({"query": "github"})).expect("search");
    assert_eq!(github[0]["needsEndpoints"], false, "GitHub's endpoints are in the catalog");
    let _ = h.invoke(
        "connect_oauth",
        json!({"provider": "zendesk", "name": "zd", "clientId": "c", "clientSecret": null,
               "scopes": null, "shared": true, "issuer": " ", "baseUrl": "https://acme.zendesk.com/api/v2",
               "authorizeUrl": "https://acme.zendesk.com/oauth/authorizations/new",
               "tokenUrl": "https://acme.zendesk.com/oauth/tokens"}),
    );
    let seen = h.fake.seen.lock().unwrap();
    assert_eq!(
        seen.connections,
        [(
            "zendesk".to_owned(),
            None,
            Some("https://acme.zendesk.com/api/v2".to_owned()),
            Some("https://acme.zendesk.com/oauth/authorizations/new".to_owned()),
            Some("https://acme.zendesk.com/oauth/tokens".to_owned()),
        )],
        "blank fields are absent, given ones reach the backend unchanged"
    );
}

#[test]
fn the_catalog_search_and_templates_need_no_backend() {
    let h = harness();
    let all = h.invoke("list_providers", json!({"query": ""})).expect("catalog");
    assert!(all.as_array().is_some_and(|p| p.len() >= 30), "the whole catalog");
    let github = h.invoke("list_providers", json!({"query": "github"})).expect("search");
    assert_eq!(github[0]["id"], "github");
    assert_eq!(github[0]["kind"], "oauth2");
    let templates = h.invoke("policy_templates", json!({})).expect("templates");
    assert_eq!(templates.as_array().map(Vec::len), Some(crate::templates::TEMPLATES.len()));
}

#[test]
fn open_external_refuses_anything_but_web_links() {
    let h = harness();
    for url in ["file:///etc/passwd", "javascript:alert(1)", "not a url"] {
        let error = h.invoke("open_external", json!({"url": url})).expect_err("refused");
        assert_eq!(error["code"], "invalid_input", "{url} must not be opened");
    }
}

#[test]
fn export_formats_other_than_jsonl_and_csv_are_refused() {
    let h = harness();
    let error = h.invoke("export_audit", json!({"format": "xml"})).expect_err("refused");
    assert_eq!(error["code"], "invalid_input");
}

#[test]
fn a_page_that_is_not_the_app_cannot_invoke_commands() {
    let h = harness();
    let error = h
        .invoke_from("https://evil.example", "list_approvals", json!({"all": true}))
        .expect_err("the capability grants the app's own pages only");
    assert!(
        error.to_string().contains("not allowed"),
        "refused by the capability, not by the command: {error}"
    );
}

#[test]
fn the_capability_grants_exactly_the_commands_the_build_generates_permissions_for() {
    let build = include_str!("build.rs");
    let start = build.find("const COMMANDS").expect("build.rs lists the commands");
    let mut commands: Vec<String> = build[start..]
        .lines()
        .skip(1)
        .take_while(|l| !l.starts_with("];"))
        .filter_map(|l| Some(l.trim().strip_prefix('"')?.strip_suffix("\",")?.to_owned()))
        .collect();
    let capability: Value =
        serde_json::from_str(include_str!("capabilities/main.json")).expect("valid JSON");
    let mut granted: Vec<String> = capability["permissions"]
        .as_array()
        .expect("a permission list")
        .iter()
        .filter_map(|p| Some(p.as_str()?.strip_prefix("allow-")?.replace('-', "_")))
        .collect();
    commands.sort();
    granted.sort();
    assert_eq!(
        commands, granted,
        "a command without a permission is unusable, a permission without a command is a hole"
    );
    let handlers = include_str!("lib.rs");
    for command in &commands {
        assert!(
            handlers.contains(&format!("$crate::commands::{command},")),
            "{command} has a permission but no handler"
        );
    }
}

#[test]
fn a_recovery_kit_import_needs_a_kit_of_kit_size_and_a_passphrase_before_the_backend_is_asked() {
    let h = harness();
    let kit = "LATCHKEY RECOVERY KIT v1\nkdf: argon2id\n";
    for (args, what) in [
        (json!({"kit": " \n", "passphrase": "long enough passphrase"}), "a blank kit"),
        (
            json!({"kit": "x".repeat(64 * 1024 + 1), "passphrase": "long enough passphrase"}),
            "a kit over 64 KiB",
        ),
        (json!({"kit": kit, "passphrase": ""}), "no passphrase"),
    ] {
        let error = h.invoke("import_recovery_kit", args).expect_err(what);
        assert_eq!(error["code"], "invalid_input", "{what}: {error}");
    }
    assert!(h.fake.seen.lock().unwrap().kits.is_empty(), "nothing reached the backend");

    let imported = h
        .invoke("import_recovery_kit", json!({"kit": kit, "passphrase": "long enough passphrase"}))
        .expect("a kit and a passphrase are passed on");
    assert_eq!(
        imported,
        json!({"workspaceKeys": [1, 2], "memberKeys": [], "alreadyPresent": 1}),
        "the UI is told which versions were new and how many were already here"
    );
    assert_eq!(
        h.fake.seen.lock().unwrap().kits,
        [(kit.len(), b"long enough passphrase".to_vec())],
        "the kit and the passphrase reach the backend as typed"
    );
}

#[test]
fn debug_never_shows_a_token_a_code_or_a_capability() {
    let token = "lk_canary_token_0123456789";
    let agent = Agent {
        id: "a1".into(),
        name: "bot".into(),
        created_at: 0,
        revoked_at: None,
        last_used_at: None,
        grants: vec![],
    };
    let created = NewAgent {
        agent,
        token: token.into(),
        proxy_url: "http://127.0.0.1:1/p".into(),
        snippets: snippets("http://127.0.0.1:1", token, ["a".into(), "b".into(), "c".into()]),
    };
    let invite =
        Invite { id: "i1".into(), code: "INVITE-CANARY".into(), role: Role::Member, expires_at: 1 };
    let device_invite = DeviceInvite {
        id: "i2".into(),
        code: "DEVICE-CANARY".into(),
        member_id: MEMBER.into(),
        expires_at: 1,
    };
    let grant = IssuedGrant {
        grant: Grant {
            id: "g1".into(),
            agent: "a1".into(),
            credential: "c1".into(),
            credential_name: "github".into(),
            methods: vec!["GET".into()],
            path_patterns: vec!["/**".into()],
            expires_at: 1,
            created_at: 0,
            revoked_at: None,
        },
        capability: "AQI-CAPABILITY-CANARY".into(),
    };
    for (shown, secret) in [
        (format!("{created:?}"), token),
        (format!("{invite:?}"), "INVITE-CANARY"),
        (format!("{device_invite:?}"), "DEVICE-CANARY"),
        (format!("{grant:?}"), "CAPABILITY-CANARY"),
    ] {
        assert!(!shown.contains(secret), "Debug shows a value meant for the person once: {shown}");
        assert!(shown.contains("<redacted>"), "{shown}");
    }
}
