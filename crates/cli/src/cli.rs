//! The command line, as clap types. `latchkey --help` is generated from these doc comments
//! (and [`ABOUT`] for the top level).

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use clap::{Args, Parser, Subcommand, ValueEnum};
use latchkey_client::api::{BrokerUrl, PolicyId};
use latchkey_core::capability::Method;
use latchkey_core::fingerprint::Fingerprint;
use latchkey_core::ids::{AgentId, ApprovalId, DeviceId, GrantId, InviteId, MemberId};

/// `latchkey --help`: what Latchkey is, and a first session.
const ABOUT: &str = "\
Latchkey: let AI agents call GitHub, OpenAI, Slack and other APIs
without ever holding their keys.

Your keys stay on your devices (in the OS keychain); the broker stores
only ciphertext it cannot open; agents get a placeholder token. Each
call goes through the broker, which needs a capability signed by one of
your devices and a policy that allows it, and every attempt is written
to a tamper-evident audit log.

The commands, by what you are doing:

  set up        workspace, invite, device, member
  connect APIs  provider, credential, connect, disconnect
  give access   agent, grant, capability, approvals, policy, proxy, run
  oversee       audit, rotate, recovery

A first session:

  latchkey workspace create --broker http://127.0.0.1:8740 \\
      --name Acme --member-name Ada
  latchkey provider list llm
  latchkey credential add --name openai --provider openai
  latchkey agent create ci-bot
  latchkey grant create --agent <agent id> --credential openai \\
      --method GET --method POST --path '/v1/**' --for 8h
  latchkey recovery export --out latchkey-recovery.txt";

/// The command line.
#[derive(Debug, Parser)]
#[command(about = "Latchkey: let AI agents call APIs without ever holding their keys.", long_about = ABOUT)]
// `bin_name`: usage lines and completions say `latchkey`, not the file name (`latchkey.exe`).
#[command(name = "latchkey", bin_name = "latchkey", version, propagate_version = true)]
#[command(after_help = EXIT_CODES)]
pub(crate) struct Cli {
    /// Profile: keeps real, development and test data apart (each has its own keys and settings).
    #[arg(
        long,
        global = true,
        env = "LATCHKEY_PROFILE",
        hide_env_values = true,
        value_name = "NAME"
    )]
    pub(crate) profile: Option<String>,
    /// Where profile settings live (default: the platform's configuration directory).
    #[arg(
        long,
        global = true,
        env = "LATCHKEY_CONFIG_DIR",
        hide_env_values = true,
        value_name = "DIR"
    )]
    pub(crate) config_dir: Option<PathBuf>,
    /// Where this device's keys live: the OS keychain, or a passphrase-encrypted file for
    /// headless machines (passphrase from LATCHKEY_KEYSTORE_PASSPHRASE or a prompt).
    #[arg(long, global = true, env = "LATCHKEY_KEY_STORE", hide_env_values = true, value_enum, default_value_t = KeyStoreChoice::Os)]
    pub(crate) key_store: KeyStoreChoice,
    /// Print machine-readable JSON instead of text.
    #[arg(long, global = true)]
    pub(crate) json: bool,
    /// What to do.
    #[command(subcommand)]
    pub(crate) command: Command,
}

/// Documented exit codes, shown at the end of `--help`.
pub(crate) const EXIT_CODES: &str = "\
Exit codes:
  0  success
  1  error (the message says what to do)
  2  usage error
  3  not found
  4  refused by the broker (permission, signature, conflict)
  5  the broker could not be reached
  6  the key store is unavailable or locked";

/// Key store choice.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum KeyStoreChoice {
    /// The OS keychain (Secret Service on Linux).
    Os,
    /// An Argon2id-encrypted file next to the profile settings.
    File,
}

