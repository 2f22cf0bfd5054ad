//! The workspace flows people run, as plain async functions the CLI and the desktop app call.
//!
//! ```text
//! first device          create_workspace  -> shows its own fingerprint
//! admin                 (api) create_invite -> reads the code out
//! new device            join_workspace    -> shows ITS fingerprint          --+ a person compares
//! admin                 admit_device(id, fingerprint typed from the new device)  |  both ways
//!                                         -> shows the admin device's fingerprint <-+
//! new device            receive_keys(fingerprint typed from the admin device)
//! ```
//!
//! The broker relays public keys and wrapped keys but is never trusted with them: `admit_device`
//! wraps keys only to a device whose keys, as received, have the fingerprint the person typed,
//! and `receive_keys` opens only keys signed by a device whose fingerprint the person confirmed.
//! A broker that substitutes a key is caught at one of the two comparisons.
//!
//! Keys are written to the key store before the broker learns of them, so a device is never
//! registered with keys it has lost; a registration that fails removes them again. The profile
//! configuration (identifiers only) is written once the broker has accepted the device.

use std::sync::Arc;

use latchkey_core::creation::CreationToken;
use latchkey_core::fingerprint::Fingerprint;
use latchkey_core::ids::{DeviceId, KeyVersion, MemberId, Owner, WorkspaceId};
use latchkey_core::keys::{
    DeviceKeys, DeviceSigningKey, KeyError, MemberKey, WorkspaceKey, WrappedKey, WrappedKind,
};
use latchkey_core::tls::TrustAnchors;

use crate::api::{
    BrokerClient, BrokerEndpoint, ClientError, DeliveredKey, InviteCode, JoinAs, NewWorkspace,
    Role, codes,
};
use crate::keychain::{KeySlot, KeyStore, KeychainError, SharedKeyStore};
use crate::profile::{Profile, ProfileConfig, ProfileError, TrustedDevice};

/// A workspace flow failed. Every message says what to do next.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WorkspaceError {
    /// The key store failed.
    #[error(transparent)]
    Keychain(#[from] KeychainError),
    /// The broker refused or could not be reached.
    #[error(transparent)]
    Broker(#[from] ClientError),
    /// The profile configuration could not be read or written.
    #[error(transparent)]
    Profile(#[from] ProfileError),
    /// Generating or wrapping a key failed.
    #[error("a key operation failed: {0}")]
    Key(#[source] KeyError),
    /// The key store belongs to another profile than the one given.
    #[error(
        "the key store is for profile `{store}` but the flow was run for profile `{profile}`: open the key store of the same profile"
    )]
    StoreProfileMismatch {
        /// The key store's profile.
        store: String,
        /// The flow's profile.
        profile: String,
    },
    /// The new device's keys, as the broker delivered them, do not have the fingerprint the
    /// person typed. Nothing was shared.
    #[error(
        "the fingerprint you entered does not match the keys the broker has for device {device}: nothing was shared. Compare again with the fingerprint shown on the new device; if they really differ, do not admit it (the broker may be substituting keys)"
    )]
    FingerprintMismatch {
        /// The device being admitted.
        device: DeviceId,
    },
    /// The broker registered other keys for this device than the ones it generated.
    #[error(
        "the broker registered other keys for this device than the ones it generated (its fingerprint {broker} is not this device's {local}): do not use this broker; report it to your workspace admin"
    )]
    BrokerKeyMismatch {
        /// This device's fingerprint.
        local: Fingerprint,
        /// What the broker answered.
        broker: Fingerprint,
    },
    /// The broker's answer names another workspace, member or device than expected.
    #[error("the broker's answer is inconsistent ({0}): check the broker URL, or report it")]
    Inconsistent(&'static str),
    /// This device holds no workspace key to give.
    #[error(
        "this device holds no workspace key yet, so it cannot admit others: receive your keys first, or admit from another device"
    )]
    NoWorkspaceKey,
    /// No wrapped key from a confirmed device is waiting for this device.
    #[error(
        "no keys from the device with fingerprint {fingerprint} are waiting for this device: ask the member on that device to admit this one, and check the fingerprint you typed (it is shown on their device when they admit)"
    )]
    NoKeysFromSender {
        /// The confirmed fingerprint.
        fingerprint: Fingerprint,
    },
    /// Keys wait for this device, but from devices whose fingerprint is not the one confirmed:
    /// a mistyped fingerprint, or someone else answering. None is accepted.
    #[error(
        "keys wait for this device, but none from the device with fingerprint {fingerprint}: they come from a device with another fingerprint, and are not accepted. Compare the fingerprint you typed with the one on the admitting device's screen; if they match, that device did not send these keys: tell your admin"
    )]
    KeysFromUnconfirmedSender {
        /// The confirmed fingerprint.
        fingerprint: Fingerprint,
        /// How many keys wait from other, unconfirmed devices.
        waiting: usize,
    },
    /// A key signed by a confirmed device did not verify or open.
    #[error(
        "a key from the confirmed device {sender} failed verification: it was altered on the way; nothing was stored. Ask that member to admit this device again"
    )]
    KeyRejected {
        /// The sending device.
        sender: DeviceId,
    },
    /// A key-store task was cancelled (the runtime is shutting down).
    #[error("the key store task was interrupted; try again")]
    Interrupted,
    /// The broker creates no workspaces (`workspace_creation_closed`). Nothing was kept.
    #[error(
        "this broker does not create workspaces: join a workspace on it with an invite from one of its admins, or ask the broker's operator to allow creation"
    )]
    CreationClosed,
    /// The broker creates workspaces only with its operator's creation token, and none was given
    /// (`creation_token_required`). Nothing was kept.
    #[error(
        "this broker creates workspaces only with its creation token: ask the broker's operator for it and give it when you create the workspace"
    )]
    CreationTokenRequired,
    /// The creation token given is not the broker's (`creation_token_invalid`). Nothing was kept.
    #[error(
        "the broker refused the creation token: it is not the one its operator set. Check it with them (it is compared exactly, letter case included) and try again"
    )]
    CreationTokenInvalid,
}

