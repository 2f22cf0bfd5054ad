//! Key rotation from a member's device: the workspace key (admins) or this member's own key.
//!
//! ```text
//! 1. the next version's key: the one a previous, interrupted attempt left in the key store,
//!    or a new one, written to the key store before the broker hears of it (none if the
//!    broker's credentials are already past this device's version: the new key was not sent
//!    here, and the error says how to receive it)
//! 2. every credential of the key: fetched, opened under the old version, re-sealed under the
//!    new one, and the new envelope opened again to prove it (nothing is sent otherwise)
//! 3. the new key wrapped to every active device that must hold it and that this device trusts
//! 4. one request: the broker swaps every envelope and the version in one transaction
//! 5. the profile records the new version
//! ```
//!
//! A crash anywhere leaves every credential readable under exactly one version: before step 4
//! the broker has changed nothing; step 4 is one transaction; after it, the new key is already
//! in this device's key store. Running the rotation again resumes: it reuses the key from step 1,
//! and if the broker already holds the new version (the crash came after step 4), it only checks
//! that the broker's copy of the new key is the one in the key store and finishes step 5.
//!
//! The recipients in step 3 are chosen here, not by the broker: of the devices it lists, this
//! device itself (with the public keys in its own key store) and the devices whose fingerprint a
//! person confirmed on this device (the profile's trusted devices), each only if the keys the
//! broker hands out for it still match that fingerprint. A listed device that nobody here
//! confirmed (one that joined and was never admitted, one another admitter let in, or one the
//! broker made up) gets nothing; the summary names it, and whoever admitted it can admit it
//! again to send it the new key.

use std::time::Duration;

use latchkey_core::envelope::Envelope;
use latchkey_core::ids::{CredentialId, DeviceId, KeyVersion, Owner};
use latchkey_core::keys::{
    DeviceSigningKey, MemberKey, RecordKey, WorkspaceKey, WrappedKey, WrappedKind,
};

use crate::access::AccessError;
use crate::api::ClientError;
use crate::keychain::{KeychainError, SharedKeyStore};
use crate::profile::Profile;
use crate::workspace::{WorkspaceError, on_store, signed_in};

/// Which key to rotate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RotationScope {
    /// The workspace key and every shared credential (admins only).
    Shared,
    /// This member's key and their personal credentials.
    Member,
}

/// The longest a rotation waits, in all, for a broker that answers `429 rate_limited`.
const MAX_RATE_LIMIT_WAIT: Duration = Duration::from_secs(300);

/// Sends a rotation's requests again after the broker's `Retry-After` while it answers `429
/// rate_limited`, up to [`MAX_RATE_LIMIT_WAIT`] in all. A rotation of a large workspace reads one
/// envelope per credential and one device per device of its members, more than a device's request
/// burst; giving up midway would only make the person start again, and be refused again.
#[derive(Debug, Default)]
struct Patience {
    waited: Duration,
}

impl Patience {
    async fn call<T, F>(&mut self, mut request: impl FnMut() -> F) -> Result<T, ClientError>
    where
        F: Future<Output = Result<T, ClientError>>,
    {
        loop {
            match request().await {
                Err(ClientError::RateLimited { retry_after })
                    if self.waited + retry_after <= MAX_RATE_LIMIT_WAIT =>
                {
                    tracing::info!(
                        secs = retry_after.as_secs(),
                        "the broker asks to slow down; waiting"
                    );
                    tokio::time::sleep(retry_after).await;
                    self.waited += retry_after;
                }
                answer => return answer,
            }
        }
    }
}

/// Where a rotation is, for a progress bar.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RotationProgress {
    /// `done` of `total` credentials re-sealed and verified.
    Resealed {
        /// Credentials done.
        done: usize,
        /// Credentials in all.
        total: usize,
    },
    /// The new key is wrapped to this many devices.
    Wrapped(usize),
    /// The broker swapped everything.
    Committed,
}

/// What a rotation did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RotationSummary {
    /// The version rotated from.
    pub from: KeyVersion,
    /// The version now current.
    pub to: KeyVersion,
    /// Credentials re-sealed.
    pub credentials: usize,
    /// Devices the new key was wrapped to.
    pub devices: usize,
    /// Active devices the broker listed that were not sent the new key, because no one on this
    /// device confirmed their fingerprint (or their keys no longer match it).
    pub not_sent: Vec<DeviceId>,
    /// The broker had already committed this rotation (an interrupted run was finished).
    pub resumed: bool,
}

/// The key being rotated, of either kind.
enum ScopeKey {
    Workspace(WorkspaceKey),
    Member(MemberKey),
}

impl ScopeKey {
    fn record_key(&self, credential: CredentialId) -> Result<RecordKey, AccessError> {
        Ok(match self {
            ScopeKey::Workspace(k) => k.record_key(credential)?,
            ScopeKey::Member(k) => k.record_key(credential)?,
        })
    }

