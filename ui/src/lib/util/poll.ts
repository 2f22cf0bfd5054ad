// Lists that change behind the screen's back (last used, status, new grants) are read again
// while the window is visible.

/** How often an open screen reads its list again. */
export const LIST_POLL_MS = 15_000;

/**
 * Calls `tick` now, then every `every` ms while the window is visible, and when it becomes
 * visible again. Returns the function that stops it (for `onMount`'s cleanup).
 */
export function pollWhileVisible(tick: () => void, every: number): () => void {
  const visible = () => document.visibilityState === 'visible';
  const onTick = () => {
    if (visible()) tick();
  };
  onTick();
  const timer = setInterval(onTick, every);
  document.addEventListener('visibilitychange', onTick);
  return () => {
    clearInterval(timer);
    document.removeEventListener('visibilitychange', onTick);
  };
}