impl From<KeyError> for WorkspaceError {
    fn from(e: KeyError) -> Self {
        WorkspaceError::Key(e)
    }
}

/// A workspace created on this device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreatedWorkspace {
    /// The workspace.
    pub workspace: WorkspaceId,
    /// This device's member (the first admin).
    pub member: MemberId,
    /// This device.
    pub device: DeviceId,
    /// This device's fingerprint, to show when admitting others.
    pub fingerprint: Fingerprint,
}

/// Whom a device joins as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Joining {
    /// A new member with this name (new-member invite).
    NewMember {
        /// The name others see.
        name: String,
    },
    /// Another device of this existing member (device invite naming them).
    ExistingMember(MemberId),
}

/// A device that joined a workspace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinedWorkspace {
    /// The workspace.
    pub workspace: WorkspaceId,
    /// This device's member.
    pub member: MemberId,
    /// This device.
    pub device: DeviceId,
    /// The member's role.
    pub role: Role,
    /// Whether this join created the member.
    pub new_member: bool,
    /// This device's fingerprint, computed here from its own keys: show it, so the admitting
    /// member can compare it.
    pub fingerprint: Fingerprint,
}

/// A device admitted by this one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdmittedDevice {
    /// The admitted device.
    pub device: DeviceId,
    /// Its member.
    pub member: MemberId,
    /// Which keys were wrapped to it: the workspace key, and the member key for a sibling
    /// device of this member.
    pub shared: Vec<WrappedKind>,
    /// This device's fingerprint: the new device's person confirms it in [`receive_keys`].
    pub fingerprint: Fingerprint,
}

/// Keys received by this device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceivedKeys {
    /// The workspace key versions stored.
    pub workspace_keys: Vec<KeyVersion>,
    /// The member key versions stored.
    pub member_keys: Vec<KeyVersion>,
    /// Wrapped keys left alone: from a device nobody here confirmed, or from a removed one.
    pub ignored: usize,
}

