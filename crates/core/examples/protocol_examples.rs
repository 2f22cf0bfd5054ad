//! Prints the worked examples of `docs/protocol.md` for record keys, envelopes and capabilities.
//!
//! Record-key derivation is deterministic and pinned by a unit test; envelopes and capabilities
//! contain fresh random nonces, so their bytes differ on every run while the layout does not.

use latchkey_core::capability::{Capability, Claims, Method, MethodSet, PathPattern, Reuse};
use latchkey_core::envelope::Envelope;
use latchkey_core::ids::{AgentId, CredentialId, DeviceId, KeyVersion, Owner, WorkspaceId};
use latchkey_core::keys::{BrokerSecretKey, DeviceKeys, WorkspaceKey};
use latchkey_core::secret::Key32;

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let workspace: WorkspaceId = "6f1c1c2e-4c39-4a8e-9b0e-2d5f0c4a7b11".parse()?;
    let credential: CredentialId = "0d7e2f4a-93b1-4c55-8a1e-6b2c9d3e4f50".parse()?;
    let wk = WorkspaceKey::from_parts(workspace, KeyVersion::FIRST, Key32::from_bytes([0x42; 32]));
    let scope = wk.scope(credential);
    let record = wk.record_key(credential)?;
    #[allow(clippy::print_stdout)] // an example's purpose is to print
    {
        println!("workspace key      {}", hex(wk.expose_secret().expose_secret()));
        println!("scope encoding     {}", hex(&scope.encode()));
        let envelope = Envelope::seal(&record, b"ghp_exampleToken")?;
        println!("envelope           {}", hex(envelope.as_bytes()));

        let device = DeviceKeys::generate()?;
        let broker = BrokerSecretKey::generate()?;
        let claims = Claims {
            workspace,
            agent: "3b9f6a7c-1d2e-4f50-8a6b-7c8d9e0f1a2b".parse::<AgentId>()?,
            credential,
            owner: Owner::Shared,
            key_version: KeyVersion::FIRST,
            issuer: "9a8b7c6d-5e4f-4a3b-8c2d-1e0f9a8b7c6d".parse::<DeviceId>()?,
            methods: MethodSet::of(&[Method::Get, Method::Post]).ok_or("empty method set")?,
            paths: vec![PathPattern::parse("/repos/*/issues/**")?],
            not_before: 1_800_000_000,
            expires: 1_800_000_300,
            reuse: Reuse::single_use()?,
        };
        let cap = Capability::issue(claims, &record, &device.signing, &broker.public_key())?;
        println!("capability bytes   {}", hex(cap.as_bytes()));
        println!("capability text    {}", cap.encode());
    }
    Ok(())
}
