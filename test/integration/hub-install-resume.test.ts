import crypto from "node:crypto";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import request from "supertest";
import { applyMigrations } from "../../src/infra/migrate";
import { FakeHub, HUB_REPOS } from "../support/fake-hub";
import { childrenOf, CliProcess, ensureBuilt, isAlive, REPO, TestRedis } from "../support/processes";
import { startTestStack, TestStack, waitFor } from "../support/stack";

/**
 * An install worker (`node dist/cli.js worker`, no runners) SIGKILLed in the middle of a file: its installer stops with
 * it, BullMQ hands the job to a second worker, and that one resumes — the hub is asked only for the missing bytes of
 * the interrupted file and for nothing already finished.
 */
const UNET = "unet/diffusion_pytorch_model.safetensors";
const STALL_AT = 3_000_000;

let hub: FakeHub;
let redis: TestRedis;
let stack: TestStack;
let tmp: string;
let modelsDir: string;
let workerEnv: Record<string, string>;
const workers: CliProcess[] = [];

jest.setTimeout(240_000);

beforeAll(async () => {
  ensureBuilt();
  hub = await FakeHub.start();
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), "pixelai-hub-resume-"));
  modelsDir = path.join(tmp, "models");
  redis = await TestRedis.start(path.join(tmp, "redis"), false);
  const databaseUrl = `file:${path.join(tmp, "resume.db")}`;
  await applyMigrations(REPO, databaseUrl);
  const shared = {
    REDIS_URL: redis.url,
    DATABASE_URL: databaseUrl,
    PIXELAI_QUEUE_PREFIX: `resume${process.pid}`,
    PIXELAI_ENGINES: "",
    PIXELAI_MODELS_DIR: modelsDir,
    PIXELAI_LORAS_DIR: path.join(tmp, "loras"),
    PIXELAI_DEFAULT_MODEL: "sdxl-base",
  };
  workerEnv = {
    ...shared,
    PIXELAI_DATA_DIR: tmp,
    HF_ENDPOINT: hub.url,
    // short locks so the killed worker's install is handed on in ~2 s, not 30 s
    PIXELAI_LOCK_DURATION_MS: "2000",
    PIXELAI_STALLED_INTERVAL_MS: "1000",
  };
  stack = await startTestStack(shared, { api: true, worker: false });
});

afterAll(async () => {
  await Promise.all(workers.map((w) => w.stop("SIGTERM", 20_000)));
  await stack?.close();
  await redis?.down();
  await hub?.stop();
  if (tmp) fs.rmSync(tmp, { recursive: true, force: true });
});

async function startWorker(extraEnv: Record<string, string> = {}): Promise<CliProcess> {
  const w = new CliProcess(["worker"], { ...workerEnv, ...extraEnv }, path.join(tmp, `worker-${workers.length}.log`));
  workers.push(w);
  await w.waitForLog("install worker started");
  return w;
}

async function install(id: string) {
  return (await request(stack.url).get(`/installs/${id}`)).body as {
    status: string;
    attempts: number;
    commit: string | null;
    snapshotPath: string | null;
    progress: { bytesDone: number; bytesPresent: number | null; file: string | null };
  };
}

