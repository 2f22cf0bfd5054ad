// Sample data for the in-memory backend (tests and the browser demo).
import type { Agent, AppStatus, Approval, AuditRow, Integration, Member, Policy, PolicyTemplate, Provider } from '../api/types';

export const FINGERPRINT = '4F2A-91C3-7D0E-B85A';

export function seedStatus(setUp = true): AppStatus {
  return {
    profile: 'default',
    setUp,
    workspace: setUp
      ? {
          id: 'ws_1',
          name: 'Acme',
          brokerUrl: 'http://127.0.0.1:7878',
          local: true,
          memberId: 'mem_you',
          role: 'admin',
          deviceId: 'dev_this',
          fingerprint: FINGERPRINT,
          brokerCa: [],
          brokerCaPem: null,
        }
      : null,
    broker: setUp
      ? { url: 'http://127.0.0.1:7878', local: true, reachable: true, error: null }
      : { url: null, local: true, reachable: false, error: null },
    paused: false,
    pendingApprovals: 0,
    locked: false,
  };
}

export const PROVIDERS: Provider[] = [
  { id: 'github', name: 'GitHub', kind: 'oauth2', custom: false, accountSpecific: false, needsEndpoints: false, apiBaseUrl: 'https://api.github.com', allowedHosts: ['api.github.com'], defaultScopes: ['repo', 'read:org'], needsClientSecret: true, docs: 'https://docs.github.com/en/apps/oauth-apps' },
  { id: 'google', name: 'Google Workspace', kind: 'oauth2', custom: false, accountSpecific: false, needsEndpoints: false, apiBaseUrl: 'https://www.googleapis.com', allowedHosts: ['www.googleapis.com'], defaultScopes: ['openid', 'email'], needsClientSecret: false, docs: null },
  { id: 'slack', name: 'Slack', kind: 'oauth2', custom: false, accountSpecific: false, needsEndpoints: false, apiBaseUrl: 'https://slack.com/api', allowedHosts: ['slack.com'], defaultScopes: ['chat:write', 'channels:read'], needsClientSecret: true, docs: null },
  { id: 'openai', name: 'OpenAI', kind: 'api_key', custom: false, accountSpecific: false, needsEndpoints: false, apiBaseUrl: 'https://api.openai.com', allowedHosts: ['api.openai.com'], defaultScopes: [], needsClientSecret: false, docs: 'https://platform.openai.com/api-keys' },
  { id: 'anthropic', name: 'Anthropic', kind: 'api_key', custom: false, accountSpecific: false, needsEndpoints: false, apiBaseUrl: 'https://api.anthropic.com', allowedHosts: ['api.anthropic.com'], defaultScopes: [], needsClientSecret: false, docs: null },
  { id: 'zendesk', name: 'Zendesk', kind: 'oauth2', custom: false, accountSpecific: true, needsEndpoints: true, apiBaseUrl: '', allowedHosts: ['*.zendesk.com'], defaultScopes: ['read'], needsClientSecret: false, docs: null },
  { id: 'stripe', name: 'Stripe', kind: 'api_key', custom: false, accountSpecific: false, needsEndpoints: false, apiBaseUrl: 'https://api.stripe.com', allowedHosts: ['api.stripe.com'], defaultScopes: [], needsClientSecret: false, docs: null },
];

export function seedIntegrations(now: number): Integration[] {
  return [
    { id: 'cred_gh', name: 'github-main', provider: 'github', providerName: 'GitHub', kind: 'oauth2', upstreamBaseUrl: 'https://api.github.com', allowedHosts: ['api.github.com'], owner: 'shared', status: 'active', scopes: ['repo', 'read:org'], account: 'octocat', expiresAt: now + 86400 * 20, lastUsedAt: now - 300, keyVersion: 2 },
    { id: 'cred_oai', name: 'openai-prod', provider: 'openai', providerName: 'OpenAI', kind: 'api_key', upstreamBaseUrl: 'https://api.openai.com', allowedHosts: ['api.openai.com'], owner: 'personal', status: 'active', scopes: [], account: null, expiresAt: null, lastUsedAt: now - 3600 * 5, keyVersion: 1 },
    { id: 'cred_slack', name: 'slack-ops', provider: 'slack', providerName: 'Slack', kind: 'oauth2', upstreamBaseUrl: 'https://slack.com/api', allowedHosts: ['slack.com'], owner: 'shared', status: 'reconnect_needed', scopes: ['chat:write'], account: 'ops-bot', expiresAt: now - 3600, lastUsedAt: null, keyVersion: 1 },
  ];
}

