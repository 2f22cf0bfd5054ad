// Devices waiting to be admitted that this member may admit: the count on Members in the
// sidebar. Read from list_members while the window is visible (every POLL_MS, when the window
// shows again, when the person changes screens) and set from the list admit and remove return.
import { listMembers } from '../api/commands';
import type { ApiError, Device, Member } from '../api/types';
import { app } from './status.svelte';
import { pollWhileVisible } from '../util/poll';

/** How often the count is read again while the window is visible. */
export const POLL_MS = 10_000;

export const admissions = $state<{ count: number; error: ApiError | null }>({ count: 0, error: null });

/**
 * Whether `device` (of `member`) waits to be admitted from this device: not removed, not this
 * device, its fingerprint not confirmed here yet, and an admin's to admit or one of my own.
 */
export function awaitsAdmission(member: Member, device: Device, isAdmin: boolean): boolean {
  return (isAdmin || member.you) && !device.thisDevice && !device.confirmed;
}

export function countAwaiting(members: Member[], isAdmin: boolean): number {
  return members.reduce((n, m) => n + m.devices.filter((d) => awaitsAdmission(m, d, isAdmin)).length, 0);
}

// Bumped by every update, so a read that started before an admit cannot bring back its
// older count when it answers after it.
let generation = 0;
let reading: Promise<void> | null = null;

/** Sets the count from a member list just fetched (the Members screen's, admit's, remove's). */
export function noteMembers(members: Member[]): void {
  generation++;
  admissions.count = countAwaiting(members, app.status?.workspace?.role === 'admin');
  admissions.error = null;
}

/** Reads the members again. A failure keeps the last count and is kept in `error`; it never throws. */
export function refreshAdmissions(): Promise<void> {
  reading ??= (async () => {
    const started = generation;
    try {
      const members = await listMembers();
      if (generation === started) noteMembers(members);
    } catch (e) {
      admissions.error = e as ApiError;
    } finally {
      reading = null;
    }
  })();
  return reading;
}

/** Reads the count now and keeps it current while the window is visible. Returns a stop function. */
export function startAdmissionsPolling(every = POLL_MS): () => void {
  return pollWhileVisible(() => void refreshAdmissions(), every);
}
