import { afterEach, describe, expect, it } from 'vitest';
import { cleanup, render, screen, waitFor, within } from '@testing-library/svelte';
import userEvent from '@testing-library/user-event';
import { clearMocks } from '@tauri-apps/api/mocks';
import Policies from '../screens/Policies.svelte';
import Audit from '../screens/Audit.svelte';
import Members from '../screens/Members.svelte';
import Security from '../screens/Security.svelte';
import { app, refreshStatus } from '../lib/stores/status.svelte';
import { onPrivateCaTeamServer, PRIVATE_CA_PEM, setup, settle, stubClipboard } from '../lib/testing/helpers';

afterEach(() => {
  cleanup();
  clearMocks();
});

describe('policies', () => {
  it('renders policy_invalid problems at their line in the editor', async () => {
    const b = setup();
    await refreshStatus();
    b.failNext('save_policy', {
      code: 'policy_invalid',
      message: 'line 3: unexpected token',
      problems: [{ message: 'unexpected token', line: 3, column: 5 }],
    } as never);
    const user = userEvent.setup();
    render(Policies);
    await user.click(await screen.findByRole('button', { name: 'Edit policy read-only' }));
    await user.click(screen.getByTestId('save-policy'));
    const problem = await screen.findByTestId('policy-problem');
    expect(problem).toHaveTextContent('Line 3, col 5');
    expect(problem).toHaveTextContent('unexpected token');
    const gutter = document.querySelector('[data-line="3"].ln');
    expect(gutter, 'line 3 is marked in the gutter').toHaveAttribute('data-problem', 'true');
    expect(document.querySelector('[data-line="2"].ln'), 'other lines are not marked').not.toHaveAttribute('data-problem');
    await user.click(problem);
    const area = screen.getByTestId('policy-source') as HTMLTextAreaElement;
    const before = area.value.split('\n').slice(0, 2).join('\n').length + 1;
    expect(area.selectionStart, 'clicking a problem puts the caret at its line and column').toBe(before + 4);
  });

  it('saves a policy from a template', async () => {
    const b = setup();
    await refreshStatus();
    const user = userEvent.setup();
    render(Policies);
    await user.click(await screen.findByTestId('new-policy'));
    await user.click(await screen.findByTestId('template-approve-writes'));
    expect((screen.getByTestId('policy-source') as HTMLTextAreaElement).value).toContain('@approval');
    await user.click(screen.getByTestId('save-policy'));
    await waitFor(() => expect(b.callsOf('save_policy')).toHaveLength(1));
    expect(b.callsOf('save_policy')[0]).toMatchObject({ id: 'approve-writes', enabled: true });
    expect(await screen.findByTestId('policy-approve-writes')).toBeInTheDocument();
  });

  it('answers "would this request be allowed?" with check_call', async () => {
    const b = setup();
    const user = userEvent.setup();
    render(Policies);
    const tester = await screen.findByTestId('policy-tester');
    await waitFor(() => expect((within(tester).getByTestId('test-agent') as HTMLSelectElement).value).toBe('agent_ci'));
    await user.selectOptions(within(tester).getByTestId('test-method'), 'DELETE');
    await user.clear(within(tester).getByTestId('test-path'));
    await user.type(within(tester).getByTestId('test-path'), '/repos/acme/web');
    await user.click(within(tester).getByTestId('test-submit'));
    const res = await screen.findByTestId('check-result');
    expect(res).toHaveTextContent('Denied');
    expect(res).toHaveTextContent('deny-deletes');
    expect(b.callsOf('check_call')).toEqual([{ agent: 'agent_ci', credential: 'cred_gh', method: 'DELETE', path: '/repos/acme/web' }]);
    const asked = within(res).getByTestId('check-asked').textContent ?? '';
    expect(asked, 'the verdict names the request it answers').toMatch(/^ci-bot: DELETE \/repos\/acme\/web via /);
    await user.clear(within(tester).getByTestId('test-path'));
    await user.type(within(tester).getByTestId('test-path'), '/repos/acme/api');
    expect(within(res).getByTestId('check-asked'), 'editing the fields does not relabel the last verdict').toHaveTextContent(asked);
  });

  it("keeps a saved policy's validator warnings in sight, labelled as warnings", async () => {
    const b = setup();
    await refreshStatus();
    const user = userEvent.setup();
    render(Policies);
    await user.click(await screen.findByRole('button', { name: 'Edit policy read-only' }));
    const source = screen.getByTestId('policy-source') as HTMLTextAreaElement;
    await user.clear(source);
    // The editor inserts spaces for Tab, not braces: type the text as a person pastes it.
    await user.click(source);
    await user.paste('permit (principal, action, resource)\nwhen { false };\n');
    await user.click(screen.getByTestId('save-policy'));
    await waitFor(() => expect(b.callsOf('save_policy')).toHaveLength(1));
    const problems = await screen.findByTestId('policy-problems');
    expect(problems, 'the warnings the save returned are not wiped').toHaveAttribute('aria-label', 'Warnings');
    expect(within(problems).getByTestId('policy-problem')).toHaveTextContent(/Warning.*Line 2.*policy is impossible/);
    expect(screen.getByTestId('policy-warnings-note'), 'a warning does not read as a refusal').toHaveTextContent('in force');
    expect(document.querySelector('[data-line="2"].ln'), 'the line is marked as a warning').toHaveAttribute('data-warning', 'true');
    expect(source, 'a saved policy is not marked invalid').toHaveAttribute('aria-invalid', 'false');
    expect(within(screen.getByTestId('policy-read-only')).getByTestId('policy-warnings-count')).toHaveTextContent('1 warning');
  });

  it('refuses to overwrite a policy another admin changed, keeps the text and offers both ways on', async () => {
    const b = setup();
    await refreshStatus();
    const user = userEvent.setup();
    render(Policies);
    await user.click(await screen.findByRole('button', { name: 'Edit policy read-only' }));
    const opened = b.policies.find((p) => p.id === 'read-only')!.revision;
    // Someone else saves the policy while it is open here.
    const theirs = '// their version\n' + b.policies.find((p) => p.id === 'read-only')!.source;
    b.policies = b.policies.map((p) => (p.id === 'read-only' ? { ...p, source: theirs, revision: ++b.policyRevision } : p));
    const source = screen.getByTestId('policy-source') as HTMLTextAreaElement;
    await user.click(source);
    await user.paste('// mine\n');
    const mine = source.value;
    await user.click(screen.getByTestId('save-policy'));
    const note = await screen.findByTestId('policy-conflict');
    expect(b.callsOf('save_policy')[0], 'the save names the revision the editor read').toMatchObject({ id: 'read-only', revision: opened });
    expect(note).toHaveTextContent('changed since you opened it');
    expect(b.policies.find((p) => p.id === 'read-only')!.source, 'their change is not overwritten').toBe(theirs);
    expect(source.value, 'the refused text stays in the editor').toBe(mine);

    await user.click(within(note).getByTestId('policy-save-over'));
    await waitFor(() => expect(b.callsOf('save_policy')).toHaveLength(2));
    expect(b.callsOf('save_policy')[1], 'saving over names the revision now seen').toMatchObject({ revision: b.policyRevision - 1 });
    await waitFor(() => expect(b.policies.find((p) => p.id === 'read-only')!.source).toBe(mine));
    expect(screen.queryByTestId('policy-conflict'), 'the conflict is resolved').not.toBeInTheDocument();

    // Changed again elsewhere; this time load theirs.
    b.policies = b.policies.map((p) => (p.id === 'read-only' ? { ...p, source: theirs, revision: ++b.policyRevision } : p));
    await user.click(source);
    await user.paste('// mine again\n');
    await user.click(screen.getByTestId('save-policy'));
    await user.click(within(await screen.findByTestId('policy-conflict')).getByTestId('policy-load-theirs'));
    expect((screen.getByTestId('policy-source') as HTMLTextAreaElement).value, 'the saved version replaces the text').toBe(theirs);
    await user.click(screen.getByTestId('save-policy'));
    await waitFor(() => expect(b.callsOf('save_policy')).toHaveLength(4));
    expect(screen.queryByTestId('policy-conflict'), 'saving from the version read succeeds').not.toBeInTheDocument();
  });

  it('creates only under a free id and says when a policy was deleted meanwhile', async () => {
    const b = setup();
    await refreshStatus();
    const user = userEvent.setup();
    render(Policies);
    await user.click(await screen.findByTestId('new-policy'));
    await user.click(await screen.findByTestId('template-blank'));
    // Another admin creates a policy under the id this editor chose.
    const id = (screen.getByTestId('policy-id') as HTMLInputElement).value;
    b.policies.push({ id, description: '', source: 'permit (principal, action, resource);\n', enabled: true, updatedAt: 1, revision: ++b.policyRevision, problems: [] });
    await user.click(screen.getByTestId('save-policy'));
    const note = await screen.findByTestId('policy-conflict');
    expect(b.callsOf('save_policy')[0], 'a new policy is saved as create-only').toMatchObject({ id, revision: 0 });
    expect(note).toHaveTextContent('already exists');
    expect(within(note).getByTestId('policy-load-theirs')).toHaveTextContent('Open the existing policy');

    // An open policy deleted elsewhere: saving says so and offers to create it again.
    await user.click(await screen.findByRole('button', { name: 'Edit policy deny-deletes' }));
    b.policies = b.policies.filter((p) => p.id !== 'deny-deletes');
    await user.click(screen.getByTestId('save-policy'));
    const gone = await screen.findByTestId('policy-conflict');
    expect(gone).toHaveTextContent('deleted since you opened it');
    expect(within(gone).queryByTestId('policy-load-theirs'), 'nothing to load').not.toBeInTheDocument();
    await user.click(within(gone).getByTestId('policy-save-over'));
    await waitFor(() => expect(b.policies.some((p) => p.id === 'deny-deletes'), 'created again on request').toBe(true));
    expect(b.callsOf('save_policy').at(-1)).toMatchObject({ id: 'deny-deletes', revision: 0 });
  });

  it('deletes only the revision shown, and shows the list as it is after a refusal', async () => {
    const b = setup();
    await refreshStatus();
    const user = userEvent.setup();
    render(Policies);
    await user.click(await screen.findByRole('button', { name: 'Edit policy deny-deletes' }));
    b.policies = b.policies.map((p) => (p.id === 'deny-deletes' ? { ...p, description: 'Changed elsewhere', revision: ++b.policyRevision } : p));
    await user.click(screen.getByTestId('delete-policy'));
    await user.click(await screen.findByTestId('confirm-delete-policy'));
    expect(await screen.findByRole('alert')).toHaveTextContent('changed since you read revision');
    expect(b.policies.some((p) => p.id === 'deny-deletes'), 'a policy changed since it was shown is not deleted').toBe(true);
    await waitFor(() => expect(screen.getByTestId('policy-deny-deletes')).toHaveTextContent('Changed elsewhere'));
  });

  it('shows a policy switch as the policy is when saving it fails', async () => {
    const b = setup();
    await refreshStatus();
    b.failNext('save_policy', { code: 'broker_unreachable', message: 'The broker did not answer.' });
    const user = userEvent.setup();
    render(Policies);
    const row = await screen.findByTestId('policy-read-only');
    const toggle = within(row).getByTestId('policy-enabled') as HTMLInputElement;
    expect(toggle.checked).toBe(true);
    await user.click(toggle);
    expect(await screen.findByRole('alert')).toHaveTextContent('The broker did not answer.');
    expect(toggle.checked, 'the policy is still enabled: the switch must say so').toBe(true);
    expect(b.policies.find((p) => p.id === 'read-only')!.enabled).toBe(true);
  });

  it('tells a call held for approval from an allowed and a denied one', async () => {
    const b = setup();
    b.policies.push({ id: 'approve-writes', description: 'Writes need a human', source: '@approval("required")\npermit (principal, action, resource);\n', enabled: true, updatedAt: 1, revision: 1, problems: [] });
    const user = userEvent.setup();
    render(Policies);
    const tester = await screen.findByTestId('policy-tester');
    await waitFor(() => expect((within(tester).getByTestId('test-agent') as HTMLSelectElement).value).toBe('agent_ci'));
    const verdict = async (method: string) => {
      await user.selectOptions(within(tester).getByTestId('test-method'), method);
      await user.click(within(tester).getByTestId('test-submit'));
      await waitFor(() => expect(screen.getByTestId('check-asked')).toHaveTextContent(`${method} /`));
      return screen.getByTestId('check-result');
    };
    const held = await verdict('POST');
    expect(held, 'a call that waits for an approval is not "Denied"').toHaveTextContent(/^Held for approval/);
    expect(held).toHaveAttribute('data-verdict', 'approval');
    expect(held).toHaveTextContent('approve-writes');
    expect(await verdict('GET')).toHaveTextContent(/^Allowed/);
    expect(await verdict('DELETE'), 'a forbidden call is denied, and no approval changes that').toHaveTextContent(/^Denied/);
  });

  it('checks an inject with its lifetime and command through check_inject', async () => {
    const b = setup();
    const user = userEvent.setup();
    render(Policies);
    const tester = await screen.findByTestId('policy-tester');
    await waitFor(() => expect((within(tester).getByTestId('test-agent') as HTMLSelectElement).value).toBe('agent_ci'));
    await user.click(within(tester).getByTestId('test-mode-inject'));
    expect(within(tester).queryByTestId('test-method'), 'an inject has no method or path').toBeNull();
    expect(within(tester).getByTestId('test-submit'), 'a command is needed').toBeDisabled();
    await user.selectOptions(within(tester).getByTestId('test-lifetime'), '8 hours');
    await user.type(within(tester).getByTestId('test-command'), 'gh');
    await user.click(within(tester).getByTestId('test-submit'));
    expect(await screen.findByTestId('check-result')).toHaveTextContent('Denied');
    await user.selectOptions(within(tester).getByTestId('test-lifetime'), '1 hour');
    await user.click(within(tester).getByTestId('test-submit'));
    await waitFor(() => expect(screen.getByTestId('check-result')).toHaveTextContent('Allowed'));
    expect(screen.getByTestId('check-result')).toHaveTextContent('short-named-injects');
    expect(b.callsOf('check_inject')).toEqual([
      { agent: 'agent_ci', credential: 'cred_gh', lifetimeSecs: 8 * 3600, command: 'gh' },
      { agent: 'agent_ci', credential: 'cred_gh', lifetimeSecs: 3600, command: 'gh' },
    ]);
    expect(b.callsOf('check_call'), 'the call check is not asked').toEqual([]);

    await user.click(within(tester).getByTestId('test-mode-call'));
    expect(within(tester).getByTestId('test-method')).toBeInTheDocument();
    expect(screen.queryByTestId('check-result'), 'switching modes clears the last answer').toBeNull();
  });

  it('is read-only for a member, whose changes the server refuses; the tester still works', async () => {
    const b = setup();
    b.status.workspace = { ...b.status.workspace!, role: 'member' };
    await refreshStatus();
    const user = userEvent.setup();
    render(Policies);
    expect(await screen.findByTestId('policies-read-only')).toHaveTextContent('Only admins change policies');
    expect(screen.queryByTestId('new-policy'), 'a member is not offered a new policy').toBeNull();
    const row = await screen.findByTestId('policy-read-only');
    expect(within(row).getByTestId('policy-enabled'), 'a member cannot switch a policy').toBeDisabled();
    await user.click(within(row).getByRole('button', { name: 'Read policy read-only' }));
    expect(screen.getByTestId('policy-source'), 'a member reads the source').toHaveAttribute('readonly');
    expect(screen.queryByTestId('save-policy'), 'no Save a member would see refused').toBeNull();
    expect(screen.queryByTestId('delete-policy'), 'no Delete either').toBeNull();
    const tester = screen.getByTestId('policy-tester');
    await waitFor(() => expect((within(tester).getByTestId('test-agent') as HTMLSelectElement).value).toBe('agent_ci'));
    await user.click(within(tester).getByTestId('test-submit'));
    expect(await screen.findByTestId('check-result'), 'the tester is for members too').toHaveTextContent('Allowed');
    expect(b.callsOf('save_policy')).toEqual([]);
  });
});

