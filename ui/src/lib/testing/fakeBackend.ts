// An in-memory implementation of the desktop command contract, installed
// through `mockIPC`. Used by the unit tests and by `npm run dev` in a plain
// browser (demo mode). It never holds a real credential: API keys sent to
// `add_api_key` are discarded after their length is checked.
import { mockIPC, clearMocks } from '@tauri-apps/api/mocks';
import { emit } from '@tauri-apps/api/event';
import type {
  Agent,
  AppStatus,
  Approval,
  ApiError,
  AuditRow,
  AuditVerdict,
  CheckResult,
  EventMap,
  Integration,
  Member,
  NewAgent,
  PendingInvite,
  Policy,
  PolicyProblem,
  Role,
} from '../api/types';
import {
  FINGERPRINT,
  PROVIDERS,
  TEMPLATES,
  seedAgents,
  seedApprovals,
  seedAudit,
  seedIntegrations,
  seedMembers,
  seedPolicies,
  seedStatus,
} from './seed';
import { isMemberId } from '../util/format';

export type FakeOptions = {
  /** Start in onboarding (setUp false) with empty lists. */
  fresh?: boolean;
  /** Seed sample data (default true unless fresh). */
  seed?: boolean;
  /** ms until a pending connect_oauth or reconnect finishes by itself; null = only on completeConnect(). */
  oauthAutoCompleteMs?: number | null;
  /** The account a reconnect signs in as (default: the same one). */
  reconnectAs?: string | null;
  /** ms between rotation-progress events. */
  rotationStepMs?: number;
  /** Number of finish_join calls that reject with not_admitted_yet before succeeding. */
  admitAfter?: number;
  /** Clock override (Unix seconds). */
  now?: () => number;
  /** Sees the API key sent to add_api_key (tests); the fake never keeps it. */
  inspectSecret?: (secret: string) => void;
};

export type Call = { cmd: string; args: Record<string, unknown> };

export type FakeBackend = {
  status: AppStatus;
  integrations: Integration[];
  agents: Agent[];
  approvals: Approval[];
  policies: Policy[];
  /** The workspace's policy revision: every change takes the next one, as on the broker. */
  policyRevision: number;
  audit: AuditRow[];
  members: Member[];
  /** Pending invites, as `list_invites` answers. */
  invites: PendingInvite[];
  /** Answer for verify_audit; null = the chain is intact. */
  verdict: AuditVerdict | null;
  /** Devices the next rotation reports as not sent the new key. */
  rotationNotSent: number;
  calls: Call[];
  /** Make the next call of `cmd` reject with `err`. */
  failNext(cmd: string, err: ApiError): void;
  /** Emit a shell event to the UI. */
  emit<K extends keyof EventMap>(name: K, payload: EventMap[K]): Promise<void>;
  /** Add a pending approval and emit approval-requested + approvals-changed. */
  requestApproval(a: Partial<Approval>): Promise<Approval>;
  /** Finish a pending connect_oauth or reconnect successfully. */
  completeConnect(): void;
  callsOf(cmd: string): Record<string, unknown>[];
};

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** As the app refuses pasted authorities: PEM certificates only, never a private key. */
function checkCa(pem: unknown) {
  if (pem === null || pem === undefined) return;
  const text = String(pem);
  if (/PRIVATE KEY/.test(text)) throw err('broker_ca_unusable', 'the certificate authority you gave cannot be used: the file holds a private key; give only the certificate authorities\' certificates and keep the key elsewhere');
  if (!/-----BEGIN CERTIFICATE-----/.test(text)) throw err('broker_ca_unusable', 'the certificate authority you gave cannot be used: no certificate found; give one or more `-----BEGIN CERTIFICATE-----` blocks in PEM');
}

function err(code: string, message: string, extra: Record<string, unknown> = {}): ApiError {
  return { code, message, ...extra } as ApiError;
}

/** The broker's refusal of an admin's action by anyone else. */
const forbidden = () => err('forbidden', 'only a workspace admin can do this; ask an admin of your workspace');