/// Creates a workspace with this device as its first admin: generates the device keys, the
/// workspace key v1 and the member key v1, stores them, registers them with the broker (both
/// keys wrapped to this device) and writes the profile configuration.
///
/// `creation_token`: the broker's creation token, for a team server whose operator lets
/// workspaces be created with it alone (`None` for an open broker, such as the desktop app's
/// own). A broker that refuses the creation itself answers [`WorkspaceError::CreationClosed`],
/// [`WorkspaceError::CreationTokenRequired`] or [`WorkspaceError::CreationTokenInvalid`]; the
/// keys generated for it are removed again, so the same profile can try again.
pub async fn create_workspace(
    profile: &Profile,
    store: &SharedKeyStore,
    broker: impl Into<BrokerEndpoint>,
    workspace_name: &str,
    member_name: &str,
    device_name: &str,
    creation_token: Option<&CreationToken>,
) -> Result<CreatedWorkspace, WorkspaceError> {
    check_fresh_profile(profile, store.as_ref())?;
    let broker = broker.into();
    let workspace = WorkspaceId::random();
    let member = MemberId::random();
    let device = DeviceId::random();
    let keys = DeviceKeys::generate()?;
    let public = keys.public_keys();
    let wk = WorkspaceKey::generate(workspace, KeyVersion::FIRST)?;
    let mk = MemberKey::generate(workspace, member, KeyVersion::FIRST)?;
    let me = (device, &public.exchange);
    let wrapped_wk = WrappedKey::wrap_workspace_key(&wk, me, (device, &keys.signing))?;
    let wrapped_mk = WrappedKey::wrap_member_key(&mk, me, (device, &keys.signing))?;

    let keys = on_store(store, move |s| {
        s.save_device_keys(device, &keys)?;
        s.save_workspace_key(&wk)?;
        s.save_member_key(&mk)?;
        Ok(keys)
    })
    .await?;
    let client = BrokerClient::new(broker.clone(), device, keys.signing)?;
    let registered = client
        .create_workspace(&NewWorkspace {
            workspace,
            workspace_name,
            member,
            member_name,
            device_name,
            device_keys: public,
            wrapped_keys: [&wrapped_wk, &wrapped_mk],
            creation_token,
        })
        .await;
    let forget_keys = move |s: &dyn KeyStore| {
        s.delete_device_keys(device)?;
        s.delete_entry(&KeySlot::Workspace { workspace, version: KeyVersion::FIRST })?;
        s.delete_entry(&KeySlot::Member { workspace, member, version: KeyVersion::FIRST })
    };
    let created = match registered {
        Ok(created) => created,
        Err(e) => {
            forget_best_effort(store, forget_keys).await;
            return Err(creation_refusal(e));
        }
    };
    if (created.workspace, created.member, created.device) != (workspace, member, device) {
        return Err(WorkspaceError::Inconsistent("the created workspace has other identifiers"));
    }
    profile.save_config(&ProfileConfig {
        broker_url: broker.url().clone(),
        broker_ca: broker.authorities().cloned(),
        workspace,
        member,
        device,
        key_store: store.kind(),
        workspace_key_version: Some(KeyVersion::FIRST),
        member_key_version: Some(KeyVersion::FIRST),
        trusted_devices: Vec::new(),
    })?;
    tracing::info!(%workspace, %member, %device, "workspace created");
    Ok(CreatedWorkspace { workspace, member, device, fingerprint: fingerprint_of(&public) })
}

