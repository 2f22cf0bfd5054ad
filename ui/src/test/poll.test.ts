// Screens whose lists change as agents call read them again while the window is visible.
import { afterEach, describe, expect, it, vi } from 'vitest';
import { cleanup, render, screen, waitFor, within } from '@testing-library/svelte';
import { clearMocks } from '@tauri-apps/api/mocks';
import Agents from '../screens/Agents.svelte';
import Integrations from '../screens/Integrations.svelte';
import App from '../App.svelte';
import Members from '../screens/Members.svelte';
import { refreshStatus } from '../lib/stores/status.svelte';
import { setup } from '../lib/testing/helpers';
import { LIST_POLL_MS } from '../lib/util/poll';

let visibility: DocumentVisibilityState = 'visible';
Object.defineProperty(document, 'visibilityState', { configurable: true, get: () => visibility });

function setVisibility(state: DocumentVisibilityState) {
  visibility = state;
  document.dispatchEvent(new Event('visibilitychange'));
}

afterEach(() => {
  vi.useRealTimers();
  visibility = 'visible';
  cleanup();
  clearMocks();
});

const nowSecs = () => Math.floor(Date.now() / 1000);

describe('open lists', () => {
  it('the agents screen shows a call made while it is open, and does not read while hidden', async () => {
    vi.useFakeTimers({ toFake: ['setInterval', 'clearInterval'] });
    const b = setup();
    render(Agents);
    const card = await screen.findByTestId('agent-ci-bot');
    const reads = () => b.callsOf('list_agents').length;
    const before = reads();

    b.agents.find((a) => a.name === 'ci-bot')!.lastUsedAt = nowSecs();
    await vi.advanceTimersByTimeAsync(LIST_POLL_MS);
    await waitFor(() => expect(within(card).getByText(/last used just now/), 'the next read shows the call').toBeInTheDocument());
    expect(reads()).toBe(before + 1);

    setVisibility('hidden');
    await vi.advanceTimersByTimeAsync(LIST_POLL_MS * 3);
    expect(reads(), 'a hidden window does not read').toBe(before + 1);
    setVisibility('visible');
    await waitFor(() => expect(reads(), 'showing the window reads at once').toBe(before + 2));
  });

  it('the integrations screen shows a status that changed while it is open', async () => {
    vi.useFakeTimers({ toFake: ['setInterval', 'clearInterval'] });
    const b = setup();
    render(Integrations);
    const status = () => within(screen.getByTestId('integration-github-main')).getByTestId('integration-status');
    await waitFor(() => expect(status()).toHaveTextContent('Active'));
    b.integrations.find((i) => i.name === 'github-main')!.status = 'reconnect_needed';
    await vi.advanceTimersByTimeAsync(LIST_POLL_MS);
    await waitFor(() => expect(status(), 'a refused refresh shows up without leaving the screen').toHaveTextContent('Reconnect needed'));
  });
});

describe('members', () => {
  it('the members screen shows a device that joined while it is open', async () => {
    vi.useFakeTimers({ toFake: ['setInterval', 'clearInterval'] });
    const b = setup();
    await refreshStatus();
    render(Members);
    const me = await screen.findByTestId('member-You');
    b.members.find((m) => m.you)!.devices.push({ id: 'dev_new', name: 'New laptop', createdAt: nowSecs(), fingerprint: '1234-5678-9ABC-DEF0', thisDevice: false, confirmed: false });
    await vi.advanceTimersByTimeAsync(LIST_POLL_MS);
    await waitFor(() => expect(within(me).getByTestId('device-dev_new'), 'the next read lists it, as the sidebar count does').toBeInTheDocument());
  });
});

describe('app status', () => {
  it('the window shows a pause, an unreachable broker and a lock made outside it', async () => {
    vi.useFakeTimers({ toFake: ['setInterval', 'clearInterval'] });
    const b = setup();
    render(App);
    await screen.findByTestId('nav-integrations');

    // As the CLI would: the shell's state changes, and no event tells the window.
    b.status.paused = true;
    b.status.broker = { ...b.status.broker, reachable: false, error: 'connection refused' };
    await vi.advanceTimersByTimeAsync(LIST_POLL_MS);
    expect(await screen.findByTestId('paused-banner'), 'a pause made outside the window shows').toBeInTheDocument();
    expect(screen.getByTestId('broker-status'), 'a broker that stopped answering shows').toHaveTextContent('Broker unreachable');

    const reads = () => b.callsOf('app_status').length;
    setVisibility('hidden');
    const hidden = reads();
    b.status.locked = true;
    await vi.advanceTimersByTimeAsync(LIST_POLL_MS * 3);
    expect(reads(), 'a hidden window does not read').toBe(hidden);
    setVisibility('visible');
    expect(await screen.findByTestId('lock-screen'), 'a keychain locked outside the app locks the window').toBeInTheDocument();
  });
});