describe('audit', () => {
  it('shows a verified chain', async () => {
    const b = setup();
    render(Audit);
    expect(await screen.findByTestId('audit-verify')).toHaveTextContent(`Chain verified on this device — ${b.audit.length} records intact`);
    expect(screen.getByTestId('audit-anchor'), 'a first check says the head is kept').toHaveTextContent('keeps the head');
  });

  it('says a record verified before is still there', async () => {
    const b = setup();
    b.verdict = { ok: true, records: 130, head: 'c0ffee', firstBrokenSeq: null, reason: null, anchoredSeq: 120, checked: 130, checkedFrom: 1 };
    render(Audit);
    expect(await screen.findByTestId('audit-anchor')).toHaveTextContent('Record 120, verified here before, is unchanged');
  });

  it('reads from the record verified before on opening, and every record on request', async () => {
    const b = setup();
    const user = userEvent.setup();
    b.verdict = { ok: true, records: 130, head: 'c0ffee', firstBrokenSeq: null, reason: null, anchoredSeq: 120, checked: 11, checkedFrom: 120 };
    render(Audit);
    expect(await screen.findByTestId('audit-anchor')).toHaveTextContent('Read from record 120, verified here before, to record 130: nothing was removed');
    expect(b.callsOf('verify_audit'), 'opening the screen is the quick check').toEqual([{ full: false }]);
    b.verdict = { ...b.verdict, anchoredSeq: 130, checked: 130, checkedFrom: 1 };
    await user.click(screen.getByTestId('reverify'));
    expect(await screen.findByText(/Record 130, verified here before, is unchanged/)).toBeInTheDocument();
    expect(b.callsOf('verify_audit'), 'the button re-reads the whole log').toEqual([{ full: false }, { full: true }]);
  });

  it('shows a log cut short of the record verified before as broken', async () => {
    const b = setup();
    const reason = 'the log ends before a record this device saw verified: records were removed from its end';
    b.verdict = { ok: false, records: 0, head: null, firstBrokenSeq: 120, reason, anchoredSeq: 120, checked: 0, checkedFrom: null };
    render(Audit);
    const banner = await screen.findByTestId('audit-verify');
    expect(banner).toHaveTextContent('Chain broken at record 120');
    expect(banner).toHaveTextContent('removed from its end');
  });

  it('shows a broken chain with the first broken record and reason', async () => {
    const b = setup();
    b.verdict = { ok: false, records: 120, head: null, firstBrokenSeq: 57, reason: 'hash mismatch', anchoredSeq: null, checked: 0, checkedFrom: null };
    render(Audit);
    const banner = await screen.findByTestId('audit-verify');
    expect(banner).toHaveTextContent('Chain broken at record 57');
    expect(banner).toHaveTextContent('hash mismatch');
  });

  it('filters by decision and passes the filter to list_audit', async () => {
    const b = setup();
    const user = userEvent.setup();
    render(Audit);
    await screen.findByTestId('audit-table');
    await user.selectOptions(screen.getByTestId('filter-decision'), 'denied');
    await waitFor(() => expect(b.callsOf('list_audit').at(-1)).toMatchObject({ decision: 'denied', agent: null, credentialName: null }));
    await waitFor(() => expect(within(screen.getByTestId('audit-table')).queryAllByText('allowed')).toHaveLength(0));
  });

  it("shows what a device's change was about beside its kind", async () => {
    const b = setup();
    b.audit.unshift({ seq: 9999, at: b.audit[0].at + 1, kind: 'member_removed', agent: null, agentName: null, credentialName: null,
      method: null, host: null, path: null, decision: null, reason: null, policyIds: [], upstreamStatus: null, subject: 'mem_sam' });
    render(Audit);
    expect(await screen.findByTestId('audit-subject-9999'), 'the removed member is named on the row').toHaveTextContent('mem_sam');
    expect(screen.getByTestId('audit-table')).toHaveTextContent('member_removed');
  });

  it("names the kind of a device's refused request beside the route it tried", async () => {
    const b = setup();
    b.audit.unshift({ seq: 9998, at: b.audit[0].at + 1, kind: 'request_refused', agent: null, agentName: null, credentialName: null,
      method: 'DELETE', host: null, path: '/v1/members/{id}', decision: null, reason: 'forbidden', policyIds: [], upstreamStatus: null, subject: null });
    render(Audit);
    expect(await screen.findByTestId('audit-kind-9998'), 'not an agent call: the kind says what it was').toHaveTextContent('request_refused');
    const row = screen.getByTestId('audit-9998');
    expect(row).toHaveTextContent('DELETE /v1/members/{id}');
    expect(row, 'no host is printed as text').not.toHaveTextContent('null');
    expect(row).toHaveTextContent('forbidden');
  });

  it('filters by integration by its name, which is what audit records carry', async () => {
    const b = setup();
    const user = userEvent.setup();
    render(Audit);
    const table = await screen.findByTestId('audit-table');
    expect(within(table).queryAllByText('openai-prod').length, 'the seed has calls on both integrations').toBeGreaterThan(0);
    await user.selectOptions(screen.getByTestId('filter-credential'), 'github-main');
    await waitFor(() => expect(b.callsOf('list_audit').at(-1)).toMatchObject({ credentialName: 'github-main' }));
    await waitFor(() => expect(within(screen.getByTestId('audit-table')).queryAllByText('openai-prod')).toHaveLength(0));
    expect(within(screen.getByTestId('audit-table')).queryAllByText('github-main').length, 'its own calls stay listed').toBeGreaterThan(0);
  });

  it('exports and shows where the file was saved', async () => {
    const b = setup();
    const user = userEvent.setup();
    render(Audit);
    await user.click(await screen.findByTestId('export-csv'));
    expect(await screen.findByTestId('export-path')).toHaveTextContent('latchkey-audit.csv');
    expect(b.callsOf('export_audit')).toEqual([{ format: 'csv' }]);
  });

  it('draws one allowed and one denied bar per agent with the right counts', async () => {
    const b = setup();
    render(Audit);
    await screen.findByTestId('audit-chart');
    // The screen's default range is the last 24 hours, which covers all seeded rows.
    const expected = b.audit.filter((r) => r.agent === 'agent_ci' && r.at >= Date.now() / 1000 - 86400);
    const allowed = expected.filter((r) => r.decision === 'allowed').length;
    const denied = expected.filter((r) => r.decision === 'denied').length;
    expect(screen.getByTestId('chart-agent-agent_ci')).toHaveTextContent(`${allowed} ✓ · ${denied} ✕`);
  });
});

