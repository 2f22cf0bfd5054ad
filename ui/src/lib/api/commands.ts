// One typed wrapper per shell command. Components call these, never `invoke`.
import { invoke } from '@tauri-apps/api/core';
import { toApiError } from './errors';
import type {
  Agent,
  AppStatus,
  Approval,
  AuditFilter,
  AuditRow,
  AuditVerdict,
  CheckResult,
  Decision,
  DeviceInvite,
  IssuedGrant,
  KitImported,
  Integration,
  Invite,
  Member,
  NewAgent,
  PendingInvite,
  Policy,
  PolicyTemplate,
  Provider,
  Role,
  RotationResult,
} from './types';

async function call<T>(cmd: string, args: Record<string, unknown> = {}): Promise<T> {
  if (typeof window !== 'undefined' && !('__TAURI_INTERNALS__' in window)) {
    throw { code: 'no_shell', message: 'This window is not connected to the Latchkey desktop app.' };
  }
  try {
    return await invoke<T>(cmd, args);
  } catch (e) {
    throw toApiError(e);
  }
}

// Status and onboarding
export const appStatus = () => call<AppStatus>('app_status');
export const createWorkspace = (a: {
  workspaceName: string;
  memberName: string;
  deviceName: string;
  /** null = this computer (embedded broker). */
  teamServerUrl: string | null;
  /** PEM of a private certificate authority trusted for the team server; null = none. Rejects
   * with `broker_ca_unusable` if it holds no usable certificate (or holds a private key). */
  teamServerCa: string | null;
  /** The team server's workspace creation token, when its operator creates workspaces with it
   * alone; null = none. Sent one way: no command answers it back. Rejects with
   * `invalid_creation_token` (not a token at all), `invalid_input` (without a team server), or
   * the server's `creation_token_required`, `creation_token_invalid` or
   * `workspace_creation_closed`. */
  creationToken: string | null;
}) => call<AppStatus>('create_workspace', a);
/** Exactly one of `memberName` (a new member) and `deviceOf` (another device of that member). */
export const joinWorkspace = (a: {
  serverUrl: string;
  /** As `teamServerCa` when creating. */
  serverCa: string | null;
  inviteCode: string;
  memberName: string | null;
  /** The member id shown with a device invite; rejects with `invalid_member_id` if it is not one. */
  deviceOf: string | null;
  deviceName: string;
}) => call<{ fingerprint: string }>('join_workspace', a);
/** Rejects with code `not_admitted_yet` until an admin admitted this device. */
export const finishJoin = (adminFingerprint: string) => call<AppStatus>('finish_join', { adminFingerprint });

// Integrations
export const listProviders = (query: string) => call<Provider[]>('list_providers', { query });
export const listIntegrations = () => call<Integration[]>('list_integrations');
export const addApiKey = (a: {
  provider: string;
  name: string;
  secret: string;
  shared: boolean;
  baseUrl: string | null;
  account: string | null;
}) => call<Integration>('add_api_key', a);
export const connectOauth = (a: {
  provider: string;
  name: string;
  clientId: string;
  clientSecret: string | null;
  scopes: string[] | null;
  shared: boolean;
  /** custom-oauth2 only: the authorization server and the API it guards. */
  issuer: string | null;
  baseUrl: string | null;
  /** Per-account providers (Zendesk): the OAuth endpoints on the account's host. */
  authorizeUrl: string | null;
  tokenUrl: string | null;
}) => call<Integration>('connect_oauth', a);
export const cancelConnect = () => call<null>('cancel_connect');
export const reconnect = (id: string) => call<Integration>('reconnect', { id });
export const setIntegrationAccount = (id: string, account: string | null) =>
  call<Integration>('set_integration_account', { id, account });
export const disconnect = (id: string, force: boolean) =>
  call<{ revokedAtProvider: boolean }>('disconnect', { id, force });

// Agents and grants
export const listAgents = () => call<Agent[]>('list_agents');
export const createAgent = (name: string) => call<NewAgent>('create_agent', { name });
export const regenerateAgent = (id: string) => call<NewAgent>('regenerate_agent', { id });
export const revokeAgent = (id: string) => call<null>('revoke_agent', { id });
export const createGrant = (a: {
  agent: string;
  credential: string;
  methods: string[];
  pathPatterns: string[];
  durationSecs: number;
}) => call<IssuedGrant>('create_grant', a);
export const revokeGrant = (id: string) => call<null>('revoke_grant', { id });

