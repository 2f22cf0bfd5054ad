//! The live [`Backend`]: the client library against the broker (embedded or a team server),
//! keys in the OS keychain.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use latchkey_client::access::{self, GrantTerms, NewApiKey, grant_standing};
use latchkey_client::api::{
    AuditFilter, BrokerClient, BrokerEndpoint, BrokerUrl, Expected, GrantKind, InviteFor,
    NewPolicy, PolicyId, Role,
};
use latchkey_client::approvals;
use latchkey_client::audit::{self, CheckFrom};
use latchkey_client::catalog::Catalog;
use latchkey_client::connection::{
    self, ConnectRequest, CustomEndpoints, DisconnectOptions, ReconnectOptions, RevocationOutcome,
};
use latchkey_client::files::NewFile;
use latchkey_client::keychain::{OsKeychainStore, SharedKeyStore};
use latchkey_client::oauth::{BrowserLauncher, FlowOptions};
use latchkey_client::policies::{self, CallToCheck, InjectToCheck};
use latchkey_client::profile::Profile;
use latchkey_client::recovery;
use latchkey_client::rotation::{self, RotationProgress as Step, RotationScope};
use latchkey_client::workspace::{self, Joining};
use latchkey_core::capability::Method;
use latchkey_core::fingerprint::Fingerprint;
use latchkey_core::ids::{
    AgentId, ApprovalId, CredentialId, DeviceId, GrantId, InviteId, MemberId,
};
use latchkey_core::secret::SecretBytes;
use latchkey_core::tls::TrustAnchors;
use tokio::sync::{Mutex, oneshot};

use crate::backend::{
    AuditQuery, Backend, CallCheck, InjectCheck, JoinRequest, NewConnection, NewGrant, NewKey,
    NewWorkspace, Outcome, PolicyDraft,
};
use crate::embedded::Embedded;
use crate::error::{CommandError, codes};
use crate::view::{
    self, Agent, AppStatus, Approval, AuditRow, AuditVerdict, BrokerView, CheckResult,
    DeviceInvite, Grant, Integration, Invite, IssuedGrant, KitImported, Member, NewAgent,
    PendingInvite, RotationProgress, RotationResult, WorkspaceView,
};

/// A device's signed client and fingerprint, ready to use.
#[derive(Clone)]
struct SignedIn {
    client: Arc<BrokerClient>,
    fingerprint: String,
}

/// Where the live backend keeps things and how it opens the browser.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The profile (keychain namespace and configuration file).
    pub profile: Profile,
    /// The embedded broker's data directory.
    pub broker_dir: PathBuf,
    /// The embedded broker's address.
    pub broker_listen: SocketAddr,
}

/// The live backend.
pub struct Live {
    settings: Settings,
    browser: Arc<dyn BrowserLauncher>,
    store: Mutex<Option<SharedKeyStore>>,
    signed_in: Mutex<Option<SignedIn>>,
    locked: tokio::sync::Notify,
    /// Signalled when the approval stream can start at once: the app was unlocked, or the
    /// profile changed (a workspace created or joined).
    ready: tokio::sync::Notify,
    /// Set by Lock, cleared by Unlock: while set, nothing touches the keychain (a read would
    /// make the system prompt for the password behind the person's back).
    locked_by_app: std::sync::atomic::AtomicBool,
    embedded: Mutex<Option<Embedded>>,
    connecting: std::sync::Mutex<Option<oneshot::Sender<()>>>,
}

impl std::fmt::Debug for Live {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Live").field("settings", &self.settings).finish_non_exhaustive()
    }
}

impl Live {
    /// A backend for `settings` that opens sign-in pages with `browser`.
    pub fn new(settings: Settings, browser: Arc<dyn BrowserLauncher>) -> Self {
        Self {
            settings,
            browser,
            store: Mutex::new(None),
            signed_in: Mutex::new(None),
            locked: tokio::sync::Notify::new(),
            ready: tokio::sync::Notify::new(),
            locked_by_app: std::sync::atomic::AtomicBool::new(false),
            embedded: Mutex::new(None),
            connecting: std::sync::Mutex::new(None),
        }
    }

    /// The profile this backend serves.
    pub fn profile(&self) -> &Profile {
        &self.settings.profile
    }

    /// Whether this computer belongs to a workspace.
    pub fn is_set_up(&self) -> bool {
        self.profile().is_set_up()
    }

    /// Agent ids to names; empty when the broker cannot say (the UI then shows ids).
    pub async fn agent_names_or_ids(&self) -> HashMap<String, String> {
        match self.client().await {
            Ok(client) => self.agent_names(&client).await.unwrap_or_default(),
            Err(_) => HashMap::new(),
        }
    }

    /// The embedded broker's URL (whether or not it runs).
    pub fn embedded_url(&self) -> String {
        format!("http://{}", self.settings.broker_listen)
    }

    /// Whether this profile's workspace lives on the embedded broker.
    pub fn is_local(&self) -> bool {
        self.profile()
            .load_config()
            .is_ok_and(|c| same_origin(c.broker_url.as_str(), &self.embedded_url()))
    }