    fn same_as(&self, other: &ScopeKey) -> bool {
        match (self, other) {
            (ScopeKey::Workspace(a), ScopeKey::Workspace(b)) => {
                a.expose_secret().expose_secret() == b.expose_secret().expose_secret()
            }
            (ScopeKey::Member(a), ScopeKey::Member(b)) => {
                a.expose_secret().expose_secret() == b.expose_secret().expose_secret()
            }
            _ => false,
        }
    }

    fn wrap(
        &self,
        recipient: (DeviceId, &latchkey_core::keys::ExchangePublicKey),
        sender: (DeviceId, &DeviceSigningKey),
    ) -> Result<WrappedKey, AccessError> {
        Ok(match self {
            ScopeKey::Workspace(k) => WrappedKey::wrap_workspace_key(k, recipient, sender)?,
            ScopeKey::Member(k) => WrappedKey::wrap_member_key(k, recipient, sender)?,
        })
    }
}

/// Rotates `scope`'s key to its next version; see the module docs. `progress` is called as the
/// work advances.
pub async fn rotate(
    profile: &Profile,
    store: &SharedKeyStore,
    scope: RotationScope,
    progress: &(dyn Fn(RotationProgress) + Sync),
) -> Result<RotationSummary, AccessError> {
    let (mut config, keys, client) = signed_in(profile, store).await?;
    let (workspace, member, me) = (config.workspace, config.member, config.device);
    let mut patience = Patience::default();
    let (what, current) = match scope {
        RotationScope::Shared => ("workspace key", config.workspace_key_version),
        RotationScope::Member => ("member key", config.member_key_version),
    };
    let from = current.ok_or(AccessError::MissingKey { what, version: KeyVersion::FIRST })?;
    let to = from
        .next()
        .ok_or_else(|| AccessError::Crypto("the key version cannot grow any further".to_owned()))?;
    let owner = match scope {
        RotationScope::Shared => Owner::Shared,
        RotationScope::Member => Owner::Member(member),
    };

    let old = load(store, scope, workspace, member, from)
        .await?
        .ok_or(AccessError::MissingKey { what, version: from })?;
    let pending = load(store, scope, workspace, member, to).await?;

    // Did an interrupted run already commit? The broker then holds our own wrapping of `to`.
    let kind = match scope {
        RotationScope::Shared => WrappedKind::Workspace,
        RotationScope::Member => WrappedKind::Member,
    };
    let committed = patience.call(|| client.wrapped_keys()).await?.into_iter().find(|d| {
        let h = d.key.header();
        h.kind == kind && h.owner == owner && h.version == to
    });
    if let Some(delivered) = committed {
        let pending = pending.ok_or_else(|| {
            AccessError::Crypto(format!(
                "another device already rotated the {what} to version {to}: receive your keys (`latchkey` on an admitted device) instead"
            ))
        })?;
        let own = delivered.key.header().sender == me;
        let verifying = keys.signing.verifying_key();
        let theirs = match scope {
            RotationScope::Shared => delivered
                .key
                .unwrap_workspace_key((me, &keys.exchange), workspace, &verifying)
                .map(ScopeKey::Workspace),
            RotationScope::Member => delivered
                .key
                .unwrap_member_key((me, &keys.exchange), workspace, &verifying)
                .map(ScopeKey::Member),
        };
        if !own || !theirs.is_ok_and(|k| k.same_as(&pending)) {
            return Err(AccessError::Crypto(format!(
                "the broker holds a {what} version {to} that is not this device's: receive your keys from the device that rotated"
            )));
        }
        set_version(&mut config, scope, to);
        profile.save_config(&config).map_err(WorkspaceError::from)?;
        progress(RotationProgress::Committed);
        return Ok(RotationSummary {
            from,
            to,
            credentials: 0,
            devices: 0,
            not_sent: Vec::new(),
            resumed: true,
        });
    }

    // The broker already past `from`: another device rotated and this one was not sent the new
    // key. A key generated here could never be committed, so none is made or stored.
    let listed = patience.call(|| client.credentials()).await?;
    let credentials: Vec<_> = listed.into_iter().filter(|c| c.owner == owner).collect();
    if let Some(current) = credentials.iter().map(|c| c.key_version).filter(|v| *v > from).max() {
        return Err(AccessError::KeyBehind { what, held: from, current });
    }

    // 1. The new key, stored before anything else happens.
    let new = match pending {
        Some(key) => key,
        None => {
            let key = match scope {
                RotationScope::Shared => {
                    ScopeKey::Workspace(WorkspaceKey::generate(workspace, to)?)
                }
                RotationScope::Member => {
                    ScopeKey::Member(MemberKey::generate(workspace, member, to)?)
                }
            };
            save(store, &key).await?;
            key
        }
    };

    // 2. Every credential of the key, re-sealed and verified.
    let total = credentials.len();
    let mut resealed = Vec::with_capacity(total);
    for (done, credential) in credentials.iter().enumerate() {
        let (version, envelope) =
            patience.call(|| client.credential_envelope(credential.id)).await?;
        if version != from {
            return Err(AccessError::Crypto(format!(
                "credential {} is at key version {version}, not {from}: someone rotated meanwhile; run the rotation again",
                credential.name
            )));
        }
        let plaintext = envelope.open(&old.record_key(credential.id)?)?;
        let new_key = new.record_key(credential.id)?;
        let sealed = Envelope::seal(&new_key, plaintext.expose_secret())?;
        let check = sealed.open(&new_key)?;
        if check.expose_secret() != plaintext.expose_secret() {
            return Err(AccessError::Crypto(format!(
                "credential {} did not read back after re-sealing; nothing was changed",
                credential.name
            )));
        }
        resealed.push((credential.id, sealed));
        progress(RotationProgress::Resealed { done: done + 1, total });
    }

    // 3. The new key for every device that must hold it and that this device trusts.
    let mut wrapped = vec![new.wrap((me, &keys.public_keys().exchange), (me, &keys.signing))?];
    let mut not_sent = Vec::new();
    for listed in patience.call(|| client.members()).await? {
        if scope == RotationScope::Member && listed.id != member {
            continue;
        }
        for summary in listed.devices.iter().filter(|d| d.id != me) {
            let device = patience.call(|| client.device(summary.id)).await?;
            let fingerprint = device.fingerprint();
            // INVARIANT: a key is wrapped only to public keys whose fingerprint a person
            // compared on this device.
            let confirmed = device.id == summary.id && config.trusts(device.id, &fingerprint);
            if confirmed {
                wrapped.push(new.wrap((device.id, &device.keys.exchange), (me, &keys.signing))?);
            } else {
                tracing::warn!(device = %summary.id, "not sending the new key to a device whose fingerprint was never confirmed here");
                not_sent.push(summary.id);
            }
        }
    }
    progress(RotationProgress::Wrapped(wrapped.len()));

    // 4. One transaction at the broker; 5. the profile.
    // A refusal for the rate comes before the broker reads the body: sending it again is safe.
    let shared = scope == RotationScope::Shared;
    patience.call(|| client.rotate(shared, from, to, &resealed, &wrapped, &not_sent)).await?;
    progress(RotationProgress::Committed);
    set_version(&mut config, scope, to);
    profile.save_config(&config).map_err(WorkspaceError::from)?;
    tracing::info!(%from, %to, credentials = total, devices = wrapped.len(), "keys rotated");
    Ok(RotationSummary {
        from,
        to,
        credentials: total,
        devices: wrapped.len(),
        not_sent,
        resumed: false,
    })
}

