// Another device of an existing member: the device invite on the member's screen, joining
// with the member id during onboarding, and admitting it from the member's own device.
import { afterEach, describe, expect, it } from 'vitest';
import { cleanup, render, screen, waitFor, within } from '@testing-library/svelte';
import userEvent from '@testing-library/user-event';
import { clearMocks } from '@tauri-apps/api/mocks';
import Members from '../screens/Members.svelte';
import Onboarding from '../screens/Onboarding.svelte';
import { app, refreshStatus } from '../lib/stores/status.svelte';
import { onPrivateCaTeamServer, PRIVATE_CA_PEM, setup, stubClipboard } from '../lib/testing/helpers';
import type { FakeBackend } from '../lib/testing/fakeBackend';

const MEMBER_ID = '0b6c3f1e-8d2a-4c5b-9e7f-1a2b3c4d5e6f';
const NEW_DEVICE_FP = '3C7E-0A19-D4B2-88F1';

afterEach(() => {
  cleanup();
  clearMocks();
});

/** The signed-in member is a plain member whose second computer joined and waits. */
function memberWithPendingDevice(b: FakeBackend) {
  b.status.workspace = { ...b.status.workspace!, role: 'member', local: false, brokerUrl: 'https://lk.acme.dev' };
  const me = b.members.find((m) => m.you)!;
  me.role = 'member';
  me.devices.push({ id: 'dev_desk', name: 'Desk PC', createdAt: me.createdAt + 60, fingerprint: NEW_DEVICE_FP, thisDevice: false, confirmed: false });
}

async function openJoin(user: ReturnType<typeof userEvent.setup>) {
  render(Onboarding);
  await user.click(screen.getByTestId('start-join'));
  await user.type(screen.getByTestId('join-url'), 'https://lk.acme.dev');
  await user.type(screen.getByTestId('invite-code'), 'LK-D3VC-8KWN-4TQA');
  await user.click(screen.getByTestId('join-as-device'));
}