    /// Starts the embedded broker if this profile's workspace lives on it (at launch).
    pub async fn start_if_local(&self) -> Outcome<()> {
        if self.is_local() { self.ensure_embedded().await.map(drop) } else { Ok(()) }
    }

    /// Starts the embedded broker unless it runs; returns its URL.
    async fn ensure_embedded(&self) -> Outcome<String> {
        let mut embedded = self.embedded.lock().await;
        if let Some(running) = embedded.as_ref() {
            return Ok(running.url());
        }
        let started = Embedded::start(&self.settings.broker_dir, self.settings.broker_listen)
            .await
            .map_err(|e| CommandError::new(codes::BROKER_START_FAILED, e.to_string()))?;
        let url = started.url();
        *embedded = Some(started);
        Ok(url)
    }

    /// Claims the one sign-in slot; the receiver fires when the person cancels.
    fn begin_sign_in(&self) -> Outcome<oneshot::Receiver<()>> {
        let (cancel, cancelled) = oneshot::channel();
        let mut connecting = self.connecting.lock().unwrap_or_else(|p| p.into_inner());
        if connecting.as_ref().is_some_and(|c| !c.is_closed()) {
            return Err(CommandError::new(
                codes::CONNECT_IN_PROGRESS,
                "a sign-in is already under way: finish or cancel it first",
            ));
        }
        *connecting = Some(cancel);
        Ok(cancelled)
    }

    /// Runs a sign-in `flow` until it ends or the person cancels it, then frees the sign-in
    /// slot. Cancelling drops the flow, which closes its loopback listener.
    async fn sign_in<T>(
        &self,
        flow: impl std::future::Future<Output = Result<T, connection::ConnectError>>,
        cancelled: oneshot::Receiver<()>,
    ) -> Outcome<T> {
        let result = tokio::select! {
            done = flow => done.map_err(CommandError::from),
            _ = cancelled => Err(CommandError::new(codes::CONNECT_CANCELLED, "the sign-in was cancelled")),
        };
        self.connecting.lock().unwrap_or_else(|p| p.into_inner()).take();
        result
    }

    /// Stops the embedded broker (at quit).
    pub async fn shutdown(&self) {
        if let Some(embedded) = self.embedded.lock().await.take() {
            embedded.stop().await;
        }
    }

