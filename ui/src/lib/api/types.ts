// Types of the desktop command contract (Rust shell <-> UI).
// Times are Unix seconds; ids are strings. Keep in step with the shell.

export type Role = 'admin' | 'member';

export type Workspace = {
  id: string;
  /** The name given when the workspace was created; null while the broker is unreachable. */
  name: string | null;
  brokerUrl: string;
  /** Embedded broker on this computer. */
  local: boolean;
  memberId: string;
  role: Role;
  deviceId: string;
  /** This device's fingerprint, e.g. "4F2A-91C3-...". */
  fingerprint: string;
  /** SHA-256 fingerprints of the certificate authorities trusted for the broker besides the
   * system's; empty = the system's alone. */
  brokerCa: string[];
  /** Those authorities' certificates as PEM (public), to hand to a device that joins; null when none. */
  brokerCaPem: string | null;
};

export type BrokerState = { url: string | null; local: boolean; reachable: boolean; error: string | null };

export type AppStatus = {
  profile: string;
  /** false -> onboarding. */
  setUp: boolean;
  workspace: Workspace | null;
  broker: BrokerState;
  /** "Pause all agents" kill switch. */
  paused: boolean;
  pendingApprovals: number;
  /** The keychain holding this device's keys is locked: show the lock screen. */
  locked: boolean;
};

export type ProviderKind = 'oauth2' | 'api_key';

export type Provider = {
  id: string;
  name: string;
  kind: ProviderKind;
  /** A generic provider: the person gives its endpoints (OAuth issuer, API base URL). */
  custom: boolean;
  /** Its API lives on each account's host: the person gives the account's base URL. */
  accountSpecific: boolean;
  /** Its OAuth endpoints live on each account's host (Zendesk): the person gives them. */
  needsEndpoints: boolean;
  apiBaseUrl: string;
  allowedHosts: string[];
  defaultScopes: string[];
  needsClientSecret: boolean;
  docs: string | null;
};

export type IntegrationStatus = 'active' | 'expiring' | 'reconnect_needed' | 'disabled';

export type Integration = {
  id: string;
  name: string;
  provider: string;
  providerName: string;
  kind: ProviderKind;
  upstreamBaseUrl: string;
  allowedHosts: string[];
  owner: 'shared' | 'personal';
  status: IntegrationStatus;
  scopes: string[];
  /** Whose account at the provider it acts as (`octocat`), when known. */
  account: string | null;
  expiresAt: number | null;
  lastUsedAt: number | null;
  keyVersion: number;
};

export type Grant = {
  id: string;
  agent: string;
  credential: string;
  credentialName: string;
  methods: string[];
  pathPatterns: string[];
  expiresAt: number;
  createdAt: number;
  revokedAt: number | null;
};

/** What a recovery kit import wrote: the key versions new here, and how many were already. */
export type KitImported = { workspaceKeys: number[]; memberKeys: number[]; alreadyPresent: number };

/** A grant just made: the capability the agent needs for it is shown this once. */
export type IssuedGrant = { grant: Grant; capability: string };

export type Agent = {
  id: string;
  name: string;
  createdAt: number;
  revokedAt: number | null;
  lastUsedAt: number | null;
  grants: Grant[];
};

export type Snippet = { label: string; language: 'sh' | 'python' | 'typescript'; text: string };

/** Returned once by create_agent / regenerate_agent; `token` is shown once and then dropped. */
export type NewAgent = { agent: Agent; token: string; proxyUrl: string; snippets: Snippet[] };

export type ApprovalStatus = 'pending' | 'approved' | 'denied' | 'expired';

export type Approval = {
  id: string;
  status: ApprovalStatus;
  agent: string;
  agentName: string;
  credential: string;
  credentialName: string;
  method: string;
  host: string;
  path: string;
  queryKeys: string[];
  bodySize: number | null;
  policyIds: string[];
  createdAt: number;
  expiresAt: number;
  answeredAt: number | null;
  answeredBy: string | null;
  /** This device may answer it; `false` for a call of your agent that an admin answers (a
   * shared integration's), shown so you know why the agent waits. */
  answerable: boolean;
};

