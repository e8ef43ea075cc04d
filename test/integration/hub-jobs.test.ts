import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import request from "supertest";
import WebSocket from "ws";
import { FakeHub, HUB_REPOS } from "../support/fake-hub";
import { fetchPng, finishedJob, submitJob } from "../support/jobs-client";
import { ensureBuilt } from "../support/processes";
import { SseStream } from "../support/sse";
import { decodePng, startTestStack, TestStack, waitFor } from "../support/stack";

/**
 * Generation jobs that name hub ids, through the real stack (HTTP API, BullMQ, generation and install workers, the torch
 * runner, the Python installer) against the stand-in hub (HF_ENDPOINT): an uninstalled model or LoRA is installed while
 * its jobs wait queued, then they run on the pinned snapshot.
 */
let hub: FakeHub;
let stack: TestStack;
let tmp: string;
const savedEnv = { ...process.env };

interface InstallView {
  id: string;
  repo: string;
  status: string;
  finishedAt: string | null;
  progress: { bytesDone: number; bytesTotal: number | null; percent: number | null };
  error?: { code: string };
}

const SMALL = { width: 64, height: 64, steps: 2, seed: 3, pixel: { width: 16, height: 16, colors: 8 } };

beforeAll(async () => {
  ensureBuilt();
  hub = await FakeHub.start();
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), "pixelai-hub-jobs-"));
  fs.mkdirSync(path.join(tmp, "models"), { recursive: true });
  fs.mkdirSync(path.join(tmp, "loras"), { recursive: true });
  process.env.HF_ENDPOINT = hub.url;
  stack = await startTestStack({
    PIXELAI_ENGINES: "torch",
    PIXELAI_MODELS_DIR: path.join(tmp, "models"),
    PIXELAI_LORAS_DIR: path.join(tmp, "loras"),
    // a hub id as the configured default: nothing is built or fetched at start
    PIXELAI_DEFAULT_MODEL: HUB_REPOS.sdxl,
  });
});

afterAll(async () => {
  await stack?.close();
  await hub?.stop();
  process.env = savedEnv;
  if (tmp) fs.rmSync(tmp, { recursive: true, force: true });
});

async function installs(): Promise<InstallView[]> {
  return (await request(stack.url).get("/installs")).body as InstallView[];
}

