import { createHash } from "node:crypto";
import fs from "node:fs";
import path from "node:path";
import { AppError } from "../backends/error-codes";
import { createLogger } from "../infra/logger";
import type { LiveProgress } from "../jobs/job-events-channel";
import type { GeneratePayload } from "../jobs/job-queue";
import type { ResolvedJob } from "../jobs/jobs.dto";
import { AttemptStart, canTransition, CompletedResult } from "../jobs/jobs.repository";
import type { GenerateParams, GenerateResult, PixelizeParams, PixelizeResult, ProgressEvent } from "../backends/runner-contract";
import { GenerationDeps, GenerationRepository, GenerationRunner, runGeneration } from "./run-generation";

/** One job row, moved only along the repository's real transition table. */
class FakeRepository implements GenerationRepository {
  status = "queued";
  history: string[] = ["queued"];
  error: { code: string; message: string } | null = null;
  result: CompletedResult | null = null;
  started: AttemptStart | null = null;
  savedSteps: number[] = [];
  input: Buffer | null = null;

  private move(to: "active" | "queued" | "completed" | "failed" | "cancelled"): boolean {
    if (!canTransition(this.status, to)) return false;
    this.status = to;
    this.history.push(to);
    return true;
  }

  async start(_id: string, a: AttemptStart): Promise<boolean> {
    const landed = this.move("active");
    if (landed) this.started = a;
    return landed;
  }
  async saveProgress(_id: string, step: number): Promise<void> {
    this.savedSteps.push(step);
  }
  async complete(_id: string, r: CompletedResult): Promise<boolean> {
    const landed = this.move("completed");
    if (landed) this.result = r;
    return landed;
  }
  async finish(_id: string, status: "failed" | "cancelled", code: string, message: string): Promise<boolean> {
    const landed = this.move(status);
    if (landed) this.error = { code, message };
    return landed;
  }
  async inputImage(): Promise<Buffer | null> {
    return this.input;
  }
  async requeue(_id: string, code: string, message: string): Promise<boolean> {
    const landed = this.move("queued");
    if (landed) this.error = { code, message };
    return landed;
  }
}

type Behaviour = "succeed" | "die" | "obeyCancel" | "ignoreCancel" | "wrongHash" | "candidateMissing" | "candidateWrongHash";

/** Runs `steps` steps 5 ms apart, then behaves as told; cancel/kill end a waiting generation as the real supervisor does. */
class FakeRunner implements GenerationRunner {
  calls: GenerateParams[] = [];
  pixelizeCalls: Array<PixelizeParams & { input: string }> = [];
  cancels: string[] = [];
  kills = 0;
  private pending: { id: string; reject: (e: Error) => void } | undefined;

  constructor(private readonly behaviour: Behaviour) {}

  device(): string {
    return "cpu";
  }

  async generate(params: GenerateParams, opts: { id: string; onProgress: (p: ProgressEvent) => void }): Promise<GenerateResult> {
    this.calls.push(params);
    for (let step = 1; step <= params.steps; step++) {
      await sleep(5);
      opts.onProgress({ id: opts.id, event: "progress", step, totalSteps: params.steps });
    }
    if (this.behaviour === "die") throw new AppError("ENGINE_INTERNAL", "torch runner died (code null, signal SIGKILL)");
    if (this.behaviour === "obeyCancel" || this.behaviour === "ignoreCancel") {
      // waits "between steps" until stopped
      return new Promise<never>((_resolve, reject) => (this.pending = { id: opts.id, reject }));
    }
    const png = Buffer.from(`png of ${params.prompt}`);
    const imagePath = path.join(params.outputDir, "result.png");
    fs.writeFileSync(imagePath, png);
    const sha256 = this.behaviour === "wrongHash" ? "0".repeat(64) : createHash("sha256").update(png).digest("hex");
    const timings = { loadMs: 1.4, generateMs: 20.6, postprocessMs: 0.2 };
    const result: GenerateResult = {
      imagePath,
      sha256,
      width: 32,
      height: 32,
      seed: params.seed,
      device: "cpu",
      engine: "torch",
      dtype: "float32",
      timings,
    };
    const count = params.count ?? 1;
    if (count > 1) {
      const images: NonNullable<GenerateResult["images"]> = [{ index: 0, seed: params.seed, imagePath, sha256, width: 32, height: 32 }];
      for (let index = 1; index < count; index++) {
        const bytes = Buffer.from(`candidate ${index} of ${params.prompt}`);
        const file = path.join(params.outputDir, `result-${index}.png`);
        fs.writeFileSync(file, bytes);
        const digest =
          this.behaviour === "candidateWrongHash" && index === 2 ? "0".repeat(64) : createHash("sha256").update(bytes).digest("hex");
        images.push({ index, seed: params.seed + index, imagePath: file, sha256: digest, width: 32, height: 16 });
      }
      result.images = (this.behaviour === "candidateMissing" ? images.slice(0, -1) : images) as GenerateResult["images"];
    }
    return result;
  }