/// Joins a workspace with an invite code: generates and stores this device's keys, enrols them,
/// checks that the broker registered exactly these keys, and (for a new member) creates the
/// member key and uploads it wrapped to this device. Returns this device's fingerprint to show.
pub async fn join_workspace(
    profile: &Profile,
    store: &SharedKeyStore,
    broker: impl Into<BrokerEndpoint>,
    invite_code: &InviteCode,
    joining: &Joining,
    device_name: &str,
) -> Result<JoinedWorkspace, WorkspaceError> {
    check_fresh_profile(profile, store.as_ref())?;
    let broker = broker.into();
    let device = DeviceId::random();
    let keys = DeviceKeys::generate()?;
    let public = keys.public_keys();
    let local = fingerprint_of(&public);
    let join_as = match joining {
        Joining::NewMember { name } => {
            JoinAs::NewMember { id: MemberId::random(), name: name.clone() }
        }
        Joining::ExistingMember(member) => JoinAs::ExistingMember(*member),
    };

    let keys = on_store(store, move |s| s.save_device_keys(device, &keys).map(|()| keys)).await?;
    let signing = DeviceSigningKey::from_secret_bytes(&keys.signing.expose_secret());
    let client = BrokerClient::new(broker.clone(), device, signing)?;
    let joined = match client.join(invite_code, &join_as, device_name, &public).await {
        Ok(joined) => joined,
        Err(e) => {
            forget_best_effort(store, move |s| s.delete_device_keys(device)).await;
            return Err(e.into());
        }
    };
    let expected_member = match &join_as {
        JoinAs::NewMember { id, .. } | JoinAs::ExistingMember(id) => *id,
    };
    if joined.device != device || joined.member != expected_member {
        return Err(WorkspaceError::Inconsistent("the join names another device or member"));
    }
    if !joined.broker_fingerprint.matches(&local) {
        forget_best_effort(store, move |s| s.delete_device_keys(device)).await;
        return Err(WorkspaceError::BrokerKeyMismatch { local, broker: joined.broker_fingerprint });
    }
    let mut config = ProfileConfig {
        broker_url: broker.url().clone(),
        broker_ca: broker.authorities().cloned(),
        workspace: joined.workspace,
        member: joined.member,
        device,
        key_store: store.kind(),
        workspace_key_version: None,
        member_key_version: None,
        trusted_devices: Vec::new(),
    };
    profile.save_config(&config)?;

    if joined.new_member {
        // A new member's first device creates the member key and keeps a copy wrapped to itself
        // at the broker (docs/api.md, "Members, devices and invites").
        let mk = MemberKey::generate(joined.workspace, joined.member, KeyVersion::FIRST)?;
        let wrapped =
            WrappedKey::wrap_member_key(&mk, (device, &public.exchange), (device, &keys.signing))?;
        on_store(store, move |s| s.save_member_key(&mk)).await?;
        client.put_wrapped_keys(&[wrapped]).await?;
        config.member_key_version = Some(KeyVersion::FIRST);
        profile.save_config(&config)?;
    }
    tracing::info!(workspace = %joined.workspace, member = %joined.member, %device, "joined workspace");
    Ok(JoinedWorkspace {
        workspace: joined.workspace,
        member: joined.member,
        device,
        role: joined.role,
        new_member: joined.new_member,
        fingerprint: local,
    })
}

/// Admits a device that joined: fetches its public keys, refuses unless their fingerprint is
/// the one the person typed from the new device's screen, then wraps the workspace key (and
/// the member key, for another device of this member) to it and uploads them. Returns this
/// device's fingerprint for the new device's person to confirm.
pub async fn admit_device(
    profile: &Profile,
    store: &SharedKeyStore,
    device: DeviceId,
    expected_fingerprint: &Fingerprint,
) -> Result<AdmittedDevice, WorkspaceError> {
    let (mut config, keys, client) = signed_in(profile, store).await?;
    let me = config.device;

    let new_device = client.device(device).await?;
    if new_device.id != device {
        return Err(WorkspaceError::Inconsistent("the broker returned another device"));
    }
    let received = new_device.fingerprint();
    // INVARIANT: nothing is wrapped to a device before this comparison succeeds.
    if !received.matches(expected_fingerprint) {
        tracing::warn!(%device, "admission refused: fingerprint mismatch");
        return Err(WorkspaceError::FingerprintMismatch { device });
    }

    let wk_version = config.workspace_key_version.ok_or(WorkspaceError::NoWorkspaceKey)?;
    let workspace = config.workspace;
    let same_member = new_device.member == config.member;
    let (member, mk_version) = (config.member, config.member_key_version);
    let (wk, mk) = on_store(store, move |s| {
        let wk = s.load_workspace_key(workspace, wk_version)?;
        let mk = match (same_member, mk_version) {
            (true, Some(version)) => Some(s.load_member_key(workspace, member, version)?),
            _ => None,
        };
        Ok((wk, mk))
    })
    .await?;
    let recipient = (device, &new_device.keys.exchange);
    let mut wrapped = vec![WrappedKey::wrap_workspace_key(&wk, recipient, (me, &keys.signing))?];
    let mut shared = vec![WrappedKind::Workspace];
    if let Some(mk) = &mk {
        wrapped.push(WrappedKey::wrap_member_key(mk, recipient, (me, &keys.signing))?);
        shared.push(WrappedKind::Member);
    }
    client.put_wrapped_keys(&wrapped).await?;

    trust(&mut config, device, received);
    profile.save_config(&config)?;
    tracing::info!(%device, member = %new_device.member, "device admitted");
    Ok(AdmittedDevice {
        device,
        member: new_device.member,
        shared,
        fingerprint: fingerprint_of(&keys.public_keys()),
    })
}

