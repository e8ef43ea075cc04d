/**
 * What makes a request a seed-server (legacy) one, and the old error shape, in one place: the legacy router answers
 * its own errors with it, and the Host check (which runs before any router) uses it for refusals on these paths.
 */

/** The seed server's own paths (GET /health and GET /models are v1 routes that carry the old fields, so not here). */
const LEGACY_PATH = /^\/(?:generate|set_engine|load_model|loras|progress\/[^/]+|cancel\/[^/]+)\/?$/;

export function isLegacyPath(path: string): boolean {
  return LEGACY_PATH.test(path);
}

export interface LegacyFailure {
  success: false;
  error: string;
  code: string;
  [extra: string]: unknown;
}

/** `{success:false, error, code}`: the old client shows `error` and the new fields ride along. */
export function legacyFailure(code: string, error: string, extra: Record<string, unknown> = {}): LegacyFailure {
  return { success: false, error, code, ...extra };
}
