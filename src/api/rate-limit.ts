import type { RequestHandler } from "express";
import type IORedis from "ioredis";
import type { Logger } from "../infra/logger";

/**
 * Token bucket in one Redis hash per client: `capacity` tokens, refilled at capacity per minute, one per submission.
 * It lives in Redis so every API process shares a client's budget. Redis time keeps processes with skewed clocks
 * consistent. Returns {allowed, retryAfterMs}.
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
return {allowed, wait}
`;

export interface RateDecision {
  allowed: boolean;
  retryAfterMs: number;
}

/** The connection with TAKE defined as a command: EVALSHA, so the script's text is not sent (and hashed) per request. */
type WithTake = IORedis & { pixelaiRateTake(key: string, capacity: string): Promise<[number, number]> };

export class SubmitRateLimiter {
  private readonly redis: WithTake;

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
    private readonly bucket: { name: string; what: string } = { name: "rate", what: "submissions" },
  ) {
    redis.defineCommand("pixelaiRateTake", { numberOfKeys: 1, lua: TAKE });
    this.redis = redis as WithTake;
  }

  /**
   * Spends one token of `client`. Fails open when Redis is unreachable: the submission then fails on the queue
   * itself with 503 ENGINE_UNAVAILABLE, which tells the client the truth (Redis is down, not "slow down").
   */
  async take(client: string): Promise<RateDecision> {
    if (this.perMinute <= 0) return { allowed: true, retryAfterMs: 0 };
    try {
      const [allowed, wait] = await this.redis.pixelaiRateTake(`${this.prefix}:${this.bucket.name}:${client}`, String(this.perMinute));
      return { allowed: allowed === 1, retryAfterMs: Number(wait) };
    } catch (err) {
      this.logger.debug({ err: (err as Error).message }, "rate limiter unavailable; letting the request through");
      return { allowed: true, retryAfterMs: 0 };
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