/// Top-level commands, grouped by noun.
#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Create or join a workspace, or show the one this device is enrolled in.
    #[command(subcommand)]
    Workspace(WorkspaceCommand),
    /// Invite a member or another device of a member; list and revoke pending invites.
    #[command(subcommand)]
    Invite(InviteCommand),
    /// Admit a device after comparing fingerprints, receive keys, list and remove devices.
    #[command(subcommand)]
    Device(DeviceCommand),
    /// List members, change a member's role, remove a member.
    #[command(subcommand)]
    Member(MemberCommand),
    /// Find providers in the catalog: API base, hosts, how the key is injected.
    #[command(subcommand)]
    Provider(ProviderCommand),
    /// Store API keys (sealed on this device); list, show, change, switch off and remove them.
    #[command(subcommand)]
    Credential(CredentialCommand),
    /// Connect an account with OAuth in the browser; the tokens are sealed on this device.
    ///
    /// Runs the authorization code flow with PKCE: the authorization URL is printed (and opened
    /// in the system browser unless --no-browser), the answer comes back to a listener on
    /// 127.0.0.1, and the tokens are sealed here before only the ciphertext goes to the broker.
    /// A client secret, if the provider's apps need one, is read from a hidden prompt (or stdin
    /// with --client-secret-stdin), never from the command line.
    Connect(ConnectArgs),
    /// Sign in again for an OAuth connection and replace its tokens in place.
    ///
    /// The way out of "reconnect needed": the same flow as connect, with the client id (and
    /// secret) kept in the sealed refresh data; the credential keeps its id, name, grants and
    /// audit history, and is active again.
    Reconnect {
        /// The credential's name.
        name: String,
        /// The OAuth app's client id, for a connection stored without a refresh token.
        #[arg(long, env = "LATCHKEY_OAUTH_CLIENT_ID", hide_env_values = true, value_name = "ID")]
        client_id: Option<String>,
        /// custom-oauth2: the issuer (default: the stored token endpoint's origin).
        #[arg(long, value_name = "URL")]
        issuer: Option<String>,
        /// The authorization endpoint (the token endpoint is the one kept with the
        /// connection): Zendesk's on your account's host; custom-oauth2's when its server
        /// publishes no metadata.
        #[arg(long, value_name = "URL")]
        authorize_url: Option<String>,
        /// Print the sign-in link without opening the system browser.
        #[arg(long)]
        no_browser: bool,
        /// How long to wait for the sign-in, in seconds.
        #[arg(long, default_value_t = 300, value_name = "SECONDS")]
        timeout: u64,
    },
    /// Revoke an OAuth connection's tokens at the provider, then delete the credential.
    ///
    /// The tokens are opened on this device and revoked at the provider's revocation endpoint
    /// (RFC 7009). If the provider does not confirm, nothing is deleted unless --force.
    Disconnect {
        /// The credential's name.
        name: String,
        /// Delete the credential even if the revocation at the provider fails.
        #[arg(long)]
        force: bool,
        /// custom-oauth2: the issuer whose metadata names the revocation endpoint (default: the
        /// token endpoint's origin).
        #[arg(long, value_name = "URL")]
        issuer: Option<String>,
        /// The revocation endpoint itself: custom-oauth2's, or one on your account's host
        /// (Zendesk).
        #[arg(long, value_name = "URL", conflicts_with = "issuer")]
        revocation_url: Option<String>,
        /// The OAuth app's client id, for a connection stored without a refresh token (which
        /// keeps it).
        #[arg(long, value_name = "ID")]
        client_id: Option<String>,
    },
    /// Create, list, revoke agents and regenerate their tokens; pause and resume them all.
    #[command(subcommand)]
    Agent(AgentCommand),
    /// Give an agent standing access to a credential, list and revoke grants.
    #[command(subcommand)]
    Grant(GrantCommand),
    /// Issue a capability for one request of an agent.
    #[command(subcommand)]
    Capability(CapabilityCommand),
    /// Answer agents' calls held for your approval: list, watch, approve once or for a while, deny.
    #[command(subcommand)]
    Approvals(ApprovalsCommand),
    /// The workspace's Cedar policies: list, set, remove, and check a call against them.
    #[command(subcommand)]
    Policy(PolicyCommand),
    /// Run a loopback proxy for local agents, which call it with their token.
    ///
    /// The proxy adds the capabilities this device issues for it; the grants behind them are
    /// revoked when it stops.
    Proxy {
        #[command(flatten)]
        access: LocalAccess,
        /// Where to listen (loopback only).
        #[arg(long, default_value = "127.0.0.1:8742")]
        listen: std::net::SocketAddr,
    },
    /// Run a command as an agent, through a private local proxy or with injected credentials.
    ///
    /// With --credential, for the command's lifetime a local proxy serves the given credentials;
    /// the command's environment points SDKs at it (OPENAI_BASE_URL, ANTHROPIC_BASE_URL,
    /// GITHUB_API_URL and LATCHKEY_{NAME}_URL) with the agent token (from LATCHKEY_AGENT_TOKEN)
    /// where they expect a key. The grants are revoked afterwards. Every call still goes through
    /// the broker: policy, pause, revocation and approvals apply to each one, and each is
    /// audited.
    ///
    /// With --inject, the credential itself is set in the command's environment, after the
    /// broker allowed it (a workspace policy must permit the `inject` action; the default
    /// policies do not) and audited the release. It never appears in the command line, the
    /// output or a log. For the command's lifetime this gives up what the broker enforces per
    /// call:
    ///
    ///   - pausing the agents, revoking the agent or a grant, disabling or deleting the
    ///     credential, and approvals cannot reach a key already in the environment;
    ///   - any process of the same user can read it (/proc/PID/environ), and every process the
    ///     command starts inherits it;
    ///   - the audit log holds one record for the release, not the calls made with it;
    ///   - an OAuth access token is not refreshed while the command runs (its refresh token is
    ///     never injected).
    ///
    /// The command runs in a process group of its own, holding the terminal while it runs;
    /// signals sent to latchkey (Ctrl-C, SIGTERM) are passed on to the group. Nothing the
    /// command starts keeps an injected credential past --ttl: when it runs out, the command
    /// and everything it started get SIGTERM, then SIGKILL 10 seconds later. On Linux that
    /// includes processes that left the group (setsid, daemons), and whatever the command
    /// leaves behind when it exits earlier is stopped the same way then: latchkey returns
    /// once all of it is gone. Elsewhere only the group is stopped, and a process that calls
    /// setsid escapes.
    /// Prefer --credential; use --inject for tools that cannot be pointed at a proxy.
    ///
    /// The exit status is passed through (128 + N if the command was killed by signal N).
    // The summary is spelled out: a verbatim doc comment would keep its period in the list of
    // commands, where no other summary has one.
    #[command(
        verbatim_doc_comment,
        about = "Run a command as an agent, through a private local proxy or with injected credentials"
    )]
    Run {
        #[command(flatten)]
        access: RunAccess,
        /// The command and its arguments.
        #[arg(required = true, last = true)]
        command: Vec<String>,
    },
    /// Read the workspace's audit log, verify its chain on this device, export it.
    #[command(subcommand)]
    Audit(AuditCommand),
    /// Rotate the workspace key (admins) or your own key, with a progress bar.
    ///
    /// Every credential is re-sealed and verified on this device, then swapped at the broker in
    /// one step. Safe to interrupt and run again: the next run finishes the same rotation.
    Rotate {
        /// Which key.
        #[arg(long, value_enum, default_value_t = ScopeChoice::Shared)]
        scope: ScopeChoice,
    },
    /// Export this device's keys into a passphrase-sealed recovery kit, or import one.
    #[command(subcommand)]
    Recovery(RecoveryCommand),
    /// Print shell completions.
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
}

