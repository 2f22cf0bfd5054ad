import { afterEach, describe, expect, it } from 'vitest';
import { cleanup, render, screen, waitFor, within } from '@testing-library/svelte';
import userEvent from '@testing-library/user-event';
import { clearMocks } from '@tauri-apps/api/mocks';
import Agents from '../screens/Agents.svelte';
import { nav } from '../lib/stores/nav.svelte';
import { setup, storeSnapshot, stubClipboard } from '../lib/testing/helpers';

afterEach(() => {
  cleanup();
  clearMocks();
});

async function createAgent(user: ReturnType<typeof userEvent.setup>, name: string) {
  await user.click(await screen.findByTestId('create-agent'));
  await user.type(screen.getByTestId('agent-name'), name);
  await user.click(screen.getByTestId('create-agent-submit'));
  return await screen.findByTestId('token-dialog');
}

describe('agents', () => {
  it('lists agents with their grants', async () => {
    setup();
    render(Agents);
    const row = await screen.findByTestId('agent-ci-bot');
    expect(within(row).getByText('github-main')).toBeInTheDocument();
    expect(within(row).getByText('/repos/acme/*')).toBeInTheDocument();
  });

  it('shows a new token once with a copy button, and drops it when the dialog closes', async () => {
    setup();
    const user = userEvent.setup();
    const copied = stubClipboard(); // after userEvent.setup(), which installs its own clipboard
    render(Agents);
    const dlg = await createAgent(user, 'docs-bot');
    const token = within(dlg).getByTestId('agent-token').textContent!;
    expect(token, 'the placeholder token is displayed').toMatch(/^lk_agent_/);
    expect(dlg).toHaveTextContent("you won't see it again");
    await user.click(within(dlg).getByTestId('copy-token'));
    expect(copied).toEqual([token]);

    await user.click(within(dlg).getByTestId('token-done'));
    await waitFor(() => expect(screen.queryByTestId('token-dialog')).toBeNull());
    expect(document.body.innerHTML.includes(token), 'after closing, the token is gone from the page').toBe(false);
    expect(storeSnapshot().includes(token), 'the token never lands in a shared store').toBe(false);
    expect(screen.getByTestId('agent-docs-bot'), 'the new agent is listed').toBeInTheDocument();
  });

  it('closes the token dialog on Escape', async () => {
    setup();
    const user = userEvent.setup();
    render(Agents);
    await createAgent(user, 'esc-bot');
    await user.keyboard('{Escape}');
    await waitFor(() => expect(screen.queryByTestId('token-dialog')).toBeNull());
  });

  it('shows the SDK snippets in tabs', async () => {
    setup();
    const user = userEvent.setup();
    render(Agents);
    const dlg = await createAgent(user, 'sdk-bot');
    expect(within(dlg).getByTestId('snippet-text')).toHaveTextContent('OPENAI_BASE_URL');
    await user.click(within(dlg).getByTestId('snippet-tab-1'));
    expect(within(dlg).getByTestId('snippet-text')).toHaveTextContent('ANTHROPIC_BASE_URL');
    await user.keyboard('{ArrowRight}');
    expect(within(dlg).getByTestId('snippet-text'), 'arrow keys move between snippet tabs').toHaveTextContent('Octokit');
  });

  it('shows why creating an agent failed', async () => {
    setup();
    const user = userEvent.setup();
    render(Agents);
    await user.click(await screen.findByTestId('create-agent'));
    await user.type(screen.getByTestId('agent-name'), 'ci-bot');
    await user.click(screen.getByTestId('create-agent-submit'));
    expect(await screen.findByRole('alert')).toHaveTextContent('An agent called ci-bot already exists.');
  });

  it('creates a grant with the chosen integration, methods, paths and duration', async () => {
    const b = setup();
    const user = userEvent.setup();
    render(Agents);
    const row = await screen.findByTestId('agent-release-writer');
    await user.click(within(row).getByTestId('add-grant'));
    const dlg = await screen.findByTestId('grant-dialog');
    await waitFor(() => expect((within(dlg).getByTestId('grant-credential') as HTMLSelectElement).value).toBe('cred_gh'));
    await user.selectOptions(within(dlg).getByTestId('grant-credential'), 'cred_oai');
    await user.click(within(dlg).getByTestId('method-HEAD'));
    await user.click(within(dlg).getByTestId('method-POST'));
    await user.clear(within(dlg).getByTestId('grant-paths'));
    await user.type(within(dlg).getByTestId('grant-paths'), '/v1/chat/*{Enter}/v1/models');
    await user.selectOptions(within(dlg).getByTestId('grant-duration'), String(8 * 3600));
    await user.click(within(dlg).getByTestId('grant-submit'));
    await waitFor(() => expect(b.callsOf('create_grant')).toHaveLength(1));
    expect(b.callsOf('create_grant')[0]).toEqual({
      agent: 'agent_writer', credential: 'cred_oai', methods: ['GET', 'POST'], pathPatterns: ['/v1/chat/*', '/v1/models'], durationSecs: 28800,
    });
  });

  it('shows the new grant\'s capability once, with how the agent sends it, and lists the grant', async () => {
    setup();
    const user = userEvent.setup();
    render(Agents);
    await user.click(within(await screen.findByTestId('agent-release-writer')).getByTestId('add-grant'));
    const form = await screen.findByTestId('grant-dialog');
    await waitFor(() => expect((within(form).getByTestId('grant-credential') as HTMLSelectElement).value).toBe('cred_gh'));
    await user.click(within(form).getByTestId('grant-submit'));
    const capability = await screen.findByTestId('grant-capability');
    const text = capability.textContent ?? '';
    expect(text, 'the broker keeps only the grant row: the agent cannot call under it without this').toMatch(/^AQIgrant_\d+-capability$/);
    const usage = screen.getByTestId('grant-usage').textContent ?? '';
    expect(usage, 'after the token and a dot, as an SDK key').toContain(`<agent token>.${text}`);
    expect(usage, 'or in the header').toContain(`Latchkey-Capability: ${text}`);
    expect(screen.getByTestId('copy-capability')).toBeInTheDocument();
    const row = await screen.findByTestId('agent-release-writer');
    await waitFor(() => expect(within(row).getAllByTestId(/^grant-grant_/).length, 'the card lists the grant while the capability shows').toBeGreaterThan(0));
    await user.click(screen.getByTestId('grant-done'));
    await waitFor(() => expect(screen.queryByTestId('grant-capability'), 'shown once: gone when the dialog closes').toBeNull());
  });

  it('grants every path by default, and says what * and ** match', async () => {
    const b = setup();
    const user = userEvent.setup();
    render(Agents);
    await user.click(within(await screen.findByTestId('agent-release-writer')).getByTestId('add-grant'));
    const dlg = await screen.findByTestId('grant-dialog');
    expect(within(dlg).getByTestId('grant-paths'), '`/*` would match one segment only: /v1/models would be held').toHaveValue('/**');
    expect(within(dlg).getByTestId('grant-paths')).toHaveAccessibleDescription(/one path segment.*the rest of the path/);
    await waitFor(() => expect((within(dlg).getByTestId('grant-credential') as HTMLSelectElement).value).toBe('cred_gh'));
    await user.click(within(dlg).getByTestId('grant-submit'));
    await waitFor(() => expect(b.callsOf('create_grant')).toHaveLength(1));
    expect(b.callsOf('create_grant')[0]).toMatchObject({ methods: ['GET', 'HEAD'], pathPatterns: ['/**'] });
  });

  it('says to connect an integration first when there is none to grant', async () => {
    const b = setup();
    b.integrations = [];
    const user = userEvent.setup();
    render(Agents);
    await user.click(within(await screen.findByTestId('agent-release-writer')).getByTestId('add-grant'));
    const dlg = await screen.findByTestId('grant-dialog');
    expect(await within(dlg).findByText('No integrations to grant'), 'not an empty list and a dead button').toBeInTheDocument();
    expect(dlg).toHaveTextContent('Connect an integration first');
    expect(within(dlg).queryByTestId('grant-credential')).toBeNull();
    expect(within(dlg).queryByTestId('grant-submit')).toBeNull();
    await user.click(within(dlg).getByTestId('grant-go-integrations'));
    await waitFor(() => expect(screen.queryByTestId('grant-dialog')).toBeNull());
    expect(nav.screen, 'the button leads where integrations are connected').toBe('integrations');
  });

  it('revokes an agent after confirmation', async () => {
    const b = setup();
    const user = userEvent.setup();
    render(Agents);
    await user.click(within(await screen.findByTestId('agent-ci-bot')).getByTestId('revoke-agent'));
    await user.click(within(screen.getByTestId('confirm-dialog')).getByTestId('confirm'));
    await waitFor(() => expect(b.callsOf('revoke_agent')).toEqual([{ id: 'agent_ci' }]));
    await waitFor(() => expect(screen.queryByTestId('agent-ci-bot'), 'revoked agents are hidden by default').toBeNull());
  });

  it('revokes a single grant after confirmation, once however often it is clicked', async () => {
    const b = setup();
    const user = userEvent.setup();
    render(Agents);
    const row = await screen.findByTestId('agent-ci-bot');
    await user.click(within(row).getByTestId('revoke-grant'));
    const dlg = await screen.findByTestId('revoke-grant-dialog');
    expect(b.callsOf('revoke_grant'), 'a click on the row only asks').toEqual([]);
    expect(dlg).toHaveTextContent('ci-bot');
    expect(dlg).toHaveTextContent('github-main');
    await user.click(within(dlg).getByRole('button', { name: 'Keep it' }));
    await waitFor(() => expect(screen.queryByTestId('revoke-grant-dialog')).toBeNull());
    expect(b.callsOf('revoke_grant'), 'keeping it revokes nothing').toEqual([]);

    await user.click(within(row).getByTestId('revoke-grant'));
    const confirm = within(await screen.findByTestId('revoke-grant-dialog')).getByTestId('confirm-revoke-grant');
    confirm.click();
    confirm.click();
    await waitFor(() => expect(screen.queryByTestId('grant-grant_1')).toBeNull());
    expect(b.callsOf('revoke_grant'), 'a double click revokes once').toEqual([{ id: 'grant_1' }]);
  });
});
