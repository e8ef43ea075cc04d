import { createHash, timingSafeEqual } from "node:crypto";

/**
 * Equal-time comparison of a given secret with the expected one. Both sides are hashed to 32 bytes first, so neither
 * the comparison's time nor an early return on a length mismatch tells a caller how long the key is.
 */
export function sameSecret(given: string, expected: string): boolean {
  const a = createHash("sha256").update(given).digest();
  const b = createHash("sha256").update(expected).digest();
  return timingSafeEqual(a, b);
}
