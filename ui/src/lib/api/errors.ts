import type { ApiError, PolicyProblem } from './types';

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null;
}

/** Normalise anything a command rejected with into `{code, message}`. */
export function toApiError(e: unknown): ApiError {
  if (isObject(e) && typeof e.code === 'string' && typeof e.message === 'string') {
    const out: ApiError = { code: e.code, message: e.message };
    if (Array.isArray(e.problems)) out.problems = e.problems as PolicyProblem[];
    return out;
  }
  if (typeof e === 'string') return { code: 'unknown', message: e };
  if (e instanceof Error) return { code: 'unknown', message: e.message };
  return { code: 'unknown', message: 'Something went wrong.' };
}

export function isApiError(e: unknown): e is ApiError {
  return isObject(e) && typeof e.code === 'string' && typeof e.message === 'string';
}
