import { AppError } from "../backends/error-codes";
import { withDeadline } from "./job-deadline";

function controllable<T>() {
  let resolve!: (v: T) => void;
  let reject!: (e: Error) => void;
  const promise = new Promise<T>((res, rej) => {
    resolve = res;
    reject = rej;
  });
  return { promise, resolve, reject };
}

async function codeOf(p: Promise<unknown>): Promise<string> {
  try {
    await p;
  } catch (err) {
    return err instanceof AppError ? err.code : `not an AppError: ${(err as Error).message}`;
  }
  return "resolved";
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe("withDeadline", () => {
  it("passes a result or an error through untouched inside the budget, calling nothing", async () => {
    const onExpire = jest.fn();
    const onGraceOver = jest.fn();
    await expect(withDeadline(Promise.resolve(42), { timeoutMs: 1_000, graceMs: 10, onExpire, onGraceOver })).resolves.toBe(42);
    await expect(
      codeOf(withDeadline(Promise.reject(new AppError("CUDA_OOM", "oom")), { timeoutMs: 1_000, graceMs: 10, onExpire, onGraceOver })),
    ).resolves.toBe("CUDA_OOM");
    expect(onExpire).not.toHaveBeenCalled();
    expect(onGraceOver).not.toHaveBeenCalled();
  });

  it("cancels at expiry; a work that stops within the grace ends TIMEOUT (not CANCELLED) and is not forced", async () => {
    const work = controllable<number>();
    const onGraceOver = jest.fn();
    const onExpire = jest.fn(() => setTimeout(() => work.reject(new AppError("CANCELLED", "cancelled")), 5));
    const code = await codeOf(withDeadline(work.promise, { timeoutMs: 20, graceMs: 200, onExpire, onGraceOver }));
    expect(code).toBe("TIMEOUT");
    expect(onExpire).toHaveBeenCalledTimes(1);
    await sleep(250);
    expect(onGraceOver).not.toHaveBeenCalled();
  });

  it("forces a work that ignores the cancel once the grace is over; the kill's error still reads TIMEOUT", async () => {
    const work = controllable<number>();
    const onExpire = jest.fn();
    const onGraceOver = jest.fn(() => work.reject(new AppError("ENGINE_INTERNAL", "runner died")));
    const started = Date.now();
    expect(await codeOf(withDeadline(work.promise, { timeoutMs: 20, graceMs: 30, onExpire, onGraceOver }))).toBe("TIMEOUT");
    expect(Date.now() - started).toBeGreaterThanOrEqual(45);
    expect(onGraceOver).toHaveBeenCalledTimes(1);
  });

  it("reports TIMEOUT even for a result that arrives after the budget, and survives a throwing cancel", async () => {
    const work = controllable<number>();
    const onExpire = jest.fn(() => {
      throw new Error("runner not ready");
    });
    const p = withDeadline(work.promise, { timeoutMs: 10, graceMs: 1_000, onExpire, onGraceOver: jest.fn() });
    await sleep(30);
    work.resolve(1);
    expect(await codeOf(p)).toBe("TIMEOUT");
  });

  it("has no budget when timeoutMs is 0", async () => {
    const onExpire = jest.fn();
    const p = withDeadline(
      sleep(30).then(() => "done"),
      { timeoutMs: 0, graceMs: 0, onExpire, onGraceOver: jest.fn() },
    );
    await expect(p).resolves.toBe("done");
    expect(onExpire).not.toHaveBeenCalled();
  });
});