/// Fetches the keys wrapped for this device and stores those sent by a device whose
/// fingerprint the person confirmed (`confirmed_sender`, typed from the admitting device's
/// screen) or confirmed earlier (recorded in the profile). Each key's signature is verified
/// with the confirmed sender's key before it is opened. A `confirmed_sender` that sent nothing
/// is an error ([`WorkspaceError::NoKeysFromSender`], or
/// [`WorkspaceError::KeysFromUnconfirmedSender`] when other devices sent keys) and nothing is
/// stored.
pub async fn receive_keys(
    profile: &Profile,
    store: &SharedKeyStore,
    confirmed_sender: Option<&Fingerprint>,
) -> Result<ReceivedKeys, WorkspaceError> {
    let (mut config, keys, client) = signed_in(profile, store).await?;
    finish_member_key(profile, store, &mut config, &keys, &client).await?;
    let me = config.device;
    let delivered = client.wrapped_keys().await?;

    let mut workspace_keys = Vec::new();
    let mut member_keys = Vec::new();
    let mut senders = Vec::new();
    let mut ignored = 0;
    let mut unconfirmed = 0;
    for DeliveredKey { key, sender } in delivered {
        let Some(sender) = sender.filter(|s| !s.removed && s.id == key.header().sender) else {
            ignored += 1;
            continue;
        };
        let fingerprint = sender.fingerprint();
        let confirmed_now = confirmed_sender.is_some_and(|c| c.matches(&fingerprint));
        let confirmed_before = config.trusts(sender.id, &fingerprint);
        if !confirmed_now && !confirmed_before {
            ignored += 1;
            // A new member's own device wraps its member key to itself: not a stranger's key.
            if sender.id != me {
                unconfirmed += 1;
            }
            continue;
        }
        let rejected = |_| WorkspaceError::KeyRejected { sender: sender.id };
        match key.header().kind {
            WrappedKind::Workspace => workspace_keys.push(
                key.unwrap_workspace_key(
                    (me, &keys.exchange),
                    config.workspace,
                    &sender.keys.signing,
                )
                .map_err(rejected)?,
            ),
            WrappedKind::Member => {
                if key.header().owner != Owner::Member(config.member) {
                    ignored += 1;
                    continue;
                }
                member_keys.push(
                    key.unwrap_member_key(
                        (me, &keys.exchange),
                        config.workspace,
                        &sender.keys.signing,
                    )
                    .map_err(rejected)?,
                );
            }
        }
        senders.push((sender.id, fingerprint));
    }
    // A fingerprint the person typed that matches no sender is a mistake or a substitution:
    // say so, even if devices confirmed earlier sent keys too.
    if let Some(fingerprint) = confirmed_sender
        && !senders.iter().any(|(_, f)| f.matches(fingerprint))
    {
        let fingerprint = *fingerprint;
        return Err(match unconfirmed {
            0 => WorkspaceError::NoKeysFromSender { fingerprint },
            waiting => WorkspaceError::KeysFromUnconfirmedSender { fingerprint, waiting },
        });
    }

    let received = ReceivedKeys {
        workspace_keys: workspace_keys.iter().map(WorkspaceKey::version).collect(),
        member_keys: member_keys.iter().map(MemberKey::version).collect(),
        ignored,
    };
    on_store(store, move |s| {
        workspace_keys.iter().try_for_each(|k| s.save_workspace_key(k))?;
        member_keys.iter().try_for_each(|k| s.save_member_key(k))
    })
    .await?;
    let newest =
        |current: Option<KeyVersion>, got: &[KeyVersion]| got.iter().copied().chain(current).max();
    config.workspace_key_version = newest(config.workspace_key_version, &received.workspace_keys);
    config.member_key_version = newest(config.member_key_version, &received.member_keys);
    for (id, fingerprint) in senders {
        trust(&mut config, id, fingerprint);
    }
    profile.save_config(&config)?;
    tracing::info!(
        workspace_keys = received.workspace_keys.len(),
        member_keys = received.member_keys.len(),
        ignored,
        "keys received"
    );
    Ok(received)
}

