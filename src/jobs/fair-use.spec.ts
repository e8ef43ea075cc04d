import { AppError } from "../backends/error-codes";
import { submitterOf } from "../api/submitter";
import { checkJobSize, checkPriority, checkQueuedCount, DEFAULT_PRIORITY, requestHash } from "./fair-use";

const anonymous = { client: "ip:127.0.0.1", admin: false };
const admin = { client: "key:0123456789abcdef", admin: true };

function codeOf(fn: () => void): string | undefined {
  try {
    fn();
    return undefined;
  } catch (err) {
    return err instanceof AppError ? `${err.code} ${err.status}` : String(err);
  }
}

describe("priority", () => {
  it("lets anyone take the default or name no priority; a higher one needs the admin key", () => {
    expect(codeOf(() => checkPriority(undefined, anonymous))).toBeUndefined();
    expect(codeOf(() => checkPriority(DEFAULT_PRIORITY, anonymous))).toBeUndefined();
    expect(codeOf(() => checkPriority(DEFAULT_PRIORITY - 1, anonymous))).toBe("PRIORITY_FORBIDDEN 403");
    expect(codeOf(() => checkPriority(1, anonymous))).toBe("PRIORITY_FORBIDDEN 403");
    expect(codeOf(() => checkPriority(1, admin))).toBeUndefined();
  });
});

describe("job size", () => {
  const limits = { maxQueuedPerClient: 0, maxPixelSteps: 512 * 512 * 20 };
  it("allows width × height × steps up to the bound and refuses one more step with JOB_TOO_LARGE 400; 0 means no bound", () => {
    expect(codeOf(() => checkJobSize({ width: 512, height: 512, steps: 20 }, limits))).toBeUndefined();
    expect(codeOf(() => checkJobSize({ width: 512, height: 512, steps: 21 }, limits))).toBe("JOB_TOO_LARGE 400");
    expect(codeOf(() => checkJobSize({ width: 2048, height: 2048, steps: 150 }, { ...limits, maxPixelSteps: 0 }))).toBeUndefined();
  });
  it("counts every candidate: count multiplies the cost", () => {
    expect(codeOf(() => checkJobSize({ width: 256, height: 256, steps: 20, count: 4 }, limits))).toBeUndefined();
    expect(codeOf(() => checkJobSize({ width: 256, height: 256, steps: 20, count: 5 }, limits))).toBe("JOB_TOO_LARGE 400");
    expect(codeOf(() => checkJobSize({ width: 512, height: 512, steps: 20, count: 2 }, limits))).toBe("JOB_TOO_LARGE 400");
  });
});

describe("queued cap", () => {
  it("refuses the job that would pass the cap with TOO_MANY_QUEUED 429; 0 means no cap", () => {
    const limits = { maxQueuedPerClient: 3, maxPixelSteps: 0 };
    expect(codeOf(() => checkQueuedCount(2, limits))).toBeUndefined();
    expect(codeOf(() => checkQueuedCount(3, limits))).toBe("TOO_MANY_QUEUED 429");
    expect(codeOf(() => checkQueuedCount(10_000, { ...limits, maxQueuedPerClient: 0 }))).toBeUndefined();
  });
});

describe("requestHash", () => {
  it("ignores key order and the idempotency key itself, and tells any other difference apart", () => {
    const a = requestHash({ prompt: "a knight", width: 64, pixel: { width: 8, height: 8 }, idempotencyKey: "k1" });
    expect(requestHash({ pixel: { height: 8, width: 8 }, width: 64, prompt: "a knight", idempotencyKey: "k2" })).toBe(a);
    expect(requestHash({ prompt: "a knight", width: 64, pixel: { width: 8, height: 9 } })).not.toBe(a);
    expect(requestHash({ prompt: "a knight", width: 64, pixel: { width: 8, height: 8 }, seed: 1 })).not.toBe(a);
  });
});

describe("submitterOf", () => {
  it("is the key's client (admin) only for the configured key; a wrong or made-up key counts as its IP", () => {
    const holder = submitterOf("s3cret", "s3cret", "10.0.0.1");
    expect(holder).toEqual({ client: expect.stringMatching(/^key:[0-9a-f]{16}$/), admin: true });
    expect(holder.client).not.toContain("s3cret");
    expect(submitterOf("s3cret", "s3cret", "10.0.0.2")).toEqual(holder); // the key, not the address
    expect(submitterOf("s3cret", "guess", "10.0.0.1")).toEqual({ client: "ip:10.0.0.1", admin: false });
    expect(submitterOf("s3cret", "s3cret-longer", "10.0.0.1")).toEqual({ client: "ip:10.0.0.1", admin: false });
    expect(submitterOf(undefined, "anything", "10.0.0.1")).toEqual({ client: "ip:10.0.0.1", admin: false });
  });
});