    /// Whether the person locked the app (and its keychain) from Security.
    pub fn is_locked(&self) -> bool {
        self.locked_by_app.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// The OS keychain for this profile, opened once.
    pub async fn key_store(&self) -> Outcome<SharedKeyStore> {
        if self.is_locked() {
            return Err(CommandError::new(
                codes::KEYCHAIN_LOCKED,
                "Latchkey is locked: unlock it with your keychain password",
            ));
        }
        let mut store = self.store.lock().await;
        if let Some(open) = store.as_ref() {
            return Ok(Arc::clone(open));
        }
        let name = self.profile().name().clone();
        let opened: SharedKeyStore = tokio::task::spawn_blocking(move || {
            OsKeychainStore::open(&name).map(|s| Arc::new(s) as SharedKeyStore)
        })
        .await
        .map_err(|e| CommandError::new(codes::KEYCHAIN_UNAVAILABLE, e.to_string()))??;
        *store = Some(Arc::clone(&opened));
        Ok(opened)
    }

    /// A signed broker client for this device, built once (the device key is read from the
    /// keychain the first time only).
    pub async fn client(&self) -> Outcome<Arc<BrokerClient>> {
        Ok(self.signed_in().await?.client)
    }

    /// This device's client and fingerprint, read from the keychain once and kept until the
    /// profile changes (a workspace created or joined).
    async fn signed_in(&self) -> Outcome<SignedIn> {
        let mut cached = self.signed_in.lock().await;
        if let Some(ready) = cached.as_ref() {
            return Ok(ready.clone());
        }
        let store = self.key_store().await?;
        let (client, fingerprint) = tokio::try_join!(
            async {
                Ok::<_, CommandError>(workspace::broker_client(self.profile(), &store).await?)
            },
            async {
                Ok::<_, CommandError>(workspace::own_fingerprint(self.profile(), &store).await?)
            },
        )?;
        let ready = SignedIn { client: Arc::new(client), fingerprint: fingerprint.to_string() };
        *cached = Some(ready.clone());
        Ok(ready)
    }

    /// Forgets the cached client (the profile changed), and lets the approval stream start on
    /// the new one at once.
    async fn forget_client(&self) {
        self.signed_in.lock().await.take();
        self.ready.notify_one();
    }

    /// Forgets the client (with the device key it holds) and the keychain connection.
    async fn forget_keys(&self) {
        self.signed_in.lock().await.take();
        self.store.lock().await.take();
    }

    /// Resolves when the app is locked (the approval stream then lets go of its key).
    pub async fn locked(&self) {
        self.locked.notified().await;
    }

    /// Resolves when the approval stream can start at once (unlocked, or a workspace set up
    /// here), or at once if that happened since the last call.
    pub async fn ready(&self) {
        self.ready.notified().await;
    }

    /// Opens the keychain and reads this device's keys ahead of the window's first request:
    /// the web view loads its page meanwhile. Failures are left for that request to report.
    pub async fn warm_up(&self) {
        if self.is_set_up() {
            let _ = self.signed_in().await;
        } else {
            let _ = self.key_store().await;
        }
    }

    async fn agent_names(&self, client: &BrokerClient) -> Outcome<HashMap<String, String>> {
        Ok(client.agents().await?.into_iter().map(|a| (a.id.to_string(), a.name)).collect())
    }

    async fn credential_names(&self, client: &BrokerClient) -> Outcome<HashMap<String, String>> {
        Ok(client.credentials().await?.into_iter().map(|c| (c.id.to_string(), c.name)).collect())
    }

    async fn approval(&self, id: &str) -> Outcome<latchkey_client::api::ApprovalInfo> {
        let store = self.key_store().await?;
        Ok(approvals::get(self.profile(), &store, parse_id::<ApprovalId>(id, "approval")?).await?)
    }

    async fn approval_view(&self, info: &latchkey_client::api::ApprovalInfo) -> Approval {
        Approval::new(info, &self.agent_names_or_ids().await)
    }

    async fn new_agent(&self, created: latchkey_client::api::CreatedAgent) -> Outcome<NewAgent> {
        let client = self.client().await?;
        let config = self.profile().load_config()?;
        let broker = config.broker_url.as_str().trim_end_matches('/').to_owned();
        let credentials = client.credentials().await?;
        let name_for = |provider: &str| {
            credentials
                .iter()
                .find(|c| c.provider == provider)
                .map_or_else(|| provider.to_owned(), |c| c.name.clone())
        };
        let token = created.token.expose_secret().to_owned();
        Ok(NewAgent {
            agent: Agent::new(&created.agent, Vec::new()),
            snippets: view::snippets(
                &broker,
                &token,
                [name_for("openai"), name_for("anthropic"), name_for("github")],
            ),
            token: token.into(),
            proxy_url: format!("{broker}/p/"),
        })
    }

    async fn members_view(&self, client: &BrokerClient) -> Outcome<Vec<Member>> {
        let config = self.profile().load_config()?;
        let confirmed: Vec<DeviceId> = config.trusted_devices.iter().map(|t| t.id).collect();
        Ok(client
            .members()
            .await?
            .iter()
            .map(|m| Member::new(m, config.member, config.device, &confirmed))
            .collect())
    }

    async fn invites_view(&self, client: &BrokerClient) -> Outcome<Vec<PendingInvite>> {
        let invites = client.invites().await?;
        if invites.is_empty() {
            return Ok(Vec::new());
        }
        let members = client.members().await?;
        let me = self.profile().load_config()?.member;
        Ok(invites.iter().map(|i| PendingInvite::new(i, &members, me)).collect())
    }

    async fn rotate_scopes(
        &self,
        progress: &(dyn Fn(RotationProgress) + Send + Sync),
    ) -> Outcome<RotationResult> {
        let store = self.key_store().await?;
        let client = self.client().await?;
        let me = client.me().await?;
        let mut scopes = vec![RotationScope::Member];
        if me.role == Role::Admin {
            scopes.insert(0, RotationScope::Shared);
        }
        let (mut credentials, mut not_sent) = (0, std::collections::BTreeSet::new());
        for scope in scopes {
            let report = |step: Step| progress(progress_of(step));
            let summary = rotation::rotate(self.profile(), &store, scope, &report).await?;
            credentials += summary.credentials;
            not_sent.extend(summary.not_sent);
        }
        progress(RotationProgress { phase: "done", done: credentials, total: credentials });
        let config = self.profile().load_config()?;
        Ok(RotationResult {
            credentials,
            not_sent: not_sent.len(),
            workspace_key_version: config.workspace_key_version.map_or(0, |v| v.get()),
            member_key_version: config.member_key_version.map_or(0, |v| v.get()),
        })
    }
}

#[async_trait]
impl Backend for Live {
    async fn status(&self) -> AppStatus {
        let profile = self.profile().name().to_string();
        let Ok(config) = self.profile().load_config() else {
            return AppStatus {
                profile,
                set_up: false,
                workspace: None,
                broker: BrokerView { url: None, local: false, reachable: false, error: None },
                paused: false,
                pending_approvals: 0,
                locked: false,
            };
        };
        let url = config.broker_url.as_str().to_owned();
        let local = same_origin(&url, &self.embedded_url());
        let reached = async {
            let ready = self.signed_in().await?;
            let client = &ready.client;
            // Independent reads in parallel: the window's first paint waits on this status.
            let (me, pending, pause) =
                tokio::try_join!(client.me(), client.approvals(false), client.pause_state())?;
            Ok::<_, CommandError>((
                ready.fingerprint.clone(),
                me.role,
                me.workspace_name,
                // Those this device may answer: its agents' calls an admin answers are no task.
                pending.iter().filter(|a| a.answerable).count(),
                pause.paused,
            ))
        };
        let reached = reached.await;
        let fingerprint = match &reached {
            Ok((fingerprint, ..)) => fingerprint.clone(),
            Err(_) => match self.signed_in.lock().await.as_ref() {
                Some(ready) => ready.fingerprint.clone(),
                None => String::new(),
            },
        };
        let mut status = AppStatus {
            profile,
            set_up: true,
            workspace: Some(WorkspaceView {
                id: config.workspace.to_string(),
                name: None,
                broker_url: url.clone(),
                local,
                member_id: config.member.to_string(),
                role: Role::Member,
                device_id: config.device.to_string(),
                fingerprint,
                broker_ca: config
                    .broker_ca
                    .as_ref()
                    .map(TrustAnchors::sha256_fingerprints)
                    .unwrap_or_default(),
                broker_ca_pem: config.broker_ca.as_ref().map(TrustAnchors::to_pem),
            }),
            broker: BrokerView { url: Some(url), local, reachable: false, error: None },
            paused: false,
            pending_approvals: 0,
            locked: false,
        };
        match reached {
            Ok((_, role, name, pending, paused)) => {
                if let Some(w) = status.workspace.as_mut() {
                    w.role = role;
                    w.name = name;
                }
                status.broker.reachable = true;
                status.pending_approvals = pending;
                status.paused = paused;
            }
            Err(error) => {
                status.locked = error.code == codes::KEYCHAIN_LOCKED;
                status.broker.error = Some(error.message);
            }
        }
        status
    }

