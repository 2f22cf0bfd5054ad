// Light/dark theme: follows prefers-color-scheme unless the person picked one.
export type ThemeMode = 'system' | 'light' | 'dark';
const KEY = 'latchkey.theme';

function stored(): ThemeMode {
  try {
    const v = localStorage.getItem(KEY);
    if (v === 'light' || v === 'dark' || v === 'system') return v;
  } catch {
    /* storage unavailable */
  }
  return 'system';
}

export const theme = $state<{ mode: ThemeMode }>({ mode: 'system' });

export function applyTheme(mode: ThemeMode): void {
  theme.mode = mode;
  const root = document.documentElement;
  if (mode === 'system') delete root.dataset.theme;
  else root.dataset.theme = mode;
  try {
    localStorage.setItem(KEY, mode);
  } catch {
    /* ignore */
  }
}

export function initTheme(): void {
  applyTheme(stored());
}

export function cycleTheme(): void {
  applyTheme(theme.mode === 'system' ? 'light' : theme.mode === 'light' ? 'dark' : 'system');
}
