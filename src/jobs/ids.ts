import { randomBytes } from "node:crypto";

/**
 * Job ids sort by creation time (48-bit ms timestamp + 80 random bits, Crockford base32, like a ULID), so history pages
 * can use the id itself as the cursor and BullMQ can use it as its job id.
 */
const ALPHABET = "0123456789abcdefghjkmnpqrstvwxyz";

export function newJobId(now = Date.now()): string {
  let time = "";
  let t = now;
  for (let i = 0; i < 10; i++) {
    time = ALPHABET[t % 32] + time;
    t = Math.floor(t / 32);
  }
  const bytes = randomBytes(10);
  let rand = "";
  let acc = 0;
  let bits = 0;
  for (const b of bytes) {
    acc = (acc << 8) | b;
    bits += 8;
    while (bits >= 5) {
      rand += ALPHABET[(acc >> (bits - 5)) & 31];
      bits -= 5;
    }
    acc &= (1 << bits) - 1;
  }
  return time + rand;
}

export const JOB_ID_PATTERN = /^[0-9a-hjkmnp-tv-z]{26}$/;
