// Pending approvals queue and history, kept live from shell events.
import { listApprovals } from '../api/commands';
import { on } from '../api/events';
import type { ApiError, Approval } from '../api/types';
import { notify } from './toasts.svelte';

export const approvals = $state<{
  pending: Approval[];
  history: Approval[];
  loading: boolean;
  error: ApiError | null;
  /** The most recent approval-requested id, highlighted in the queue. */
  latest: string | null;
}>({ pending: [], history: [], loading: false, error: null, latest: null });

export async function refreshApprovals(all = false): Promise<void> {
  approvals.loading = true;
  try {
    const list = await listApprovals(all);
    if (all) approvals.history = list;
    else approvals.pending = list.filter((a) => a.status === 'pending');
    approvals.error = null;
  } catch (e) {
    approvals.error = e as ApiError;
  } finally {
    approvals.loading = false;
  }
}

/** Replace an answered approval in the lists without waiting for a refresh. */
export function applyAnswer(a: Approval): void {
  approvals.pending = approvals.pending.filter((x) => x.id !== a.id);
  const i = approvals.history.findIndex((x) => x.id === a.id);
  if (i >= 0) approvals.history[i] = a;
}

export function startApprovalsLive(): () => void {
  const offs = [
    on('approvals-changed', () => {
      void refreshApprovals(false);
      if (approvals.history.length) void refreshApprovals(true);
    }),
    on('approval-requested', (a) => {
      if (!approvals.pending.some((x) => x.id === a.id)) approvals.pending = [a, ...approvals.pending];
      approvals.latest = a.id;
      notify(`${a.agentName} asks to ${a.method} ${a.host}${a.path}`, 'info');
    }),
  ];
  return () => offs.forEach((f) => f());
}
