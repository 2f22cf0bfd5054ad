import { afterEach, describe, expect, it } from 'vitest';
import { cleanup, render, screen, waitFor } from '@testing-library/svelte';
import userEvent from '@testing-library/user-event';
import { clearMocks } from '@tauri-apps/api/mocks';
import Onboarding from '../screens/Onboarding.svelte';
import { app } from '../lib/stores/status.svelte';
import { PRIVATE_CA_PEM, setup } from '../lib/testing/helpers';

afterEach(() => {
  cleanup();
  clearMocks();
});

async function fillCreate(user: ReturnType<typeof userEvent.setup>) {
  await user.click(screen.getByTestId('start-create'));
  await user.type(screen.getByTestId('workspace-name'), 'Acme');
  await user.type(screen.getByTestId('member-name'), 'Ada');
}

/** The create form filled in for the team server at https://lk.acme.dev. */
async function fillCreateOnServer(user: ReturnType<typeof userEvent.setup>) {
  await fillCreate(user);
  await user.click(screen.getByTestId('where-server'));
  await user.type(screen.getByTestId('server-url'), 'https://lk.acme.dev');
}

describe('onboarding', () => {
  it('creates a workspace on this computer with teamServerUrl null', async () => {
    const b = setup({ fresh: true });
    const user = userEvent.setup();
    render(Onboarding);
    await fillCreate(user);
    expect((screen.getByTestId('device-name') as HTMLInputElement).value, 'the device name is prefilled').not.toBe('');
    await user.click(screen.getByTestId('create-workspace'));
    await screen.findByText('Workspace ready');
    expect(b.callsOf('create_workspace')).toEqual([
      { workspaceName: 'Acme', memberName: 'Ada', deviceName: expect.any(String), teamServerUrl: null, teamServerCa: null, creationToken: null },
    ]);
    expect(screen.getByTestId('fingerprint').textContent).toBe('4F2A-91C3-7D0E-B85A');
  });

  it('sends the team server URL when the team option is chosen', async () => {
    const b = setup({ fresh: true });
    const user = userEvent.setup();
    render(Onboarding);
    await fillCreateOnServer(user);
    await user.click(screen.getByTestId('create-workspace'));
    await screen.findByText('Workspace ready');
    expect(b.callsOf('create_workspace')[0].teamServerUrl).toBe('https://lk.acme.dev');
    expect(b.callsOf('create_workspace')[0].teamServerCa, 'no authority pasted: none sent').toBeNull();
  });

  it("sends a team server's private certificate authority, and shows why a bad one is refused", async () => {
    const b = setup({ fresh: true });
    const user = userEvent.setup();
    render(Onboarding);
    await fillCreate(user);
    await user.click(screen.getByTestId('where-server'));
    await user.type(screen.getByTestId('server-url'), 'https://lk.acme.internal');
    expect(screen.getByTestId('server-ca'), 'folded away until asked for').not.toBeVisible();
    await user.click(screen.getByTestId('server-ca-toggle'));
    await user.type(screen.getByTestId('server-ca'), 'ask IT');
    await user.click(screen.getByTestId('create-workspace'));
    expect(await screen.findByTestId('error')).toHaveAttribute('data-code', 'broker_ca_unusable');
    expect(screen.getByTestId('error')).toHaveTextContent('no certificate found');
    const pem = PRIVATE_CA_PEM;
    await user.clear(screen.getByTestId('server-ca'));
    // user-event reads braces and brackets as key names; the PEM has neither.
    await user.type(screen.getByTestId('server-ca'), pem);
    await user.click(screen.getByTestId('create-workspace'));
    await screen.findByText('Workspace ready');
    const calls = b.callsOf('create_workspace');
    expect(calls[calls.length - 1].teamServerCa, 'the pasted text, as pasted').toBe(pem);
  });

  it("opens the authority field with a hint when the team server's certificate is refused", async () => {
    const b = setup({ fresh: true });
    const user = userEvent.setup();
    render(Onboarding);
    await fillCreate(user);
    await user.click(screen.getByTestId('where-server'));
    await user.type(screen.getByTestId('server-url'), 'https://lk.acme.internal');
    b.failNext('create_workspace', {
      code: 'broker_tls_refused',
      message: 'the broker at https://lk.acme.internal presented a TLS certificate this computer refuses (issued by an authority that is not trusted here)',
    });
    expect(screen.queryByTestId('server-ca-hint'), 'no hint before anything was refused').toBeNull();
    await user.click(screen.getByTestId('create-workspace'));
    expect(await screen.findByTestId('error')).toHaveAttribute('data-code', 'broker_tls_refused');
    expect(screen.getByTestId('server-ca'), 'the field the fix goes into is open').toBeVisible();
    expect(screen.getByTestId('server-ca-hint')).toHaveTextContent("paste that authority's certificate here");
    await user.type(screen.getByTestId('server-ca'), PRIVATE_CA_PEM);
    await user.click(screen.getByTestId('create-workspace'));
    await screen.findByText('Workspace ready');
    expect(b.callsOf('create_workspace').at(-1)?.teamServerCa).toBe(PRIVATE_CA_PEM);
  });

  it('says the same when joining a team server whose certificate is refused', async () => {
    const b = setup({ fresh: true });
    const user = userEvent.setup();
    render(Onboarding);
    await user.click(screen.getByTestId('start-join'));
    await user.type(screen.getByTestId('join-url'), 'https://lk.acme.internal');
    await user.type(screen.getByTestId('invite-code'), 'LK-7Q4M');
    await user.type(screen.getByTestId('join-name'), 'Bob');
    b.failNext('join_workspace', { code: 'broker_tls_refused', message: 'refused certificate' });
    await user.click(screen.getByTestId('join-workspace'));
    expect(await screen.findByTestId('error')).toHaveAttribute('data-code', 'broker_tls_refused');
    expect(screen.getByTestId('join-ca-hint')).toBeVisible();
  });

  it('never sends an authority pasted for a team server when this computer is chosen after all', async () => {
    const b = setup({ fresh: true });
    const user = userEvent.setup();
    render(Onboarding);
    await fillCreate(user);
    await user.click(screen.getByTestId('where-server'));
    await user.click(screen.getByTestId('server-ca-toggle'));
    await user.type(screen.getByTestId('server-ca'), '-----BEGIN CERTIFICATE-----');
    await user.click(screen.getByTestId('where-local'));
    await user.click(screen.getByTestId('create-workspace'));
    await screen.findByText('Workspace ready');
    expect(b.callsOf('create_workspace')[0]).toMatchObject({ teamServerUrl: null, teamServerCa: null });
  });

  it("sends a team server's creation token one way, hidden, and keeps no copy of it", async () => {
    const token = 'lkct-ui-canary-3Fq8Zr1Wm6Yt9Kp2Xv5Ns7Lb';
    const b = setup({ fresh: true });
    const user = userEvent.setup();
    render(Onboarding);
    await fillCreate(user);
    expect(screen.queryByTestId('creation-token'), 'no token field for this computer').toBeNull();
    await user.click(screen.getByTestId('where-server'));
    await user.type(screen.getByTestId('server-url'), 'https://lk.acme.dev');
    const field = screen.getByTestId('creation-token') as HTMLInputElement;
    expect(field.type, 'typed like a password, never shown').toBe('password');
    expect(field.value, 'optional: most team servers need none').toBe('');
    await user.type(field, token);
    await user.click(screen.getByTestId('create-workspace'));
    await screen.findByText('Workspace ready');
    expect(b.callsOf('create_workspace')[0].creationToken, 'the token as typed').toBe(token);
    expect(document.body.innerHTML, 'the page keeps no copy of the token').not.toContain(token);
  });

  it('sends no creation token when none is typed, or when this computer is chosen after all', async () => {
    const b = setup({ fresh: true });
    const user = userEvent.setup();
    render(Onboarding);
    await fillCreateOnServer(user);
    await user.type(screen.getByTestId('creation-token'), 'lkct-typed-for-the-server-only-0123456');
    await user.click(screen.getByTestId('where-local'));
    await user.click(screen.getByTestId('create-workspace'));
    await screen.findByText('Workspace ready');
    expect(b.callsOf('create_workspace')[0], 'a token is for a team server only').toMatchObject({ teamServerUrl: null, creationToken: null });
  });

  it("says under the token field why the team server refused the creation, and what to do", async () => {
    const b = setup({ fresh: true });
    const user = userEvent.setup();
    render(Onboarding);
    await fillCreateOnServer(user);
    b.failNext('create_workspace', { code: 'creation_token_required', message: 'this broker creates workspaces only with its creation token' });
    await user.click(screen.getByTestId('create-workspace'));
    const required = await screen.findByTestId('creation-token-error');
    expect(required, 'no token: ask the operator for one').toHaveTextContent("Ask the server's operator for it");
    expect(screen.getByTestId('creation-token')).toHaveAttribute('aria-invalid', 'true');
    expect(screen.queryByTestId('error'), 'said once, where the fix goes').toBeNull();

    await user.type(screen.getByTestId('creation-token'), 'lkct-a-wrong-token-000000000000000000');
    b.failNext('create_workspace', { code: 'creation_token_invalid', message: 'the broker refused the creation token' });
    await user.click(screen.getByTestId('create-workspace'));
    await waitFor(() =>
      expect(screen.getByTestId('creation-token-error'), 'a wrong token: check it').toHaveTextContent('letter case included'),
    );
    expect(screen.getByTestId('creation-token-error')).not.toHaveTextContent('lkct-a-wrong-token');

    b.failNext('create_workspace', { code: 'invalid_creation_token', message: 'the creation token has a character other than the visible ASCII ones' });
    await user.click(screen.getByTestId('create-workspace'));
    await waitFor(() => expect(screen.getByTestId('creation-token-error')).toHaveTextContent('This is not a creation token'));

    await user.clear(screen.getByTestId('creation-token'));
    await user.type(screen.getByTestId('creation-token'), 'lkct-the-right-token-1111111111111111');
    await user.click(screen.getByTestId('create-workspace'));
    await screen.findByText('Workspace ready');
  });

  it('offers to join with an invite when the team server creates no workspaces', async () => {
    const b = setup({ fresh: true });
    const user = userEvent.setup();
    render(Onboarding);
    await fillCreateOnServer(user);
    b.failNext('create_workspace', { code: 'workspace_creation_closed', message: 'this broker does not create workspaces' });
    await user.click(screen.getByTestId('create-workspace'));
    const closed = await screen.findByTestId('creation-closed');
    expect(closed).toHaveTextContent('does not create new workspaces');
    expect(closed).toHaveTextContent('invite code');
    await user.click(screen.getByTestId('creation-closed-join'));
    expect(screen.getByText('Join a workspace')).toBeInTheDocument();
    expect((screen.getByTestId('join-url') as HTMLInputElement).value, 'the same server').toBe('https://lk.acme.dev');
  });

  it('offers the recovery kit only when both passphrases match, and can be skipped', async () => {
    const b = setup({ fresh: true });
    const user = userEvent.setup();
    render(Onboarding);
    await fillCreate(user);
    await user.click(screen.getByTestId('create-workspace'));
    await screen.findByText('Workspace ready');
    await user.type(screen.getByTestId('kit-pass1'), 'correct horse battery');
    await user.type(screen.getByTestId('kit-pass2'), 'correct horse batterx');
    expect(screen.getByTestId('export-kit'), 'mismatched passphrases must not be exported').toBeDisabled();
    await user.clear(screen.getByTestId('kit-pass2'));
    await user.type(screen.getByTestId('kit-pass2'), 'correct horse battery');
    await user.click(screen.getByTestId('export-kit'));
    expect(await screen.findByTestId('kit-path')).toHaveTextContent('latchkey-recovery-kit');
    expect(b.callsOf('export_recovery_kit')).toEqual([{ passphrase: 'correct horse battery' }]);
    await user.click(screen.getByTestId('onboarding-done'));
    expect(app.status?.setUp, 'finishing onboarding hands the new status to the app').toBe(true);
  });

  it("joins a server behind a private authority with that authority's certificate", async () => {
    const b = setup({ fresh: true });
    const user = userEvent.setup();
    render(Onboarding);
    await user.click(screen.getByTestId('start-join'));
    await user.type(screen.getByTestId('join-url'), 'https://lk.acme.internal');
    await user.click(screen.getByTestId('join-ca-toggle'));
    const pem = PRIVATE_CA_PEM;
    await user.type(screen.getByTestId('join-ca'), pem);
    await user.type(screen.getByTestId('invite-code'), 'LK-7Q4M');
    await user.type(screen.getByTestId('join-name'), 'Sam');
    await user.click(screen.getByTestId('join-workspace'));
    await screen.findByTestId('fingerprint');
    expect(b.callsOf('join_workspace')[0].serverCa).toBe(pem);
  });

  it('joins with an invite, shows the fingerprint, and explains not_admitted_yet', async () => {
    const b = setup({ fresh: true, admitAfter: 1 });
    const user = userEvent.setup();
    render(Onboarding);
    await user.click(screen.getByTestId('start-join'));
    await user.type(screen.getByTestId('join-url'), 'https://lk.acme.dev');
    await user.type(screen.getByTestId('invite-code'), 'LK-7Q4M');
    expect(screen.getByTestId('join-as-new'), 'joining as a new member is the default').toBeChecked();
    expect(screen.getByTestId('join-workspace'), 'a new member gives their name').toBeDisabled();
    await user.type(screen.getByTestId('join-name'), 'Sam');
    await user.click(screen.getByTestId('join-workspace'));
    expect(await screen.findByTestId('fingerprint')).toHaveTextContent('4F2A-91C3-7D0E-B85A');
    expect(b.callsOf('join_workspace')[0], 'a new member sends a name and no member id').toMatchObject({ memberName: 'Sam', deviceOf: null, inviteCode: 'LK-7Q4M', serverCa: null });

    expect(screen.getByTestId('finish-join'), 'keys are taken only from a confirmed admin device').toBeDisabled();
    await user.type(screen.getByTestId('admin-fingerprint'), '9C1B-22D0-5E7F-A3B4');
    await user.click(screen.getByTestId('finish-join'));
    expect(b.callsOf('finish_join')[0]).toMatchObject({ adminFingerprint: '9C1B-22D0-5E7F-A3B4' });
    expect(await screen.findByTestId('not-admitted'), 'not_admitted_yet is a normal waiting state, not an error').toHaveTextContent(/admin/);
    expect(screen.queryByRole('alert')).toBeNull();

    await user.click(screen.getByTestId('finish-join'));
    await waitFor(() => expect(app.status?.setUp).toBe(true));
  });

  it('shows a fingerprint that matches no sender as an error to fix, not as a wait', async () => {
    const b = setup({ fresh: true, admitAfter: 0 });
    const user = userEvent.setup();
    render(Onboarding);
    await user.click(screen.getByTestId('start-join'));
    await user.type(screen.getByTestId('join-url'), 'https://lk.acme.dev');
    await user.type(screen.getByTestId('invite-code'), 'LK-7Q4M');
    await user.type(screen.getByTestId('join-name'), 'Sam');
    await user.click(screen.getByTestId('join-workspace'));
    await screen.findByTestId('fingerprint');
    const message = 'Keys wait for this device, but none from the device with that fingerprint.';
    b.failNext('finish_join', { code: 'fingerprint_mismatch', message });
    await user.type(screen.getByTestId('admin-fingerprint'), '0000-0000-0000-0000');
    await user.click(screen.getByTestId('finish-join'));
    const alert = await screen.findByRole('alert');
    expect(alert, 'the broker-side reason is shown as it came').toHaveTextContent(message);
    expect(alert).toHaveAttribute('data-code', 'fingerprint_mismatch');
    expect(screen.queryByTestId('not-admitted'), 'a mistyped fingerprint is not "an admin still needs to admit"').toBeNull();
    expect(app.status?.setUp, 'nothing was accepted').toBeFalsy();

    await user.clear(screen.getByTestId('admin-fingerprint'));
    await user.type(screen.getByTestId('admin-fingerprint'), '9C1B-22D0-5E7F-A3B4');
    await user.click(screen.getByTestId('finish-join'));
    await waitFor(() => expect(app.status?.setUp, 'the corrected fingerprint finishes the join').toBe(true));
    expect(screen.queryByRole('alert'), 'the error leaves once the retry succeeds').toBeNull();
  });

  it('shows the message of a failed join', async () => {
    const b = setup({ fresh: true });
    b.failNext('join_workspace', { code: 'invalid_invite', message: 'That invite code has expired.' });
    const user = userEvent.setup();
    render(Onboarding);
    await user.click(screen.getByTestId('start-join'));
    await user.type(screen.getByTestId('join-url'), 'https://lk.acme.dev');
    await user.type(screen.getByTestId('invite-code'), 'LK-OLD1');
    await user.type(screen.getByTestId('join-name'), 'Sam');
    await user.click(screen.getByTestId('join-workspace'));
    expect(await screen.findByRole('alert')).toHaveTextContent('That invite code has expired.');
  });
});
