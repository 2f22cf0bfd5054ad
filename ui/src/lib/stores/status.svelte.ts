// App status: setup state, workspace, broker reachability, pause switch, pending count.
import { appStatus } from '../api/commands';
import { on } from '../api/events';
import type { ApiError, AppStatus } from '../api/types';

export const app = $state<{ status: AppStatus | null; loading: boolean; error: ApiError | null }>({
  status: null,
  loading: true,
  error: null,
});

export function setStatus(s: AppStatus): void {
  app.status = s;
  app.error = null;
}

export async function refreshStatus(): Promise<void> {
  app.loading = app.status === null;
  try {
    setStatus(await appStatus());
  } catch (e) {
    app.error = e as ApiError;
  } finally {
    app.loading = false;
  }
}

/** Keep status live from shell events. Returns an unsubscribe function. */
export function startStatusLive(): () => void {
  const offs = [
    on('status-changed', (s) => setStatus(s)),
    on('approvals-changed', ({ pending }) => {
      if (app.status) app.status.pendingApprovals = pending;
    }),
  ];
  return () => offs.forEach((f) => f());
}