/// `latchkey workspace ...`
#[derive(Debug, Subcommand)]
pub(crate) enum WorkspaceCommand {
    /// Create a workspace with this device as its first admin.
    ///
    /// A team server may create workspaces only with its operator's creation token: it is read
    /// from LATCHKEY_CREATION_TOKEN, a hidden prompt (--creation-token) or standard input
    /// (--creation-token-stdin), never from the command line.
    Create {
        /// The broker's URL (https, or http on loopback).
        #[arg(long)]
        broker: BrokerUrl,
        /// A PEM file of certificate authorities to trust for this broker besides the
        /// system's (a team server behind a private authority); kept in the profile.
        #[arg(long, value_name = "FILE")]
        broker_ca: Option<PathBuf>,
        /// The workspace's name.
        #[arg(long)]
        name: String,
        /// Your name as other members see it.
        #[arg(long)]
        member_name: String,
        /// This device's name.
        #[arg(long, default_value = "this device")]
        device_name: String,
        /// Ask for the broker's creation token without showing it (instead of
        /// LATCHKEY_CREATION_TOKEN).
        #[arg(long)]
        creation_token: bool,
        /// Read the broker's creation token from standard input (instead of
        /// LATCHKEY_CREATION_TOKEN).
        #[arg(long, conflicts_with = "creation_token")]
        creation_token_stdin: bool,
    },
    /// Join a workspace with an invite code (from a prompt, or stdin with --code-stdin).
    ///
    /// Shows this device's fingerprint: the admitting member compares it with
    /// `latchkey device admit`, then you run `latchkey device receive-keys`.
    Join {
        /// The broker's URL (https, or http on loopback).
        #[arg(long)]
        broker: BrokerUrl,
        /// A PEM file of certificate authorities to trust for this broker besides the
        /// system's (a team server behind a private authority); kept in the profile.
        #[arg(long, value_name = "FILE")]
        broker_ca: Option<PathBuf>,
        /// Your name as other members see it (an invite for a new member).
        #[arg(long, required_unless_present = "device_of")]
        member_name: Option<String>,
        /// Join as another device of this existing member (an invite for a device).
        #[arg(long, value_name = "MEMBER ID", conflicts_with = "member_name")]
        device_of: Option<MemberId>,
        /// This device's name.
        #[arg(long, default_value = "this device")]
        device_name: String,
        /// Read the invite code from standard input instead of a prompt.
        #[arg(long)]
        code_stdin: bool,
    },
    /// Show the workspace, member and device of this profile, and the device's fingerprint.
    Show,
    /// Trust a private certificate authority for the broker, or stop trusting one.
    ///
    /// Replaces the authorities this profile trusts for its broker besides the system's (for a
    /// team server whose certificate was reissued by another authority). The broker is asked
    /// first: authorities it cannot be reached with are refused and nothing changes. --print
    /// writes the ones kept as PEM, to hand to a device that joins.
    BrokerCa {
        /// A PEM file of the authorities' certificates.
        #[arg(value_name = "FILE", required_unless_present_any = ["clear", "print"])]
        file: Option<PathBuf>,
        /// Trust the system's authorities alone again.
        #[arg(long, conflicts_with_all = ["file", "print"])]
        clear: bool,
        /// Print the authorities this profile trusts for its broker, as PEM.
        #[arg(long, conflicts_with = "file")]
        print: bool,
    },
}

/// `latchkey device ...`
#[derive(Debug, Subcommand)]
pub(crate) enum DeviceCommand {
    /// List the workspace's active devices, with their fingerprints.
    List,
    /// Give a device that joined its keys, after checking its fingerprint.
    ///
    /// The device gets the workspace key (and your member key, if it is yours) only if the
    /// fingerprint of its keys, as the broker hands them over, is the one shown on its screen.
    Admit {
        /// The new device's id (from `latchkey device list`).
        id: DeviceId,
        /// The fingerprint shown on the new device, as read from its screen.
        #[arg(long)]
        fingerprint: Fingerprint,
    },
    /// On a device that joined: store the keys sent to it, after confirming the sender.
    ///
    /// Only keys signed by the device whose fingerprint you type (shown on its screen when it
    /// admitted this one) are opened and stored.
    ReceiveKeys {
        /// The admitting device's fingerprint.
        #[arg(long = "from", value_name = "FINGERPRINT")]
        from: Fingerprint,
    },
    /// Remove a device (yours, or any device for admins); it is refused from its next request.
    /// The keys it held are rotated: the workspace key (by an admin) and, for one of your own
    /// devices, your member key.
    Remove {
        /// The device's id.
        id: DeviceId,
        /// Do not rotate (anything copied from the device stays usable until you rotate).
        #[arg(long)]
        no_rotate: bool,
    },
}

