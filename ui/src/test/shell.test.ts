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

describe('screens do not change under a dialog', () => {
  async function newAgentToken(user: ReturnType<typeof userEvent.setup>) {
    await user.click(await screen.findByTestId('nav-agents'));
    await user.click(await screen.findByTestId('create-agent'));
    await user.type(await screen.findByTestId('agent-name'), 'docs-bot');
    await user.click(screen.getByTestId('create-agent-submit'));
    return await screen.findByTestId('agent-token');
  }

  it('Alt+digit does nothing while a dialog shows a token once', async () => {
    setup();
    const user = userEvent.setup();
    render(App);
    const token = await newAgentToken(user);
    await user.keyboard('{Alt>}3{/Alt}');
    await settle();
    expect(screen.getByTestId('screen-agents'), 'the shortcut must not close the dialog by changing screens').toBeInTheDocument();
    expect(token, 'the token shown once is still there to copy').toBeInTheDocument();
  });

  it("the tray's navigate waits for a dialog showing a value once, and says so", async () => {
    const b = setup();
    const user = userEvent.setup();
    render(App);
    const token = await newAgentToken(user);
    await b.emit('navigate', { screen: 'approvals', approvalId: 'appr_2' });
    await settle();
    expect(token, 'the token shown once is not lost to a click in the tray').toBeInTheDocument();
    expect(nav.screen).toBe('agents');
    expect(screen.getByTestId('toast'), 'the person is told where the click leads').toHaveTextContent('Approvals opens when you close this dialog');
    await user.click(screen.getByTestId('token-done'));
    await waitFor(() => expect(nav.screen, 'closing the dialog shows what the tray asked for').toBe('approvals'));
    expect(nav.approvalId).toBe('appr_2');
  });

  it('a dialog that replaces another keeps the tray waiting', async () => {
    const b = setup();
    const user = userEvent.setup();
    render(App);
    await user.click(await screen.findByTestId('nav-agents'));
    const card = await screen.findByTestId('agent-ci-bot');
    await user.click(within(card).getByTestId('regenerate'));
    await screen.findByTestId('confirm-dialog');
    await b.emit('navigate', { screen: 'approvals' });
    await settle();
    await user.click(screen.getByTestId('confirm'));
    expect(await screen.findByTestId('agent-token'), 'the new token replaces the confirmation and is shown').toBeInTheDocument();
    await settle();
    expect(nav.screen, 'the tray still waits: another dialog opened as the first closed').toBe('agents');
  });

  it('a connect dialog closed mid sign-in cancels the sign-in, so the next connect can start', async () => {
    const b = setup();
    const user = userEvent.setup();
    render(App);
    const connect = async () => {
      await user.click(await screen.findByTestId('connect-integration'));
      await user.click(await screen.findByTestId('provider-google'));
      await user.type(screen.getByTestId('client-id'), 'cid-123');
      await user.click(screen.getByTestId('connect-submit'));
    };
    await connect();
    await screen.findByTestId('oauth-waiting');
    // The keychain is locked outside the app: the lock screen replaces the dialog.
    b.status.locked = true;
    await b.emit('status-changed', structuredClone(b.status));
    await screen.findByTestId('lock-screen');
    expect(b.callsOf('cancel_connect'), 'the sign-in under way is cancelled with its dialog').toHaveLength(1);
    b.status.locked = false;
    await b.emit('status-changed', structuredClone(b.status));
    await connect();
    expect(await screen.findByTestId('oauth-waiting'), 'a later connect is not refused as connect_in_progress').toBeInTheDocument();
    expect(screen.queryByRole('alert')).toBeNull();
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
