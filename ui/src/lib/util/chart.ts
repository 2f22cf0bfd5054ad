// Pure helpers behind the audit chart: bucket calls by time and decision.
import type { AuditRow } from '../api/types';

export type Bucket = { start: number; allowed: number; denied: number };
export type AgentTotals = { agent: string; name: string; allowed: number; denied: number };

/** The span of time the chart draws, in Unix seconds. */
export type ChartWindow = { from: number; to: number };

/**
 * The chart spans the filter's whole range, from its start (`since`; for "all time" the oldest
 * call) to `now`, so a quiet stretch shows as one and a single busy hour is not stretched across
 * the width.
 */
export function chartWindow(rows: AuditRow[], since: number | null, now: number): ChartWindow {
  const ats = rows.filter((r) => r.decision !== null).map((r) => r.at);
  const from = since ?? (ats.length ? Math.min(...ats) : now);
  return { from: Math.min(from, now), to: now };
}

/** Bucket size that keeps the chart readable: 5 minutes up to an hour, hours up to two days, days beyond. */
export function pickBucketSecs(span: ChartWindow): number {
  const secs = span.to - span.from;
  if (secs <= 3600) return 300;
  return secs <= 2 * 86400 ? 3600 : 86400;
}

/**
 * Calls with a decision in `span`, grouped into consecutive buckets from its start to its end
 * (empty buckets included, so gaps show as gaps), oldest first; none when no call falls in it.
 */
export function bucketCalls(rows: AuditRow[], bucketSecs: number, span: ChartWindow, agent: string | null = null): Bucket[] {
  const floor = (t: number) => Math.floor(t / bucketSecs) * bucketSecs;
  const first = floor(span.from);
  const last = floor(span.to);
  const calls = rows.filter(
    (r) => r.decision !== null && (agent === null || r.agent === agent) && r.at >= first && r.at < last + bucketSecs,
  );
  if (!calls.length) return [];
  const buckets: Bucket[] = [];
  for (let s = first; s <= last; s += bucketSecs) buckets.push({ start: s, allowed: 0, denied: 0 });
  for (const r of calls) {
    const b = buckets[(floor(r.at) - first) / bucketSecs];
    if (r.decision === 'allowed') b.allowed++;
    else b.denied++;
  }
  return buckets;
}

/** How the chart's title names a bucket size. */
export function bucketName(bucketSecs: number): string {
  if (bucketSecs >= 86400) return 'day';
  if (bucketSecs >= 3600) return 'hour';
  return `${bucketSecs / 60} minutes`;
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