export function seedAgents(now: number): Agent[] {
  return [
    { id: 'agent_ci', name: 'ci-bot', createdAt: now - 86400 * 9, revokedAt: null, lastUsedAt: now - 120, grants: [
      { id: 'grant_1', agent: 'agent_ci', credential: 'cred_gh', credentialName: 'github-main', methods: ['GET'], pathPatterns: ['/repos/acme/*'], expiresAt: now + 3600 * 7, createdAt: now - 3600, revokedAt: null },
    ] },
    { id: 'agent_writer', name: 'release-writer', createdAt: now - 86400 * 2, revokedAt: null, lastUsedAt: null, grants: [] },
  ];
}

export function seedApprovals(now: number): Approval[] {
  return [
    { id: 'appr_1', status: 'pending', agent: 'agent_ci', agentName: 'ci-bot', credential: 'cred_gh', credentialName: 'github-main', method: 'POST', host: 'api.github.com', path: '/repos/acme/web/issues', queryKeys: ['labels'], bodySize: 2048, policyIds: ['require-approval-writes'], createdAt: now - 20, expiresAt: now + 280, answeredAt: null, answeredBy: null, answerable: true },
    { id: 'appr_2', status: 'pending', agent: 'agent_writer', agentName: 'release-writer', credential: 'cred_oai', credentialName: 'openai-prod', method: 'DELETE', host: 'api.openai.com', path: '/v1/files/file-abc', queryKeys: [], bodySize: null, policyIds: ['deny-deletes'], createdAt: now - 5, expiresAt: now + 115, answeredAt: null, answeredBy: null, answerable: true },
    { id: 'appr_0', status: 'approved', agent: 'agent_ci', agentName: 'ci-bot', credential: 'cred_gh', credentialName: 'github-main', method: 'GET', host: 'api.github.com', path: '/user', queryKeys: [], bodySize: null, policyIds: [], createdAt: now - 7200, expiresAt: now - 6900, answeredAt: now - 7100, answeredBy: 'You', answerable: true },
  ];
}

export const TEMPLATES: PolicyTemplate[] = [
  { id: 'read-only', title: 'Read-only access', description: 'Allow GET and HEAD on any integration.', source: 'permit (\n  principal,\n  action in [Action::"GET", Action::"HEAD"],\n  resource\n);\n' },
  { id: 'approve-writes', title: 'Ask before writes', description: 'Writes need a human approval.', source: '@approval("required")\npermit (\n  principal,\n  action in [Action::"POST", Action::"PUT", Action::"PATCH"],\n  resource\n);\n' },
  { id: 'deny-deletes', title: 'Never delete', description: 'Forbid DELETE everywhere.', source: 'forbid (\n  principal,\n  action == Action::"DELETE",\n  resource\n);\n' },
];

export function seedPolicies(now: number): Policy[] {
  return [
    { id: 'read-only', description: 'Agents may read', source: TEMPLATES[0].source, enabled: true, updatedAt: now - 86400, revision: 1, problems: [] },
    { id: 'deny-deletes', description: 'No deletes', source: TEMPLATES[2].source, enabled: true, updatedAt: now - 86400 * 3, revision: 1, problems: [] },
  ];
}

export function seedAudit(now: number): AuditRow[] {
  const rows: AuditRow[] = [];
  const agents = [
    ['agent_ci', 'ci-bot'],
    ['agent_writer', 'release-writer'],
  ] as const;
  let seq = 1;
  for (let h = 23; h >= 0; h--) {
    for (const [i, [id, name]] of agents.entries()) {
      const n = (h * 7 + i * 3) % 5;
      for (let k = 0; k < n; k++) {
        const denied = (h + k + i) % 4 === 0;
        rows.push({
          seq: seq++, at: now - h * 3600 - k * 60, kind: 'call', agent: id, agentName: name,
          credentialName: i === 0 ? 'github-main' : 'openai-prod',
          method: denied ? 'DELETE' : 'GET', host: i === 0 ? 'api.github.com' : 'api.openai.com',
          path: i === 0 ? '/repos/acme/web' : '/v1/models', decision: denied ? 'denied' : 'allowed',
          reason: denied ? 'forbidden by policy' : null, policyIds: denied ? ['deny-deletes'] : ['read-only'],
          upstreamStatus: denied ? null : 200, subject: null,
        });
      }
    }
  }
  return rows.reverse();
}

export function seedMembers(now: number): Member[] {
  return [
    { id: 'mem_you', name: 'You', role: 'admin', createdAt: now - 86400 * 30, you: true, devices: [
      { id: 'dev_this', name: 'This laptop', createdAt: now - 86400 * 30, fingerprint: FINGERPRINT, thisDevice: true, confirmed: true },
    ] },
    { id: 'mem_sam', name: 'Sam Rivera', role: 'member', createdAt: now - 86400 * 4, you: false, devices: [
      { id: 'dev_sam', name: "Sam's desktop", createdAt: now - 86400 * 4, fingerprint: '9B1C-22D4-E0F7-6A13', thisDevice: false, confirmed: false },
    ] },
  ];
}