/** `warning`: a validator warning on a saved policy, which is in force; otherwise it was refused
 * (or, in a stored policy, no longer validates). */
export type PolicyProblem = { message: string; line: number | null; column: number | null; warning: boolean };

export type Policy = {
  id: string;
  description: string;
  source: string;
  enabled: boolean;
  updatedAt: number;
  /** Sent back with an edit or a deletion: a change someone made since is refused (`conflict`),
   * never overwritten unseen. */
  revision: number;
  problems: PolicyProblem[];
};

export type PolicyTemplate = { id: string; title: string; description: string; source: string };

/** What the policies would do: let it through, hold it until someone approves it, or refuse it. */
export type CheckVerdict = 'allow' | 'approval' | 'deny';

/** `allowed` only for `allow`; an inject is never held. */
export type CheckResult = { allowed: boolean; verdict: CheckVerdict; policyIds: string[]; reason: string };

export type Decision = 'allowed' | 'denied';

export type AuditRow = {
  seq: number;
  at: number;
  kind: string;
  agent: string | null;
  agentName: string | null;
  credentialName: string | null;
  method: string | null;
  host: string | null;
  path: string | null;
  decision: Decision | null;
  reason: string | null;
  policyIds: string[];
  upstreamStatus: number | null;
  /** What a device's change was about: a member, device or grant id, an invite's role, a
   * credential's new status. */
  subject: string | null;
};

export type AuditVerdict = {
  ok: boolean;
  records: number;
  head: string | null;
  firstBrokenSeq: number | null;
  reason: string | null;
  /** The record this device verified at its previous check and found unchanged (when `ok`), or
   * whose loss or change broke the check; null at this device's first check. */
  anchoredSeq: number | null;
  /** Records this check read and hashed: all of them, or those from the anchored one on. */
  checked: number;
  /** The first of them; null when none was read or the check broke. */
  checkedFrom: number | null;
};

export type Device = {
  id: string;
  name: string;
  createdAt: number;
  fingerprint: string;
  thisDevice: boolean;
  /** Its fingerprint was confirmed on this device (admitted here, or it sent us keys). */
  confirmed: boolean;
};

export type Member = { id: string; name: string; role: Role; createdAt: number; devices: Device[]; you: boolean };

export type Invite = { id: string; code: string; role: Role; expiresAt: number };
/** An invite for another device of the signed-in member: the new device types the code and `memberId`. */
export type DeviceInvite = { id: string; code: string; memberId: string; expiresAt: number };
/**
 * An invite not yet used, expired or revoked, and still usable. Never its code (shown once).
 * `role` for a new member's invite, `deviceOf` (a member's name) for another device's.
 */
export type PendingInvite = {
  id: string;
  role: Role | null;
  deviceOf: string | null;
  /** The name of the member whose device made it. */
  madeBy: string;
  /** The signed-in member made it. */
  yours: boolean;
  createdAt: number;
  expiresAt: number;
};

export type RotationPhase = 'sealing' | 'verifying' | 'swapping' | 'done';
export type RotationProgress = { phase: RotationPhase; done: number; total: number };
export type RotationResult = {
  credentials: number;
  /** Devices not sent the new key: this device never confirmed their fingerprints. */
  notSent: number;
  workspaceKeyVersion: number;
  memberKeyVersion: number;
};

export type AuditFilter = {
  agent: string | null;
  /** The integration's name (audit records name it; a removed one's records keep the name). */
  credentialName: string | null;
  decision: Decision | null;
  since: number | null;
  limit: number;
};

/** Screens the shell may ask for with the `navigate` event. */
export type Screen =
  | 'integrations'
  | 'agents'
  | 'approvals'
  | 'policies'
  | 'audit'
  | 'members'
  | 'security';

// Events
export type ApprovalsChanged = { pending: number };
export type NavigateRequest = { screen: Screen | string; approvalId?: string };

export type EventMap = {
  'approvals-changed': ApprovalsChanged;
  'approval-requested': Approval;
  navigate: NavigateRequest;
  'rotation-progress': RotationProgress;
  'status-changed': AppStatus;
};

/** Every failed command rejects with this shape; `message` is written for a person. */
export type ApiError = { code: string; message: string; problems?: PolicyProblem[] };
