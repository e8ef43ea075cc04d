import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { AppError } from "./error-codes";
import { runnerArgv } from "./runner-contract";
import { RunnerSupervisor, RunnerOptions } from "./runner-supervisor";
import { createLogger } from "../infra/logger";

const repo = path.resolve(__dirname, "../..");
const python = path.join(repo, ".venv/bin/python");

function fake(mode = "ok", extra: Partial<RunnerOptions> = {}): RunnerSupervisor {
  return new RunnerSupervisor({
    settings: { engine: "torch" },
    python,
    cwd: repo,
    module: "fake_runner",
    env: { FAKE_RUNNER_MODE: mode, PYTHONPATH: path.join(repo, "test/support") },
    silenceTimeoutMs: 5_000,
    startTimeoutMs: 10_000,
    maxRestarts: 2,
    backoffBaseMs: 20,
    logger: createLogger("silent"),
    ...extra,
  });
}

/** A generate the fake runner answers according to its prompt (test/support/fake_runner). */
function params(prompt: string) {
  return { jobId: "j", modelSource: "m", prompt, width: 8, height: 8, steps: 3, guidanceScale: 1, seed: 1, outputDir: "/tmp" };
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

describe("runnerArgv", () => {
  it("turns settings into the runner's options: camelCase → --kebab-case, true → a bare flag, false/undefined left out", () => {
    expect(
      runnerArgv({
        engine: "mlx",
        device: "cpu",
        pipelineCache: 3,
        mlxBlas: "off",
        birefnetDir: "",
        autoInstall: true,
        mlxDtype: undefined,
      }),
    ).toEqual(["--engine", "mlx", "--device", "cpu", "--pipeline-cache", "3", "--mlx-blas", "off", "--birefnet-dir", "", "--auto-install"]);
    expect(runnerArgv({ engine: "torch", autoInstall: false })).toEqual(["--engine", "torch"]);
  });
});

describe("RunnerSupervisor", () => {
  let sup: RunnerSupervisor;
  afterEach(async () => {
    await sup?.stop(1_000);
  });

  it("waits for ready, ignores non-protocol stdout, and matches typed answers and progress to requests", async () => {
    sup = fake();
    await sup.start();
    expect(sup.state).toBe("ready");
    expect(sup.readyInfo).toMatchObject({ event: "ready", engine: "torch", device: "cpu", available: true });
    const steps: number[] = [];
    const [result, probe] = await Promise.all([sup.generate(params("ok"), { onProgress: (p) => steps.push(p.step) }), sup.probe()]);
    expect(result.width).toBe(8);
    expect(result).not.toHaveProperty("event"); // the payload only: id and event are the envelope
    expect(steps).toEqual([1, 2, 3]);
    expect(probe.engine).toBe("torch");
  });

  it("starts the runner with the options its settings make", async () => {
    const settings = { engine: "mlx" as const, device: "cpu" as const, pipelineCache: 3, autoInstall: false };
    sup = fake("ok", { settings });
    const probe = (await sup.probe()) as unknown as { argv: string[] };
    expect(probe.argv).toEqual(runnerArgv(settings));
    expect(probe.argv).toEqual(["--engine", "mlx", "--device", "cpu", "--pipeline-cache", "3"]);
    expect(sup.engine).toBe("mlx");
  });

  it("rejects with the runner's taxonomy code, and unknown codes become ENGINE_INTERNAL", async () => {
    sup = fake();
    expect(await codeOf(sup.generate(params("fail")))).toBe("CUDA_OOM");
    expect(await codeOf(sup.generate(params("weird-code")))).toBe("ENGINE_INTERNAL");
  });

  it("cancels a generation by id, answers false for one it does not know, and unloads", async () => {
    sup = fake();
    await sup.start();
    const hanging = sup.generate(params("hang"), { id: "gen-1" });
    expect(await sup.cancel("gen-1")).toBe(true);
    expect(await codeOf(hanging)).toBe("CANCELLED");
    expect(await sup.cancel("gen-1")).toBe(false);
    expect(await sup.unload("m")).toEqual(["m"]);
    expect(await sup.unload()).toEqual(["a", "b"]);
  });

  it("fails in-flight requests of a dead runner with ENGINE_INTERNAL and restarts it", async () => {
    sup = fake();
    await sup.start();
    const firstPid = sup.pid;
    const hanging = sup.generate(params("hang"));
    const restarted = once(sup, "restarted");
    expect(await codeOf(sup.generate(params("die")))).toBe("ENGINE_INTERNAL");
    expect(await codeOf(hanging)).toBe("ENGINE_INTERNAL");
    await restarted;
    expect(sup.pid).not.toBe(firstPid);
    expect((await sup.probe()).available).toBe(true);
  });

  it("times out a silent request with TIMEOUT and replaces the wedged runner", async () => {
    sup = fake("ok", { silenceTimeoutMs: 300 });
    await sup.start();
    const firstPid = sup.pid;
    const restarted = once(sup, "restarted");
    expect(await codeOf(sup.generate(params("hang")))).toBe("TIMEOUT");
    await restarted;
    expect(sup.pid).not.toBe(firstPid);
  });

  it("gives up after the restart cap and then fails fast with ENGINE_UNAVAILABLE", async () => {
    sup = fake("ok", { maxRestarts: 1 });
    await sup.start();
    const restarted = once(sup, "restarted");
    await codeOf(sup.generate(params("die")));
    await restarted;
    const failed = once(sup, "failed");
    await codeOf(sup.generate(params("die")));
    await failed;
    expect(sup.state).toBe("failed");
    const t0 = Date.now();
    expect(await codeOf(sup.probe())).toBe("ENGINE_UNAVAILABLE");
    expect(Date.now() - t0).toBeLessThan(100);
  });

  it("reports a runner that cannot start as ENGINE_UNAVAILABLE and does not reuse it", async () => {
    sup = fake("crash-on-start");
    expect(await codeOf(sup.start())).toBe("ENGINE_UNAVAILABLE");
    expect(sup.state).toBe("failed");
    expect(await codeOf(sup.probe())).toBe("ENGINE_UNAVAILABLE");
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
    expect(await codeOf(sup.generate(params("ok")))).toBe("ENGINE_UNAVAILABLE");
    expect(Date.now() - started).toBeLessThan(100);
  });

  it("reports a missing interpreter as ENGINE_UNAVAILABLE", async () => {
    sup = fake("ok", { python: "/nonexistent/python" });
    expect(await codeOf(sup.start())).toBe("ENGINE_UNAVAILABLE");
  });

  it("shutdown() stops the runner for good", async () => {
    sup = fake();
    await sup.start();
    const pid = sup.pid!;
    await sup.shutdown();
    expect(sup.state).toBe("stopped");
    expect(() => process.kill(pid, 0)).toThrow();
  });
});

describe("RunnerSupervisor with the real runner", () => {
  let sup: RunnerSupervisor | undefined;
  afterEach(async () => {
    await sup?.shutdown();
    sup = undefined;
  });

  function real(settings: RunnerOptions["settings"]): RunnerSupervisor {
    return new RunnerSupervisor({
      settings,
      python,
      cwd: repo,
      silenceTimeoutMs: 60_000,
      startTimeoutMs: 120_000,
      maxRestarts: 0,
      logger: createLogger("silent"),
    });
  }

  it("torch: the settings reach the runner as options (device, pipeline cache, BiRefNet folder)", async () => {
    const birefnet = fs.mkdtempSync(path.join(os.tmpdir(), "pixelai-birefnet-"));
    try {
      sup = real({ engine: "torch", device: "cpu", pipelineCache: 3, birefnetDir: birefnet });
      await sup.start();
      expect(sup.readyInfo).toMatchObject({ engine: "torch", device: "cpu", dtype: "float32", available: true });
      const probe = await sup.probe();
      expect(probe).toMatchObject({ engine: "torch", device: "cpu", cacheSize: 3 });
      expect(probe.features.backgroundRemoval).toBe(false); // an empty folder: no weights
      expect(await sup.unload()).toEqual([]);
    } finally {
      fs.rmSync(birefnet, { recursive: true, force: true });
    }
  }, 180_000);

  it("mlx: one pipeline-cache setting for both engines, and the dtype option (MLX names its own devices)", async () => {
    sup = real({ engine: "mlx", pipelineCache: 4, mlxDtype: "float16" });
    await sup.start();
    const probe = await sup.probe();
    if (!probe.available) return expect(probe.reason).toMatch(/mlx/); // a machine without mlx still answers, saying why
    expect(probe).toMatchObject({ engine: "mlx", dtype: "float16", cacheSize: 4 });
    expect(["gpu", "cpu"]).toContain(probe.device);
    expect(sup.readyInfo?.device).toBe(probe.device);
  }, 180_000);
});