/// `latchkey member ...`
#[derive(Debug, Subcommand)]
pub(crate) enum MemberCommand {
    /// List the active members with their roles and devices.
    List,
    /// Remove a member and all their devices (admins), then rotate the workspace key their
    /// devices held.
    Remove {
        /// The member's id.
        id: MemberId,
        /// Do not rotate (anything copied from their devices stays usable until you rotate).
        #[arg(long)]
        no_rotate: bool,
    },
    /// Change a member's role (admins); the last admin cannot be demoted.
    Role {
        /// The member's id.
        id: MemberId,
        /// The new role.
        #[arg(value_enum)]
        role: RoleChoice,
    },
}

/// `latchkey capability ...`
#[derive(Debug, Subcommand)]
pub(crate) enum CapabilityCommand {
    /// Issue a single-use capability: one request of one agent, within minutes.
    ///
    /// Nothing is registered at the broker; it refuses the capability after its first use.
    Issue {
        /// The agent's id.
        #[arg(long)]
        agent: AgentId,
        /// The credential's name.
        #[arg(long)]
        credential: String,
        /// The request's method.
        #[arg(long, value_parser = parse_method)]
        method: Method,
        /// The request's path (e.g. `/v1/models`).
        #[arg(long)]
        path: String,
        /// How long it stays usable: e.g. `90s`, `5m` (at most 15 minutes).
        #[arg(long = "for", default_value = "5m", value_name = "DURATION")]
        duration: Lifetime,
    },
}

/// `latchkey approvals ...`
#[derive(Debug, Subcommand)]
pub(crate) enum ApprovalsCommand {
    /// List the held calls you may answer: pending ones, or all the broker still lists.
    List {
        /// Include answered and expired ones.
        #[arg(long)]
        all: bool,
    },
    /// Let a held call go on: once, or for a window.
    ///
    /// Once: a single-use capability for exactly its method and path. With --for: a standing
    /// grant for the agent, the credential, the method and the exact path (or --path), whose
    /// capability the agent receives with the call's response for its next calls.
    Approve {
        /// The approval's id (from `latchkey approvals list`).
        id: ApprovalId,
        /// Approve the same call for this long: e.g. `30m`, `2h` (at most 90 days).
        #[arg(long = "for", value_name = "DURATION")]
        duration: Option<Lifetime>,
        /// With --for: allow every path this pattern matches (it must match the held call's).
        #[arg(long, value_name = "PATTERN", requires = "duration")]
        path: Option<String>,
    },
    /// Refuse a held call; the agent receives `403 approval_denied`.
    Deny {
        /// The approval's id.
        id: ApprovalId,
    },
    /// Show held calls as they arrive and are answered, until interrupted.
    ///
    /// On a terminal (without --json) each pending call is shown with its agent, credential,
    /// method, host, path, query names, body size and policies, and asked about: approve once
    /// (o), for an hour (h), deny (d) or skip (s). With --json: one JSON object per line.
    /// If the stream breaks (the broker is unreachable, or silent past its keep-alives), it
    /// says so on stderr and reconnects, waiting longer after each failed attempt.
    Watch {
        /// Ask about each pending call even when stdin is not a terminal, reading one answer
        /// per line (o, h, d or s; an empty line or the end of input skips). Not with --json.
        #[arg(long)]
        prompt: bool,
        /// How long the stream may stay silent before it counts as broken, in milliseconds
        /// (tests only: the broker's keep-alives come every 15 seconds).
        #[arg(long, hide = true, value_name = "MS")]
        read_timeout_ms: Option<u64>,
    },
}

/// `latchkey policy ...`
#[derive(Debug, Subcommand)]
pub(crate) enum PolicyCommand {
    /// List the workspace's policies (the defaults until an admin changes them).
    List,
    /// Create or replace a policy (admins).
    ///
    /// The broker validates it against the schema (docs/policy.md); a refused policy is shown
    /// with each problem's line and column.
    Set {
        /// The policy's id: letters, digits, `.`, `_`, `-`.
        id: PolicyId,
        /// The file with the Cedar policy (`-` for standard input).
        #[arg(long)]
        file: PathBuf,
        /// What it is for.
        #[arg(long, default_value = "")]
        description: String,
        /// Store it switched off.
        #[arg(long)]
        disabled: bool,
        /// Only if the policy is still at this revision (from `policy show` or `policy list`):
        /// an edit made by someone else since is refused, not overwritten. 0: only if no
        /// policy has this id yet.
        #[arg(long, value_name = "REVISION")]
        if_revision: Option<u64>,
    },
    /// Show one policy: its revision and state, then its Cedar text.
    Show {
        /// The policy's id.
        id: PolicyId,
    },
    /// Delete a policy (admins); deleting the last one brings the defaults back.
    Remove {
        /// The policy's id.
        id: PolicyId,
        /// Only if the policy is still at this revision (from `policy show` or `policy list`).
        #[arg(long, value_name = "REVISION", value_parser = clap::value_parser!(u64).range(1..))]
        if_revision: Option<u64>,
    },
    /// Would this call (or, with --inject, this inject) be allowed? Decided exactly as the
    /// broker would, without making the call or releasing anything.
    Check {
        /// The agent's id.
        #[arg(long)]
        agent: AgentId,
        /// The credential's name.
        #[arg(long)]
        credential: String,
        /// The method.
        #[arg(
            long,
            required_unless_present = "inject",
            conflicts_with = "inject",
            value_parser = parse_method
        )]
        method: Option<Method>,
        /// The upstream path.
        #[arg(long, required_unless_present = "inject", conflicts_with = "inject")]
        path: Option<String>,
        /// The upstream host (default: the credential's).
        #[arg(long, conflicts_with = "inject")]
        host: Option<String>,
        /// What would authorise the call.
        #[arg(long, value_enum, default_value_t = GrantChoice::Standing)]
        grant: GrantChoice,
        /// Check releasing the credential into a command's environment (`run --inject`)
        /// instead of a call.
        #[arg(long)]
        inject: bool,
        /// With --inject: how long the command would keep it.
        #[arg(long, default_value = "1h", value_name = "DURATION", requires = "inject")]
        ttl: Lifetime,
        /// With --inject: the command's program name.
        #[arg(long = "command", value_name = "NAME", requires = "inject")]
        command_name: Option<String>,
    },
}

