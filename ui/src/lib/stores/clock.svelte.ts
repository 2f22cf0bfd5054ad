// A shared ticking clock (Unix seconds) for countdowns.
import { nowSecs } from '../util/format';

export const clock = $state({ now: nowSecs() });
let timer: ReturnType<typeof setInterval> | null = null;
let users = 0;

export function useClock(): () => void {
  users++;
  if (!timer) timer = setInterval(() => (clock.now = nowSecs()), 1000);
  clock.now = nowSecs();
  return () => {
    users--;
    if (users === 0 && timer) {
      clearInterval(timer);
      timer = null;
    }
  };
}