it("resumes a download after its worker is SIGKILLed, without fetching finished bytes again", async () => {
  const first = await startWorker();
  await hub.faults({ stall: { file: `${HUB_REPOS.sdxl}/${UNET}`, afterBytes: STALL_AT } });
  const res = await request(stack.url).post("/models").send({ name: "sdxl-base", source: HUB_REPOS.sdxl, kind: "base" });
  expect(res.status).toBe(202);
  const id = res.body.id as string;

  // Mid-file: the hub holds the UNet download and the installer has written what it received to disk.
  await waitFor(async () => (await hub.log()).stalled, 90_000);
  const during = await waitFor(async () => {
    const i = await install(id);
    return i.progress.file === UNET && i.progress.bytesDone > 0 ? i : undefined;
  });
  expect(during.status).toBe("active");
  const installer = childrenOf(first.pid);
  expect(installer.length).toBeGreaterThan(0);
  const finishedBefore = new Set((await hub.log()).requests.filter((r) => r.path !== `${HUB_REPOS.sdxl}/${UNET}`).map((r) => r.path));

  first.child.kill("SIGKILL");
  await first.exited;
  // The installer notices its worker is gone (its stdin closes) and stops: nothing downloads for a dead worker.
  await waitFor(async () => installer.every((pid) => !isAlive(pid)), 20_000);
  const partial = path.join(modelsDir, ".hub", HUB_REPOS.sdxl, during.commit!, `${UNET}.incomplete`);
  const kept = fs.statSync(partial).size;
  expect(kept).toBeGreaterThan(0);
  expect(kept).toBeLessThanOrEqual(STALL_AT);

  await hub.faults();
  await hub.clearLog();
  await startWorker();
  const done = await waitFor(async () => {
    const i = await install(id);
    return i.status === "completed" || i.status === "failed" ? i : undefined;
  }, 120_000);
  expect(done.status).toBe("completed");
  expect(done.attempts).toBe(2);
  expect(done.progress.bytesPresent).toBeGreaterThanOrEqual(kept);

  const size = fs.statSync(hub.file(HUB_REPOS.sdxl, UNET)).size;
  const requests = (await hub.log()).requests.filter((r) => r.method === "GET");
  const unet = requests.filter((r) => r.path === `${HUB_REPOS.sdxl}/${UNET}`);
  expect(unet.map((r) => [r.rangeStart, r.status, r.bytesSent])).toEqual([[kept, 206, size - kept]]);
  expect(requests.filter((r) => finishedBefore.has(r.path))).toEqual([]);
  const installed = path.join(modelsDir, done.snapshotPath!, UNET);
  const digest = (f: string) => crypto.createHash("sha256").update(fs.readFileSync(f)).digest("hex");
  expect(digest(installed)).toBe(digest(hub.file(HUB_REPOS.sdxl, UNET)));
  expect((await request(stack.url).get("/models/sdxl-base")).body).toMatchObject({ origin: "hub", commit: done.commit });
});

it("a job waiting for a hub LoRA's install survives its worker's SIGKILL: the next worker resumes the install and runs the job", async () => {
  // Only workers with a torch runner from here on (one without would take the job and fail it ENGINE_UNAVAILABLE).
  await Promise.all(workers.map((w) => w.stop("SIGTERM", 20_000)));
  const first = await startWorker({ PIXELAI_ENGINES: "torch" });
  const LORA_FILE = `${HUB_REPOS.lora}/pixel-art-xl.safetensors`;
  await hub.faults({ stall: { file: LORA_FILE, afterBytes: 100_000 } });
  // The LoRA is not installed yet (the base model is, when the test above ran; else the job installs it too).
  const submitted = await request(stack.url)
    .post("/jobs")
    .send({ prompt: "a pixel cat", model: HUB_REPOS.sdxl, lora: { name: HUB_REPOS.lora, strength: 0.8 }, width: 64, height: 64, steps: 2 });
  expect(submitted.status).toBe(202);
  const jobId = submitted.body.id as string;
  // Mid-file: the hub holds the LoRA download; the job is queued on the install.
  await waitFor(async () => (await hub.log()).stalled, 90_000);
  const waiting = await waitFor(async () => {
    const job = (await request(stack.url).get(`/jobs/${jobId}`)).body;
    return job.status === "queued" && job.installs?.[0]?.status === "active" ? job : undefined;
  }, 30_000);
  expect(waiting.installs[0]).toMatchObject({ repo: HUB_REPOS.lora, status: "active" });

  first.child.kill("SIGKILL");
  await first.exited;
  await hub.faults();
  await startWorker({ PIXELAI_ENGINES: "torch" });

  const done = await waitFor(async () => {
    const job = (await request(stack.url).get(`/jobs/${jobId}`)).body;
    return ["completed", "failed", "cancelled"].includes(job.status) ? job : undefined;
  }, 150_000);
  expect(done.error).toBeUndefined();
  expect(done).toMatchObject({ status: "completed", attempts: 1, result: { width: 64, height: 64 } });
  const lora = (await request(stack.url).get(`/installs/${waiting.installs[0].id}`)).body;
  expect(lora).toMatchObject({ status: "completed", attempts: 2 });
  expect(Date.parse(done.startedAt)).toBeGreaterThanOrEqual(Date.parse(lora.finishedAt));
});