/// Replaces the certificate authorities this profile trusts for its broker besides the
/// system's (`None`: the system's alone), once a signed request to the broker has gone through
/// with them: authorities that would cut this device off from its broker are refused (the
/// broker's TLS refusal is the error) and the profile is left as it was.
pub async fn set_broker_authorities(
    profile: &Profile,
    store: &SharedKeyStore,
    authorities: Option<TrustAnchors>,
) -> Result<(), WorkspaceError> {
    let (mut config, keys) = device_keys(profile, store).await?;
    let endpoint = BrokerEndpoint::new(config.broker_url.clone()).trusting(authorities.clone());
    signing_client(endpoint, &config, &keys)?.broker_key().await?;
    config.broker_ca = authorities;
    profile.save_config(&config)?;
    tracing::info!(
        certificates = config.broker_ca.as_ref().map_or(0, TrustAnchors::len),
        "broker authorities replaced"
    );
    Ok(())
}

/// A signed broker client for this profile's device (for the API calls without a flow of their
/// own, such as [`BrokerClient::create_invite`] and [`BrokerClient::members`]).
pub async fn broker_client(
    profile: &Profile,
    store: &SharedKeyStore,
) -> Result<BrokerClient, WorkspaceError> {
    signed_in(profile, store).await.map(|(_, _, client)| client)
}

/// This device's fingerprint, from the keys in its key store.
pub async fn own_fingerprint(
    profile: &Profile,
    store: &SharedKeyStore,
) -> Result<Fingerprint, WorkspaceError> {
    check_store(profile, store.as_ref())?;
    let me = profile.load_config()?.device;
    let keys = on_store(store, move |s| s.load_device_keys(me)).await?;
    Ok(fingerprint_of(&keys.public_keys()))
}

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

/// The broker's refusal of a workspace creation as its own error, any other failure as it is.
fn creation_refusal(error: ClientError) -> WorkspaceError {
    match error.api().map(|refusal| refusal.code.as_str()) {
        Some(codes::WORKSPACE_CREATION_CLOSED) => WorkspaceError::CreationClosed,
        Some(codes::CREATION_TOKEN_REQUIRED) => WorkspaceError::CreationTokenRequired,
        Some(codes::CREATION_TOKEN_INVALID) => WorkspaceError::CreationTokenInvalid,
        _ => WorkspaceError::Broker(error),
    }
}

/// The profile's configuration, its device keys, and a client signing with them.
pub(crate) async fn signed_in(
    profile: &Profile,
    store: &SharedKeyStore,
) -> Result<(ProfileConfig, DeviceKeys, BrokerClient), WorkspaceError> {
    let (config, keys) = device_keys(profile, store).await?;
    let client = signing_client(config.broker(), &config, &keys)?;
    Ok((config, keys, client))
}

/// The profile's configuration and its device keys.
async fn device_keys(
    profile: &Profile,
    store: &SharedKeyStore,
) -> Result<(ProfileConfig, DeviceKeys), WorkspaceError> {
    check_store(profile, store.as_ref())?;
    let config = profile.load_config()?;
    let me = config.device;
    let keys = on_store(store, move |s| s.load_device_keys(me)).await?;
    Ok((config, keys))
}

