// Shared test helpers: install the in-memory backend and reset module-level stores.
import { clearMocks } from '@tauri-apps/api/mocks';
import { app, refreshStatus } from '../stores/status.svelte';
import { approvals } from '../stores/approvals.svelte';
import { admissions } from '../stores/admissions.svelte';
import { nav } from '../stores/nav.svelte';
import { toasts } from '../stores/toasts.svelte';
import { installFakeBackend, type FakeBackend, type FakeOptions } from './fakeBackend';

/** A fixed clock so countdowns and "x min ago" are deterministic. */
export const NOW = 1_800_000_000;

export function resetStores(): void {
  app.status = null;
  app.loading = true;
  app.error = null;
  approvals.pending = [];
  approvals.history = [];
  approvals.loading = false;
  approvals.error = null;
  approvals.latest = null;
  nav.screen = 'integrations';
  nav.approvalId = null;
  toasts.list = [];
  admissions.count = 0;
  admissions.error = null;
}

export function setup(opts: FakeOptions = {}): FakeBackend {
  clearMocks();
  resetStores();
  return installFakeBackend(opts);
}

/** Let pending promises and event deliveries settle. */
export async function settle(times = 3): Promise<void> {
  for (let i = 0; i < times; i++) await new Promise((r) => setTimeout(r, 0));
}

/** Everything the UI keeps in its shared stores, serialised (for "never stored" assertions). */
export function storeSnapshot(): string {
  return JSON.stringify({ app, approvals, admissions, nav, toasts });
}

/** Replace navigator.clipboard; returns the list of texts written to it. */
export function stubClipboard(): string[] {
  const written: string[] = [];
  Object.defineProperty(navigator, 'clipboard', {
    configurable: true,
    value: { writeText: async (t: string) => void written.push(t) },
  });
  return written;
}

/** A certificate authority as a person pastes it (the fakes check the PEM framing only). */
export const PRIVATE_CA_PEM = '-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n';

/** Puts the signed-in workspace on a team server behind a private authority, kept in the profile. */
export async function onPrivateCaTeamServer(b: FakeBackend): Promise<void> {
  b.status.workspace = { ...b.status.workspace!, local: false, brokerUrl: 'https://lk.acme.internal', brokerCa: ['AB:CD'], brokerCaPem: PRIVATE_CA_PEM };
  await refreshStatus();
}