/** A deliberately small Cedar sanity check, enough to demo inline problems. */
export function lintCedar(source: string): PolicyProblem[] {
  const problems: PolicyProblem[] = [];
  if (!source.trim()) return [{ message: 'policy is empty', line: null, column: null, warning: false }];
  const lines = source.split('\n');
  let depth = 0;
  lines.forEach((l, i) => {
    for (let c = 0; c < l.length; c++) {
      if (l[c] === '(') depth++;
      if (l[c] === ')') {
        depth--;
        if (depth < 0) {
          problems.push({ message: "unexpected ')'", line: i + 1, column: c + 1, warning: false });
          depth = 0;
        }
      }
    }
    const m = /\b(permitt|forbidd|alow|deny)\b/.exec(l);
    if (m) problems.push({ message: `unknown effect '${m[1]}', expected permit or forbid`, line: i + 1, column: m.index + 1, warning: false });
  });
  if (!/\b(permit|forbid)\s*\(/.test(source) && problems.length === 0)
    problems.push({ message: 'expected permit or forbid', line: 1, column: 1, warning: false });
  if (depth > 0) problems.push({ message: "missing ')'", line: lines.length, column: (lines.at(-1)?.length ?? 0) + 1, warning: false });
  return problems;
}

/** The validator's warnings on a policy that saves (here only one: a condition that is always false). */
export function cedarWarnings(source: string): PolicyProblem[] {
  return source.split('\n').flatMap((l, i) => {
    const m = /when\s*\{\s*false\s*\}/.exec(l);
    return m ? [{ message: 'policy is impossible: the policy expression evaluates to false for all valid requests', line: i + 1, column: m.index + 1, warning: true }] : [];
  });
}

export function installFakeBackend(opts: FakeOptions = {}): FakeBackend {
  const now = opts.now ?? (() => Math.floor(Date.now() / 1000));
  const t = now();
  const seed = opts.seed ?? !opts.fresh;
  let nextId = 100;
  const id = (p: string) => `${p}_${nextId++}`;
  const failures = new Map<string, ApiError>();
  let admitCountdown = opts.admitAfter ?? 1;
  let pendingConnect: { resolve: (i: Integration) => void; reject: (e: ApiError) => void; make: () => Integration; refuse?: boolean } | null = null;

  const b: FakeBackend = {
    status: seedStatus(!opts.fresh),
    integrations: seed ? seedIntegrations(t) : [],
    agents: seed ? seedAgents(t) : [],
    approvals: seed ? seedApprovals(t) : [],
    policies: seed ? seedPolicies(t) : [],
    policyRevision: 1,
    audit: seed ? seedAudit(t) : [],
    members: seed ? seedMembers(t) : [],
    invites: [],
    verdict: null,
    rotationNotSent: 0,
    calls: [],
    failNext(cmd, e) {
      failures.set(cmd, e);
    },
    async emit(name, payload) {
      await emit(name, payload);
    },
    async requestApproval(a) {
      const n = now();
      const ap: Approval = {
        id: id('appr'), status: 'pending', agent: 'agent_ci', agentName: 'ci-bot', credential: 'cred_gh',
        credentialName: 'github-main', method: 'POST', host: 'api.github.com', path: '/repos/acme/web/pulls',
        queryKeys: [], bodySize: 512, policyIds: ['approve-writes'], createdAt: n, expiresAt: n + 300,
        answeredAt: null, answeredBy: null, answerable: true, ...a,
      };
      b.approvals.unshift(ap);
      syncPending();
      await emit('approval-requested', ap);
      await emit('approvals-changed', { pending: b.status.pendingApprovals });
      return ap;
    },
    completeConnect() {
      if (pendingConnect?.refuse) {
        pendingConnect.reject(forbidden());
        pendingConnect = null;
      } else if (pendingConnect) {
        const i = pendingConnect.make();
        // A reconnect replaces the tokens of one already listed.
        if (!b.integrations.some((x) => x.id === i.id)) b.integrations.push(i);
        pendingConnect.resolve(i);
        pendingConnect = null;
      }
    },
    callsOf(cmd) {
      return b.calls.filter((c) => c.cmd === cmd).map((c) => c.args);
    },
  };

  /** As the broker: a change naming a revision is refused unless the policy is still at it
   * (0: unless the id is free). */
  function policyConflict(id: string, revision: unknown) {
    if (revision === null || revision === undefined) return;
    const current = b.policies.find((x) => x.id === id);
    if (revision === 0 && current)
      throw err('conflict', `a policy with this id already exists (revision ${current.revision}); read it and edit that one, or choose another id`);
    if (revision !== 0 && !current)
      throw err('conflict', `the policy was deleted since you read revision ${revision}; create it again if it is still wanted`);
    if (revision !== 0 && current && current.revision !== revision)
      throw err('conflict', `the policy was changed since you read revision ${revision} (revision ${current.revision} now); read it again and reapply your change`);
  }

  function isAdmin() {
    return b.status.workspace?.role === 'admin';
  }

  function syncPending() {
    b.status.pendingApprovals = b.approvals.filter((a) => a.status === 'pending' && a.answerable).length;
  }
  syncPending();

  function agentView(a: Agent): Agent {
    return structuredClone(a);
  }

  function newAgent(a: Agent): NewAgent {
    const token = `lk_agent_${Math.random().toString(36).slice(2)}${Math.random().toString(36).slice(2)}`;
    const proxyUrl = `${b.status.broker.url ?? 'http://127.0.0.1:7878'}/proxy`;
    return {
      agent: agentView(a),
      token,
      proxyUrl,
      snippets: [
        { label: 'OpenAI SDK', language: 'sh', text: `export OPENAI_BASE_URL=${proxyUrl}/openai/v1\nexport OPENAI_API_KEY=${token}` },
        { label: 'Anthropic SDK', language: 'sh', text: `export ANTHROPIC_BASE_URL=${proxyUrl}/anthropic\nexport ANTHROPIC_API_KEY=${token}` },
        { label: 'GitHub SDK', language: 'typescript', text: `import { Octokit } from "@octokit/rest";\nconst octokit = new Octokit({\n  baseUrl: "${proxyUrl}/github",\n  auth: process.env.LATCHKEY_TOKEN, // ${token.slice(0, 12)}…\n});` },
      ],
    };
  }

  function answer(idArg: unknown, status: Approval['status']): Approval {
    const a = b.approvals.find((x) => x.id === idArg);
    if (!a) throw err('not_found', 'That request no longer exists.');
    // As the shell: approving is refused before anything is issued; the broker refuses a deny.
    if (!a.answerable && status === 'approved')
      throw err('answered_by_admins', 'This is for a shared credential, so an admin answers it.');
    if (!a.answerable) throw err('not_found', 'No approval for you to answer.');
    if (a.status !== 'pending') throw err('approval_closed', 'Someone already answered this request.');
    a.status = status;
    a.answeredAt = now();
    a.answeredBy = 'You';
    syncPending();
    void emit('approvals-changed', { pending: b.status.pendingApprovals });
    return { ...a };
  }

  /** The signed-in member's name, as the broker's listings give it. */
  const you = () => b.members.find((m) => m.you)?.name ?? 'You';
  const handlers: Record<string, (a: Record<string, unknown>) => unknown> = {
    app_status: () => structuredClone(b.status),
    create_workspace: (a) => {
      checkCa(a.teamServerCa);
      if (a.teamServerUrl === null && a.creationToken != null)
        throw err('invalid_input', 'a creation token is for a team server: give its URL too, or leave the token out for this computer\'s broker');
      const local = a.teamServerUrl === null;
      const url = local ? 'http://127.0.0.1:7878' : String(a.teamServerUrl);
      b.status = {
        ...seedStatus(true),
        workspace: { ...seedStatus(true).workspace!, name: String(a.workspaceName), local, brokerUrl: url },
        broker: { url, local, reachable: true, error: null },
      };
      b.members = [{ id: 'mem_you', name: String(a.memberName), role: 'admin', createdAt: now(), you: true, devices: [
        { id: 'dev_this', name: String(a.deviceName), createdAt: now(), fingerprint: FINGERPRINT, thisDevice: true, confirmed: true },
      ] }];
      return structuredClone(b.status);
    },
    join_workspace: (a) => {
      if (!/^https?:\/\//.test(String(a.serverUrl))) throw err('invalid_url', 'The server URL must start with https://');
      checkCa(a.serverCa);
      if (String(a.inviteCode).trim().length < 4) throw err('invalid_invite', 'That invite code is not valid or has expired.');
      const name = typeof a.memberName === 'string' ? a.memberName.trim() : '';
      const deviceOf = typeof a.deviceOf === 'string' ? a.deviceOf.trim() : '';
      if (name && deviceOf) throw err('invalid_input', 'give your name or your member id, not both');
      if (!name && !deviceOf) throw err('invalid_input', 'enter your name, or your member id if this is another device of yours');
      if (deviceOf && !isMemberId(deviceOf)) throw err('invalid_member_id', `"${deviceOf}" is not a member id`);
      return { fingerprint: FINGERPRINT };
    },
    finish_join: () => {
      if (admitCountdown-- > 0) throw err('not_admitted_yet', 'An admin has not admitted this device yet.');
      b.status = { ...seedStatus(true), workspace: { ...seedStatus(true).workspace!, local: false, role: 'member' } };
      return structuredClone(b.status);
    },
    list_providers: (a) => {
      const q = String(a.query ?? '').trim().toLowerCase();
      return PROVIDERS.filter((p) => !q || p.name.toLowerCase().includes(q) || p.id.includes(q));
    },
    list_integrations: () => structuredClone(b.integrations),
    add_api_key: (a) => {
      const p = PROVIDERS.find((x) => x.id === a.provider);
      if (!p) throw err('unknown_provider', 'Unknown provider.');
      opts.inspectSecret?.(String(a.secret));
      if (a.shared && !isAdmin()) throw forbidden();
      if (String(a.secret).length < 8) throw err('invalid_key', 'That key looks too short.');
      const i: Integration = {
        id: id('cred'), name: String(a.name), provider: p.id, providerName: p.name, kind: 'api_key',
        upstreamBaseUrl: (a.baseUrl as string | null) ?? p.apiBaseUrl, allowedHosts: p.allowedHosts,
        owner: a.shared ? 'shared' : 'personal', status: 'active', scopes: [], account: (a.account as string | null) ?? null, expiresAt: null, lastUsedAt: null, keyVersion: 1,
      };
      b.integrations.push(i);
      return { ...i };
    },
    connect_oauth: (a) => {
      const p = PROVIDERS.find((x) => x.id === a.provider);
      if (!p) throw err('unknown_provider', 'Unknown provider.');
      // One sign-in at a time, as the shell: another waits until it ends or is cancelled.
      if (pendingConnect) throw err('connect_in_progress', 'a sign-in is already under way: finish or cancel it first');
      // The broker refuses a member's shared credential only when the sign-in stores it.
      const refuse = Boolean(a.shared) && !isAdmin();
      return new Promise<Integration>((resolve, reject) => {
        pendingConnect = {
          resolve,
          reject,
          refuse,
          make: () => ({
            id: id('cred'), name: String(a.name), provider: p.id, providerName: p.name, kind: 'oauth2',
            upstreamBaseUrl: p.apiBaseUrl, allowedHosts: p.allowedHosts, owner: a.shared ? 'shared' : 'personal',
            status: 'active', scopes: (a.scopes as string[] | null) ?? p.defaultScopes, account: 'you@example.com', expiresAt: now() + 86400 * 30,
            lastUsedAt: null, keyVersion: 1,
          }),
        };
        const ms = opts.oauthAutoCompleteMs ?? null;
        if (ms !== null) setTimeout(() => b.completeConnect(), ms);
      });
    },
    cancel_connect: () => {
      pendingConnect?.reject(err('connect_cancelled', 'The sign-in was cancelled.'));
      pendingConnect = null;
      return null;
    },
    reconnect: (a) => {
      const i = b.integrations.find((x) => x.id === a.id);
      if (!i) throw err('not_found', 'That integration no longer exists.');
      // A sign-in in the browser, as connect_oauth: it takes the one sign-in slot.
      if (pendingConnect) throw err('connect_in_progress', 'a sign-in is already under way: finish or cancel it first');
      return new Promise<Integration>((resolve, reject) => {
        pendingConnect = {
          resolve,
          reject,
          make: () => {
            i.status = 'active';
            i.expiresAt = now() + 86400 * 30;
            if (opts.reconnectAs !== undefined) i.account = opts.reconnectAs;
            return { ...i };
          },
        };
        const ms = opts.oauthAutoCompleteMs ?? null;
        if (ms !== null) setTimeout(() => b.completeConnect(), ms);
      });
    },
    set_integration_account: (a) => {
      const i = b.integrations.find((x) => x.id === a.id);
      if (!i) throw err('not_found', 'That integration no longer exists.');
      if (i.owner === 'shared' && !isAdmin()) throw forbidden();
      const name = String(a.account ?? '').trim();
      i.account = name || null;
      return { ...i };
    },
    disconnect: (a) => {
      const i = b.integrations.find((x) => x.id === a.id);
      if (!i) throw err('not_found', 'That integration no longer exists.');
      b.integrations = b.integrations.filter((x) => x.id !== a.id);
      return { revokedAtProvider: i.kind === 'oauth2' };
    },
    list_agents: () => b.agents.map(agentView),
    create_agent: (a) => {
      const name = String(a.name).trim();
      if (!name) throw err('invalid_name', 'Give the agent a name.');
      if (b.agents.some((x) => x.name === name && !x.revokedAt)) throw err('name_taken', `An agent called ${name} already exists.`);
      const ag: Agent = { id: id('agent'), name, createdAt: now(), revokedAt: null, lastUsedAt: null, grants: [] };
      b.agents.push(ag);
      return newAgent(ag);
    },
    regenerate_agent: (a) => {
      const ag = b.agents.find((x) => x.id === a.id);
      if (!ag) throw err('not_found', 'That agent no longer exists.');
      return newAgent(ag);
    },
    revoke_agent: (a) => {
      const ag = b.agents.find((x) => x.id === a.id);
      if (ag) ag.revokedAt = now();
      return null;
    },
    create_grant: (a) => {
      const ag = b.agents.find((x) => x.id === a.agent);
      const cr = b.integrations.find((x) => x.id === a.credential);
      if (!ag || !cr) throw err('not_found', 'Agent or integration not found.');
      const g = {
        id: id('grant'), agent: ag.id, credential: cr.id, credentialName: cr.name, methods: a.methods as string[],
        pathPatterns: a.pathPatterns as string[], expiresAt: now() + Number(a.durationSecs), createdAt: now(), revokedAt: null,
      };
      ag.grants.push(g);
      return { grant: { ...g }, capability: `AQI${g.id}-capability` };
    },
    revoke_grant: (a) => {
      for (const ag of b.agents) for (const g of ag.grants) if (g.id === a.id) g.revokedAt = now();
      return null;
    },
    list_approvals: (a) =>
      b.approvals.filter((x) => a.all || x.status === 'pending').map((x) => ({ ...x })),
    approve_once: (a) => answer(a.id, 'approved'),
    approve_for: (a) => answer(a.id, 'approved'),
    deny: (a) => answer(a.id, 'denied'),
    list_policies: () => structuredClone(b.policies),
    policy_templates: () => structuredClone(TEMPLATES),
    save_policy: (a) => {
      if (!isAdmin()) throw forbidden();
      const problems = lintCedar(String(a.source));
      if (problems.length)
        throw err('policy_invalid', problems.map((p) => (p.line ? `line ${p.line}: ${p.message}` : p.message)).join('; '), { problems });
      policyConflict(String(a.id), a.revision);
      const p: Policy = { id: String(a.id), description: String(a.description), source: String(a.source), enabled: Boolean(a.enabled), updatedAt: now(), revision: ++b.policyRevision, problems: [] };
      b.policies = [...b.policies.filter((x) => x.id !== p.id), p];
      // As the shell: the stored policy's problems, then the validator's warnings (not stored).
      return { ...p, problems: cedarWarnings(p.source) };
    },
    delete_policy: (a) => {
      if (!isAdmin()) throw forbidden();
      if (!b.policies.some((x) => x.id === a.id)) throw err('not_found', 'no policy with this id in your workspace');
      policyConflict(String(a.id), a.revision);
      b.policyRevision++;
      b.policies = b.policies.filter((x) => x.id !== a.id);
      return null;
    },
    check_call: (a): CheckResult => {
      const m = String(a.method).toUpperCase();
      if (m === 'DELETE') return { allowed: false, verdict: 'deny', policyIds: ['deny-deletes'], reason: 'denied: a policy forbids it' };
      if (m === 'GET' || m === 'HEAD') return { allowed: true, verdict: 'allow', policyIds: ['read-only'], reason: 'allowed: a policy permits it and none forbids it' };
      // A write under an enabled `@approval("required")` policy waits for someone to approve it.
      const asks = b.policies.filter((p) => p.enabled && p.source.includes('@approval')).map((p) => p.id);
      if (asks.length) return { allowed: false, verdict: 'approval', policyIds: asks, reason: 'held for approval: it goes through once a member approves it' };
      return { allowed: false, verdict: 'deny', policyIds: [], reason: 'denied: no policy permits it' };
    },
    check_inject: (a): CheckResult => {
      if (String(a.command) === 'gh' && Number(a.lifetimeSecs) <= 3600)
        return { allowed: true, verdict: 'allow', policyIds: ['short-named-injects'], reason: 'allowed: a policy permits it and none forbids it' };
      return { allowed: false, verdict: 'deny', policyIds: [], reason: 'denied: no policy permits it' };
    },
    list_audit: (a) =>
      b.audit
        .filter((r) => (!a.agent || r.agent === a.agent) && (!a.credentialName || r.credentialName === a.credentialName))
        .filter((r) => (!a.decision || r.decision === a.decision) && (!a.since || r.at >= Number(a.since)))
        .slice(0, Number(a.limit) || 500),
    verify_audit: () =>
      b.verdict ??
      ({ ok: true, records: b.audit.length, head: 'b3f1c0de', firstBrokenSeq: null, reason: null, anchoredSeq: null, checked: b.audit.length, checkedFrom: b.audit.length ? 1 : null }),
    export_audit: (a) => ({ path: `~/Downloads/latchkey-audit.${a.format}` }),
    list_members: () => structuredClone(b.members),
    create_invite: (a) => {
      const invite = { id: `inv_${b.invites.length + 1}`, role: a.role as Role, expiresAt: now() + (Number(a.validForSecs) || 86400) };
      b.invites.push({ ...invite, deviceOf: null, madeBy: you(), yours: true, createdAt: now() });
      return { ...invite, code: 'LK-7Q4M-2XRT-9PHD' };
    },
    create_device_invite: (a) => {
      const memberId = b.status.workspace?.memberId;
      if (!memberId) throw err('not_set_up', 'This computer has no workspace yet.');
      const invite = { id: `inv_${b.invites.length + 1}`, memberId, expiresAt: now() + (Number(a.validForSecs) || 86400) };
      b.invites.push({ id: invite.id, role: null, deviceOf: you(), madeBy: you(), yours: true, createdAt: now(), expiresAt: invite.expiresAt });
      return { ...invite, code: 'LK-D3VC-8KWN-4TQA' };
    },
    list_invites: () => structuredClone(b.invites),
    revoke_invite: (a) => {
      if (!b.invites.some((i) => i.id === a.id)) throw err('not_found', 'No pending invite with this id in your workspace: it may have expired or been revoked.');
      b.invites = b.invites.filter((i) => i.id !== a.id);
      return structuredClone(b.invites);
    },
    admit_device: (a) => {
      const dev = b.members.flatMap((m) => m.devices).find((d) => d.id === a.deviceId);
      if (!dev) throw err('not_found', 'That device is no longer waiting.');
      if (dev.fingerprint !== a.fingerprint) throw err('fingerprint_mismatch', 'The fingerprint does not match this device.');
      dev.confirmed = true;
      return structuredClone(b.members);
    },
    remove_member: (a) => {
      b.members = b.members.filter((m) => m.id !== a.id);
      return structuredClone(b.members);
    },
    remove_device: (a) => {
      for (const m of b.members) m.devices = m.devices.filter((d) => d.id !== a.id);
      return structuredClone(b.members);
    },
    rotate_keys: async () => {
      const total = Math.max(1, b.integrations.length);
      const step = opts.rotationStepMs ?? 0;
      for (const phase of ['sealing', 'verifying', 'swapping'] as const) {
        for (let i = 1; i <= total; i++) {
          await emit('rotation-progress', { phase, done: i, total });
          if (step) await sleep(step);
        }
      }
      await emit('rotation-progress', { phase: 'done', done: total, total });
      return { credentials: b.integrations.length, notSent: b.rotationNotSent, workspaceKeyVersion: 3, memberKeyVersion: 2 };
    },
    export_recovery_kit: (a) => {
      if (String(a.passphrase).length < 12) throw err('weak_passphrase', 'Use a passphrase of at least 12 characters.');
      return { path: '~/Downloads/latchkey-recovery-kit.pdf' };
    },
    import_recovery_kit: (a) => {
      if (!String(a.kit).startsWith('LATCHKEY RECOVERY KIT v1'))
        throw err('recovery_kit_refused', 'this is not a latchkey recovery kit: it must start with the line "LATCHKEY RECOVERY KIT v1"');
      if (a.passphrase !== 'correct horse battery staple')
        throw err('recovery_kit_refused', 'the passphrase is wrong, or the kit was altered: nothing was imported');
      return { workspaceKeys: [1], memberKeys: [1], alreadyPresent: 1 };
    },
    lock: () => {
      b.status.locked = true;
      return structuredClone(b.status);
    },
    unlock: () => {
      b.status.locked = false;
      return structuredClone(b.status);
    },
    set_broker_ca: (a) => {
      checkCa(a.pem);
      if (b.status.workspace) {
        // A stand-in fingerprint per pasted certificate: the fake does not parse X.509.
        const count = a.pem === null ? 0 : (String(a.pem).match(/-----BEGIN CERTIFICATE-----/g) ?? []).length;
        b.status.workspace.brokerCa = Array.from({ length: count }, (_, i) => `AB:CD:${String(i).padStart(2, '0')}`);
        b.status.workspace.brokerCaPem = count > 0 ? String(a.pem) : null;
      }
      void emit('status-changed', structuredClone(b.status));
      return structuredClone(b.status);
    },
    set_paused: (a) => {
      b.status.paused = Boolean(a.paused);
      void emit('status-changed', structuredClone(b.status));
      return structuredClone(b.status);
    },
    open_external: (a) => {
      if (!/^https?:\/\//.test(String(a.url))) throw err('invalid_url', 'Only web links can be opened.');
      if (typeof window !== 'undefined' && !('__vitest_worker__' in globalThis)) window.open(String(a.url), '_blank', 'noopener');
      return null;
    },
  };

  mockIPC(
    async (cmd, payload) => {
      const args = (payload ?? {}) as Record<string, unknown>;
      // Never record a secret typed by the user, even in the fake.
      const recorded = 'secret' in args ? { ...args, secret: '<redacted>' } : args;
      b.calls.push({ cmd, args: recorded });
      const f = failures.get(cmd);
      if (f) {
        failures.delete(cmd);
        throw f;
      }
      const h = handlers[cmd];
      if (!h) throw err('unknown_command', `unknown command ${cmd}`);
      return await h(args);
    },
    { shouldMockEvents: true },
  );
  return b;
}

export function uninstallFakeBackend(): void {
  clearMocks();
}