/// What would authorise a checked call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum GrantChoice {
    /// A standing grant's capability.
    Standing,
    /// A single-use capability (what an approval gives).
    SingleUse,
    /// No capability.
    None,
}

/// `latchkey invite ...`
#[derive(Debug, Subcommand)]
pub(crate) enum InviteCommand {
    /// Create a one-time invite code (valid for a day unless --for says otherwise).
    Create {
        /// Invite a new member with this role.
        #[arg(long, value_enum, default_value_t = RoleChoice::Member, conflicts_with = "device_for")]
        role: RoleChoice,
        /// Invite another device of this member instead.
        #[arg(long, value_name = "MEMBER ID")]
        device_for: Option<MemberId>,
        /// How long the code can be used: 1m to 7d. Shorter is safer: make it last as long as
        /// reading it out and joining take.
        #[arg(long = "for", default_value = "1d", value_name = "DURATION", value_parser = invite_lifetime)]
        duration: Lifetime,
    },
    /// List pending invites (every one for an admin, your own otherwise). Codes are never shown
    /// again: an invite is named by its id.
    List,
    /// Revoke a pending invite: its code is refused from now on.
    Revoke {
        /// The invite's id (from `latchkey invite list`, or shown when it was created).
        id: InviteId,
    },
}

/// Which key `rotate` rotates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum ScopeChoice {
    /// The workspace key and the shared credentials.
    Shared,
    /// Your member key and your personal credentials.
    Member,
}

/// A member's role.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum RoleChoice {
    /// Manages members, shared credentials and policies.
    Admin,
    /// Uses shared credentials and owns personal ones.
    Member,
}

/// `latchkey credential ...`
#[derive(Debug, Subcommand)]
pub(crate) enum CredentialCommand {
    /// Store an API key, sealed on this device before it is uploaded.
    ///
    /// The key is read from a hidden prompt (or stdin with --key-stdin), never from the command
    /// line.
    Add(AddCredential),
    /// List the workspace's shared credentials and your own.
    List,
    /// Show one credential's metadata (never its secret).
    Show {
        /// The credential's name.
        name: String,
    },
    /// Change a credential's name, base URL, hosts or account; the secret stays as it is.
    Update {
        /// The credential's name.
        name: String,
        /// A new name (agents then call `/p/<new name>/...`).
        #[arg(long)]
        rename: Option<String>,
        /// A new API base URL.
        #[arg(long)]
        base_url: Option<String>,
        /// Allowed hosts, replacing the current ones (repeat for several).
        #[arg(long = "allow-host", value_name = "HOST")]
        allowed_hosts: Vec<String>,
        /// Whose account at the provider it acts as, shown in listings (`ci-bot@acme.example`).
        #[arg(long, value_name = "NAME")]
        account: Option<String>,
        /// Forget the account name.
        #[arg(long, conflicts_with = "account")]
        no_account: bool,
    },
    /// Switch a credential off: agents are refused from their next call.
    Disable {
        /// The credential's name.
        name: String,
    },
    /// Switch a credential back on.
    Enable {
        /// The credential's name.
        name: String,
    },
    /// Delete a credential; agents lose it at their next call.
    Remove {
        /// The credential's name.
        name: String,
    },
    /// Refresh an OAuth connection's access token on this device if it expires within 5 minutes.
    ///
    /// The tokens are opened here, refreshed at the provider's token endpoint, and the new
    /// access token and rotated refresh token are stored together, only if nobody changed the
    /// credential meanwhile (otherwise the newer token is kept). A refresh token the provider
    /// refuses marks the credential "reconnect needed": run `latchkey reconnect NAME`.
    #[command(after_help = REFRESH_EXIT_CODES)]
    Refresh {
        /// The credential's name.
        #[arg(required_unless_present = "all")]
        name: Option<String>,
        /// Every OAuth connection you may change: shared ones if you are an admin, and your own.
        #[arg(long, conflicts_with = "name")]
        all: bool,
        /// Refresh even if the access token is not about to expire.
        #[arg(long, conflicts_with = "all")]
        force: bool,
    },
}