    async fn create_workspace(&self, new: NewWorkspace) -> Outcome<AppStatus> {
        let url = match &new.team_server_url {
            Some(url) => url.trim().to_owned(),
            None => self.ensure_embedded().await?,
        };
        let url: BrokerUrl = url.parse()?;
        let broker = BrokerEndpoint::new(url).trusting(new.team_server_ca);
        let store = self.key_store().await?;
        workspace::create_workspace(
            self.profile(),
            &store,
            broker,
            non_empty(&new.workspace_name, "workspace name")?,
            non_empty(&new.member_name, "your name")?,
            non_empty(&new.device_name, "device name")?,
            new.creation_token.as_ref(),
        )
        .await?;
        self.forget_client().await;
        Ok(self.status().await)
    }

    async fn join_workspace(&self, join: JoinRequest) -> Outcome<String> {
        let url: BrokerUrl = join.server_url.trim().parse()?;
        let broker = BrokerEndpoint::new(url).trusting(join.server_ca);
        if let Joining::NewMember { name } = &join.joining {
            non_empty(name, "your name")?;
        }
        let device_name = non_empty(&join.device_name, "device name")?;
        let store = self.key_store().await?;
        let joined = workspace::join_workspace(
            self.profile(),
            &store,
            broker,
            &join.invite_code,
            &join.joining,
            device_name,
        )
        .await?;
        self.forget_client().await;
        Ok(joined.fingerprint.to_string())
    }

    async fn finish_join(&self, admin_fingerprint: String) -> Outcome<AppStatus> {
        let sender: Fingerprint = admin_fingerprint.trim().parse().map_err(|_| {
            CommandError::invalid("type the admin device's fingerprint as its screen shows it")
        })?;
        let store = self.key_store().await?;
        let received = workspace::receive_keys(self.profile(), &store, Some(&sender))
            .await
            .map_err(|e| match e {
                workspace::WorkspaceError::NoKeysFromSender { .. } => CommandError::new(
                    codes::NOT_ADMITTED_YET,
                    "no keys from that device yet: ask the admin to admit this device (after comparing its fingerprint), then try again",
                ),
                other => other.into(),
            })?;
        self.forget_client().await;
        tracing::info!(
            workspace_keys = received.workspace_keys.len(),
            member_keys = received.member_keys.len(),
            "keys received"
        );
        Ok(self.status().await)
    }

    async fn integrations(&self) -> Outcome<Vec<Integration>> {
        let client = self.client().await?;
        let credentials = client.credentials().await?;
        let now = unix_now();
        Ok(credentials.iter().map(|c| Integration::new(c, now)).collect())
    }

    async fn add_api_key(&self, key: NewKey) -> Outcome<Integration> {
        let provider = Catalog::builtin().get(&key.provider).ok_or_else(|| {
            CommandError::new(
                codes::NOT_FOUND,
                format!("no provider {:?} in the catalog", key.provider),
            )
        })?;
        if provider.oauth().is_some() {
            return Err(CommandError::invalid(format!(
                "{} connects with OAuth: use Connect, which opens your browser",
                provider.name
            )));
        }
        if key.secret.expose_secret().iter().all(u8::is_ascii_whitespace) {
            return Err(CommandError::invalid("the key is empty: paste the provider's API key"));
        }
        let base = provider
            .base_url_for(key.base_url.as_deref().map(str::trim).filter(|b| !b.is_empty()))?;
        let hosts = if provider.custom || provider.account_specific {
            vec![latchkey_client::catalog::allowed_host_of(&base)]
        } else {
            provider.allowed_hosts.clone()
        };
        let store = self.key_store().await?;
        let trimmed = SecretBytes::copy_from(key.secret.expose_secret().trim_ascii());
        let created = access::add_api_key(
            self.profile(),
            &store,
            NewApiKey {
                name: non_empty(&key.name, "name")?,
                provider: provider.id.as_str(),
                base_url: base.as_str().trim_end_matches('/'),
                allowed_hosts: &hosts,
                injection: provider.injection.clone(),
                shared: key.shared,
                key: trimmed,
                account: key.account.as_deref().map(str::trim).filter(|a| !a.is_empty()),
            },
        )
        .await?;
        Ok(Integration::new(&created, unix_now()))
    }