fn set_version(config: &mut crate::profile::ProfileConfig, scope: RotationScope, to: KeyVersion) {
    match scope {
        RotationScope::Shared => config.workspace_key_version = Some(to),
        RotationScope::Member => config.member_key_version = Some(to),
    }
}

async fn load(
    store: &SharedKeyStore,
    scope: RotationScope,
    workspace: latchkey_core::ids::WorkspaceId,
    member: latchkey_core::ids::MemberId,
    version: KeyVersion,
) -> Result<Option<ScopeKey>, AccessError> {
    let loaded = on_store(store, move |s| {
        let key = match scope {
            RotationScope::Shared => {
                s.load_workspace_key(workspace, version).map(ScopeKey::Workspace)
            }
            RotationScope::Member => {
                s.load_member_key(workspace, member, version).map(ScopeKey::Member)
            }
        };
        match key {
            Ok(key) => Ok(Some(key)),
            Err(KeychainError::Missing { .. }) => Ok(None),
            Err(error) => Err(error),
        }
    })
    .await?;
    Ok(loaded)
}

async fn save(store: &SharedKeyStore, key: &ScopeKey) -> Result<(), AccessError> {
    let copy = match key {
        ScopeKey::Workspace(k) => ScopeKey::Workspace(WorkspaceKey::from_parts(
            k.workspace(),
            k.version(),
            k.expose_secret().duplicate(),
        )),
        ScopeKey::Member(k) => ScopeKey::Member(MemberKey::from_parts(
            k.workspace(),
            k.member(),
            k.version(),
            k.expose_secret().duplicate(),
        )),
    };
    on_store(store, move |s| match &copy {
        ScopeKey::Workspace(k) => s.save_workspace_key(k),
        ScopeKey::Member(k) => s.save_member_key(k),
    })
    .await?;
    Ok(())
}
