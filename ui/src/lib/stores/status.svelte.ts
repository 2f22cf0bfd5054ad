// App status: setup state, workspace, broker reachability, pause switch, pending count.
import { appStatus } from '../api/commands';
import { on } from '../api/events';
import type { ApiError, AppStatus } from '../api/types';

export const app = $state<{ status: AppStatus | null; loading: boolean; error: ApiError | null }>({
  status: null,
  loading: true,
  error: null,
});

// Bumped by every status set, so a read that started before a command answered (a pause, a
// lock) cannot bring back the older status when it answers after it.
let generation = 0;

export function setStatus(s: AppStatus): void {
  generation++;
  app.status = s;
  app.error = null;
}

export async function refreshStatus(): Promise<void> {
  app.loading = app.status === null;
  const started = generation;
  try {
    const s = await appStatus();
    if (generation === started) setStatus(s);
  } catch (e) {
    app.error = e as ApiError;
  } finally {
    app.loading = false;
  }
}

/**
 * Keep status live from shell events. Returns an unsubscribe function. Not every change has an
 * event (a pause from the CLI, a broker that stopped answering, a keychain locked outside the
 * app): the shell also reads the status again while the window is visible.
 */
export function startStatusLive(): () => void {
  const offs = [
    on('status-changed', (s) => setStatus(s)),
    on('approvals-changed', ({ pending }) => {
      if (app.status) app.status.pendingApprovals = pending;
    }),
  ];
  return () => offs.forEach((f) => f());
}
