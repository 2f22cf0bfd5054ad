import './app.css';
import { mount } from 'svelte';
import App from './App.svelte';
import { initTheme } from './lib/stores/theme.svelte';

initTheme();

async function start() {
  // In a plain browser under `npm run dev` there is no Tauri shell: run against
  // the in-memory demo backend so every screen can be tried. Production builds
  // never include it (import.meta.env.DEV is false there, so the import is dropped).
  if (import.meta.env.DEV && !('__TAURI_INTERNALS__' in window)) {
    const { installFakeBackend } = await import('./lib/testing/fakeBackend');
    const fresh = new URLSearchParams(location.search).has('fresh');
    const b = installFakeBackend({ fresh, oauthAutoCompleteMs: 2500, rotationStepMs: 250 });
    document.documentElement.dataset.demo = 'true';
    // An occasional new request so the live approval queue can be seen.
    setInterval(() => {
      if (b.status.setUp && b.approvals.filter((a) => a.status === 'pending').length < 4) void b.requestApproval({});
    }, 45000);
  }
  mount(App, { target: document.getElementById('app')! });
}

void start();
