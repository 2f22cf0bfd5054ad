// The Members badge: devices waiting to be admitted that this member may admit, read by
// polling while the window is visible and set at once by admit and remove.
import { afterEach, describe, expect, it, vi } from 'vitest';
import { cleanup, render, screen, waitFor, within } from '@testing-library/svelte';
import userEvent from '@testing-library/user-event';
import { clearMocks } from '@tauri-apps/api/mocks';
import App from '../App.svelte';
import { admissions, countAwaiting, noteMembers, POLL_MS, refreshAdmissions } from '../lib/stores/admissions.svelte';
import { refreshStatus } from '../lib/stores/status.svelte';
import { seedMembers } from '../lib/testing/seed';
import { setup, settle } from '../lib/testing/helpers';
import type { FakeBackend } from '../lib/testing/fakeBackend';

const BADGE = 'pending-devices-count';

let visibility: DocumentVisibilityState = 'visible';
Object.defineProperty(document, 'visibilityState', { configurable: true, get: () => visibility });

afterEach(() => {
  vi.useRealTimers();
  visibility = 'visible';
  cleanup();
  clearMocks();
});

function setVisibility(state: DocumentVisibilityState) {
  visibility = state;
  document.dispatchEvent(new Event('visibilitychange'));
}

/** Grace's laptop joined with an invite and waits. */
function joins(b: FakeBackend, id = 'dev_grace') {
  b.members.push({ id: 'mem_grace', name: 'Grace', role: 'member', createdAt: 1, you: false, devices: [
    { id, name: "Grace's laptop", createdAt: 1, fingerprint: '5D2E-7A10-C3B9-0F44', thisDevice: false, confirmed: false },
  ] });
}

/** Polling with only the interval faked: the fake backend's answers still arrive by themselves. */
function fakeInterval() {
  vi.useFakeTimers({ toFake: ['setInterval', 'clearInterval'] });
}

describe('which devices count', () => {
  it('counts for an admin every device not confirmed here, and for a member only their own', () => {
    const members = seedMembers(1_800_000_000);
    const me = members.find((m) => m.you)!;
    me.devices.push({ id: 'dev_desk', name: 'Desk PC', createdAt: 1, fingerprint: '3C7E-0A19-D4B2-88F1', thisDevice: false, confirmed: false });
    me.devices.push({ id: 'dev_old', name: 'Old PC', createdAt: 1, fingerprint: '1111-2222-3333-4444', thisDevice: false, confirmed: true });
    expect(countAwaiting(members, true), "Sam's desktop and my desk PC; never this device or one admitted before").toBe(2);
    expect(countAwaiting(members, false), "a member admits their own devices only, not Sam's").toBe(1);
    members.forEach((m) => m.devices.forEach((d) => (d.confirmed = true)));
    expect(countAwaiting(members, true), 'confirmed devices wait for nothing').toBe(0);
  });
});