    async fn connect(&self, new: NewConnection) -> Outcome<Integration> {
        let prepared = connection::prepare(ConnectRequest {
            provider: &new.provider,
            name: Some(non_empty(&new.name, "name")?),
            base_url: new.base_url.as_deref(),
            allowed_hosts: Vec::new(),
            endpoints: CustomEndpoints {
                issuer: new.issuer,
                authorize: new.authorize_url,
                token: new.token_url,
                revocation: None,
            },
            client_id: Some(new.client_id.trim().to_owned()).filter(|c| !c.is_empty()),
            client_secret: new.client_secret,
            scopes: new.scopes.unwrap_or_default(),
            shared: new.shared,
        })?;
        let store = self.key_store().await?;
        let cancelled = self.begin_sign_in()?;
        let options = FlowOptions::default();
        let flow =
            connection::connect(self.profile(), &store, prepared, self.browser.as_ref(), &options);
        Ok(Integration::new(&self.sign_in(flow, cancelled).await?, unix_now()))
    }

    async fn reconnect(&self, id: String) -> Outcome<Integration> {
        let client = self.client().await?;
        let credential = client.credential(parse_id::<CredentialId>(&id, "integration")?).await?;
        let store = self.key_store().await?;
        let cancelled = self.begin_sign_in()?;
        let flow = connection::reconnect(
            self.profile(),
            &store,
            &credential.name,
            self.browser.as_ref(),
            ReconnectOptions::default(),
        );
        Ok(Integration::new(&self.sign_in(flow, cancelled).await?, unix_now()))
    }

    async fn cancel_connect(&self) {
        if let Some(cancel) = self.connecting.lock().unwrap_or_else(|p| p.into_inner()).take() {
            let _ = cancel.send(());
        }
    }

    async fn disconnect(&self, id: String, force: bool) -> Outcome<bool> {
        let client = self.client().await?;
        let credential = client.credential(parse_id::<CredentialId>(&id, "integration")?).await?;
        let oauth =
            Catalog::builtin().get(&credential.provider).is_some_and(|p| p.oauth().is_some());
        if !oauth {
            client.delete_credential(credential.id).await?;
            return Ok(false);
        }
        let store = self.key_store().await?;
        let options = DisconnectOptions { force, ..DisconnectOptions::default() };
        let (_, outcome) =
            connection::disconnect(self.profile(), &store, &credential.name, &options).await?;
        Ok(outcome == RevocationOutcome::Revoked)
    }

    async fn set_integration_account(
        &self,
        id: String,
        account: Option<String>,
    ) -> Outcome<Integration> {
        let client = self.client().await?;
        let credential = client.credential(parse_id::<CredentialId>(&id, "integration")?).await?;
        let changes =
            access::CredentialChanges { account: Some(account.as_deref()), ..Default::default() };
        let updated = access::change_credential(&client, &credential, &changes).await?;
        Ok(Integration::new(&updated, unix_now()))
    }

    async fn agents(&self) -> Outcome<Vec<Agent>> {
        let client = self.client().await?;
        let names = self.credential_names(&client).await?;
        let mut grants: HashMap<String, Vec<Grant>> = HashMap::new();
        for grant in client.grants(None, false).await? {
            grants.entry(grant.agent.to_string()).or_default().push(Grant::new(&grant, &names));
        }
        Ok(client
            .agents()
            .await?
            .iter()
            .map(|a| Agent::new(a, grants.remove(&a.id.to_string()).unwrap_or_default()))
            .collect())
    }

    async fn create_agent(&self, name: String) -> Outcome<NewAgent> {
        let client = self.client().await?;
        let created = client.create_agent(non_empty(&name, "agent name")?).await?;
        self.new_agent(created).await
    }

    async fn regenerate_agent(&self, id: String) -> Outcome<NewAgent> {
        let client = self.client().await?;
        let renewed = client.regenerate_agent_token(parse_id::<AgentId>(&id, "agent")?).await?;
        self.new_agent(renewed).await
    }

    async fn revoke_agent(&self, id: String) -> Outcome<()> {
        Ok(self.client().await?.revoke_agent(parse_id::<AgentId>(&id, "agent")?).await?)
    }

    async fn create_grant(&self, grant: NewGrant) -> Outcome<IssuedGrant> {
        let client = self.client().await?;
        let credential =
            client.credential(parse_id::<CredentialId>(&grant.credential, "integration")?).await?;
        let methods = grant.methods.iter().map(|m| parse_method(m)).collect::<Outcome<Vec<_>>>()?;
        let patterns: Vec<&str> = grant.path_patterns.iter().map(String::as_str).collect();
        let store = self.key_store().await?;
        let issued = grant_standing(
            self.profile(),
            &store,
            GrantTerms {
                agent: parse_id::<AgentId>(&grant.agent, "agent")?,
                credential: &credential.name,
                methods: &methods,
                path_patterns: &patterns,
                duration_secs: grant.duration_secs,
            },
        )
        .await?;
        let names = HashMap::from([(credential.id.to_string(), credential.name)]);
        Ok(IssuedGrant {
            grant: Grant::new(&issued.grant, &names),
            capability: issued.capability.expose_secret().into(),
        })
    }