  /** Echoes the input as the result, with a report. */
  async pixelize(params: PixelizeParams): Promise<PixelizeResult> {
    this.pixelizeCalls.push({ ...params, input: fs.readFileSync(params.inputPath, "utf8") });
    const imagePath = path.join(params.outputDir, "result.png");
    fs.copyFileSync(params.inputPath, imagePath);
    const sha256 = createHash("sha256").update(fs.readFileSync(imagePath)).digest("hex");
    const pixel = { grid: { mode: "auto" as const, fit: "native", pitch: [8, 8] as [number, number], cells: [8, 8] as [number, number] } };
    return { imagePath, sha256, width: 8, height: 8, device: "cpu", engine: "torch", timings: { postprocessMs: 3.4 }, pixel };
  }

  async cancel(requestId: string): Promise<boolean> {
    this.cancels.push(requestId);
    if (this.behaviour === "obeyCancel" && this.pending?.id === requestId) {
      this.pending.reject(new AppError("CANCELLED", "cancelled by request"));
      this.pending = undefined;
    }
    return true;
  }

  kill(): void {
    this.kills++;
    this.pending?.reject(new AppError("ENGINE_INTERNAL", "torch runner died (code null, signal SIGKILL)"));
    this.pending = undefined;
  }
}

const request: ResolvedJob = {
  prompt: "a knight",
  negativePrompt: null,
  model: "tiny-sd",
  engine: "torch",
  width: 64,
  height: 64,
  steps: 3,
  guidanceScale: 7,
  seed: 7,
  scheduler: "euler",
  lora: null,
  removeBackground: false,
  pixel: null,
  priority: null,
  initNoise: null,
  previewEvery: null,
};
const payload: GeneratePayload = { jobId: "01jobjobjobjobjobjobjobjob", job: request, submittedAt: Date.now() };