describe('the Members badge', () => {
  it('shows the count on Members in the sidebar', async () => {
    const b = setup();
    joins(b);
    render(App);
    const badge = await screen.findByTestId(BADGE);
    expect(badge).toHaveTextContent('2');
    expect(badge).toHaveAccessibleName('2 waiting to be admitted');
    expect(within(screen.getByTestId('nav-members')).getByTestId(BADGE), 'on the Members entry').toBe(badge);
  });

  it('is hidden when nothing waits', async () => {
    const b = setup();
    b.members.forEach((m) => m.devices.forEach((d) => (d.confirmed = true)));
    render(App);
    await screen.findByTestId('nav-members');
    await waitFor(() => expect(b.callsOf('list_members').length).toBeGreaterThan(0));
    await settle();
    expect(admissions.count).toBe(0);
    expect(screen.queryByTestId(BADGE), 'a zero is not shown').toBeNull();
  });

  it('polls every 10 seconds while the window is visible, and reads at once when it shows again', async () => {
    fakeInterval();
    const b = setup();
    render(App);
    expect(await screen.findByTestId(BADGE)).toHaveTextContent('1');
    const reads = () => b.callsOf('list_members').length;
    const before = reads();

    joins(b);
    await vi.advanceTimersByTimeAsync(POLL_MS);
    await waitFor(() => expect(screen.getByTestId(BADGE), 'the joined device is counted by the next poll').toHaveTextContent('2'));
    expect(reads()).toBe(before + 1);

    setVisibility('hidden');
    joins(b, 'dev_grace2');
    await vi.advanceTimersByTimeAsync(POLL_MS * 3);
    expect(reads(), 'a hidden window does not poll').toBe(before + 1);
    expect(screen.getByTestId(BADGE)).toHaveTextContent('2');

    setVisibility('visible');
    await waitFor(() => expect(screen.getByTestId(BADGE), 'showing the window reads at once').toHaveTextContent('3'));
  });

  it('reads again when the person changes screens', async () => {
    const b = setup();
    const user = userEvent.setup();
    render(App);
    expect(await screen.findByTestId(BADGE)).toHaveTextContent('1');
    joins(b);
    await user.click(screen.getByTestId('nav-agents'));
    await waitFor(() => expect(screen.getByTestId(BADGE)).toHaveTextContent('2'));
  });

  it('keeps the last count when a read fails, and does not throw', async () => {
    const b = setup();
    render(App);
    expect(await screen.findByTestId(BADGE)).toHaveTextContent('1');
    await settle();
    joins(b);
    b.failNext('list_members', { code: 'broker_unreachable', message: 'The broker does not answer.' });
    await expect(refreshAdmissions(), 'a failed read resolves').resolves.toBeUndefined();
    expect(admissions.error?.code).toBe('broker_unreachable');
    expect(screen.getByTestId(BADGE), 'the last count stays').toHaveTextContent('1');
    expect(screen.queryByRole('alert'), 'a badge read that failed is no alarm').toBeNull();

    await refreshAdmissions();
    expect(admissions.error, 'the next good read clears the error').toBeNull();
    expect(screen.getByTestId(BADGE)).toHaveTextContent('2');
  });

  it('keeps the count an admit set when a read that started before it answers after it', async () => {
    const b = setup();
    joins(b);
    await refreshStatus();
    await refreshAdmissions();
    expect(admissions.count).toBe(2);
    const earlier = refreshAdmissions();
    const admitted = structuredClone(b.members);
    admitted.forEach((m) => m.devices.forEach((d) => (d.confirmed = true)));
    noteMembers(admitted);
    await earlier;
    expect(admissions.count, 'the older list must not bring the admitted devices back').toBe(0);
  });

  it('goes down at once when a device is admitted, without waiting for the poll', async () => {
    fakeInterval();
    const b = setup();
    await refreshStatus();
    const user = userEvent.setup();
    render(App);
    expect(await screen.findByTestId(BADGE)).toHaveTextContent('1');
    await user.click(screen.getByTestId('nav-members'));
    await user.click(within(await screen.findByTestId('device-dev_sam')).getByTestId('admit-device'));
    await user.type(screen.getByTestId('admit-fingerprint'), '9B1C-22D4-E0F7-6A13');
    await user.click(screen.getByTestId('admit-submit'));
    await waitFor(() => expect(b.callsOf('admit_device')).toHaveLength(1));
    await waitFor(() => expect(screen.queryByTestId(BADGE)).toBeNull());
    expect(admissions.count).toBe(0);
  });

  it('goes down at once when a waiting device is removed', async () => {
    fakeInterval();
    const b = setup();
    joins(b);
    await refreshStatus();
    const user = userEvent.setup();
    render(App);
    expect(await screen.findByTestId(BADGE)).toHaveTextContent('2');
    await user.click(screen.getByTestId('nav-members'));
    await user.click(within(await screen.findByTestId('device-dev_grace')).getByTestId('remove-device'));
    await user.click(screen.getByTestId('confirm-remove'));
    await waitFor(() => expect(b.callsOf('remove_device')).toHaveLength(1));
    await waitFor(() => expect(screen.getByTestId(BADGE)).toHaveTextContent('1'));
  });
});