describe('adding a device of mine', () => {
  it('creates a device invite for the signed-in member and shows the code, member id and expiry once', async () => {
    const b = setup();
    b.status.workspace = { ...b.status.workspace!, local: false, brokerUrl: 'https://lk.acme.dev' };
    await refreshStatus();
    const user = userEvent.setup();
    const copied = stubClipboard(); // after userEvent.setup(), which installs its own clipboard
    render(Members);
    await user.click(await screen.findByTestId('add-own-device'));
    const dlg = screen.getByTestId('device-invite-dialog');
    expect(within(dlg).queryByTestId('device-invite-local'), 'a team server is reachable from another computer').toBeNull();
    expect(b.callsOf('create_device_invite'), 'nothing is created before the person asks').toEqual([]);
    await user.selectOptions(within(dlg).getByTestId('device-invite-lifetime'), '1 hour');
    await user.click(within(dlg).getByTestId('create-device-invite'));

    expect(await within(dlg).findByTestId('device-invite-code')).toHaveTextContent('LK-D3VC-8KWN-4TQA');
    expect(within(dlg).getByTestId('device-invite-member')).toHaveTextContent('mem_you');
    expect(within(dlg).getByTestId('device-invite-server')).toHaveTextContent('https://lk.acme.dev');
    expect(within(dlg).getByTestId('device-invite-expiry'), 'as long as chosen').toHaveTextContent(/expires in (1 h|60 min)/);
    expect(dlg, "the new device will ask for this device's fingerprint").toHaveTextContent('4F2A-91C3-7D0E-B85A');
    expect(b.callsOf('create_device_invite')).toEqual([{ validForSecs: 3600 }]);
    expect(b.callsOf('create_invite'), 'not a new-member invite').toEqual([]);

    await user.click(within(dlg).getByTestId('copy-device-invite'));
    await user.click(within(dlg).getByTestId('copy-device-invite-member'));
    expect(copied).toEqual(['LK-D3VC-8KWN-4TQA', 'mem_you']);
    expect(within(dlg).queryByTestId('device-invite-ca'), 'a publicly trusted server needs no authority').toBeNull();

    await user.click(within(dlg).getByRole('button', { name: 'Done' }));
    await user.click(screen.getByTestId('add-own-device'));
    expect(screen.queryByTestId('device-invite-code'), 'the code is shown once').toBeNull();
  });

  it("hands the new device the team server's private certificate authority to paste", async () => {
    const b = setup();
    await onPrivateCaTeamServer(b);
    const user = userEvent.setup();
    const copied = stubClipboard();
    render(Members);
    await user.click(await screen.findByTestId('add-own-device'));
    const dlg = screen.getByTestId('device-invite-dialog');
    await user.click(within(dlg).getByTestId('create-device-invite'));
    expect(await within(dlg).findByTestId('device-invite-ca')).toHaveTextContent('My team\'s server uses a private certificate authority');
    await user.click(within(dlg).getByTestId('copy-device-invite-ca'));
    expect(copied, 'the certificate as PEM, ready to paste on the new device').toEqual([PRIVATE_CA_PEM]);
  });

  it('is offered to plain members too, warns when the broker is on this computer, and shows a refusal', async () => {
    const b = setup();
    memberWithPendingDevice(b);
    b.status.workspace = { ...b.status.workspace!, local: true };
    await refreshStatus();
    b.failNext('create_device_invite', { code: 'forbidden', message: 'only admins invite new members or other members\' devices' });
    const user = userEvent.setup();
    render(Members);
    expect(screen.queryByTestId('invite'), 'members do not invite new members').toBeNull();
    await user.click(await screen.findByTestId('add-own-device'));
    const dlg = screen.getByTestId('device-invite-dialog');
    expect(within(dlg).getByTestId('device-invite-local')).toHaveTextContent('another computer cannot reach it');
    await user.click(within(dlg).getByTestId('create-device-invite'));
    expect(await within(dlg).findByRole('alert')).toHaveTextContent("only admins invite new members or other members' devices");
  });

  it("lets a member admit their own new device after the fingerprint matches, and tells them what to type there", async () => {
    const b = setup();
    memberWithPendingDevice(b);
    await refreshStatus();
    const user = userEvent.setup();
    render(Members);
    const own = await screen.findByTestId('device-dev_desk');
    expect(within(await screen.findByTestId('device-dev_sam')).queryByTestId('admit-device'), "another member's device is an admin's to admit").toBeNull();
    await user.click(within(own).getByTestId('admit-device'));
    const dlg = screen.getByTestId('admit-dialog');
    expect(dlg).toHaveTextContent('your new device');
    expect(within(dlg).queryByTestId('admit-sibling-note')).toBeNull();
    expect(within(dlg).getByTestId('admit-then')).toHaveTextContent('4F2A-91C3-7D0E-B85A');
    await user.type(within(dlg).getByTestId('admit-fingerprint'), '3c7e 0a19 d4b2 88f0');
    expect(within(dlg).getByTestId('admit-submit'), 'a mismatching fingerprint cannot be admitted').toBeDisabled();
    await user.clear(within(dlg).getByTestId('admit-fingerprint'));
    await user.type(within(dlg).getByTestId('admit-fingerprint'), '3c7e 0a19 d4b2 88f1');
    await user.click(within(dlg).getByTestId('admit-submit'));
    await waitFor(() => expect(b.callsOf('admit_device')).toEqual([{ deviceId: 'dev_desk', fingerprint: NEW_DEVICE_FP }]));
    await waitFor(() => expect(within(screen.getByTestId('device-dev_desk')).queryByTestId('admit-device')).toBeNull());
    expect(screen.getByTestId('device-dev_desk')).toHaveTextContent('Confirmed');
  });

  it("warns an admin that another member's second device is better admitted by that member", async () => {
    const b = setup();
    const sam = b.members.find((m) => m.id === 'mem_sam')!;
    sam.devices[0].confirmed = true;
    sam.devices.push({ id: 'dev_sam2', name: "Sam's laptop", createdAt: sam.createdAt + 60, fingerprint: '77AA-0000-1111-2222', thisDevice: false, confirmed: false });
    await refreshStatus();
    const user = userEvent.setup();
    render(Members);
    await user.click(within(await screen.findByTestId('device-dev_sam2')).getByTestId('admit-device'));
    expect(screen.getByTestId('admit-sibling-note')).toHaveTextContent('workspace key only');
  });
});