describe("jobs naming hub ids", () => {
  it.each([
    ["'..'", { model: "stabilityai/../x" }],
    ["an absolute path", { model: "/etc/passwd" }],
    ["a URL", { model: "https://huggingface.co/stabilityai/stable-diffusion-xl-base-1.0" }],
    ["two slashes", { model: "stabilityai/stable-diffusion-xl-base-1.0/unet" }],
    ["a backslash", { model: "stabilityai\\sdxl" }],
    ["an over-long part", { model: `stabilityai/${"x".repeat(97)}` }],
    ["a bad revision", { model: `${HUB_REPOS.sdxl}@../../etc` }],
    ["a bad LoRA id", { model: "stabilityai/x", lora: { name: "nerijs/pixel-art-xl/../../data" } }],
  ])("refuses a hub id with %s: 400 INVALID_REQUEST, nothing fetched, no install", async (_label, fields) => {
    await hub.clearLog();
    const res = await request(stack.url)
      .post("/jobs")
      .send({ prompt: "a knight", ...SMALL, ...fields });
    expect(res.status).toBe(400);
    expect(res.body.error.code).toBe("INVALID_REQUEST");
    expect((await hub.log()).requests).toEqual([]);
    expect(await installs()).toEqual([]);
  });

  it("waits queued for the install of an uninstalled model (progress on the job), joins it from a second job, then completes both", async () => {
    await hub.faults({ throttleBps: 3_000_000 });
    const first = await submitJob(stack.url, { prompt: "a knight", model: HUB_REPOS.sdxl, ...SMALL });
    const sse = new SseStream(`${stack.url}/jobs/${first}/events`);
    const second = await submitJob(stack.url, { prompt: "a tree", model: `${HUB_REPOS.sdxl}@main`, ...SMALL });

    // While the install runs, the job stays queued and shows the install's progress.
    const seen = await waitFor(
      async () => {
        const job = (await request(stack.url).get(`/jobs/${first}`)).body;
        const install = job.installs?.[0] as InstallView | undefined;
        return job.status === "queued" && install && install.progress.bytesDone > 0 ? { job, install } : undefined;
      },
      120_000,
      50,
    );
    expect(seen.install).toMatchObject({ repo: HUB_REPOS.sdxl, status: "active" });
    expect(seen.job.startedAt).toBeNull();
    const other = (await request(stack.url).get(`/jobs/${second}`)).body;
    expect(other.status).toBe("queued");
    expect(other.model).toBe(HUB_REPOS.sdxl); // normalised: `@main` is the default revision
    expect(other.installs[0].id).toBe(seen.install.id); // joined, not a second install
    await hub.faults();

    const [a, b] = [await finishedJob(stack.url, first, 240_000), await finishedJob(stack.url, second, 240_000)];
    expect(a).toMatchObject({ status: "completed", model: HUB_REPOS.sdxl, result: { width: 16, height: 16 } });
    expect(b.status).toBe("completed");
    expect(a.installs).toBeUndefined();
    const all = await installs();
    expect(all.filter((i) => i.repo === HUB_REPOS.sdxl)).toHaveLength(1);
    const install = all[0];
    expect(install.status).toBe("completed");
    // The job's time (and its budget) started only once the model was ready.
    expect(Date.parse(a.startedAt)).toBeGreaterThanOrEqual(Date.parse(install.finishedAt!));
    expect(decodePng(await fetchPng(stack.url, first)).width).toBe(16);
    // The job's event stream showed the install moving, then the job's steps and its end.
    await sse.done;
    const installEvents = sse.events.filter((e) => e.event === "install").map((e) => e.data.installs[0] as InstallView);
    expect(installEvents.every((i) => i.id === install.id)).toBe(true);
    expect(new Set(installEvents.map((i) => i.progress.bytesDone)).size).toBeGreaterThanOrEqual(2);
    const names = sse.events.map((e) => e.event);
    expect(names.lastIndexOf("install")).toBeLessThan(names.indexOf("completed"));
    expect(names.at(-1)).toBe("completed");
    expect((await request(stack.url).get("/models")).body.items).toEqual(
      expect.arrayContaining([expect.objectContaining({ source: HUB_REPOS.sdxl, origin: "hub", architecture: "sdxl" })]),
    );
  });

  it("installs a hub LoRA the same way for a /ws submit (install frames while it waits), and a job without a model runs on the hub id default", async () => {
    await hub.faults({ throttleBps: 200_000 });
    const ws = new WebSocket(stack.url.replace(/^http/, "ws") + "/ws");
    const frames: Array<Record<string, unknown>> = [];
    ws.on("message", (d) => frames.push(JSON.parse(d.toString())));
    await new Promise((resolve, reject) => ws.once("open", resolve).once("error", reject));
    ws.send(
      JSON.stringify({
        type: "submit",
        requestId: "lora",
        job: { prompt: "a pixel cat", lora: { name: HUB_REPOS.lora, strength: 0.8 }, ...SMALL },
      }),
    );
    const accepted = await waitFor(async () => frames.find((f) => f.requestId === "lora"), 30_000, 20);
    expect(accepted.type).toBe("accepted");
    const id = accepted.id as string;
    const waiting = await waitFor(async () => {
      const job = (await request(stack.url).get(`/jobs/${id}`)).body;
      return job.installs?.length ? job : job.status !== "queued" ? job : undefined;
    });
    expect(waiting.installs?.[0]).toMatchObject({ repo: HUB_REPOS.lora });
    await hub.faults();
    const done = await finishedJob(stack.url, id, 240_000);
    const final = await waitFor(async () => frames.find((f) => f.type === "completed" && f.id === id), 30_000, 20);
    ws.close();
    const installFrames = frames.filter((f) => f.type === "install" && f.id === id);
    expect(installFrames.length).toBeGreaterThanOrEqual(1);
    expect((installFrames[0].installs as InstallView[])[0]).toMatchObject({ repo: HUB_REPOS.lora });
    expect(frames.indexOf(installFrames.at(-1)!)).toBeLessThan(frames.indexOf(final));
    expect(done).toMatchObject({ status: "completed", model: HUB_REPOS.sdxl });
    const lora = (await installs()).find((i) => i.repo === HUB_REPOS.lora);
    expect(lora?.status).toBe("completed");
    expect(Date.parse(done.startedAt)).toBeGreaterThanOrEqual(Date.parse(lora!.finishedAt!));
  });

  it("PUT /models/default takes a hub id (installed: checked and set; bad: 400)", async () => {
    const ok = await request(stack.url).put("/models/default").send({ model: HUB_REPOS.sdxl });
    expect(ok.status).toBe(200);
    expect(ok.body).toEqual({ default: HUB_REPOS.sdxl });
    const bad = await request(stack.url).put("/models/default").send({ model: "a/b/c" });
    expect(bad.status).toBe(400);
    expect(bad.body.error.code).toBe("INVALID_REQUEST");
  });

  it("fails the job with the install's code when the hub is down", async () => {
    await hub.faults({ down: true });
    try {
      const id = await submitJob(stack.url, { prompt: "x", model: "pixelai-test/unreachable-model", ...SMALL });
      const done = await finishedJob(stack.url, id, 120_000);
      expect(done.status).toBe("failed");
      expect(done.error.code).toBe("HUB_UNREACHABLE");
      expect(done.error.message).toMatch(/HF_ENDPOINT/);
      expect(done.startedAt).toBeNull();
    } finally {
      await hub.faults();
    }
  });

  it("fails a job whose LoRA repository holds only pickle weights with UNSAFE_WEIGHTS, fetching no pickle", async () => {
    await hub.clearLog();
    const id = await submitJob(stack.url, { prompt: "x", lora: { name: HUB_REPOS.pickleLora }, ...SMALL });
    const done = await finishedJob(stack.url, id, 120_000);
    expect(done.error?.code).toBe("UNSAFE_WEIGHTS");
    expect((await hub.log()).requests.filter((r) => r.path.endsWith(".bin"))).toEqual([]);
  });
});