/// Exit codes of `credential refresh`, beyond the common ones.
const REFRESH_EXIT_CODES: &str = "\
Exit codes:
  0  refreshed, or still fresh
  1  the provider refused the refresh token (now marked reconnect needed), could not be
     reached, or the credential is an API key; with --all: any connection needs a reconnect
     or failed (every outcome is printed first)
  3  no credential with this name
  4  refused by the broker, or a shared connection and you are not an admin
  5  the broker could not be reached
  6  the key store is unavailable";

/// `latchkey credential add`
#[derive(Debug, Args)]
pub(crate) struct AddCredential {
    /// The name agents use in `/p/<name>/...`.
    #[arg(long)]
    pub(crate) name: String,
    /// The provider: a catalog id (`latchkey provider list`), or `custom-api-key`.
    #[arg(long)]
    pub(crate) provider: String,
    /// The API base URL: only for custom and per-account providers (the catalog has the rest).
    #[arg(long)]
    pub(crate) base_url: Option<String>,
    /// A host the broker may send the key to (repeat for several); default: the provider's
    /// hosts, or the base URL's host for a custom provider.
    #[arg(long = "allow-host", value_name = "HOST")]
    pub(crate) allowed_hosts: Vec<String>,
    /// Custom providers: inject the key in this header (default `authorization: Bearer`).
    #[arg(long, conflicts_with = "query")]
    pub(crate) header: Option<String>,
    /// Custom providers: text before the key in the header, e.g. `Bearer `.
    #[arg(long, requires = "header")]
    pub(crate) prefix: Option<String>,
    /// Custom providers: inject the key as this query parameter instead.
    #[arg(long)]
    pub(crate) query: Option<String>,
    /// Keep it personal (under your member key) instead of sharing it with the workspace.
    #[arg(long)]
    pub(crate) personal: bool,
    /// Read the key from standard input instead of a prompt.
    #[arg(long)]
    pub(crate) key_stdin: bool,
    /// Whose account the key belongs to, shown in listings (`ci-bot@acme.example`); default:
    /// asked of the provider where the catalog says how (docs/providers.md), else none.
    #[arg(long, value_name = "NAME")]
    pub(crate) account: Option<String>,
}

/// `latchkey connect`
#[derive(Debug, Args)]
pub(crate) struct ConnectArgs {
    /// The provider: a catalog id with OAuth (`latchkey provider list`), or `custom-oauth2`.
    pub(crate) provider: String,
    /// The name agents use in `/p/<name>/...` (default: the provider id).
    #[arg(long)]
    pub(crate) name: Option<String>,
    /// A scope to ask for (repeat for several); default: the catalog's minimal scopes.
    #[arg(long = "scope", value_name = "SCOPE")]
    pub(crate) scopes: Vec<String>,
    /// The client id of your OAuth app at the provider (redirect URI
    /// http://127.0.0.1/callback, any port).
    #[arg(long, env = "LATCHKEY_OAUTH_CLIENT_ID", hide_env_values = true, value_name = "ID")]
    pub(crate) client_id: Option<String>,
    /// Read the client secret from standard input instead of a prompt.
    #[arg(long)]
    pub(crate) client_secret_stdin: bool,
    /// Print the sign-in URL only; do not open a browser.
    #[arg(long)]
    pub(crate) no_browser: bool,
    /// How long to wait for the sign-in, in seconds.
    #[arg(long, default_value_t = 300, value_name = "SECONDS")]
    pub(crate) timeout: u64,
    /// The API base URL: only for custom-oauth2 and per-account providers.
    #[arg(long)]
    pub(crate) base_url: Option<String>,
    /// A host the broker may send the token to (repeat for several); default: the provider's
    /// hosts, or the base URL's host for custom-oauth2.
    #[arg(long = "allow-host", value_name = "HOST")]
    pub(crate) allowed_hosts: Vec<String>,
    /// custom-oauth2: the issuer, whose metadata (RFC 8414 / OpenID Connect) has the endpoints.
    #[arg(long, value_name = "URL")]
    pub(crate) issuer: Option<String>,
    /// custom-oauth2, or Zendesk (on your account's host): the authorization endpoint (with
    /// --token-url, instead of discovery).
    #[arg(long, value_name = "URL", requires = "token_url")]
    pub(crate) authorize_url: Option<String>,
    /// custom-oauth2, or Zendesk (on your account's host): the token endpoint (with
    /// --authorize-url).
    #[arg(long, value_name = "URL", requires = "authorize_url")]
    pub(crate) token_url: Option<String>,
    /// custom-oauth2, or Zendesk: the revocation endpoint (RFC 7009), with --authorize-url.
    #[arg(long, value_name = "URL", requires = "authorize_url")]
    pub(crate) revocation_url: Option<String>,
    /// Keep it personal (under your member key) instead of sharing it with the workspace.
    #[arg(long)]
    pub(crate) personal: bool,
}