    async fn revoke_grant(&self, id: String) -> Outcome<()> {
        Ok(self.client().await?.revoke_grant(parse_id::<GrantId>(&id, "grant")?).await?)
    }

    async fn approvals(&self, all: bool) -> Outcome<Vec<Approval>> {
        let client = self.client().await?;
        let names = self.agent_names(&client).await?;
        Ok(client.approvals(all).await?.iter().map(|a| Approval::new(a, &names)).collect())
    }

    async fn approve_once(&self, id: String) -> Outcome<Approval> {
        let info = self.approval(&id).await?;
        let store = self.key_store().await?;
        let answered = approvals::approve_once(self.profile(), &store, &info).await?;
        Ok(self.approval_view(&answered).await)
    }

    async fn approve_for(&self, id: String, duration_secs: u64) -> Outcome<Approval> {
        let info = self.approval(&id).await?;
        let store = self.key_store().await?;
        let answered =
            approvals::approve_for(self.profile(), &store, &info, duration_secs, None).await?;
        Ok(self.approval_view(&answered.approval).await)
    }

    async fn deny(&self, id: String) -> Outcome<Approval> {
        let store = self.key_store().await?;
        let answered =
            approvals::deny(self.profile(), &store, parse_id::<ApprovalId>(&id, "approval")?)
                .await?;
        Ok(self.approval_view(&answered).await)
    }

    async fn policies(&self) -> Outcome<Vec<view::Policy>> {
        Ok(self.client().await?.policies().await?.iter().map(view::Policy::from).collect())
    }

    async fn save_policy(&self, draft: PolicyDraft) -> Outcome<view::Policy> {
        let id: PolicyId =
            draft.id.trim().parse().map_err(|e: latchkey_client::api::PolicyIdError| {
                CommandError::invalid(e.to_string())
            })?;
        let client = self.client().await?;
        let saved = policies::set_policy(
            &client,
            &id,
            &NewPolicy {
                source: &draft.source,
                description: &draft.description,
                enabled: draft.enabled,
                expected: Expected::from_revision(draft.revision),
            },
        )
        .await?;
        let mut shown = view::Policy::from(&saved.policy);
        shown.problems.extend(saved.warnings.iter().map(crate::error::Problem::from));
        Ok(shown)
    }

    async fn delete_policy(&self, id: String, revision: Option<u64>) -> Outcome<()> {
        let id: PolicyId =
            id.trim().parse().map_err(|e: latchkey_client::api::PolicyIdError| {
                CommandError::invalid(e.to_string())
            })?;
        if revision == Some(0) {
            return Err(CommandError::invalid("revision 0 names no policy to delete"));
        }
        Ok(self.client().await?.delete_policy(&id, revision).await?)
    }

    async fn check_call(&self, call: CallCheck) -> Outcome<CheckResult> {
        let client = self.client().await?;
        let credential =
            client.credential(parse_id::<CredentialId>(&call.credential, "integration")?).await?;
        let decision = policies::check_call(
            &client,
            &CallToCheck {
                agent: parse_id::<AgentId>(&call.agent, "agent")?,
                credential: &credential.name,
                method: parse_method(&call.method)?,
                path: call.path.trim(),
                host: None,
                grant: GrantKind::Standing,
                at: None,
            },
        )
        .await?;
        Ok(view::check_result(&decision))
    }

    async fn check_inject(&self, inject: InjectCheck) -> Outcome<CheckResult> {
        let client = self.client().await?;
        let credential =
            client.credential(parse_id::<CredentialId>(&inject.credential, "integration")?).await?;
        let decision = policies::check_inject(
            &client,
            &InjectToCheck {
                agent: parse_id::<AgentId>(&inject.agent, "agent")?,
                credential: &credential.name,
                lifetime_secs: inject.lifetime_secs,
                command: &inject.command,
                at: None,
            },
        )
        .await?;
        Ok(view::check_result(&decision))
    }

    async fn audit(&self, query: AuditQuery) -> Outcome<Vec<AuditRow>> {
        let client = self.client().await?;
        let names = self.agent_names(&client).await?;
        let filter = AuditFilter {
            agent: query.agent.as_deref().map(|a| parse_id::<AgentId>(a, "agent")).transpose()?,
            credential: query.credential_name,
            decision: query.decision,
            kind: None,
            since_ms: query.since.map(|s| s.saturating_mul(1000)),
            until_ms: None,
            after_seq: None,
            limit: Some(query.limit.clamp(1, 1000)),
        };
        let mut rows: Vec<AuditRow> =
            client.audit(&filter).await?.iter().map(|e| AuditRow::new(e, &names)).collect();
        rows.sort_by_key(|r| std::cmp::Reverse(r.seq));
        Ok(rows)
    }