describe("with PIXELAI_AUTO_INSTALL_MODELS=0", () => {
  let api: TestStack;

  beforeAll(async () => {
    api = await startTestStack(
      {
        PIXELAI_ENGINES: "",
        PIXELAI_MODELS_DIR: path.join(tmp, "models-off"),
        PIXELAI_LORAS_DIR: path.join(tmp, "loras"),
        PIXELAI_DEFAULT_MODEL: "none-yet",
        PIXELAI_AUTO_INSTALL_MODELS: "0",
      },
      { api: true, worker: false },
    );
  });

  afterAll(async () => {
    await api?.close();
  });

  it("refuses an uninstalled hub model or LoRA at once with 409 MODEL_NOT_INSTALLED naming the install call", async () => {
    await hub.clearLog();
    const res = await request(api.url)
      .post("/jobs")
      .send({ prompt: "x", model: HUB_REPOS.sdxl, ...SMALL });
    expect(res.status).toBe(409);
    expect(res.body.error.code).toBe("MODEL_NOT_INSTALLED");
    expect(res.body.error.message).toContain(`POST /models {"source":"${HUB_REPOS.sdxl}"`);
    const lora = await request(api.url).put("/models/default").send({ model: HUB_REPOS.lora });
    expect(lora.status).toBe(409);
    expect(lora.body.error.code).toBe("MODEL_NOT_INSTALLED");
    expect((await request(api.url).get("/installs")).body).toEqual([]);
    expect((await request(api.url).get("/jobs")).body.items).toEqual([]);
    expect((await hub.log()).requests).toEqual([]);
  });
});