describe('members', () => {
  it('admits a device only after the typed fingerprint matches', async () => {
    const b = setup();
    await refreshStatus();
    const user = userEvent.setup();
    render(Members);
    const row = await screen.findByTestId('device-dev_sam');
    await user.click(within(row).getByTestId('admit-device'));
    const dlg = screen.getByTestId('admit-dialog');
    await user.type(within(dlg).getByTestId('admit-fingerprint'), '9B1C-22D4-E0F7-0000');
    expect(within(dlg).getByTestId('fingerprint-match')).toHaveTextContent('Does not match');
    expect(within(dlg).getByTestId('admit-submit'), 'a mismatching fingerprint cannot be admitted').toBeDisabled();
    await user.clear(within(dlg).getByTestId('admit-fingerprint'));
    await user.type(within(dlg).getByTestId('admit-fingerprint'), '9b1c 22d4 e0f7 6a13');
    expect(within(dlg).getByTestId('admit-submit')).toBeEnabled();
    await user.click(within(dlg).getByTestId('admit-submit'));
    await waitFor(() => expect(b.callsOf('admit_device')).toEqual([{ deviceId: 'dev_sam', fingerprint: '9B1C-22D4-E0F7-6A13' }]));
    const admitted = await screen.findByTestId('device-dev_sam');
    await waitFor(() => expect(within(admitted).queryByTestId('admit-device'), 'a confirmed device is not offered for admission again').toBeNull());
    expect(admitted).toHaveTextContent('Confirmed');
  });

  it('removes a member with key rotation on by default', async () => {
    const b = setup();
    await refreshStatus();
    const user = userEvent.setup();
    render(Members);
    await user.click(within(await screen.findByTestId('member-Sam Rivera')).getByTestId('remove-member'));
    const dlg = screen.getByTestId('remove-dialog');
    expect(within(dlg).getByTestId('rotate'), 'rotating keys is the safe default').toBeChecked();
    await user.click(within(dlg).getByTestId('confirm-remove'));
    await waitFor(() => expect(b.callsOf('remove_member')).toEqual([{ id: 'mem_sam', rotate: true }]));
    await waitFor(() => expect(screen.queryByTestId('member-Sam Rivera')).toBeNull());
  });

  it('creates an invite and shows its code and expiry', async () => {
    const b = setup();
    await refreshStatus();
    const user = userEvent.setup();
    render(Members);
    await user.click(await screen.findByTestId('invite'));
    await user.click(screen.getByTestId('role-admin'));
    await user.click(screen.getByTestId('create-invite'));
    expect(await screen.findByTestId('invite-code')).toHaveTextContent('LK-7Q4M-2XRT-9PHD');
    expect(screen.getByTestId('invite-dialog')).toHaveTextContent('expires');
    expect(b.callsOf('create_invite'), 'a day unless chosen otherwise').toEqual([{ role: 'admin', validForSecs: 86400 }]);
    expect(screen.queryByTestId('invite-ca'), 'no private authority, nothing more to send').toBeNull();
  });

  it('makes an invite last as long as chosen', async () => {
    const b = setup();
    await refreshStatus();
    const user = userEvent.setup();
    render(Members);
    await user.click(await screen.findByTestId('invite'));
    await user.selectOptions(screen.getByTestId('invite-lifetime'), '1 hour');
    await user.click(screen.getByTestId('create-invite'));
    await screen.findByTestId('invite-code');
    expect(b.callsOf('create_invite')).toEqual([{ role: 'member', validForSecs: 3600 }]);
    expect(screen.getByTestId('invite-dialog'), 'the expiry shown is the one chosen').toHaveTextContent(/expires in (1 h|60 min)/);
  });

  it('makes one invite code for a double click, not two live ones', async () => {
    const b = setup();
    await refreshStatus();
    const user = userEvent.setup();
    render(Members);
    await user.click(await screen.findByTestId('invite'));
    const create = screen.getByTestId('create-invite');
    create.click();
    create.click();
    expect(await screen.findByTestId('invite-code')).toBeInTheDocument();
    await settle();
    expect(b.callsOf('create_invite'), 'each code made is a live way into the workspace').toHaveLength(1);
  });

  it('lists a new invite as pending, without its code, and revokes it', async () => {
    const b = setup();
    await refreshStatus();
    const user = userEvent.setup();
    render(Members);
    await screen.findByTestId('member-Sam Rivera');
    expect(screen.queryByTestId('pending-invites'), 'no pending invites, no section').toBeNull();
    await user.click(screen.getByTestId('invite'));
    await user.click(screen.getByTestId('create-invite'));
    await screen.findByTestId('invite-code');
    await user.click(screen.getByTestId('invite-done'));
    const pending = await screen.findByTestId('pending-invites');
    const row = within(pending).getByTestId('invite-inv_1');
    expect(row, 'what it admits and who made it').toHaveTextContent('A new member');
    expect(row).toHaveTextContent('You');
    expect(pending, 'a code is shown once, never in the list').not.toHaveTextContent('LK-7Q4M-2XRT-9PHD');
    await user.click(within(row).getByTestId('revoke-invite'));
    await waitFor(() => expect(b.callsOf('revoke_invite')).toEqual([{ id: 'inv_1' }]));
    await waitFor(() => expect(screen.queryByTestId('pending-invites'), 'nothing left pending').toBeNull());
    expect(b.invites).toEqual([]);
  });

  it("names another member's device invite and keeps the list when a revocation is refused", async () => {
    const b = setup();
    await refreshStatus();
    b.invites = [
      { id: 'inv_9', role: null, deviceOf: 'Sam Rivera', madeBy: 'Sam Rivera', yours: false, createdAt: 1, expiresAt: 4102444800 },
    ];
    const user = userEvent.setup();
    render(Members);
    const row = await screen.findByTestId('invite-inv_9');
    expect(row).toHaveTextContent('A device of Sam Rivera');
    expect(row, 'not made by the signed-in member').not.toHaveTextContent('You');
    b.failNext('revoke_invite', { code: 'not_found', message: 'No pending invite with this id in your workspace: it may have expired.' });
    await user.click(within(row).getByTestId('revoke-invite'));
    expect(await within(screen.getByTestId('pending-invites')).findByText(/may have expired/), 'the refusal is said where it happened').toBeInTheDocument();
    expect(screen.getByTestId('invite-inv_9'), 'the list is read again, not emptied').toBeInTheDocument();
    expect(screen.getByTestId('member-Sam Rivera'), 'members stay shown').toBeInTheDocument();
  });

  it("reminds the admin to send the team server's private certificate authority with an invite", async () => {
    const b = setup();
    await onPrivateCaTeamServer(b);
    const user = userEvent.setup();
    const copied = stubClipboard();
    render(Members);
    await user.click(await screen.findByTestId('invite'));
    await user.click(screen.getByTestId('create-invite'));
    expect(await screen.findByTestId('invite-ca')).toHaveTextContent('send its certificate too');
    await user.click(screen.getByTestId('copy-invite-ca'));
    expect(copied).toEqual([PRIVATE_CA_PEM]);
  });
});