/// A client for `broker` signing as the profile's device.
fn signing_client(
    broker: BrokerEndpoint,
    config: &ProfileConfig,
    keys: &DeviceKeys,
) -> Result<BrokerClient, WorkspaceError> {
    let signing = DeviceSigningKey::from_secret_bytes(&keys.signing.expose_secret());
    Ok(BrokerClient::new(broker, config.device, signing)?)
}

fn fingerprint_of(keys: &latchkey_core::keys::DevicePublicKeys) -> Fingerprint {
    Fingerprint::of(&keys.signing.to_bytes(), &keys.exchange.to_bytes())
}

fn trust(config: &mut ProfileConfig, id: DeviceId, fingerprint: Fingerprint) {
    config.trusted_devices.retain(|t| t.id != id);
    config.trusted_devices.push(TrustedDevice { id, fingerprint });
}

pub(crate) fn check_store(profile: &Profile, store: &dyn KeyStore) -> Result<(), WorkspaceError> {
    if store.profile() != profile.name() {
        return Err(WorkspaceError::StoreProfileMismatch {
            store: store.profile().to_string(),
            profile: profile.name().to_string(),
        });
    }
    Ok(())
}

fn check_fresh_profile(profile: &Profile, store: &dyn KeyStore) -> Result<(), WorkspaceError> {
    check_store(profile, store)?;
    if profile.is_set_up() {
        return Err(ProfileError::AlreadySetUp {
            profile: profile.name().to_string(),
            path: profile.config_path(),
        }
        .into());
    }
    Ok(())
}

/// Runs key-store work on a blocking thread: a keychain call can wait on D-Bus or on an unlock
/// prompt, and the file store derives keys with Argon2id.
/// A new member's join saves the profile, then uploads the member key's copy wrapped to the
/// device: if the upload failed (the broker unreachable for a moment), the profile names no member
/// key while the key store holds version 1. This uploads it again (the broker keeps one copy of
/// each wrapped key, so a second upload changes nothing) and records it, so the member's personal
/// credentials and member-key rotation work from then on.
async fn finish_member_key(
    profile: &Profile,
    store: &SharedKeyStore,
    config: &mut ProfileConfig,
    keys: &DeviceKeys,
    client: &BrokerClient,
) -> Result<(), WorkspaceError> {
    if config.member_key_version.is_some() {
        return Ok(());
    }
    let (workspace, member) = (config.workspace, config.member);
    let held =
        on_store(store, move |s| match s.load_member_key(workspace, member, KeyVersion::FIRST) {
            Ok(mk) => Ok(Some(mk)),
            Err(KeychainError::Missing { .. }) => Ok(None),
            Err(e) => Err(e),
        })
        .await?;
    let Some(mk) = held else { return Ok(()) };
    let device = config.device;
    let wrapped = WrappedKey::wrap_member_key(
        &mk,
        (device, &keys.public_keys().exchange),
        (device, &keys.signing),
    )?;
    client.put_wrapped_keys(&[wrapped]).await?;
    config.member_key_version = Some(KeyVersion::FIRST);
    profile.save_config(config)?;
    tracing::info!(%member, "uploaded the member key a join left behind");
    Ok(())
}

pub(crate) async fn on_store<T: Send + 'static>(
    store: &SharedKeyStore,
    work: impl FnOnce(&dyn KeyStore) -> Result<T, KeychainError> + Send + 'static,
) -> Result<T, WorkspaceError> {
    let store = Arc::clone(store);
    tokio::task::spawn_blocking(move || work(store.as_ref()))
        .await
        .map_err(|_| WorkspaceError::Interrupted)?
        .map_err(WorkspaceError::from)
}

/// Removes keys of a registration that did not happen; a failure is logged, not reported (the
/// caller reports the registration's own error).
async fn forget_best_effort(
    store: &SharedKeyStore,
    work: impl FnOnce(&dyn KeyStore) -> Result<(), KeychainError> + Send + 'static,
) {
    if let Err(error) = on_store(store, work).await {
        tracing::warn!(%error, "could not remove the keys of a failed registration");
    }
}
