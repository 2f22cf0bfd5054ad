import { afterEach, describe, expect, it } from 'vitest';
import { cleanup, render, screen, waitFor, within } from '@testing-library/svelte';
import userEvent from '@testing-library/user-event';
import { clearMocks } from '@tauri-apps/api/mocks';
import App from '../App.svelte';
import { nav } from '../lib/stores/nav.svelte';
import { setup, settle } from '../lib/testing/helpers';

afterEach(() => {
  cleanup();
  clearMocks();
});

describe('app shell', () => {
  it('starts in onboarding when the app is not set up', async () => {
    setup({ fresh: true });
    render(App);
    expect(await screen.findByTestId('start-create')).toBeInTheDocument();
    expect(screen.queryByTestId('nav-integrations')).toBeNull();
  });

  it('locks from Security to a lock screen and unlocks back to the app', async () => {
    const b = setup();
    const user = userEvent.setup();
    render(App);
    await user.click(await screen.findByTestId('nav-security'));
    await user.click(await screen.findByTestId('lock'));
    expect(await screen.findByTestId('lock-screen'), 'a locked keychain hides every screen').toBeInTheDocument();
    expect(screen.queryByTestId('nav-approvals'), 'nothing needing a key is reachable while locked').toBeNull();
    await user.click(screen.getByTestId('unlock'));
    expect(await screen.findByTestId('nav-integrations')).toBeInTheDocument();
    expect(b.callsOf('lock')).toHaveLength(1);
    expect(b.callsOf('unlock')).toHaveLength(1);
  });

  it('shows why unlocking failed and stays locked', async () => {
    const b = setup();
    b.failNext('unlock', { code: 'keychain_locked', message: 'The keychain stayed locked: the unlock prompt was dismissed.' });
    const user = userEvent.setup();
    render(App);
    await user.click(await screen.findByTestId('nav-security'));
    await user.click(await screen.findByTestId('lock'));
    await user.click(await screen.findByTestId('unlock'));
    expect(await screen.findByText(/prompt was dismissed/)).toBeInTheDocument();
    expect(screen.getByTestId('lock-screen')).toBeInTheDocument();
  });

  it('shows the workspace, broker reachability and the pending badge', async () => {
    setup();
    render(App);
    expect(await screen.findByTestId('workspace')).toHaveTextContent('This computer');
    expect(screen.getByTestId('broker-status')).toHaveTextContent('Broker reachable');
    expect(screen.getByTestId('pending-count')).toHaveTextContent('2');
  });

  it("shows the workspace's name", async () => {
    setup();
    render(App);
    expect(await screen.findByTestId('workspace-name')).toHaveTextContent('Acme');
  });

  it('shows no name while the broker cannot say it', async () => {
    const b = setup();
    b.status = { ...b.status, workspace: { ...b.status.workspace!, name: null } };
    render(App);
    expect(await screen.findByTestId('workspace')).toHaveTextContent('This computer');
    expect(screen.queryByTestId('workspace-name')).toBeNull();
  });

  it('updates the pending badge from approvals-changed', async () => {
    const b = setup();
    render(App);
    await screen.findByTestId('pending-count');
    await settle();
    await b.emit('approvals-changed', { pending: 7 });
    await waitFor(() => expect(screen.getByTestId('pending-count')).toHaveTextContent('7'));
  });

  it('switches screens with Alt+1..7 and by clicking', async () => {
    setup();
    const user = userEvent.setup();
    render(App);
    await screen.findByTestId('nav-integrations');
    await user.keyboard('{Alt>}3{/Alt}');
    expect(await screen.findByTestId('screen-approvals')).toBeInTheDocument();
    expect(screen.getByTestId('nav-approvals'), 'the shortcut also moves focus to the nav entry').toHaveFocus();
    await user.keyboard('{Alt>}7{/Alt}');
    expect(await screen.findByTestId('screen-security')).toBeInTheDocument();
    await user.click(screen.getByTestId('nav-agents'));
    expect(screen.getByTestId('nav-agents')).toHaveAttribute('aria-current', 'page');
  });

  it('follows navigate events from the tray', async () => {
    const b = setup();
    render(App);
    await screen.findByTestId('nav-integrations');
    await settle();
    await b.emit('navigate', { screen: 'approvals', approvalId: 'appr_2' });
    await waitFor(() => expect(nav.screen).toBe('approvals'));
    expect(nav.approvalId).toBe('appr_2');
  });

  it('shows the Paused banner and resumes with set_paused false', async () => {
    const b = setup();
    b.status.paused = true;
    const user = userEvent.setup();
    render(App);
    const banner = await screen.findByTestId('paused-banner');
    await user.click(within(banner).getByTestId('resume'));
    await waitFor(() => expect(screen.queryByTestId('paused-banner')).toBeNull());
    expect(b.callsOf('set_paused')).toEqual([{ paused: false }]);
  });

  it('shows the error and a retry when the status cannot be read', async () => {
    const b = setup();
    b.failNext('app_status', { code: 'keychain_locked', message: 'Unlock your keychain to continue.' });
    const user = userEvent.setup();
    render(App);
    expect(await screen.findByRole('alert')).toHaveTextContent('Unlock your keychain to continue.');
    await user.click(screen.getByTestId('retry-status'));
    expect(await screen.findByTestId('nav-integrations')).toBeInTheDocument();
  });

  it('toggles the theme manually', async () => {
    setup();
    const user = userEvent.setup();
    render(App);
    await user.click(await screen.findByTestId('theme-toggle'));
    expect(document.documentElement.dataset.theme).toBe('light');
    await user.click(screen.getByTestId('theme-toggle'));
    expect(document.documentElement.dataset.theme).toBe('dark');
    await user.click(screen.getByTestId('theme-toggle'));
    expect(document.documentElement.dataset.theme, 'back to following the system').toBeUndefined();
  });
});

describe('dialogs', () => {
  it('trap Tab focus inside and close on Escape', async () => {
    setup();
    const user = userEvent.setup();
    render(App);
    await user.click(await screen.findByTestId('connect-integration'));
    const dlg = await screen.findByTestId('connect-dialog');
    await screen.findByTestId('provider-github');
    for (let i = 0; i < 6; i++) {
      await user.tab();
      expect(dlg.contains(document.activeElement), 'focus must stay inside the open dialog').toBe(true);
    }
    await user.tab({ shift: true });
    expect(dlg.contains(document.activeElement)).toBe(true);
    await user.keyboard('{Escape}');
    await waitFor(() => expect(screen.queryByTestId('connect-dialog')).toBeNull());
  });
});

describe('every screen', () => {
  it('renders against the sample workspace without errors', async () => {
    setup();
    const user = userEvent.setup();
    render(App);
    const screens = ['integrations', 'agents', 'approvals', 'policies', 'audit', 'members', 'security'];
    for (const s of screens) {
      await user.click(await screen.findByTestId(`nav-${s}`));
      await screen.findByTestId(`screen-${s}`);
      await settle();
      expect(screen.queryByRole('alert'), `the ${s} screen shows no error with healthy data`).toBeNull();
      expect(screen.getByRole('heading', { level: 1 })).toBeInTheDocument();
    }
  });
});