describe('security', () => {
  it('drives the progress bar from rotation-progress and shows the result', async () => {
    const b = setup();
    const user = userEvent.setup();
    render(Security);
    await settle();
    await user.click(screen.getByTestId('rotate-keys'));
    expect(await screen.findByTestId('rotation-result')).toHaveTextContent(`Rotated ${b.integrations.length} credentials`);
    const bar = screen.getByRole('progressbar', { name: 'Rotation progress' }) as HTMLProgressElement;
    expect(bar.value, 'the final "done" event fills the bar').toBe(100);
    expect(screen.getByTestId('rotation-progress')).toHaveTextContent('Done');
    expect(screen.queryByTestId('rotation-not-sent'), 'every device got the key: no warning').toBeNull();
  });

  it('names how many devices were not sent the new key and what to do', async () => {
    const b = setup();
    b.rotationNotSent = 2;
    const user = userEvent.setup();
    render(Security);
    await settle();
    await user.click(screen.getByTestId('rotate-keys'));
    const warning = await screen.findByTestId('rotation-not-sent');
    expect(warning, 'the count and the way to fix it').toHaveTextContent('2 devices were not sent the new key');
    expect(warning).toHaveTextContent('admit them again on Members');
  });

  it('pauses all agents with set_paused', async () => {
    const b = setup();
    await refreshStatus();
    const user = userEvent.setup();
    render(Security);
    await user.click(screen.getByTestId('pause-toggle'));
    await waitFor(() => expect(app.status?.paused).toBe(true));
    expect(b.callsOf('set_paused')).toEqual([{ paused: true }]);
    expect(await screen.findByTestId('pause-state'), 'the switch says agents are paused').toHaveTextContent('Agents paused');
  });

  it('shows the pause switch as agents are when pausing fails', async () => {
    const b = setup();
    await refreshStatus();
    b.failNext('set_paused', { code: 'broker_unreachable', message: 'The broker did not answer.' });
    const user = userEvent.setup();
    render(Security);
    const toggle = screen.getByTestId('pause-toggle') as HTMLInputElement;
    await user.click(toggle);
    expect(await screen.findByRole('alert')).toHaveTextContent('The broker did not answer.');
    expect(app.status?.paused).toBe(false);
    expect(toggle.checked, 'agents still run: the switch must not say paused').toBe(false);
    expect(screen.getByTestId('pause-state'), 'the label says so too').toHaveTextContent('Agents running');
  });

  it("trusts a team server's private authority, lists it, and goes back to the system's", async () => {
    const b = setup();
    b.status.workspace = { ...b.status.workspace!, local: false, brokerUrl: 'https://lk.acme.internal' };
    await refreshStatus();
    const user = userEvent.setup();
    render(Security);
    const card = await screen.findByTestId('broker-ca-card');
    expect(card).toHaveTextContent("this computer's trusted certificate authorities");
    expect(screen.queryByTestId('broker-ca-clear'), 'nothing to clear yet').toBeNull();
    await user.type(screen.getByTestId('broker-ca-pem'), 'ask IT');
    await user.click(screen.getByTestId('broker-ca-save'));
    expect(await screen.findByRole('alert'), 'why the paste was refused').toHaveTextContent('no certificate found');
    expect(app.status?.workspace?.brokerCa, 'a refused paste changes nothing').toEqual([]);
    const pem = PRIVATE_CA_PEM;
    await user.clear(screen.getByTestId('broker-ca-pem'));
    await user.type(screen.getByTestId('broker-ca-pem'), pem);
    await user.click(screen.getByTestId('broker-ca-save'));
    expect(await screen.findByTestId('broker-ca-done')).toHaveTextContent('The server answered using the new authority');
    expect(screen.getByTestId('broker-ca-list')).toHaveTextContent('SHA-256 AB:CD:00');
    await user.click(screen.getByTestId('broker-ca-clear'));
    await waitFor(() => expect(app.status?.workspace?.brokerCa).toEqual([]));
    expect(b.callsOf('set_broker_ca')).toEqual([{ pem: 'ask IT' }, { pem }, { pem: null }]);
  });

  it("shows no certificate setting for this computer's own broker", async () => {
    setup();
    await refreshStatus();
    render(Security);
    await screen.findByTestId('rotate-keys');
    expect(screen.queryByTestId('broker-ca-card'), 'a loopback broker has no certificate').toBeNull();
  });

  it('shows why a recovery kit export failed', async () => {
    setup();
    const user = userEvent.setup();
    render(Security);
    await user.type(screen.getByTestId('kit-pass1'), 'short');
    await user.type(screen.getByTestId('kit-pass2'), 'short');
    await user.click(screen.getByTestId('export-kit'));
    expect(await screen.findByRole('alert')).toHaveTextContent('at least 12 characters');
  });

  it('imports a recovery kit chosen as a file, and says which keys were new', async () => {
    const b = setup();
    const user = userEvent.setup();
    render(Security);
    const kit = new File(['LATCHKEY RECOVERY KIT v1\nkdf: argon2id\n'], 'latchkey-recovery-kit.txt', { type: 'text/plain' });
    await user.upload(screen.getByTestId('import-kit-file'), kit);
    await waitFor(() => expect(screen.getByTestId('import-kit-text'), 'the chosen file fills the text').toHaveValue('LATCHKEY RECOVERY KIT v1\nkdf: argon2id\n'));
    expect(screen.getByTestId('import-kit'), 'no import without the passphrase').toBeDisabled();
    await user.type(screen.getByTestId('import-kit-pass'), 'correct horse battery staple');
    await user.click(screen.getByTestId('import-kit'));
    expect(await screen.findByTestId('import-kit-result')).toHaveTextContent('Imported workspace key v1 and your member key v1. 1 was already on this device.');
    expect(b.callsOf('import_recovery_kit')[0]).toEqual({ kit: 'LATCHKEY RECOVERY KIT v1\nkdf: argon2id\n', passphrase: 'correct horse battery staple' });
    expect(screen.getByTestId('import-kit-pass'), 'the passphrase does not stay on screen').toHaveValue('');
    expect(screen.getByTestId('import-kit-text')).toHaveValue('');
  });

  it('shows why a recovery kit was refused and keeps what was typed', async () => {
    setup();
    const user = userEvent.setup();
    render(Security);
    await user.type(screen.getByTestId('import-kit-text'), 'LATCHKEY RECOVERY KIT v1');
    await user.type(screen.getByTestId('import-kit-pass'), 'not the passphrase');
    await user.click(screen.getByTestId('import-kit'));
    const refused = await screen.findByTestId('import-kit-error');
    expect(refused).toHaveAttribute('data-code', 'recovery_kit_refused');
    expect(refused).toHaveTextContent('nothing was imported');
    expect(screen.queryByTestId('import-kit-result')).toBeNull();
    expect(screen.getByTestId('import-kit-text'), 'the kit stays, to try another passphrase').toHaveValue('LATCHKEY RECOVERY KIT v1');
  });
});
