import type { Screen } from '../api/types';
import { notify } from './toasts.svelte';

export const SCREENS: { id: Screen; label: string }[] = [
  { id: 'integrations', label: 'Integrations' },
  { id: 'agents', label: 'Agents' },
  { id: 'approvals', label: 'Approvals' },
  { id: 'policies', label: 'Policies' },
  { id: 'audit', label: 'Audit' },
  { id: 'members', label: 'Members' },
  { id: 'security', label: 'Security' },
];

export const nav = $state<{ screen: Screen; approvalId: string | null }>({
  screen: 'integrations',
  approvalId: null,
});

export function isScreen(s: string): s is Screen {
  return SCREENS.some((x) => x.id === s);
}

export function navigate(screen: string, approvalId: string | null = null): void {
  if (!isScreen(screen)) return;
  nav.screen = screen;
  nav.approvalId = approvalId;
}

// Open modal dialogs. Changing screens unmounts the screen and its dialogs: a token, a grant's
// capability or an invite code shown once would be lost, and a sign-in left running.
let openDialogs = 0;
let deferred: { screen: Screen; approvalId: string | null } | null = null;

/** Whether a modal dialog is open (screens must not change under it). */
export function dialogOpen(): boolean {
  return openDialogs > 0;
}

/** Called by every modal dialog when it opens; returns the function to call when it closes. */
export function trackDialog(): () => void {
  openDialogs++;
  return () => {
    openDialogs--;
    // After the update that closed it: one dialog often replaces another in the same update.
    queueMicrotask(() => {
      if (openDialogs === 0 && deferred) {
        const { screen, approvalId } = deferred;
        deferred = null;
        navigate(screen, approvalId);
      }
    });
  };
}

/**
 * A screen asked for from outside the window (the tray): shown now, or, while a dialog is open,
 * once it closes (the person is told), so nothing the dialog shows once is lost.
 */
export function navigateWhenFree(screen: string, approvalId: string | null = null): void {
  if (!isScreen(screen)) return;
  if (!dialogOpen()) return navigate(screen, approvalId);
  deferred = { screen, approvalId };
  const label = SCREENS.find((s) => s.id === screen)?.label ?? screen;
  notify(`${label} opens when you close this dialog.`, 'info');
}
