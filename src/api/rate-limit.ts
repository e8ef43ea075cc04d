import type { RequestHandler } from "express";
import type IORedis from "ioredis";
import type { Logger } from "../infra/logger";

/**
 * Token bucket in one Redis hash per client: `capacity` tokens, refilled at capacity per minute, one per submission.
 * It lives in Redis so every API process shares a client's budget. Redis time keeps processes with skewed clocks
 * consistent. Returns {allowed, retryAfterMs, tokens left (whole)}.
 */
const TAKE = `
local cap = tonumber(ARGV[1])
local per_ms = cap / 60000
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local b = redis.call('HMGET', KEYS[1], 'tokens', 'ts')
local tokens = tonumber(b[1]) or cap
local ts = tonumber(b[2]) or now
tokens = math.min(cap, tokens + math.max(0, now - ts) * per_ms)
local allowed = 0
local wait = 0
if tokens >= 1 then
  tokens = tokens - 1
  allowed = 1
else
  wait = math.ceil((1 - tokens) / per_ms)
end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'ts', tostring(now))
redis.call('PEXPIRE', KEYS[1], 60000 + 1000)
return {allowed, wait, math.floor(tokens)}
`;

export interface RateDecision {
  allowed: boolean;
  retryAfterMs: number;
}

/** The connection with TAKE defined as a command: EVALSHA, so the script's text is not sent (and hashed) per request. */
type WithTake = IORedis & { pixelaiRateTake(key: string, capacity: string): Promise<[number, number, number]> };

/** What this process last learned of a client's bucket: Redis's count after its latest answer, less what was spent since. */
interface KnownBucket {
  tokens: number;
  /** Takes sent to Redis (or about to be) and not answered yet: each will still spend one of `tokens`. */
  inFlight: number;
  /** Of those, the ones waiting to be sent. */
  deferred: number;
}

/** Clients whose bucket this process remembers; the oldest is forgotten first (memory stays bounded per process). */
const MAX_KNOWN_CLIENTS = 10_000;

export class SubmitRateLimiter {
  private readonly redis: WithTake;
  private readonly known = new Map<string, KnownBucket>();

  constructor(
    redis: IORedis,
    private readonly prefix: string,
    /** Submissions per client per minute; 0 or less: no limit. */
    readonly perMinute: number,
    private readonly logger: Logger,
    /**
     * Which budget: submissions use "rate"; the WebSocket's `subscribe` and `engines` frames have their own
     * ("ws-read"), so a client polling engines never spends its submissions, nor the other way round.
     */
    private readonly bucket: { name: string; what: string; optimistic?: boolean } = { name: "rate", what: "submissions", optimistic: true },
  ) {
    redis.defineCommand("pixelaiRateTake", { numberOfKeys: 1, lua: TAKE });
    this.redis = redis as WithTake;
  }

  /**
   * Spends one token of `client`. While this process knows the client's bucket to be far from empty (a margin of a
   * tenth of the budget, at least 2), the token is spent in Redis without waiting for the answer: a submission then
   * costs no Redis round trip on its way in (docs/environment.md, "Measuring the service overhead"). The count only
   * falls between answers (refills are left to Redis), so one process never admits past the budget; another process
   * spending the same client's tokens can push it over by what arrives within one round trip, until the next answer.
   * Near the margin, and for a client not seen yet, every take waits for Redis, which decides.
   *
   * Fails open when Redis is unreachable: the submission then fails on the queue itself with 503 ENGINE_UNAVAILABLE,
   * which tells the client the truth (Redis is down, not "slow down").
   */
  async take(client: string): Promise<RateDecision> {
    if (this.perMinute <= 0) return { allowed: true, retryAfterMs: 0 };
    const key = `${this.prefix}:${this.bucket.name}:${client}`;
    const before = this.known.get(key)?.tokens ?? -1; // as far as this process knows; -1: nothing known
    if (this.bucket.optimistic && before - 1 >= this.margin()) {
      // Sent once the request has moved on: even the write wakes Redis, which costs the caller ~0.4 ms on a VM.
      this.spend(key, true).catch(() => undefined);
      return { allowed: true, retryAfterMs: 0 };
    }
    const answer = this.spend(key, false);
    try {
      return await answer;
    } catch (err) {
      this.logger.debug({ err: (err as Error).message }, "rate limiter unavailable; letting the request through");
      return { allowed: true, retryAfterMs: 0 };
    }
  }

  private margin(): number {
    return Math.max(2, Math.ceil(this.perMinute / 10));
  }

  /** One TAKE in Redis; its answer becomes what this process knows of the bucket. */
  private async spend(key: string, later: boolean): Promise<RateDecision> {
    const bucket = this.known.get(key) ?? { tokens: 0, inFlight: 0, deferred: 0 };
    // Re-inserted last: the map's order is least recently used first.
    this.known.delete(key);
    this.known.set(key, bucket);
    if (this.known.size > MAX_KNOWN_CLIENTS) this.known.delete(this.known.keys().next().value!);
    bucket.inFlight += 1;
    bucket.tokens -= 1;
    try {
      // A take that waits must not overtake deferred ones (Redis would grant it from tokens they already spent here):
      // it queues behind them, and setImmediate keeps that order.
      if (later || bucket.deferred > 0) {
        bucket.deferred += 1;
        await new Promise((resolve) => setImmediate(resolve));
        bucket.deferred -= 1;
      }
      const [allowed, wait, tokens] = await this.redis.pixelaiRateTake(key, String(this.perMinute));
      bucket.inFlight -= 1;
      // Answers come in the order the takes were sent (one connection): the ones still out will each spend a token.
      if (this.known.get(key) === bucket) bucket.tokens = Number(tokens) - bucket.inFlight;
      return { allowed: allowed === 1, retryAfterMs: Number(wait) };
    } catch (err) {
      bucket.inFlight -= 1;
      this.known.delete(key); // nothing known any more: the next take waits for Redis
      throw err;
    }
  }

  message(decision: RateDecision): string {
    return `too many ${this.bucket.what}: the limit is ${this.perMinute} per minute per client; retry in ${Math.ceil(decision.retryAfterMs / 1000)} s`;
  }
}

/** Express guard for a submit route; `legacy` answers in the seed server's `{success:false, error, code}` shape. */
export function rateLimitSubmit(limiter: SubmitRateLimiter, shape: "v1" | "legacy"): RequestHandler {
  return (req, res, next) => {
    limiter.take(req.ip ?? req.socket.remoteAddress ?? "unknown").then((decision) => {
      if (decision.allowed) return next();
      const message = limiter.message(decision);
      res.setHeader("Retry-After", String(Math.max(1, Math.ceil(decision.retryAfterMs / 1000))));
      if (shape === "legacy") res.status(429).json({ success: false, error: message, code: "RATE_LIMITED" });
      else res.status(429).json({ error: { code: "RATE_LIMITED", message, details: { retryAfterMs: decision.retryAfterMs } } });
    }, next);
  };
}
