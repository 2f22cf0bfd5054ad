import { afterEach, describe, expect, it } from 'vitest';
import { cleanup, render, screen, waitFor, within } from '@testing-library/svelte';
import userEvent from '@testing-library/user-event';
import { clearMocks } from '@tauri-apps/api/mocks';
import Integrations from '../screens/Integrations.svelte';
import { setup, storeSnapshot, NOW } from '../lib/testing/helpers';
import { refreshStatus } from '../lib/stores/status.svelte';
import { toasts } from '../lib/stores/toasts.svelte';

afterEach(() => {
  cleanup();
  clearMocks();
});

async function openCatalog(user: ReturnType<typeof userEvent.setup>) {
  await user.click(await screen.findByTestId('connect-integration'));
  await screen.findByTestId('provider-github');
}

describe('integrations', () => {
  it('lists integrations as cards with their status', async () => {
    setup({ now: () => NOW });
    render(Integrations);
    const card = await screen.findByTestId('integration-slack-ops');
    expect(within(card).getByTestId('integration-status')).toHaveTextContent('Reconnect needed');
    expect(within(screen.getByTestId('integration-github-main')).getByText('Shared with workspace')).toBeInTheDocument();
  });

  it('names the account an integration acts as, where it is known', async () => {
    setup({ now: () => NOW });
    render(Integrations);
    const github = await screen.findByTestId('integration-github-main');
    expect(within(github).getByTestId('integration-account'), 'whose GitHub the agents reach').toHaveTextContent('octocat');
    const openai = screen.getByTestId('integration-openai-prod');
    expect(within(openai).queryByTestId('integration-account'), 'an unknown account shows no row, not a blank').toBeNull();
  });

  it('edits, names and forgets the account from the card, with Enter and Escape', async () => {
    const b = setup();
    const user = userEvent.setup();
    render(Integrations);
    const github = await screen.findByTestId('integration-github-main');
    await user.click(within(github).getByTestId('edit-account'));
    const input = within(github).getByTestId('account-input');
    expect(input, 'the field opens on the current name, focused').toHaveValue('octocat');
    expect(input).toHaveFocus();
    await user.clear(input);
    await user.type(input, ' hubot {Enter}');
    await waitFor(() => expect(within(github).getByTestId('integration-account')).toHaveTextContent('hubot'));
    expect(b.callsOf('set_integration_account').at(-1)).toEqual({ id: 'cred_gh', account: 'hubot' });

    const openai = screen.getByTestId('integration-openai-prod');
    expect(within(openai).getByText('unknown'), 'an unknown account says so and offers to name it').toBeInTheDocument();
    await user.click(within(openai).getByTestId('edit-account'));
    await user.type(within(openai).getByTestId('account-input'), 'models@acme.example{Escape}');
    expect(within(openai).queryByTestId('account-input'), 'Escape closes without saving').toBeNull();
    expect(b.callsOf('set_integration_account')).toHaveLength(1);

    await user.click(within(github).getByTestId('edit-account'));
    await user.clear(within(github).getByTestId('account-input'));
    await user.click(within(github).getByTestId('save-account'));
    await waitFor(() => expect(within(github).queryByTestId('integration-account'), 'an empty name forgets it').toBeNull());
    expect(b.callsOf('set_integration_account').at(-1)).toEqual({ id: 'cred_gh', account: null });
  });

  it("shows a refusal to name a shared integration's account and keeps the field open", async () => {
    const b = setup();
    b.status.workspace = { ...b.status.workspace!, role: 'member' };
    const user = userEvent.setup();
    render(Integrations);
    const github = await screen.findByTestId('integration-github-main');
    await user.click(within(github).getByTestId('edit-account'));
    await user.type(within(github).getByTestId('account-input'), '-2{Enter}');
    expect(await screen.findByRole('alert')).toBeInTheDocument();
    expect(within(github).getByTestId('account-input'), 'the typed name is not lost').toHaveValue('octocat-2');
    expect(within(github).queryByTestId('integration-account')).toBeNull();
  });

  it('shows an empty state with a way to connect', async () => {
    setup({ seed: false });
    render(Integrations);
    expect(await screen.findByText('No integrations yet')).toBeInTheDocument();
  });

  it('shows the message of a failed listing', async () => {
    const b = setup();
    b.failNext('list_integrations', { code: 'broker_unreachable', message: 'The broker is not reachable.' });
    render(Integrations);
    expect(await screen.findByRole('alert')).toHaveTextContent('The broker is not reachable.');
  });

  it('filters the provider catalog as you type', async () => {
    const b = setup();
    const user = userEvent.setup();
    render(Integrations);
    await openCatalog(user);
    await user.type(screen.getByTestId('provider-search'), 'open');
    await waitFor(() => expect(screen.queryByTestId('provider-github'), 'GitHub does not match "open"').toBeNull());
    expect(screen.getByTestId('provider-openai')).toBeInTheDocument();
    expect(b.callsOf('list_providers').at(-1)).toEqual({ query: 'open' });
  });

  it('moves the selection with arrow keys and picks with Enter', async () => {
    setup();
    const user = userEvent.setup();
    render(Integrations);
    await openCatalog(user);
    const search = screen.getByTestId('provider-search');
    expect(search, 'the search field gets focus when the catalog opens').toHaveFocus();
    expect(screen.getByTestId('provider-github')).toHaveAttribute('aria-selected', 'true');
    await user.keyboard('{ArrowDown}{ArrowDown}');
    expect(screen.getByTestId('provider-slack')).toHaveAttribute('aria-selected', 'true');
    await user.keyboard('{ArrowUp}');
    expect(screen.getByTestId('provider-google')).toHaveAttribute('aria-selected', 'true');
    expect(search.getAttribute('aria-activedescendant')).toBe('provider-opt-1');
    await user.keyboard('{Enter}');
    expect(await screen.findByText('Connect Google Workspace')).toBeInTheDocument();
  });

  it('sends an API key once, clears the field, and keeps it out of every store and the DOM', async () => {
    const received: string[] = [];
    const b = setup({ inspectSecret: (s) => received.push(s) });
    await refreshStatus();
    const user = userEvent.setup();
    render(Integrations);
    await openCatalog(user);
    await user.click(screen.getByTestId('provider-openai'));
    const key = screen.getByTestId('api-key') as HTMLInputElement;
    expect(key.type, 'the key is typed into a password field').toBe('password');
    const SECRET = 'sk-test-THIS-IS-SECRET-123';
    await user.type(key, SECRET);
    await user.click(screen.getByTestId('connect-submit'));
    await waitFor(() => expect(b.callsOf('add_api_key')).toHaveLength(1));
    expect(received, 'the backend received the key exactly once').toEqual([SECRET]);
    expect(b.callsOf('add_api_key')[0]).toMatchObject({ provider: 'openai', shared: true, baseUrl: null, account: null });
    expect(key.value, 'the key field is cleared after submit').toBe('');
    expect(storeSnapshot().includes(SECRET), 'the key must never land in a shared store').toBe(false);
    expect(document.body.innerHTML.includes(SECRET), 'the key must not be rendered anywhere').toBe(false);
    await waitFor(() => expect(screen.queryByTestId('connect-dialog')).toBeNull());
  });

  it('sends the account typed with the key, trimmed, and shows it on the new card', async () => {
    const b = setup();
    await refreshStatus();
    const user = userEvent.setup();
    render(Integrations);
    await openCatalog(user);
    await user.click(screen.getByTestId('provider-openai'));
    await user.clear(screen.getByTestId('integration-name'));
    await user.type(screen.getByTestId('integration-name'), 'openai-ci');
    await user.type(screen.getByTestId('api-key'), 'sk-test-0123456789');
    await user.type(screen.getByTestId('account'), '  ci-bot@acme.example ');
    await user.click(screen.getByTestId('connect-submit'));
    await waitFor(() => expect(b.callsOf('add_api_key')).toHaveLength(1));
    expect(b.callsOf('add_api_key')[0]).toMatchObject({ account: 'ci-bot@acme.example' });
    const card = await screen.findByTestId('integration-openai-ci');
    expect(within(card).getByTestId('integration-account')).toHaveTextContent('ci-bot@acme.example');
  });

  it('clears the API key field even when adding fails, and shows the error', async () => {
    const b = setup();
    b.failNext('add_api_key', { code: 'invalid_key', message: 'OpenAI rejected that key.' });
    const user = userEvent.setup();
    render(Integrations);
    await openCatalog(user);
    await user.click(screen.getByTestId('provider-openai'));
    await user.type(screen.getByTestId('api-key'), 'sk-wrong-key-000');
    await user.click(screen.getByTestId('connect-submit'));
    expect(await screen.findByRole('alert')).toHaveTextContent('OpenAI rejected that key.');
    expect((screen.getByTestId('api-key') as HTMLInputElement).value).toBe('');
  });

  it('connects OAuth with default scopes, waits for the browser, and can cancel', async () => {
    const b = setup();
    await refreshStatus();
    const user = userEvent.setup();
    render(Integrations);
    await openCatalog(user);
    await user.click(screen.getByTestId('provider-google'));
    expect((screen.getByTestId('scopes') as HTMLInputElement).value, 'scopes are prefilled from defaultScopes').toBe('openid email');
    expect(screen.queryByTestId('client-secret'), 'Google does not need a client secret').toBeNull();
    await user.type(screen.getByTestId('client-id'), 'cid-123');
    await user.click(screen.getByTestId('connect-submit'));
    expect(await screen.findByTestId('oauth-waiting')).toHaveTextContent('Finish in your browser');
    expect(b.callsOf('connect_oauth')[0]).toEqual({
      provider: 'google', name: 'google-team', clientId: 'cid-123', clientSecret: null, scopes: ['openid', 'email'], shared: true, issuer: null, baseUrl: null, authorizeUrl: null, tokenUrl: null,
    });
    await user.click(screen.getByTestId('cancel-connect'));
    expect(b.callsOf('cancel_connect')).toHaveLength(1);
    await waitFor(() => expect(screen.queryByTestId('oauth-waiting')).toBeNull());
    expect(screen.queryByRole('alert'), 'cancelling is not an error').toBeNull();
  });

  it('asks a per-account provider for its base URL and OAuth endpoints and sends them', async () => {
    const b = setup();
    const user = userEvent.setup();
    render(Integrations);
    await openCatalog(user);
    await user.click(screen.getByTestId('provider-zendesk'));
    expect(screen.queryByTestId('issuer'), 'only custom providers take an issuer').toBeNull();
    await user.type(screen.getByTestId('base-url'), 'https://acme.zendesk.com/api/v2');
    await user.type(screen.getByTestId('authorize-url'), 'https://acme.zendesk.com/oauth/authorizations/new');
    await user.type(screen.getByTestId('token-url'), 'https://acme.zendesk.com/oauth/tokens');
    await user.type(screen.getByTestId('client-id'), 'zd-client');
    await user.click(screen.getByTestId('connect-submit'));
    await waitFor(() => expect(b.callsOf('connect_oauth')).toHaveLength(1));
    expect(b.callsOf('connect_oauth')[0]).toMatchObject({
      provider: 'zendesk',
      baseUrl: 'https://acme.zendesk.com/api/v2',
      authorizeUrl: 'https://acme.zendesk.com/oauth/authorizations/new',
      tokenUrl: 'https://acme.zendesk.com/oauth/tokens',
      issuer: null,
    });
  });

  it('finishes an OAuth connect and shows the new card', async () => {
    const b = setup();
    await refreshStatus();
    const user = userEvent.setup();
    render(Integrations);
    await openCatalog(user);
    await user.click(screen.getByTestId('provider-github'));
    await user.type(screen.getByTestId('client-id'), 'gh-client');
    await user.type(screen.getByTestId('client-secret'), 'gh-secret');
    await user.click(screen.getByTestId('connect-submit'));
    await screen.findByTestId('oauth-waiting');
    expect(b.callsOf('connect_oauth')[0]).toMatchObject({ clientSecret: 'gh-secret', scopes: ['repo', 'read:org'] });
    b.completeConnect();
    expect(await screen.findByTestId('integration-github-team')).toBeInTheDocument();
  });

  it("offers a member a personal integration only: the server refuses a member's shared one", async () => {
    const b = setup();
    b.status.workspace = { ...b.status.workspace!, role: 'member' };
    await refreshStatus();
    const user = userEvent.setup();
    render(Integrations);
    await openCatalog(user);
    await user.click(screen.getByTestId('provider-github'));
    expect(screen.getByTestId('shared'), 'a member starts with a personal integration').not.toBeChecked();
    expect(screen.getByTestId('shared'), 'a member cannot ask for a shared one').toBeDisabled();
    expect(screen.getByTestId('shared-admins-only')).toHaveTextContent('Only admins share integrations');
    expect((screen.getByTestId('integration-name') as HTMLInputElement).value).toBe('github-mine');
    await user.type(screen.getByTestId('client-id'), 'gh-client');
    await user.type(screen.getByTestId('client-secret'), 'gh-secret');
    await user.click(screen.getByTestId('connect-submit'));
    await screen.findByTestId('oauth-waiting');
    expect(b.callsOf('connect_oauth')[0]).toMatchObject({ shared: false });
    b.completeConnect();
    expect(await screen.findByTestId('integration-github-mine'), 'the sign-in ends in a personal integration, not a refusal').toBeInTheDocument();
  });

  it('lets an admin share an integration, and starts shared', async () => {
    setup();
    await refreshStatus();
    const user = userEvent.setup();
    render(Integrations);
    await openCatalog(user);
    await user.click(screen.getByTestId('provider-openai'));
    expect(screen.getByTestId('shared')).toBeChecked();
    expect(screen.getByTestId('shared')).toBeEnabled();
    expect(screen.queryByTestId('shared-admins-only')).toBeNull();
  });

  it('reconnects in the browser, and the sign-in can be cancelled while it waits', async () => {
    const b = setup();
    const user = userEvent.setup();
    render(Integrations);
    const card = await screen.findByTestId('integration-slack-ops');
    await user.click(within(card).getByTestId('reconnect'));
    expect(await within(card).findByText('Finish in your browser…')).toBeInTheDocument();
    await user.click(within(card).getByTestId('cancel-reconnect'));
    expect(b.callsOf('cancel_connect'), 'Cancel stops the sign-in in the shell').toHaveLength(1);
    await waitFor(() => expect(within(card).getByTestId('reconnect')).toHaveTextContent('Reconnect'));
    expect(within(card).queryByTestId('cancel-reconnect')).toBeNull();
    expect(screen.queryByRole('alert'), 'cancelling is not an error').toBeNull();

    await user.click(within(card).getByTestId('reconnect'));
    await within(card).findByText('Finish in your browser…');
    b.completeConnect();
    await waitFor(() => expect(within(card).getByTestId('integration-status'), 'a later reconnect is not refused as connect_in_progress').toHaveTextContent('Active'));
  });

  it('says so when a reconnect signed in as another account', async () => {
    const b = setup({ reconnectAs: 'someone-else' });
    const user = userEvent.setup();
    render(Integrations);
    const card = await screen.findByTestId('integration-slack-ops');
    await user.click(within(card).getByTestId('reconnect'));
    await within(card).findByText('Finish in your browser…');
    b.completeConnect();
    await waitFor(() => expect(within(card).getByTestId('integration-account')).toHaveTextContent('someone-else'));
    const said = toasts.list.map((t) => t.text);
    expect(said, 'the switch of account is told, not left for the person to notice').toContain(
      'Reconnected slack-ops as someone-else, no longer ops-bot: agents now act as someone-else',
    );
  });

  it('cancels a reconnect left waiting when the screen goes away', async () => {
    const b = setup();
    const user = userEvent.setup();
    const { unmount } = render(Integrations);
    const card = await screen.findByTestId('integration-slack-ops');
    await user.click(within(card).getByTestId('reconnect'));
    await within(card).findByText('Finish in your browser…');
    unmount();
    await waitFor(() => expect(b.callsOf('cancel_connect'), 'no sign-in is left holding the slot').toHaveLength(1));
  });

  it('confirms a disconnect and reports whether the provider revoked it', async () => {
    const b = setup();
    const user = userEvent.setup();
    render(Integrations);
    const card = await screen.findByTestId('integration-github-main');
    await user.click(within(card).getByTestId('disconnect'));
    const dlg = screen.getByTestId('disconnect-dialog');
    await user.click(within(dlg).getByTestId('confirm-disconnect'));
    await waitFor(() => expect(screen.queryByTestId('integration-github-main')).toBeNull());
    expect(b.callsOf('disconnect')).toEqual([{ id: 'cred_gh', force: false }]);
  });
});
