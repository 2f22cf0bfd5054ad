import { describe, expect, it } from 'vitest';
import { countdown, humanBytes, normaliseFingerprint, relativeTime } from '../lib/util/format';
import { bucketCalls, bucketName, chartWindow, niceMax, pickBucketSecs, totalsByAgent } from '../lib/util/chart';
import type { AuditRow } from '../lib/api/types';

function row(p: Partial<AuditRow>): AuditRow {
  return {
    seq: 1, at: 0, kind: 'call', agent: 'a1', agentName: 'alpha', credentialName: 'cred', method: 'GET',
    host: 'h', path: '/', decision: 'allowed', reason: null, policyIds: [], upstreamStatus: 200, subject: null, ...p,
  };
}

describe('format', () => {
  it('shows body sizes in human units, and says when there is no body', () => {
    expect(humanBytes(null), 'a null body size means the request had no body').toBe('no body');
    expect(humanBytes(512)).toBe('512 B');
    expect(humanBytes(2048)).toBe('2.0 KB');
    expect(humanBytes(5 * 1024 * 1024)).toBe('5.0 MB');
  });

  it('counts down to expiry as m:ss and h:mm:ss, then says expired', () => {
    expect(countdown(1000 + 245, 1000)).toBe('4:05');
    expect(countdown(1000 + 3723, 1000)).toBe('1:02:03');
    expect(countdown(1000, 1000), 'at the expiry second the request can no longer be answered').toBe('expired');
  });

  it('describes times relative to now in both directions', () => {
    expect(relativeTime(null)).toBe('never');
    expect(relativeTime(1000 - 10, 1000)).toBe('just now');
    expect(relativeTime(1000, 1000), 'something made this very second').toBe('just now');
    expect(relativeTime(1000 + 10, 1000)).toBe('in a moment');
    expect(relativeTime(1000 - 600, 1000)).toBe('10 min ago');
    expect(relativeTime(1000 + 7200, 1000)).toBe('in 2 h');
  });

  it('compares fingerprints ignoring case, spaces and dashes', () => {
    expect(normaliseFingerprint('4f2a 91c3-7d0e')).toBe(normaliseFingerprint('4F2A-91C3-7D0E'));
  });
});

describe('audit chart maths', () => {
  const rows = [
    row({ seq: 1, agent: 'a1', agentName: 'alpha', decision: 'allowed', at: 3600 }),
    row({ seq: 2, agent: 'a1', agentName: 'alpha', decision: 'denied', at: 3700 }),
    row({ seq: 3, agent: 'a1', agentName: 'alpha', decision: 'allowed', at: 3 * 3600 + 5 }),
    row({ seq: 4, agent: 'a2', agentName: 'beta', decision: 'denied', at: 3 * 3600 + 10 }),
    row({ seq: 5, agent: 'a2', agentName: 'beta', decision: 'denied', at: 3 * 3600 + 20 }),
    row({ seq: 6, agent: null, agentName: null, decision: null, kind: 'policy_saved', at: 3600 }),
  ];

  it('counts allowed and denied calls per agent, busiest first, skipping non-call records', () => {
    expect(totalsByAgent(rows)).toEqual([
      { agent: 'a1', name: 'alpha', allowed: 2, denied: 1 },
      { agent: 'a2', name: 'beta', allowed: 0, denied: 2 },
    ]);
  });

  it('buckets calls per hour including empty hours, so gaps show as gaps', () => {
    const b = bucketCalls(rows, 3600, { from: 3600, to: 3 * 3600 + 30 });
    expect(b.map((x) => x.start)).toEqual([3600, 7200, 10800]);
    expect(b[0], 'hour 1 has one allowed and one denied call').toMatchObject({ allowed: 1, denied: 1 });
    expect(b[1], 'hour 2 had no calls and must still be drawn as an empty bar').toMatchObject({ allowed: 0, denied: 0 });
    expect(b[2]).toMatchObject({ allowed: 1, denied: 2 });
  });

  it('spans the whole filter range, so one busy hour in a day is one bar of 24, not the full width', () => {
    const now = 30 * 3600 + 120;
    const recent = [row({ decision: 'allowed', at: now - 60 }), ...rows];
    const span = chartWindow(recent, now - 86400, now);
    const b = bucketCalls(recent, pickBucketSecs(span), span);
    expect(b.length, 'an hourly bar for every hour from the range start to now').toBe(25);
    expect(b[0].start).toBe(6 * 3600);
    expect(b.at(-1)?.start, 'the last bar is the current hour').toBe(30 * 3600);
    expect(b.at(-1), 'a call a minute ago is in the last bar').toMatchObject({ allowed: 1, denied: 0 });
    expect(b.slice(0, -1).every((x) => x.allowed + x.denied === 0), 'older calls are outside the range').toBe(true);
  });

  it('draws nothing when no call falls in the range', () => {
    expect(bucketCalls(rows, 3600, { from: 20 * 3600, to: 30 * 3600 })).toEqual([]);
    expect(bucketCalls(rows, 3600, { from: 0, to: 4 * 3600 }, 'nobody')).toEqual([]);
  });

  it('runs "all time" from the oldest call to now', () => {
    expect(chartWindow(rows, null, 50 * 3600)).toEqual({ from: 3600, to: 50 * 3600 });
    expect(chartWindow([], null, 99), 'no calls: an empty range ending now').toEqual({ from: 99, to: 99 });
  });

  it('can restrict buckets to one agent', () => {
    const b = bucketCalls(rows, 3600, { from: 3 * 3600, to: 3 * 3600 + 30 }, 'a2');
    expect(b).toEqual([{ start: 10800, allowed: 0, denied: 2 }]);
  });

  it('uses 5-minute buckets up to an hour, hourly ones up to two days and daily ones beyond', () => {
    expect(pickBucketSecs({ from: 0, to: 3600 })).toBe(300);
    expect(bucketName(300)).toBe('5 minutes');
    expect(pickBucketSecs({ from: 0, to: 86400 })).toBe(3600);
    expect(bucketName(3600)).toBe('hour');
    expect(pickBucketSecs({ from: 0, to: 7 * 86400 })).toBe(86400);
    expect(bucketName(86400)).toBe('day');
  });

  it('rounds the axis maximum up to a readable number', () => {
    expect(niceMax(0)).toBe(1);
    expect(niceMax(3)).toBe(3);
    expect(niceMax(7)).toBe(10);
    expect(niceMax(23)).toBe(25);
    expect(niceMax(180)).toBe(200);
  });
});