    async fn verify_audit(&self, full: bool) -> Outcome<AuditVerdict> {
        let from = if full { CheckFrom::Start } else { CheckFrom::Anchor };
        let check =
            audit::check_workspace_chain(&*self.client().await?, self.profile(), from).await?;
        Ok(AuditVerdict::from(&check))
    }

    async fn export_audit(&self, csv: bool, file: &mut NewFile) -> Outcome<u64> {
        let client = self.client().await?;
        Ok(audit::export_log(&client, csv, &AuditFilter::default(), file).await?)
    }

    async fn members(&self) -> Outcome<Vec<Member>> {
        let client = self.client().await?;
        self.members_view(&client).await
    }

    async fn create_invite(&self, role: Role, valid_for_secs: Option<u64>) -> Outcome<Invite> {
        let invite =
            self.client().await?.create_invite(InviteFor::NewMember(role), valid_for_secs).await?;
        Ok(Invite {
            id: invite.id.to_string(),
            code: invite.code.expose_secret().into(),
            role,
            expires_at: invite.expires_at,
        })
    }

    async fn create_device_invite(&self, valid_for_secs: Option<u64>) -> Outcome<DeviceInvite> {
        let member = self.profile().load_config()?.member;
        let invite =
            self.client().await?.create_invite(InviteFor::Device(member), valid_for_secs).await?;
        Ok(DeviceInvite {
            id: invite.id.to_string(),
            code: invite.code.expose_secret().into(),
            member_id: member.to_string(),
            expires_at: invite.expires_at,
        })
    }

    async fn invites(&self) -> Outcome<Vec<PendingInvite>> {
        let client = self.client().await?;
        self.invites_view(&client).await
    }

    async fn revoke_invite(&self, id: String) -> Outcome<Vec<PendingInvite>> {
        let client = self.client().await?;
        client.revoke_invite(parse_id::<InviteId>(&id, "invite")?).await?;
        self.invites_view(&client).await
    }

    /// Wraps the workspace key to the device and, when it is another device of this member, the
    /// member key too (`workspace::admit_device`): only the member's own devices hold that key.
    async fn admit_device(&self, device: String, fingerprint: String) -> Outcome<Vec<Member>> {
        let expected: Fingerprint = fingerprint.trim().parse().map_err(|_| {
            CommandError::invalid(
                "type the new device's fingerprint exactly as its screen shows it",
            )
        })?;
        let store = self.key_store().await?;
        workspace::admit_device(
            self.profile(),
            &store,
            parse_id::<DeviceId>(&device, "device")?,
            &expected,
        )
        .await?;
        self.members().await
    }

    async fn remove_member(&self, id: String, rotate: bool) -> Outcome<Vec<Member>> {
        let client = self.client().await?;
        client.remove_member(parse_id::<MemberId>(&id, "member")?).await?;
        if rotate {
            self.rotate_scopes(&|_| {}).await?;
        }
        self.members_view(&client).await
    }

    async fn remove_device(&self, id: String, rotate: bool) -> Outcome<Vec<Member>> {
        let client = self.client().await?;
        client.remove_device(parse_id::<DeviceId>(&id, "device")?).await?;
        if rotate {
            self.rotate_scopes(&|_| {}).await?;
        }
        self.members_view(&client).await
    }

    async fn rotate_keys(
        &self,
        progress: Box<dyn Fn(RotationProgress) + Send + Sync>,
    ) -> Outcome<RotationResult> {
        self.rotate_scopes(progress.as_ref()).await
    }

    async fn export_recovery_kit(&self, passphrase: SecretBytes, dir: PathBuf) -> Outcome<PathBuf> {
        let store = self.key_store().await?;
        let kit = recovery::export_kit(self.profile(), &store, passphrase).await?;
        latchkey_client::files::write_new_numbered(
            &dir,
            "latchkey-recovery-kit",
            "txt",
            kit.text.as_bytes(),
        )
        .map_err(|e| {
            CommandError::new(
                codes::FAILED,
                format!("cannot write the kit in {}: {e}", dir.display()),
            )
        })
    }

    async fn import_recovery_kit(
        &self,
        kit: zeroize::Zeroizing<String>,
        passphrase: SecretBytes,
    ) -> Outcome<KitImported> {
        let store = self.key_store().await?;
        let imported = recovery::import_kit(self.profile(), &store, &kit, passphrase).await?;
        // The profile now names newer key versions: the next client reads them.
        self.forget_client().await;
        Ok(KitImported {
            workspace_keys: imported.workspace_keys.iter().map(|v| v.get()).collect(),
            member_keys: imported.member_keys.iter().map(|v| v.get()).collect(),
            already_present: imported.already_present,
        })
    }

    async fn lock(&self) -> Outcome<AppStatus> {
        self.locked_by_app.store(true, std::sync::atomic::Ordering::SeqCst);
        self.forget_keys().await;
        tokio::task::spawn_blocking(latchkey_client::keychain::lock_default_collection)
            .await
            .map_err(|e| CommandError::new(codes::KEYCHAIN_UNAVAILABLE, e.to_string()))??;
        self.locked.notify_waiters();
        Ok(self.status().await)
    }

