//! Identifiers. Each is a distinct newtype over a random 128-bit UUID, so a credential id can
//! never be passed where an agent id is expected. On the wire and in JSON they are the hyphenated
//! lowercase UUID string; inside binary formats they are the 16 raw bytes.

use core::fmt;
use core::str::FromStr;

use serde::{Deserialize, Serialize};

/// An identifier string was not a UUID.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {kind}: expected a UUID such as 0b5e0a3c-4c1e-4d8e-9a47-3f1f6a2b9c10")]
pub struct IdParseError {
    kind: &'static str,
}

macro_rules! uuid_id {
    ($(#[$doc:meta])* $name:ident, $kind:literal) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(uuid::Uuid);

        impl $name {
            /// What this identifier names, for error messages.
            pub const KIND: &'static str = $kind;

            /// A fresh random (version 4) identifier.
            pub fn random() -> Self {
                Self(uuid::Uuid::new_v4())
            }

            /// The identifier from its 16 raw bytes.
            pub const fn from_bytes(bytes: [u8; 16]) -> Self {
                Self(uuid::Uuid::from_bytes(bytes))
            }

            /// The 16 raw bytes, as used inside binary formats.
            pub const fn as_bytes(&self) -> &[u8; 16] {
                self.0.as_bytes()
            }

            /// The identifier as a UUID.
            pub const fn as_uuid(&self) -> uuid::Uuid {
                self.0
            }
        }

        impl From<uuid::Uuid> for $name {
            fn from(value: uuid::Uuid) -> Self {
                Self(value)
            }
        }

        impl FromStr for $name {
            type Err = IdParseError;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                // Only the canonical hyphenated form: one spelling per id keeps logs greppable.
                if s.len() != 36 {
                    return Err(IdParseError { kind: $kind });
                }
                uuid::Uuid::try_parse(s).map(Self).map_err(|_| IdParseError { kind: $kind })
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Display::fmt(&self.0.hyphenated(), f)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({})", stringify!($name), self.0.hyphenated())
            }
        }
    };
}

uuid_id!(
    /// A workspace: one team's credentials, members, agents, policies and audit log.
    WorkspaceId,
    "workspace id"
);
uuid_id!(
    /// A member of a workspace (a person).
    MemberId,
    "member id"
);
uuid_id!(
    /// One of a member's devices. Also the `keyid` of the device's request signatures.
    DeviceId,
    "device id"
);
uuid_id!(
    /// An agent: a program that calls upstream APIs through the broker with a placeholder token.
    AgentId,
    "agent id"
);
uuid_id!(
    /// A stored credential (an OAuth connection or an API key).
    CredentialId,
    "credential id"
);
uuid_id!(
    /// A standing grant: the reuse window of a standing capability.
    GrantId,
    "grant id"
);
uuid_id!(
    /// A pending invite code, so it can be listed and revoked without the code itself (which is
    /// shown once and never stored).
    InviteId,
    "invite id"
);

uuid_id!(
    /// An agent's call held by the broker until a member's device approves or denies it.
    ApprovalId,
    "approval id"
);
uuid_id!(
    /// A refresh lease: one refresher's turn to refresh a credential's OAuth tokens, chosen by
    /// the broker each time the lease is taken.
    LeaseId,
    "lease id"
);

/// Version of a workspace or member key. Version 1 is the first key; each rotation adds one.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct KeyVersion(u32);

impl KeyVersion {
    /// The version of a freshly created key.
    pub const FIRST: Self = Self(1);

    /// A version from its number; `None` for 0, which is never a valid version.
    pub const fn new(n: u32) -> Option<Self> {
        if n == 0 { None } else { Some(Self(n)) }
    }

    /// The number.
    pub const fn get(self) -> u32 {
        self.0
    }

    /// The version a rotation produces; `None` if the counter is exhausted.
    pub const fn next(self) -> Option<Self> {
        match self.0.checked_add(1) {
            Some(n) => Some(Self(n)),
            None => None,
        }
    }
}

impl fmt::Display for KeyVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "v{}", self.0)
    }
}

impl fmt::Debug for KeyVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyVersion({})", self.0)
    }
}

/// Who a credential belongs to, and therefore which key encrypts it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "kind", content = "member", rename_all = "snake_case")]
pub enum Owner {
    /// A team-wide credential, encrypted under the workspace key.
    Shared,
    /// A member's personal credential, encrypted under that member's key.
    Member(MemberId),
}

impl Owner {
    /// Length of [`Owner::encode`]'s output.
    pub const ENCODED_LEN: usize = 17;

    /// Fixed-length binary form: `0x00` and 16 zero bytes for shared; `0x01` and the member id.
    pub fn encode(&self) -> [u8; Self::ENCODED_LEN] {
        let mut out = [0u8; Self::ENCODED_LEN];
        if let Owner::Member(member) = self {
            out[0] = 1;
            out[1..].copy_from_slice(member.as_bytes());
        }
        out
    }

    /// Parses [`Owner::encode`]'s output; `None` for anything else.
    pub fn decode(bytes: &[u8; Self::ENCODED_LEN]) -> Option<Self> {
        let (tag, rest) = bytes.split_first()?;
        let id: [u8; 16] = rest.try_into().ok()?;
        match tag {
            0 if id == [0u8; 16] => Some(Owner::Shared),
            1 => Some(Owner::Member(MemberId::from_bytes(id))),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip_through_their_string_form() {
        let id = CredentialId::random();
        let parsed: CredentialId = id.to_string().parse().unwrap();
        assert_eq!(parsed, id);
    }

    #[test]
    fn non_canonical_id_strings_are_rejected_with_the_kind_named() {
        let braced = format!("{{{}}}", AgentId::random());
        let simple = AgentId::random().as_uuid().simple().to_string();
        for bad in ["", "not-a-uuid", braced.as_str(), simple.as_str()] {
            let err = bad.parse::<AgentId>().unwrap_err();
            assert!(err.to_string().contains("agent id"), "message must name the kind: {err}");
        }
    }

    #[test]
    fn key_version_zero_does_not_exist() {
        assert!(KeyVersion::new(0).is_none());
        assert_eq!(KeyVersion::FIRST.next().map(KeyVersion::get), Some(2));
        assert!(KeyVersion::new(u32::MAX).unwrap().next().is_none());
    }

    #[test]
    fn owner_encoding_round_trips_and_rejects_junk() {
        for owner in [Owner::Shared, Owner::Member(MemberId::random())] {
            assert_eq!(Owner::decode(&owner.encode()), Some(owner));
        }
        let mut junk = Owner::Shared.encode();
        junk[5] = 1; // shared with a non-zero id
        assert_eq!(Owner::decode(&junk), None);
        junk[0] = 2; // unknown tag
        assert_eq!(Owner::decode(&junk), None);
    }
}
