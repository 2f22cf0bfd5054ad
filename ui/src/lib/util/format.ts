// Small formatting helpers. Times are Unix seconds.

export const nowSecs = () => Math.floor(Date.now() / 1000);

export function humanBytes(n: number | null): string {
  if (n === null) return 'no body';
  if (n < 1024) return `${n} B`;
  const units = ['KB', 'MB', 'GB', 'TB'];
  let v = n / 1024;
  let i = 0;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return `${v < 10 ? v.toFixed(1) : Math.round(v)} ${units[i]}`;
}

/** "3 min ago", "in 2 h", "just now". */
export function relativeTime(at: number | null, now = nowSecs()): string {
  if (at === null) return 'never';
  const d = at - now;
  const a = Math.abs(d);
  let s: string;
  if (a < 45) return d <= 0 ? 'just now' : 'in a moment';
  else if (a < 3600) s = `${Math.round(a / 60)} min`;
  else if (a < 86400) s = `${Math.round(a / 3600)} h`;
  else s = `${Math.round(a / 86400)} d`;
  return d < 0 ? `${s} ago` : `in ${s}`;
}

/** Countdown to `at`: "4:05", "1:02:03" or "expired". */
export function countdown(at: number, now = nowSecs()): string {
  const left = at - now;
  if (left <= 0) return 'expired';
  const h = Math.floor(left / 3600);
  const m = Math.floor((left % 3600) / 60);
  const s = left % 60;
  const mm = h ? String(m).padStart(2, '0') : String(m);
  return `${h ? `${h}:` : ''}${mm}:${String(s).padStart(2, '0')}`;
}

export function dateTime(at: number | null): string {
  if (at === null) return '—';
  return new Date(at * 1000).toLocaleString(undefined, { dateStyle: 'medium', timeStyle: 'short' });
}

export const DURATIONS: { label: string; secs: number }[] = [
  { label: '15 min', secs: 15 * 60 },
  { label: '1 h', secs: 3600 },
  { label: '8 h', secs: 8 * 3600 },
  { label: '24 h', secs: 24 * 3600 },
  { label: '7 days', secs: 7 * 86400 },
];

export function normaliseFingerprint(f: string): string {
  return f.replace(/[^0-9a-z]/gi, '').toUpperCase();
}

/** A member id as the broker spells them: a hyphenated UUID (any case; spaces around are ignored). */
export function isMemberId(text: string): boolean {
  return /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i.test(text.trim());
}
