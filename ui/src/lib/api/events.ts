// Typed subscriptions to the shell's events.
import { listen } from '@tauri-apps/api/event';
import type { EventMap } from './types';

export type Unsubscribe = () => void;

/** Subscribe to a shell event; returns a function that unsubscribes (safe to call early). */
export function on<K extends keyof EventMap>(name: K, handler: (payload: EventMap[K]) => void): Unsubscribe {
  let stopped = false;
  let unlisten: (() => void) | null = null;
  listen<EventMap[K]>(name, (e) => {
    if (!stopped) handler(e.payload);
  })
    .then((u) => {
      if (stopped) u();
      else unlisten = u;
    })
    .catch(() => {
      /* no event bridge (e.g. plain browser without demo backend) */
    });
  return () => {
    stopped = true;
    try {
      unlisten?.();
    } catch {
      /* the event bridge is already gone (window closing) */
    }
  };
}