/// What `proxy` and `run` grant the agent while they run.
#[derive(Debug, Args)]
pub(crate) struct LocalAccess {
    /// The agent's id.
    #[arg(long)]
    pub(crate) agent: AgentId,
    /// A credential the agent may use (repeat for several).
    #[arg(long = "credential", required = true, value_name = "NAME")]
    pub(crate) credentials: Vec<String>,
    /// An allowed method (repeat; default: all).
    #[arg(long = "method", value_name = "METHOD", value_parser = parse_method)]
    pub(crate) methods: Vec<Method>,
    /// An allowed path pattern (repeat; default: `/**`).
    #[arg(long = "path", value_name = "PATTERN")]
    pub(crate) paths: Vec<String>,
    /// The longest the grants may last (they are revoked at exit anyway).
    #[arg(long = "for", default_value = "8h", value_name = "DURATION")]
    pub(crate) duration: Lifetime,
}

/// What `run` gives the command: credentials through a local proxy, injected ones, or both.
#[derive(Debug, Args)]
pub(crate) struct RunAccess {
    /// The agent's id (its token comes from LATCHKEY_AGENT_TOKEN).
    #[arg(long)]
    pub(crate) agent: AgentId,
    /// A credential the command may call through the local proxy (repeat for several).
    #[arg(long = "credential", value_name = "NAME", required_unless_present = "inject")]
    pub(crate) credentials: Vec<String>,
    /// An allowed method for proxied calls (repeat; default: all).
    #[arg(long = "method", value_name = "METHOD", value_parser = parse_method)]
    pub(crate) methods: Vec<Method>,
    /// An allowed path pattern for proxied calls (repeat; default: `/**`).
    #[arg(long = "path", value_name = "PATTERN")]
    pub(crate) paths: Vec<String>,
    /// The longest the proxy's grants may last (they are revoked at exit anyway).
    #[arg(long = "for", default_value = "8h", value_name = "DURATION")]
    pub(crate) duration: Lifetime,
    /// Put this credential itself in the command's environment, as ENV_VAR (default: the
    /// variable its provider's tools read, e.g. OPENAI_API_KEY; required for providers without
    /// one). Repeat for several. See above for what this gives up.
    #[arg(long = "inject", value_name = "CREDENTIAL[=ENV_VAR]")]
    pub(crate) inject: Vec<String>,
    /// How long the command may keep injected credentials (at most 24h); it and everything it
    /// started are stopped then.
    #[arg(long, default_value = "1h", value_name = "DURATION", requires = "inject")]
    pub(crate) ttl: Lifetime,
}

/// `latchkey audit ...`
#[derive(Debug, Subcommand)]
pub(crate) enum AuditCommand {
    /// The newest records, filtered.
    List {
        /// Only this agent's records.
        #[arg(long)]
        agent: Option<AgentId>,
        /// Only records about this credential name.
        #[arg(long)]
        credential: Option<String>,
        /// Only allowed or only denied calls.
        #[arg(long, value_parser = ["allowed", "denied"])]
        decision: Option<String>,
        /// Only records of this kind, e.g. `proxy_attempt`, `agent_created`, `policy_changed`.
        #[arg(long)]
        kind: Option<String>,
        /// How many (1 to 1000).
        #[arg(long, default_value_t = 50)]
        limit: u32,
    },
    /// Verify the chain: the broker's own check, and an independent one on this device over a
    /// full export, read as it arrives. Exit code 1 if either finds a break.
    Verify {
        /// Read only from the record this device verified last: quick on a long log, and it
        /// still finds records removed or rewritten since then; the full check also re-reads
        /// the records before it.
        #[arg(long)]
        since_anchor: bool,
    },
    /// Write the records to a file, oldest first.
    Export {
        /// `jsonl` (exact and verifiable) or `csv` (for spreadsheets).
        #[arg(long, value_parser = ["jsonl", "csv"], default_value = "jsonl")]
        format: String,
        /// The file to create (refused if it exists).
        #[arg(long)]
        out: PathBuf,
    },
}

/// `latchkey provider ...`
#[derive(Debug, Subcommand)]
pub(crate) enum ProviderCommand {
    /// List the catalog's providers, or those matching a search.
    List {
        /// Search words (id, name or keywords), e.g. `git` or `llm`.
        query: Option<String>,
    },
}

/// `latchkey agent ...`
#[derive(Debug, Subcommand)]
pub(crate) enum AgentCommand {
    /// Create an agent; its token is printed this once.
    Create {
        /// The agent's name.
        name: String,
    },
    /// List your agents (every agent, for admins), with their last use.
    List,
    /// Revoke an agent and all its grants.
    Revoke {
        /// The agent's id.
        id: AgentId,
    },
    /// Replace an agent's token (printed this once); the old one stops working at once.
    Regenerate {
        /// The agent's id.
        id: AgentId,
    },
    /// Pause every agent in the workspace (the kill switch) until resumed.
    ///
    /// Each agent call is refused with `403 agents_paused`, and calls waiting for approval end
    /// now. Any member may pause; pausing again keeps the first pause and who made it. Tokens,
    /// grants and capabilities stay valid: revoke a leaked token with `latchkey agent revoke`.
    Pause,
    /// Resume every agent after a pause (admins, and the member who paused).
    Resume,
    /// Show whether the agents are paused, by whom and since when.
    PauseStatus,
}

