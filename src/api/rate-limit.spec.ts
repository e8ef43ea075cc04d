import type IORedis from "ioredis";
import { SubmitRateLimiter } from "./rate-limit";
import { createLogger } from "../infra/logger";

/**
 * Stands in for Redis running the TAKE script: one bucket per key, no refill within a test, and answers in the order the
 * takes were sent, as one ioredis connection gives them. `hold` keeps answers back until `release`.
 */
class FakeRedis {
  readonly sent: string[] = [];
  readonly buckets = new Map<string, number>();
  hold = false;
  fail = false;
  private waiting: Array<() => void> = [];

  defineCommand(): void {}

  pixelaiRateTake = (key: string, capacity: string): Promise<[number, number, number]> => {
    this.sent.push(key);
    const answer = (): [number, number, number] => {
      const tokens = this.buckets.get(key) ?? Number(capacity);
      if (tokens < 1) return [0, 1000, 0];
      this.buckets.set(key, tokens - 1);
      return [1, 0, tokens - 1];
    };
    if (this.fail) return Promise.reject(new Error("connection is closed"));
    if (!this.hold) return Promise.resolve().then(answer);
    return new Promise((resolve) => this.waiting.push(() => resolve(answer())));
  };

  release(): void {
    const waiting = this.waiting;
    this.waiting = [];
    for (const answer of waiting) answer();
  }
}

function limiter(redis: FakeRedis, perMinute: number, bucket?: { name: string; what: string; optimistic?: boolean }) {
  return new SubmitRateLimiter(redis as unknown as IORedis, "t", perMinute, createLogger("silent"), bucket);
}

/** Whether `promise` settles before the fake answers anything still held. */
async function settlesAtOnce<T>(promise: Promise<T>): Promise<boolean> {
  const marker = Symbol("pending");
  const first = await Promise.race([promise, new Promise((r) => setTimeout(() => r(marker), 20))]);
  return first !== marker;
}

describe("SubmitRateLimiter", () => {
  it("waits for Redis on a client it has not seen, then admits without waiting while the bucket is far from empty", async () => {
    const redis = new FakeRedis();
    const rate = limiter(redis, 600);
    redis.hold = true;
    const first = rate.take("a");
    expect(await settlesAtOnce(first)).toBe(false);
    redis.release();
    expect(await first).toEqual({ allowed: true, retryAfterMs: 0 });

    const second = rate.take("a");
    expect(await settlesAtOnce(second)).toBe(true);
    expect(await second).toEqual({ allowed: true, retryAfterMs: 0 });
    // the token is still spent in Redis, once the request has moved on
    expect(redis.sent).toEqual(["t:rate:a"]);
    await new Promise((r) => setImmediate(r));
    expect(redis.sent).toEqual(["t:rate:a", "t:rate:a"]);
    redis.release();
    await new Promise((r) => setImmediate(r));
    expect(redis.buckets.get("t:rate:a")).toBe(598);
  });

  it("never admits past the budget in one process, whether takes come one by one or all at once", async () => {
    const redis = new FakeRedis();
    const rate = limiter(redis, 20);
    const oneByOne = [];
    for (let i = 0; i < 30; i++) oneByOne.push((await rate.take("a")).allowed);
    expect(oneByOne.filter(Boolean)).toHaveLength(20);
    expect(oneByOne.slice(20).every((allowed) => !allowed)).toBe(true);

    const atOnce = await Promise.all(Array.from({ length: 30 }, () => rate.take("b")));
    expect(atOnce.filter((d) => d.allowed)).toHaveLength(20);
    expect(redis.sent.filter((k) => k === "t:rate:b")).toHaveLength(30);
  });

  it("waits for Redis again near the margin (a tenth of the budget, at least 2)", async () => {
    const redis = new FakeRedis();
    const rate = limiter(redis, 30);
    redis.buckets.set("t:rate:a", 6); // 5 left after the first take; the margin at 30 a minute is 3
    await rate.take("a");
    redis.hold = true;
    expect(await settlesAtOnce(rate.take("a"))).toBe(true); // leaves 4 as far as it knows
    expect(await settlesAtOnce(rate.take("a"))).toBe(true); // leaves 3
    expect(await settlesAtOnce(rate.take("a"))).toBe(false); // would leave 2: Redis decides
    redis.release();
  });

  it("always waits for Redis on a budget that is not optimistic (the WebSocket's read frames)", async () => {
    const redis = new FakeRedis();
    const reads = limiter(redis, 600, { name: "ws-read", what: "subscribe and engines frames" });
    await reads.take("a");
    redis.hold = true;
    expect(await settlesAtOnce(reads.take("a"))).toBe(false);
    redis.release();
  });

  it("lets requests through when Redis is unreachable, and forgets what it knew", async () => {
    const redis = new FakeRedis();
    const rate = limiter(redis, 600);
    await rate.take("a");
    redis.fail = true;
    await rate.take("a"); // admitted without waiting; its TAKE fails in the background
    await new Promise((r) => setImmediate(r));
    expect(await rate.take("a")).toEqual({ allowed: true, retryAfterMs: 0 }); // waited: nothing known any more
    redis.fail = false;
    redis.hold = true;
    expect(await settlesAtOnce(rate.take("a"))).toBe(false);
    redis.release();
  });

  it("remembers at most 10 000 clients", async () => {
    const redis = new FakeRedis();
    const rate = limiter(redis, 600);
    for (let i = 0; i < 10_050; i++) await rate.take(`c${i}`);
    expect((rate as unknown as { known: Map<string, unknown> }).known.size).toBe(10_000);
  });
});