function setUp(behaviour: Behaviour, overrides: Partial<GenerationDeps> = {}) {
  const repository = new FakeRepository();
  const runner = new FakeRunner(behaviour);
  const published: LiveProgress[] = [];
  const deps: GenerationDeps = {
    runner,
    repository,
    models: {
      resolve: async (name) => ({ name, architecture: "sd", source: `/models/${name}`, commit: null }),
      resolveLora: async () => {
        throw new Error("no LoRA in these jobs");
      },
    },
    publishProgress: async (_id, p) => {
      published.push(p);
    },
    cancelRequested: async () => false,
    jobTimeoutMs: 0,
    cancelGraceMs: 50,
    workerName: "test:1",
    logger: createLogger("silent"),
    ...overrides,
  };
  return { repository, runner, published, deps };
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe("runGeneration", () => {
  it("runs a job: active, every step relayed in order, the verified PNG stored, completed; its temp dir removed", async () => {
    const { repository, runner, published, deps } = setUp("succeed");
    expect(await runGeneration({ payload, attempt: 1, maxAttempts: 2 }, deps)).toEqual({ status: "completed" });
    expect(repository.history).toEqual(["queued", "active", "completed"]);
    expect(repository.started).toMatchObject({ attempt: 1, worker: "test:1", device: "cpu" });
    expect(published.map((p) => p.step)).toEqual([1, 2, 3]);
    expect(repository.savedSteps).toEqual([]); // shorter than a second: no progress writes, the result implies the last
    expect(repository.result).toMatchObject({ width: 32, height: 32, device: "cpu", loadMs: 1, generateMs: 21, postprocessMs: 0 });
    expect(repository.result!.png.toString()).toBe("png of a knight");
    expect(runner.calls[0]).toMatchObject({ jobId: payload.jobId, modelSource: "/models/tiny-sd", modelName: "tiny-sd", steps: 3 });
    expect(fs.existsSync(runner.calls[0].outputDir)).toBe(false);
  });

  it("asks the runner for count candidates and stores each verified PNG; a runner short of one or with a bad hash fails the job", async () => {
    const many = { ...payload, job: { ...request, count: 3 } };
    const { repository, runner, deps } = setUp("succeed");
    expect(await runGeneration({ payload: many, attempt: 1, maxAttempts: 1 }, deps)).toEqual({ status: "completed" });
    expect(runner.calls[0].count).toBe(3);
    expect(repository.result!.png.toString()).toBe("png of a knight");
    expect(repository.result!.candidates!.map((c) => [c.index, c.png.toString(), c.width, c.height])).toEqual([
      [1, "candidate 1 of a knight", 32, 16],
      [2, "candidate 2 of a knight", 32, 16],
    ]);
    // a count 1 job sends no count and stores no candidates
    const single = setUp("succeed");
    await runGeneration({ payload, attempt: 1, maxAttempts: 1 }, single.deps);
    expect(single.runner.calls[0].count).toBeUndefined();
    expect(single.repository.result!.candidates).toEqual([]);
    for (const behaviour of ["candidateMissing", "candidateWrongHash"] as const) {
      const bad = setUp(behaviour);
      const outcome = await runGeneration({ payload: many, attempt: 1, maxAttempts: 1 }, bad.deps);
      expect([behaviour, outcome.status, bad.repository.error?.code]).toEqual([behaviour, "failed", "ENGINE_INTERNAL"]);
      expect(bad.repository.result).toBeNull();
    }
  });

  it("leaves a job whose hub model is still installing queued, without starting it or calling the runner", async () => {
    const hubPayload = { ...payload, job: { ...request, model: "stabilityai/stable-diffusion-xl-base-1.0" } };
    const asked: string[] = [];
    const { repository, runner, deps } = setUp("succeed", {
      hub: {
        readiness: async (needs) => {
          asked.push(...needs.map((n) => `${n.kind}:${n.ref.repoId}@${n.ref.revision}`));
          return { ready: false, installs: [{ id: "01installinstallinstallins" } as never] };
        },
      },
    });
    expect(await runGeneration({ payload: hubPayload, attempt: 1, maxAttempts: 2 }, deps)).toEqual({
      status: "waiting",
      installs: ["01installinstallinstallins"],
    });
    expect(asked).toEqual(["base:stabilityai/stable-diffusion-xl-base-1.0@main"]);
    expect(repository.history).toEqual(["queued"]);
    expect(runner.calls).toEqual([]);
  });

  it("ends a job waiting for its install cancelled when the cancel check says so, instead of waiting again", async () => {
    const hubPayload = { ...payload, job: { ...request, model: "stabilityai/stable-diffusion-xl-base-1.0" } };
    const { repository, runner, deps } = setUp("succeed", {
      cancelRequested: () => new Promise<boolean>((r) => setTimeout(() => r(true), 20)),
      hub: { readiness: async () => ({ ready: false, installs: [{ id: "01installinstallinstallins" } as never] }) },
    });
    expect(await runGeneration({ payload: hubPayload, attempt: 1, maxAttempts: 2 }, deps)).toEqual({ status: "cancelled" });
    expect(repository.history).toEqual(["queued", "cancelled"]);
    expect(runner.calls).toEqual([]);
  });

  it("fails a job with the code of the install it waited on, before it ever started", async () => {
    const { repository, runner, deps } = setUp("succeed", {
      hub: {
        readiness: async () => {
          throw new AppError("HUB_UNREACHABLE", "install 01x of nerijs/pixel-art-xl failed: hub down");
        },
      },
    });
    const outcome = await runGeneration({ payload, attempt: 1, maxAttempts: 2 }, deps);
    expect(outcome).toMatchObject({ status: "failed", failure: { code: "HUB_UNREACHABLE" } });
    expect(repository.history).toEqual(["queued", "failed"]);
    expect(repository.error?.code).toBe("HUB_UNREACHABLE");
    expect(runner.calls).toEqual([]);
  });

  it("runs a pixelize job: the input PNG from the row goes to the runner's pixelize, the result and its report are stored", async () => {
    const { repository, runner, published, deps } = setUp("succeed");
    repository.input = Buffer.from("input png bytes");
    const pixel = { width: 8, height: 8, colors: 0, fitMode: "contain" as const, grid: "auto" as const };
    const job: ResolvedJob = {
      ...request,
      prompt: "",
      model: "",
      steps: 0,
      seed: 0,
      pixel,
      input: { width: 64, height: 64, bytes: 15, sha256: "a".repeat(64) },
    };
    expect(await runGeneration({ payload: { ...payload, job }, attempt: 1, maxAttempts: 2 }, deps)).toEqual({ status: "completed" });
    expect(runner.calls).toEqual([]);
    expect(runner.pixelizeCalls[0]).toMatchObject({ jobId: payload.jobId, pixel, removeBackground: false, input: "input png bytes" });
    expect(path.dirname(runner.pixelizeCalls[0].inputPath)).toBe(runner.pixelizeCalls[0].outputDir);
    expect(published).toEqual([]);
    expect(repository.result).toMatchObject({ width: 8, height: 8, loadMs: null, generateMs: null, postprocessMs: 3 });
    expect(repository.result!.pixelReport?.grid).toMatchObject({ mode: "auto", cells: [8, 8] });
    expect(repository.result!.png.toString()).toBe("input png bytes");
    expect(fs.existsSync(runner.pixelizeCalls[0].outputDir)).toBe(false);
  });

  it("a pixelize job whose input is no longer stored fails with INVALID_REQUEST, not retried", async () => {
    const { repository, deps } = setUp("succeed");
    const job: ResolvedJob = {
      ...request,
      pixel: { width: 8, height: 8, colors: 0, fitMode: "contain" },
      input: { width: 1, height: 1, bytes: 1, sha256: "a".repeat(64) },
    };
    const outcome = await runGeneration({ payload: { ...payload, job }, attempt: 1, maxAttempts: 2 }, deps);
    expect(outcome).toMatchObject({ status: "failed", failure: { code: "INVALID_REQUEST" } });
    expect(repository.history).toEqual(["queued", "active", "failed"]);
  });

  it("writes a running job's step to its row at most every progressPersistMs", async () => {
    const { repository, deps } = setUp("succeed", { progressPersistMs: 0 });
    await runGeneration({ payload, attempt: 1, maxAttempts: 2 }, deps);
    expect(repository.savedSteps).toEqual([1, 2, 3]);
  });

  it("retries a runner death (ENGINE_INTERNAL) while attempts remain, then fails the job with it", async () => {
    const first = setUp("die");
    const retry = await runGeneration({ payload, attempt: 1, maxAttempts: 2 }, first.deps);
    expect(retry).toMatchObject({ status: "retry", failure: { code: "ENGINE_INTERNAL" } });
    expect(first.repository.history).toEqual(["queued", "active", "queued"]);
    expect(first.repository.error?.code).toBe("ENGINE_INTERNAL");

    const last = setUp("die");
    const failed = await runGeneration({ payload, attempt: 2, maxAttempts: 2 }, last.deps);
    expect(failed).toMatchObject({ status: "failed", failure: { code: "ENGINE_INTERNAL" } });
    expect(last.repository.history).toEqual(["queued", "active", "failed"]);
  });

  it("fails a result whose bytes do not match the sha256 the runner reported", async () => {
    const { repository, deps } = setUp("wrongHash");
    expect(await runGeneration({ payload, attempt: 1, maxAttempts: 1 }, deps)).toMatchObject({
      status: "failed",
      failure: { code: "ENGINE_INTERNAL", message: expect.stringMatching(/sha256/) },
    });
    expect(repository.result).toBeNull();
  });

  it("cancels a running job through its runner when the signal fires", async () => {
    const control = new AbortController();
    const { repository, runner, published, deps } = setUp("obeyCancel", { signal: control.signal });
    const run = runGeneration({ payload, attempt: 1, maxAttempts: 2 }, deps);
    while (published.length < 3) await sleep(5);
    control.abort("cancel");
    expect(await run).toEqual({ status: "cancelled" });
    expect(runner.cancels).toEqual([`gen-${payload.jobId}-1`]);
    expect(runner.kills).toBe(0); // a cancel keeps the warm runner
    expect(repository.history).toEqual(["queued", "active", "cancelled"]);
    expect(repository.error).toEqual({ code: "CANCELLED", message: "cancelled by request" });
  });

  it("kills a runner that ignores a cancel once the grace is over: the job ends cancelled (not retried), the worker is free", async () => {
    const control = new AbortController();
    const { repository, runner, published, deps } = setUp("ignoreCancel", { signal: control.signal, cancelGraceMs: 40 });
    const run = runGeneration({ payload, attempt: 1, maxAttempts: 2 }, deps);
    while (published.length < 3) await sleep(5);
    const cancelledAt = Date.now();
    control.abort("cancel");
    expect(await run).toEqual({ status: "cancelled" });
    expect(Date.now() - cancelledAt).toBeGreaterThanOrEqual(35);
    expect(Date.now() - cancelledAt).toBeLessThan(1_000);
    expect(runner.cancels).toEqual([`gen-${payload.jobId}-1`]);
    expect(runner.kills).toBe(1);
    expect(repository.history).toEqual(["queued", "active", "cancelled"]);
    expect(repository.error?.code).toBe("CANCELLED");
    expect(repository.error?.message).toMatch(/did not stop within the grace and was killed/);
  });

  it("does not kill a runner that stopped at the cancel, even after the grace has passed", async () => {
    const control = new AbortController();
    const { runner, published, deps } = setUp("obeyCancel", { signal: control.signal, cancelGraceMs: 20 });
    const run = runGeneration({ payload, attempt: 1, maxAttempts: 2 }, deps);
    while (published.length < 3) await sleep(5);
    control.abort("cancel");
    expect(await run).toEqual({ status: "cancelled" });
    await sleep(60);
    expect(runner.kills).toBe(0);
  });

  it("cancels a job whose cancel was heard before the attempt, without running or activating it", async () => {
    const control = new AbortController();
    control.abort("cancel");
    const { repository, runner, deps } = setUp("succeed", { signal: control.signal, cancelRequested: async () => false });
    expect(await runGeneration({ payload, attempt: 1, maxAttempts: 2 }, deps)).toEqual({ status: "cancelled" });
    expect(runner.calls).toHaveLength(0);
    expect(repository.history).toEqual(["queued", "cancelled"]);
    expect(repository.error).toEqual({ code: "CANCELLED", message: "cancelled before it started" });
  });

  it("asks whether the job was cancelled only once the runner has it, and a yes stops the runner", async () => {
    const order: string[] = [];
    const { repository, runner, deps } = setUp("obeyCancel", {
      cancelRequested: async () => {
        order.push(`check after ${runner.calls.length} runner call(s)`);
        return true;
      },
    });
    expect(await runGeneration({ payload, attempt: 1, maxAttempts: 2 }, deps)).toEqual({ status: "cancelled" });
    expect(order).toEqual(["check after 1 runner call(s)"]);
    expect(runner.cancels).toEqual([`gen-${payload.jobId}-1`]);
    expect(repository.history).toEqual(["queued", "active", "cancelled"]);
  });

  it("stops the runner when the cancel check says yes after the generation started", async () => {
    let answer: (yes: boolean) => void = () => undefined;
    const { repository, runner, deps } = setUp("obeyCancel", { cancelRequested: () => new Promise<boolean>((r) => (answer = r)) });
    const run = runGeneration({ payload, attempt: 1, maxAttempts: 2 }, deps);
    await sleep(30); // three 5 ms steps ran: the runner holds the job
    expect(runner.calls).toHaveLength(1);
    answer(true);
    expect(await run).toEqual({ status: "cancelled" });
    expect(runner.cancels).toEqual([`gen-${payload.jobId}-1`]);
    expect(repository.history).toEqual(["queued", "active", "cancelled"]);
  });

  it("runs the job when the cancel check itself fails (a later cancel still arrives through the signal)", async () => {
    const { repository, deps } = setUp("succeed", { cancelRequested: async () => Promise.reject(new Error("redis away")) });
    expect(await runGeneration({ payload, attempt: 1, maxAttempts: 2 }, deps)).toEqual({ status: "completed" });
    expect(repository.history).toEqual(["queued", "active", "completed"]);
  });

  it("skips a job whose row is already final", async () => {
    const { repository, runner, deps } = setUp("succeed");
    repository.status = "cancelled";
    expect(await runGeneration({ payload, attempt: 1, maxAttempts: 2 }, deps)).toEqual({ status: "skipped" });
    expect(runner.calls).toHaveLength(0);
  });

  it("times a job out past its budget: cancel, then kill a runner that does not stop; TIMEOUT is never retried", async () => {
    const { repository, runner, deps } = setUp("ignoreCancel", { jobTimeoutMs: 60, cancelGraceMs: 40 });
    const outcome = await runGeneration({ payload, attempt: 1, maxAttempts: 2 }, deps);
    expect(outcome).toMatchObject({ status: "failed", failure: { code: "TIMEOUT" } });
    expect(runner.cancels).toEqual([`gen-${payload.jobId}-1`]);
    expect(runner.kills).toBe(1);
    expect(repository.history).toEqual(["queued", "active", "failed"]);
    expect(repository.error?.code).toBe("TIMEOUT");
  });

  it("times a job out without killing a runner that stops when asked", async () => {
    const { repository, runner, deps } = setUp("obeyCancel", { jobTimeoutMs: 60, cancelGraceMs: 1_000 });
    expect(await runGeneration({ payload, attempt: 1, maxAttempts: 2 }, deps)).toMatchObject({ failure: { code: "TIMEOUT" } });
    expect(runner.kills).toBe(0);
    expect(repository.status).toBe("failed");
  });

  it("hands a job back at shutdown: queued again without a final state, its runner killed if it does not stop", async () => {
    const control = new AbortController();
    const { repository, runner, published, deps } = setUp("ignoreCancel", { signal: control.signal, cancelGraceMs: 30 });
    const run = runGeneration({ payload, attempt: 1, maxAttempts: 2 }, deps);
    while (published.length < 3) await sleep(5);
    control.abort("handBack");
    expect(await run).toEqual({ status: "handedBack" });
    expect(runner.kills).toBe(1);
    expect(repository.history).toEqual(["queued", "active", "queued"]);
    expect(repository.error?.code).toBe("ENGINE_UNAVAILABLE");
  });

  it("fails at once with ENGINE_UNAVAILABLE when this worker has no runner for the engine", async () => {
    const { repository, deps } = setUp("succeed", { runner: undefined });
    expect(await runGeneration({ payload, attempt: 1, maxAttempts: 2 }, deps)).toMatchObject({
      status: "failed",
      failure: { code: "ENGINE_UNAVAILABLE" },
    });
    expect(repository.history).toEqual(["queued", "active", "failed"]);
  });
});