    async fn unlock(&self) -> Outcome<AppStatus> {
        tokio::task::spawn_blocking(latchkey_client::keychain::unlock_default_collection)
            .await
            .map_err(|e| CommandError::new(codes::KEYCHAIN_UNAVAILABLE, e.to_string()))??;
        // A fresh connection: the keychain may have been restarted to unlock it.
        self.forget_keys().await;
        self.locked_by_app.store(false, std::sync::atomic::Ordering::SeqCst);
        self.ready.notify_one();
        Ok(self.status().await)
    }

    async fn set_paused(&self, paused: bool) -> Outcome<AppStatus> {
        self.client().await?.set_paused(paused).await?;
        Ok(self.status().await)
    }

    async fn set_broker_ca(&self, authorities: Option<TrustAnchors>) -> Outcome<AppStatus> {
        let store = self.key_store().await?;
        workspace::set_broker_authorities(self.profile(), &store, authorities).await?;
        self.forget_client().await;
        Ok(self.status().await)
    }
}

/// A rotation step as the progress bar shows it.
fn progress_of(step: Step) -> RotationProgress {
    match step {
        Step::Resealed { done, total } => RotationProgress { phase: "sealing", done, total },
        Step::Wrapped(devices) => {
            RotationProgress { phase: "verifying", done: devices, total: devices }
        }
        Step::Committed => RotationProgress { phase: "swapping", done: 1, total: 1 },
    }
}

fn same_origin(a: &str, b: &str) -> bool {
    match (url::Url::parse(a), url::Url::parse(b)) {
        (Ok(a), Ok(b)) => a.origin() == b.origin(),
        _ => false,
    }
}

fn non_empty<'a>(text: &'a str, what: &str) -> Outcome<&'a str> {
    let trimmed = text.trim();
    if trimmed.is_empty() {
        Err(CommandError::invalid(format!("the {what} is empty")))
    } else {
        Ok(trimmed)
    }
}

/// Parses an id the UI sent back (it only ever sends ids it was given).
pub fn parse_id<T: std::str::FromStr>(text: &str, what: &str) -> Outcome<T> {
    text.trim()
        .parse()
        .map_err(|_| CommandError::invalid(format!("{text:?} is not a valid {what} id")))
}

/// `GET`, `post`, ... -> a method.
pub fn parse_method(text: &str) -> Outcome<Method> {
    Method::parse(&text.trim().to_ascii_uppercase())
        .ok_or_else(|| CommandError::invalid(format!("{text:?} is not an HTTP method agents may use: GET, HEAD, POST, PUT, PATCH, DELETE or OPTIONS")))
}

/// Now, in unix seconds.
pub(crate) fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_methods_and_names_from_the_ui_are_checked_with_specific_messages() {
        let bad = parse_id::<AgentId>("not-an-id", "agent").expect_err("not a UUID");
        assert_eq!(bad.code, codes::INVALID_INPUT);
        assert!(bad.message.contains("not a valid agent id"), "{}", bad.message);
        assert!(parse_id::<AgentId>(&AgentId::random().to_string(), "agent").is_ok());

        assert_eq!(parse_method(" post ").expect("case and spaces are forgiven"), Method::Post);
        let trace = parse_method("TRACE").expect_err("agents may not TRACE");
        assert!(trace.message.contains("GET, HEAD, POST"), "the message lists the methods");

        assert_eq!(non_empty("  Acme ", "workspace name").expect("trimmed"), "Acme");
        let empty = non_empty("   ", "workspace name").expect_err("blank");
        assert_eq!(empty.message, "the workspace name is empty");
    }

    #[test]
    fn only_the_embedded_brokers_own_origin_counts_as_this_computer() {
        assert!(same_origin("http://127.0.0.1:8740", "http://127.0.0.1:8740/"));
        assert!(!same_origin("http://127.0.0.1:8741", "http://127.0.0.1:8740"), "another port");
        assert!(!same_origin("https://127.0.0.1:8740", "http://127.0.0.1:8740"), "another scheme");
        assert!(!same_origin("not a url", "http://127.0.0.1:8740"));
    }

    #[tokio::test]
    async fn a_workspace_set_up_here_wakes_the_approval_stream_even_before_it_waits() {
        let dir = tempfile::tempdir().expect("temp dir");
        let settings = Settings {
            profile: Profile::new("test".parse().expect("a profile name"), dir.path()),
            broker_dir: dir.path().join("broker"),
            broker_listen: "127.0.0.1:0".parse().expect("an address"),
        };
        let live = Live::new(settings, Arc::new(latchkey_client::oauth::SystemBrowser));
        // The stream's loop may be busy elsewhere when the profile changes: the signal waits.
        live.forget_client().await;
        tokio::time::timeout(std::time::Duration::from_secs(5), live.ready())
            .await
            .expect("the loop learns of the new workspace at once, not at its next poll");
    }

    #[test]
    fn rotation_steps_map_to_the_progress_bars_phases() {
        assert_eq!(
            progress_of(Step::Resealed { done: 2, total: 5 }),
            RotationProgress { phase: "sealing", done: 2, total: 5 }
        );
        assert_eq!(progress_of(Step::Committed).phase, "swapping");
    }
}