// Approvals
export const listApprovals = (all: boolean) => call<Approval[]>('list_approvals', { all });
export const approveOnce = (id: string) => call<Approval>('approve_once', { id });
export const approveFor = (id: string, durationSecs: number) =>
  call<Approval>('approve_for', { id, durationSecs });
export const deny = (id: string) => call<Approval>('deny', { id });

// Policies
export const listPolicies = () => call<Policy[]>('list_policies');
export const policyTemplates = () => call<PolicyTemplate[]>('policy_templates');
/** Rejects with code `policy_invalid` and `problems` on the error, or `conflict` when the policy
 * is no longer at `revision` (0: the id must be free; null: replace whatever is there). */
export const savePolicy = (a: { id: string; description: string; source: string; enabled: boolean; revision: number | null }) =>
  call<Policy>('save_policy', a);
/** Rejects with `conflict` when the policy is no longer at `revision`. */
export const deletePolicy = (id: string, revision: number | null) => call<null>('delete_policy', { id, revision });
export const checkCall = (a: { agent: string; credential: string; method: string; path: string }) =>
  call<CheckResult>('check_call', a);
/** Would the policies release the credential into `command`'s environment for `lifetimeSecs`? */
export const checkInject = (a: { agent: string; credential: string; lifetimeSecs: number; command: string }) =>
  call<CheckResult>('check_inject', a);

// Audit
export const listAudit = (f: AuditFilter) => call<AuditRow[]>('list_audit', f);
/** `full`: read every record, not only those from the one this device verified last. */
export const verifyAudit = (full = false) => call<AuditVerdict>('verify_audit', { full });
export const exportAudit = (format: 'jsonl' | 'csv') => call<{ path: string }>('export_audit', { format });

// Members
export const listMembers = () => call<Member[]>('list_members');
/** `validForSecs`: 60 s to 7 days; null for the broker's default (a day). */
export const createInvite = (role: Role, validForSecs: number | null = null) => call<Invite>('create_invite', { role, validForSecs });
/** `validForSecs`: 60 s to 7 days; null for the broker's default (a day). */
export const createDeviceInvite = (validForSecs: number | null = null) => call<DeviceInvite>('create_device_invite', { validForSecs });
/** Pending invites: every one for an admin, the member's own otherwise. */
export const listInvites = () => call<PendingInvite[]>('list_invites');
/** Revokes a pending invite; resolves to the pending invites after. */
export const revokeInvite = (id: string) => call<PendingInvite[]>('revoke_invite', { id });
export const admitDevice = (deviceId: string, fingerprint: string) =>
  call<Member[]>('admit_device', { deviceId, fingerprint });
export const removeMember = (id: string, rotate: boolean) => call<Member[]>('remove_member', { id, rotate });
export const removeDevice = (id: string, rotate: boolean) => call<Member[]>('remove_device', { id, rotate });

// Security
export const rotateKeys = () => call<RotationResult>('rotate_keys');
export const exportRecoveryKit = (passphrase: string) =>
  call<{ path: string }>('export_recovery_kit', { passphrase });
/** Imports a kit's keys into this device (never replacing one it holds). Rejects with
 * `recovery_kit_refused` for a wrong passphrase, an altered kit, or another workspace's. */
export const importRecoveryKit = (kit: string, passphrase: string) =>
  call<KitImported>('import_recovery_kit', { kit, passphrase });
export const setPaused = (paused: boolean) => call<AppStatus>('set_paused', { paused });
/** Trusts the certificate authority in `pem` for the broker besides the system's (null: the
 * system's alone). Rejects with `broker_ca_unusable` for an unusable paste, or with the broker's
 * TLS refusal (`broker_tls_refused`), and then nothing changed. */
export const setBrokerCa = (pem: string | null) => call<AppStatus>('set_broker_ca', { pem });
export const lock = () => call<AppStatus>('lock');
export const unlock = () => call<AppStatus>('unlock');
export const openExternal = (url: string) => call<null>('open_external', { url });

export type { Decision };
