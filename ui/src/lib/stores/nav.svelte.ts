import type { Screen } from '../api/types';

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
