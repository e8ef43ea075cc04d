import path from "node:path";
import { AppError } from "./error-codes";
import { RunnerSupervisor, RunnerOptions } from "./runner-supervisor";
import { createLogger } from "../infra/logger";

const repo = path.resolve(__dirname, "../..");

function fake(mode = "ok", extra: Partial<RunnerOptions> = {}): RunnerSupervisor {
  return new RunnerSupervisor({
    engine: "torch",
    python: path.join(repo, ".venv/bin/python"),
    cwd: repo,
    module: "fake_runner",
    args: [],
    env: { FAKE_RUNNER_MODE: mode, PYTHONPATH: path.join(repo, "test/support") },
    silenceTimeoutMs: 5_000,
    startTimeoutMs: 10_000,
    maxRestarts: 2,
    backoffBaseMs: 20,
    logger: createLogger("silent"),
    ...extra,
  });
}

async function codeOf(p: Promise<unknown>): Promise<string> {
  try {
    await p;
  } catch (err) {
    expect(err).toBeInstanceOf(AppError);
    return (err as AppError).code;
  }
  throw new Error("expected a rejection");
}

function once(sup: RunnerSupervisor, event: string): Promise<void> {
  return new Promise((resolve) => sup.once(event, () => resolve()));
}

describe("RunnerSupervisor", () => {
  let sup: RunnerSupervisor;
  afterEach(async () => {
    await sup?.stop(1_000);
  });

  it("waits for ready, ignores non-protocol stdout, and matches answers and progress to requests", async () => {
    sup = fake();
    await sup.start();
    expect(sup.state).toBe("ready");
    const steps: number[] = [];
    const [a, b] = await Promise.all([
      sup.request("generate", { params: {} }, { onProgress: (p) => steps.push(p.step) }),
      sup.request("echo", { value: 42 }),
    ]);
    expect(a.width).toBe(8);
    expect(steps).toEqual([1, 2, 3]);
    expect((b.echo as { value: number }).value).toBe(42);
  });

  it("rejects with the runner's taxonomy code, and unknown codes become ENGINE_INTERNAL", async () => {
    sup = fake();
    expect(await codeOf(sup.request("fail"))).toBe("CUDA_OOM");
    expect(await codeOf(sup.request("weird-code"))).toBe("ENGINE_INTERNAL");
  });

  it("fails in-flight requests of a dead runner with ENGINE_INTERNAL and restarts it", async () => {
    sup = fake();
    await sup.start();
    const firstPid = sup.pid;
    const hanging = sup.request("hang");
    const restarted = once(sup, "restarted");
    expect(await codeOf(sup.request("die"))).toBe("ENGINE_INTERNAL");
    expect(await codeOf(hanging)).toBe("ENGINE_INTERNAL");
    await restarted;
    expect(sup.pid).not.toBe(firstPid);
    expect((await sup.request("echo")).event).toBe("result");
  });

  it("times out a silent request with TIMEOUT and replaces the wedged runner", async () => {
    sup = fake("ok", { silenceTimeoutMs: 300 });
    await sup.start();
    const firstPid = sup.pid;
    const restarted = once(sup, "restarted");
    expect(await codeOf(sup.request("hang"))).toBe("TIMEOUT");
    await restarted;
    expect(sup.pid).not.toBe(firstPid);
  });

  it("gives up after the restart cap and then fails fast with ENGINE_UNAVAILABLE", async () => {
    sup = fake("ok", { maxRestarts: 1 });
    await sup.start();
    const restarted = once(sup, "restarted");
    await codeOf(sup.request("die"));
    await restarted;
    const failed = once(sup, "failed");
    await codeOf(sup.request("die"));
    await failed;
    expect(sup.state).toBe("failed");
    const t0 = Date.now();
    expect(await codeOf(sup.request("echo"))).toBe("ENGINE_UNAVAILABLE");
    expect(Date.now() - t0).toBeLessThan(100);
  });

  it("reports a runner that cannot start as ENGINE_UNAVAILABLE and does not reuse it", async () => {
    sup = fake("crash-on-start");
    expect(await codeOf(sup.start())).toBe("ENGINE_UNAVAILABLE");
    expect(sup.state).toBe("failed");
    expect(await codeOf(sup.request("echo"))).toBe("ENGINE_UNAVAILABLE");
  });

  it("gives up on a runner that never becomes ready: killed at the start-up timeout, not restarted, not reused", async () => {
    sup = fake("never-ready", { startTimeoutMs: 300 });
    const restarted = jest.fn();
    sup.on("restarted", restarted);
    expect(await codeOf(sup.start())).toBe("ENGINE_UNAVAILABLE");
    await new Promise((r) => setTimeout(r, 300)); // longer than a restart backoff (20 ms here)
    expect(sup.state).toBe("failed");
    expect(sup.pid).toBeUndefined();
    expect(restarted).not.toHaveBeenCalled();
    const started = Date.now();
    expect(await codeOf(sup.request("generate", { params: {} }))).toBe("ENGINE_UNAVAILABLE");
    expect(Date.now() - started).toBeLessThan(100);
  });

  it("reports a missing interpreter as ENGINE_UNAVAILABLE", async () => {
    sup = fake("ok", { python: "/nonexistent/python" });
    expect(await codeOf(sup.start())).toBe("ENGINE_UNAVAILABLE");
  });
});
