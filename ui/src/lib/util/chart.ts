// Pure helpers behind the audit chart: bucket calls by time and decision.
import type { AuditRow } from '../api/types';

export type Bucket = { start: number; allowed: number; denied: number };
export type AgentTotals = { agent: string; name: string; allowed: number; denied: number };

/** Bucket size that keeps the chart readable: hours for up to two days, days beyond. */
export function pickBucketSecs(rows: AuditRow[]): number {
  if (rows.length < 2) return 3600;
  const ats = rows.map((r) => r.at);
  const span = Math.max(...ats) - Math.min(...ats);
  return span > 2 * 86400 ? 86400 : 3600;
}

/** Calls with a decision, grouped into consecutive buckets (empty buckets included), oldest first. */
export function bucketCalls(rows: AuditRow[], bucketSecs: number, agent: string | null = null): Bucket[] {
  const calls = rows.filter((r) => r.decision !== null && (agent === null || r.agent === agent));
  if (!calls.length) return [];
  const floor = (t: number) => Math.floor(t / bucketSecs) * bucketSecs;
  const first = floor(Math.min(...calls.map((r) => r.at)));
  const last = floor(Math.max(...calls.map((r) => r.at)));
  const buckets: Bucket[] = [];
  for (let s = first; s <= last; s += bucketSecs) buckets.push({ start: s, allowed: 0, denied: 0 });
  for (const r of calls) {
    const b = buckets[(floor(r.at) - first) / bucketSecs];
    if (r.decision === 'allowed') b.allowed++;
    else b.denied++;
  }
  return buckets;
}

/** Allowed/denied totals per agent, busiest first. Rows without a decision or agent are skipped. */
export function totalsByAgent(rows: AuditRow[]): AgentTotals[] {
  const m = new Map<string, AgentTotals>();
  for (const r of rows) {
    if (r.decision === null || r.agent === null) continue;
    let t = m.get(r.agent);
    if (!t) {
      t = { agent: r.agent, name: r.agentName ?? r.agent, allowed: 0, denied: 0 };
      m.set(r.agent, t);
    }
    if (r.decision === 'allowed') t.allowed++;
    else t.denied++;
  }
  return [...m.values()].sort((a, b) => b.allowed + b.denied - (a.allowed + a.denied) || a.name.localeCompare(b.name));
}

/** A "nice" axis maximum at or above `n`. */
export function niceMax(n: number): number {
  if (n <= 4) return Math.max(1, n);
  const p = 10 ** Math.floor(Math.log10(n));
  for (const m of [1, 2, 2.5, 5, 10]) if (m * p >= n) return m * p;
  return 10 * p;
}
