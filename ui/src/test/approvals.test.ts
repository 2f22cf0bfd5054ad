import { afterEach, describe, expect, it } from 'vitest';
import { cleanup, render, screen, waitFor, within } from '@testing-library/svelte';
import userEvent from '@testing-library/user-event';
import { clearMocks } from '@tauri-apps/api/mocks';
import Approvals from '../screens/Approvals.svelte';
import { startApprovalsLive, approvals } from '../lib/stores/approvals.svelte';
import { navigate } from '../lib/stores/nav.svelte';
import { setup, settle } from '../lib/testing/helpers';

let stop: (() => void) | null = null;
afterEach(() => {
  stop?.();
  stop = null;
  cleanup();
  clearMocks();
});

describe('approvals', () => {
  it('shows the pending queue with details of the selected request', async () => {
    setup();
    render(Approvals);
    await screen.findByTestId('approval-appr_1');
    const d = screen.getByTestId('approval-detail');
    expect(within(d).getByText('ci-bot')).toBeInTheDocument();
    expect(within(d).getByText('github-main')).toBeInTheDocument();
    expect(within(d).getByText('labels'), 'query keys are shown by name').toBeInTheDocument();
    expect(within(d).getByTestId('body-size')).toHaveTextContent('2.0 KB');
    expect(within(d).getByText('require-approval-writes'), 'the policy that asked is named').toBeInTheDocument();
    expect(
      within(d).getByTestId('why-asked'),
      'the reason reads as a reason: no grant covers the call, and the named policy allows it once approved',
    ).toHaveTextContent('No grant covers this call; once approved, policy require-approval-writes allows it.');
    expect(within(d).getByTestId('countdown').textContent).toMatch(/^\d+:\d\d$/);
    expect(screen.queryByTestId('approval-appr_0'), 'answered requests are not in the pending queue').toBeNull();
  });

  it('refreshes the queue on approvals-changed', async () => {
    const b = setup();
    stop = startApprovalsLive();
    render(Approvals);
    await screen.findByTestId('approval-appr_1');
    // Someone answered appr_1 on another device.
    b.approvals.find((a) => a.id === 'appr_1')!.status = 'denied';
    await b.emit('approvals-changed', { pending: 1 });
    await waitFor(() => expect(screen.queryByTestId('approval-appr_1')).toBeNull());
    expect(screen.getByTestId('approval-appr_2')).toBeInTheDocument();
  });

  it('surfaces a new request from approval-requested at the top of the queue', async () => {
    const b = setup();
    stop = startApprovalsLive();
    render(Approvals);
    await screen.findByTestId('approval-appr_1');
    await settle();
    const a = await b.requestApproval({ id: 'appr_new', agentName: 'deploy-bot', method: 'PUT', path: '/deploy' });
    const row = await screen.findByTestId(`approval-${a.id}`);
    expect(row).toHaveTextContent('/deploy');
    expect(approvals.pending[0].id, 'the newest request comes first').toBe('appr_new');
  });

  it("shows your agent's call that an admin answers, without buttons or a count", async () => {
    const b = setup();
    b.approvals.unshift({ ...b.approvals.find((a) => a.id === 'appr_1')!, id: 'appr_theirs', agentName: 'mia-bot', answerable: false, createdAt: b.approvals[0].createdAt + 1 });
    const user = userEvent.setup();
    render(Approvals);
    const row = await screen.findByTestId('approval-appr_theirs');
    expect(within(row).getByTestId('admin-answers-appr_theirs'), 'the row says who answers').toBeInTheDocument();
    expect(screen.getByTestId('tab-pending'), 'the count is of requests you can answer').toHaveTextContent('Pending 2');
    await user.click(row);
    const d = screen.getByTestId('approval-detail');
    expect(within(d).getByTestId('answered-by-admins')).toHaveTextContent('an admin answers it');
    expect(within(d).queryByTestId('approve-once'), 'no button asks for an answer you cannot give').toBeNull();
    expect(within(d).queryByTestId('deny')).toBeNull();
    row.focus();
    await user.keyboard('a');
    await settle();
    expect(b.callsOf('approve_once'), 'the A key does nothing on it either').toHaveLength(0);
  });

  it('approves once with approve_once', async () => {
    const b = setup();
    const user = userEvent.setup();
    render(Approvals);
    await screen.findByTestId('approval-appr_1');
    await user.click(screen.getByTestId('approve-once'));
    await waitFor(() => expect(screen.queryByTestId('approval-appr_1')).toBeNull());
    expect(b.callsOf('approve_once')).toEqual([{ id: 'appr_1' }]);
  });

  it('approves for a duration with approve_for', async () => {
    const b = setup();
    const user = userEvent.setup();
    render(Approvals);
    await user.click(await screen.findByTestId('approval-appr_2'));
    expect(screen.getByTestId('approve-for-hint'), 'a window covers only agents that keep the capability: say so before the click').toHaveTextContent('Latchkey-Capability');
    await user.click(screen.getByTestId('approve-for-28800'));
    await waitFor(() => expect(b.callsOf('approve_for')).toEqual([{ id: 'appr_2', durationSecs: 28800 }]));
  });

  it('denies with deny', async () => {
    const b = setup();
    const user = userEvent.setup();
    render(Approvals);
    await screen.findByTestId('approval-appr_1');
    await user.click(screen.getByTestId('deny'));
    await waitFor(() => expect(b.callsOf('deny')).toEqual([{ id: 'appr_1' }]));
    expect(b.callsOf('approve_once'), 'deny must not approve anything').toEqual([]);
  });

  it('answers the focused request with the A and D keys', async () => {
    const b = setup();
    const user = userEvent.setup();
    render(Approvals);
    (await screen.findByTestId('approval-appr_2')).focus();
    await user.keyboard('d');
    await waitFor(() => expect(b.callsOf('deny')).toEqual([{ id: 'appr_2' }]));
    screen.getByTestId('approval-appr_1').focus();
    await user.keyboard('a');
    await waitFor(() => expect(b.callsOf('approve_once')).toEqual([{ id: 'appr_1' }]));
  });

  it('shows the message when an answer fails', async () => {
    const b = setup();
    b.failNext('approve_once', { code: 'approval_closed', message: 'Someone already answered this request.' });
    const user = userEvent.setup();
    render(Approvals);
    await screen.findByTestId('approval-appr_1');
    await user.click(screen.getByTestId('approve-once'));
    expect(await screen.findByRole('alert')).toHaveTextContent('Someone already answered this request.');
  });

  it('selects the request a navigate event points at', async () => {
    setup();
    render(Approvals);
    await screen.findByTestId('approval-appr_1');
    navigate('approvals', 'appr_2');
    await waitFor(() => expect(screen.getByTestId('approval-appr_2')).toHaveClass('selected'));
    expect(within(screen.getByTestId('approval-detail')).getByText('release-writer')).toBeInTheDocument();
  });

  it('says a request clicked in the tray was already answered, and offers no other in its place', async () => {
    setup();
    navigate('approvals', 'appr_0');
    render(Approvals);
    await screen.findByTestId('approval-appr_1');
    expect(await screen.findByTestId('approval-gone')).toHaveTextContent('This request was already answered or expired');
    expect(screen.queryByTestId('approval-detail'), 'another request must not stand in for the one asked for').toBeNull();
    expect(screen.queryByTestId('approve-once'), 'no live Approve for a request nobody chose').toBeNull();
    await userEvent.setup().click(screen.getByTestId('approval-appr_2'));
    expect(screen.queryByTestId('approval-gone'), 'choosing another request clears the note').toBeNull();
    expect(within(screen.getByTestId('approval-detail')).getByText('release-writer')).toBeInTheDocument();
  });

  it('says so when the request being read is answered elsewhere', async () => {
    const b = setup();
    stop = startApprovalsLive();
    const user = userEvent.setup();
    render(Approvals);
    await user.click(await screen.findByTestId('approval-appr_2'));
    b.approvals.find((a) => a.id === 'appr_2')!.status = 'approved';
    await b.emit('approvals-changed', { pending: 1 });
    expect(await screen.findByTestId('approval-gone'), 'the request read is gone: say so').toBeInTheDocument();
    expect(screen.queryByTestId('approval-detail'), 'appr_1 does not silently take its place').toBeNull();
  });

  it('lists answered requests in the History tab', async () => {
    const b = setup();
    const user = userEvent.setup();
    render(Approvals);
    await screen.findByTestId('approval-appr_1');
    await user.click(screen.getByTestId('tab-history'));
    expect(await screen.findByTestId('approval-appr_0')).toHaveTextContent('approved');
    expect(b.callsOf('list_approvals')).toContainEqual({ all: true });
  });

  it('shows an empty state when nothing is waiting', async () => {
    setup({ seed: false });
    render(Approvals);
    expect(await screen.findByText('Nothing waiting')).toBeInTheDocument();
  });
});