/// `latchkey grant ...`
#[derive(Debug, Subcommand)]
pub(crate) enum GrantCommand {
    /// Give an agent standing access to a credential; prints the capability to hand to it.
    Create {
        /// The agent's id.
        #[arg(long)]
        agent: AgentId,
        /// The credential's name.
        #[arg(long)]
        credential: String,
        /// An allowed method (repeat for several).
        #[arg(long = "method", required = true, value_name = "METHOD", value_parser = parse_method)]
        methods: Vec<Method>,
        /// An allowed path pattern, `*` for one segment, `**` for any rest (repeat for several).
        #[arg(long = "path", required = true, value_name = "PATTERN")]
        paths: Vec<String>,
        /// How long it lasts: e.g. `30m`, `8h`, `7d` (at most 90 days).
        #[arg(long = "for", value_name = "DURATION")]
        duration: Lifetime,
    },
    /// List the grants in force, of one agent or all you can see.
    List {
        /// Only this agent's grants.
        #[arg(long)]
        agent: Option<AgentId>,
        /// Also those revoked or expired in the last 30 days.
        #[arg(long)]
        all: bool,
    },
    /// Revoke a grant; its capability is refused from the next call.
    Revoke {
        /// The grant's id.
        id: GrantId,
    },
}

/// `latchkey recovery ...`
#[derive(Debug, Subcommand)]
pub(crate) enum RecoveryCommand {
    /// Write this device's workspace and member keys to a recovery kit sealed with a passphrase
    /// (from LATCHKEY_RECOVERY_PASSPHRASE or a prompt; at least 12 characters).
    Export {
        /// The file to create (refused if it exists).
        #[arg(long)]
        out: PathBuf,
    },
    /// Import a recovery kit into this enrolled device; stored keys are never replaced.
    Import {
        /// The kit file.
        file: PathBuf,
    },
}

/// A duration as typed, `90s`, `30m`, `8h` or `7d`: its seconds, and the text for messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Lifetime {
    /// The duration in seconds.
    pub(crate) secs: u64,
    text: String,
}

impl FromStr for Lifetime {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let split = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
        let (number, unit) = text.split_at(split);
        let unit_secs: u64 = match unit {
            "s" => 1,
            "m" => 60,
            "h" => 3600,
            "d" => 86_400,
            _ => return Err("use a number and s, m, h or d (e.g. 30m, 8h, 7d)".to_owned()),
        };
        let number: u64 =
            number.parse().map_err(|_| "use a number and s, m, h or d (e.g. 30m, 8h, 7d)")?;
        let secs = number.checked_mul(unit_secs).ok_or("that is too long")?;
        Ok(Self { secs, text: text.to_owned() })
    }
}

impl fmt::Display for Lifetime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// Shortest and longest invite lifetimes the broker accepts (docs/api.md, `POST /v1/invites`).
const INVITE_LIFETIMES: core::ops::RangeInclusive<u64> = 60..=7 * 86_400;

/// An invite's `--for`: a [`Lifetime`] from one minute to seven days.
fn invite_lifetime(text: &str) -> Result<Lifetime, String> {
    let lifetime: Lifetime = text.parse()?;
    if INVITE_LIFETIMES.contains(&lifetime.secs) {
        Ok(lifetime)
    } else {
        Err("an invite lasts from 1m to 7d".to_owned())
    }
}

/// `get`, `POST`, ... -> a method.
fn parse_method(text: &str) -> Result<Method, String> {
    Method::parse(&text.to_ascii_uppercase())
        .ok_or_else(|| "use GET, HEAD, POST, PUT, PATCH, DELETE or OPTIONS".to_owned())
}

#[cfg(test)]
mod tests {
    use super::{Lifetime, invite_lifetime, parse_method};

    #[test]
    fn an_invite_lasts_from_a_minute_to_seven_days() {
        let secs = |text: &str| invite_lifetime(text).map(|l| l.secs);
        assert_eq!(secs("1m"), Ok(60), "the shortest the broker accepts");
        assert_eq!(secs("7d"), Ok(604_800), "the longest the broker accepts");
        for outside in ["59s", "8d", "169h", "0m"] {
            assert_eq!(
                secs(outside),
                Err("an invite lasts from 1m to 7d".to_owned()),
                "{outside} is refused before anything is sent"
            );
        }
        assert!(secs("soon").unwrap_err().contains("30m"), "a malformed duration says the form");
    }

    #[test]
    fn durations_parse_with_units_and_refuse_anything_else() {
        let secs = |text: &str| text.parse::<Lifetime>().map(|l| l.secs);
        assert_eq!(secs("90s"), Ok(90));
        assert_eq!(secs("30m"), Ok(1800));
        assert_eq!(secs("8h"), Ok(28_800));
        assert_eq!(secs("7d"), Ok(604_800));
        assert_eq!("8h".parse::<Lifetime>().map(|l| l.to_string()), Ok("8h".to_owned()));
        for bad in ["", "8", "h", "8x", "-1h", "1.5h", "99999999999999999999d", "999999999999999d"]
        {
            assert!(bad.parse::<Lifetime>().is_err(), "{bad:?} must be refused");
        }
    }

    #[test]
    fn methods_parse_in_any_case_and_refuse_anything_else() {
        assert_eq!(parse_method("get").map(|m| m.as_str()), Ok("GET"));
        assert_eq!(parse_method("Delete").map(|m| m.as_str()), Ok("DELETE"));
        for bad in ["", "FETCH", "GET ", "CONNECT"] {
            assert!(parse_method(bad).is_err(), "{bad:?} must be refused");
        }
    }
}
