import { afterEach, describe, expect, it } from 'vitest';
import { cleanup } from '@testing-library/svelte';
import { clearMocks, mockIPC } from '@tauri-apps/api/mocks';
import * as api from '../lib/api/commands';
import { on } from '../lib/api/events';
import { toApiError } from '../lib/api/errors';
import { settle, setup } from '../lib/testing/helpers';

afterEach(() => {
  cleanup();
  clearMocks();
});

describe('command wrappers', () => {
  it('send the contract command names with camelCase argument objects', async () => {
    const seen: [string, unknown][] = [];
    mockIPC((cmd, args) => {
      seen.push([cmd, args]);
      return null;
    });
    await api.createGrant({ agent: 'a', credential: 'c', methods: ['GET'], pathPatterns: ['/x'], durationSecs: 900 });
    await api.approveFor('ap1', 3600);
    await api.listAudit({ agent: null, credentialName: null, decision: 'denied', since: null, limit: 50 });
    await api.disconnect('cred1', true);
    expect(seen).toEqual([
      ['create_grant', { agent: 'a', credential: 'c', methods: ['GET'], pathPatterns: ['/x'], durationSecs: 900 }],
      ['approve_for', { id: 'ap1', durationSecs: 3600 }],
      ['list_audit', { agent: null, credentialName: null, decision: 'denied', since: null, limit: 50 }],
      ['disconnect', { id: 'cred1', force: true }],
    ]);
  });

  it('reject with {code, message}, keeping policy problems', async () => {
    mockIPC(() => {
      throw { code: 'policy_invalid', message: 'line 2: bad', problems: [{ message: 'bad', line: 2, column: 3 }] };
    });
    await expect(api.savePolicy({ id: 'p', description: '', source: 'x', enabled: true, revision: null })).rejects.toEqual({
      code: 'policy_invalid',
      message: 'line 2: bad',
      problems: [{ message: 'bad', line: 2, column: 3 }],
    });
  });

  it('turn a bare string rejection into a displayable error', () => {
    expect(toApiError('broker offline')).toEqual({ code: 'unknown', message: 'broker offline' });
    expect(toApiError(undefined).message, 'a person must always see some message').toBeTruthy();
  });
});

describe('events', () => {
  it('delivers payloads and stops after unsubscribe', async () => {
    const b = setup();
    const got: number[] = [];
    const off = on('approvals-changed', (p) => got.push(p.pending));
    await settle();
    await b.emit('approvals-changed', { pending: 2 });
    off();
    await b.emit('approvals-changed', { pending: 5 });
    expect(got, 'the second event came after unsubscribe and must be ignored').toEqual([2]);
  });
});

describe('without the desktop shell', () => {
  it('fails with a readable no_shell error instead of calling anything', async () => {
    clearMocks();
    delete (window as unknown as Record<string, unknown>).__TAURI_INTERNALS__;
    await expect(api.appStatus()).rejects.toMatchObject({ code: 'no_shell', message: expect.stringMatching(/desktop app/) });
  });
});