describe('joining as another device of mine', () => {
  it('sends the member id instead of a name and waits for the other device to admit it', async () => {
    const b = setup({ fresh: true, admitAfter: 1 });
    const user = userEvent.setup();
    await openJoin(user);
    expect(screen.queryByTestId('join-name'), 'no name: the member exists').toBeNull();
    expect(screen.getByTestId('join-workspace'), 'the member id is required').toBeDisabled();
    await user.type(screen.getByTestId('join-member-id'), ` ${MEMBER_ID.toUpperCase()} `);
    await user.click(screen.getByTestId('join-workspace'));

    expect(await screen.findByTestId('fingerprint')).toHaveTextContent('4F2A-91C3-7D0E-B85A');
    expect(b.callsOf('join_workspace')).toEqual([
      { serverUrl: 'https://lk.acme.dev', serverCa: null, inviteCode: 'LK-D3VC-8KWN-4TQA', memberName: null, deviceOf: MEMBER_ID.toUpperCase(), deviceName: expect.any(String) },
    ]);
    expect(screen.getByRole('heading', { level: 1 })).toHaveTextContent('Admit this device from your other one');

    await user.type(screen.getByTestId('admin-fingerprint'), '9C1B-22D0-5E7F-A3B4');
    await user.click(screen.getByTestId('finish-join'));
    expect(await screen.findByTestId('not-admitted')).toHaveTextContent('your other device');
    await user.click(screen.getByTestId('finish-join'));
    await waitFor(() => expect(app.status?.setUp, 'the keys arrived: the app opens').toBe(true));
    expect(b.callsOf('finish_join')).toEqual([{ adminFingerprint: '9C1B-22D0-5E7F-A3B4' }, { adminFingerprint: '9C1B-22D0-5E7F-A3B4' }]);
  });

  it('shows a malformed member id under its field and sends nothing', async () => {
    const b = setup({ fresh: true });
    const user = userEvent.setup();
    await openJoin(user);
    await user.type(screen.getByTestId('join-member-id'), 'Ada Lovelace');
    await user.click(screen.getByTestId('join-workspace'));
    expect(await screen.findByTestId('member-id-error')).toHaveTextContent('A member id looks like');
    expect(screen.getByTestId('join-member-id')).toHaveAttribute('aria-invalid', 'true');
    expect(b.callsOf('join_workspace'), 'refused before any call').toEqual([]);
    await user.type(screen.getByTestId('join-member-id'), 'x');
    expect(screen.queryByTestId('member-id-error'), 'typing clears the error').toBeNull();
  });

  it("puts the shell's invalid_member_id under the field and a broker refusal above the button", async () => {
    const b = setup({ fresh: true });
    const user = userEvent.setup();
    await openJoin(user);
    await user.type(screen.getByTestId('join-member-id'), MEMBER_ID);
    b.failNext('join_workspace', { code: 'invalid_member_id', message: 'that is not a member id' });
    await user.click(screen.getByTestId('join-workspace'));
    expect(await screen.findByTestId('member-id-error')).toHaveTextContent('that is not a member id');
    expect(screen.queryByRole('alert')).toBeNull();

    b.failNext('join_workspace', {
      code: 'invalid_request',
      message: 'this invite adds a device to another member; use the member id it was created for',
    });
    await user.click(screen.getByTestId('join-workspace'));
    expect(await screen.findByRole('alert')).toHaveTextContent('use the member id it was created for');
    expect(screen.queryByTestId('member-id-error')).toBeNull();
    expect(app.status, 'still onboarding').toBeNull();
  });
});
