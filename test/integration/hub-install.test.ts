import { execFile } from "node:child_process";
import crypto from "node:crypto";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import request from "supertest";
import { FakeHub, HUB_REPOS } from "../support/fake-hub";
import { ensureBuilt, REPO } from "../support/processes";
import { startTestStack, TestStack, waitFor } from "../support/stack";

/**
 * Hub installs through the real stack (HTTP API, BullMQ `install` queue, install worker, Python installer,
 * huggingface_hub) against the stand-in hub on 127.0.0.1 (HF_ENDPOINT). No runner is started: installs never need one.
 */
let hub: FakeHub;
let stack: TestStack;
let tmp: string;
let modelsDir: string;
const savedEnv = { ...process.env };

interface Install {
  id: string;
  name: string;
  repo: string;
  status: string;
  commit: string | null;
  snapshotPath: string | null;
  attempts: number;
  progress: {
    bytesDone: number;
    bytesTotal: number | null;
    filesDone: number;
    filesTotal: number | null;
    percent: number | null;
    rateBps: number | null;
    etaSeconds: number | null;
  };
  error?: { code: string; message: string; hint?: string };
}

beforeAll(async () => {
  ensureBuilt();
  hub = await FakeHub.start();
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), "pixelai-hub-"));
  modelsDir = path.join(tmp, "models");
  fs.mkdirSync(path.join(tmp, "loras"), { recursive: true });
  // The installer (a child of this process) finds the hub the way huggingface_hub always does.
  process.env.HF_ENDPOINT = hub.url;
  stack = await startTestStack({
    PIXELAI_ENGINES: "",
    PIXELAI_MODELS_DIR: modelsDir,
    PIXELAI_LORAS_DIR: path.join(tmp, "loras"),
    PIXELAI_DEFAULT_MODEL: "sdxl-base",
  });
});

afterAll(async () => {
  await stack?.close();
  await hub?.stop();
  process.env = savedEnv;
  if (tmp) fs.rmSync(tmp, { recursive: true, force: true });
});

async function hubCommit(repo: string): Promise<string> {
  return ((await (await fetch(`${hub.url}/api/models/${repo}`)).json()) as { sha: string }).sha;
}

async function getInstall(id: string): Promise<Install> {
  const res = await request(stack.url).get(`/installs/${id}`);
  expect(res.status).toBe(200);
  return res.body as Install;
}

async function finished(id: string, onPoll?: (i: Install) => void): Promise<Install> {
  return waitFor(
    async () => {
      const i = await getInstall(id);
      onPoll?.(i);
      return i.status === "completed" || i.status === "failed" ? i : undefined;
    },
    120_000,
    50,
  );
}

function sha256(file: string): string {
  return crypto.createHash("sha256").update(fs.readFileSync(file)).digest("hex");
}

describe("hub installs", () => {
  it("installs a base model as a queued job with progress, pinned to the hub's commit, fetching only safetensors the pipeline needs", async () => {
    await hub.clearLog();
    await hub.faults({ throttleBps: 6_000_000 });
    const res = await request(stack.url).post("/models").send({ name: "sdxl-base", source: HUB_REPOS.sdxl, kind: "base" });
    expect(res.status).toBe(202);
    expect(res.body).toMatchObject({ name: "sdxl-base", repo: HUB_REPOS.sdxl, revision: "main", kind: "base", status: "queued" });

    const seen: Install[] = [];
    let modelDuringInstall: Record<string, unknown> | undefined;
    const done = await finished(res.body.id, (i) => {
      seen.push(i);
      if (i.status === "active" && !modelDuringInstall && (i.progress.percent ?? 0) > 10) {
        void request(stack.url)
          .get("/models/sdxl-base")
          .then((r) => (modelDuringInstall = r.body));
      }
    });
    await hub.faults();
    expect(done.status).toBe("completed");
    const commit = await hubCommit(HUB_REPOS.sdxl);
    expect(done.commit).toBe(commit);
    expect(done.snapshotPath).toBe(path.join(".hub", HUB_REPOS.sdxl, commit));
    expect(done.progress.bytesDone).toBe(done.progress.bytesTotal);
    expect(done.progress.filesDone).toBe(18);

    // Progress moved while it ran: bytes, files, a rate and an ETA.
    const active = seen.filter((i) => i.status === "active" && i.progress.bytesTotal);
    const partial = new Set(active.map((i) => i.progress.bytesDone).filter((b) => b > 0 && b < done.progress.bytesTotal!));
    expect(partial.size).toBeGreaterThanOrEqual(3);
    expect(active.some((i) => (i.progress.rateBps ?? 0) > 0 && i.progress.etaSeconds !== null)).toBe(true);
    expect(modelDuringInstall).toMatchObject({ name: "sdxl-base", origin: "hub", install: { id: res.body.id, status: "active" } });

    // The registry entry now points at the pinned snapshot.
    const model = (await request(stack.url).get("/models/sdxl-base")).body;
    expect(model).toMatchObject({ name: "sdxl-base", kind: "base", origin: "hub", source: HUB_REPOS.sdxl, commit, architecture: "sdxl" });
    expect(model.install).toMatchObject({ id: res.body.id, status: "completed" });
    const snapshot = path.join(modelsDir, done.snapshotPath!);
    for (const file of ["model_index.json", "unet/diffusion_pytorch_model.safetensors", "tokenizer_2/vocab.json"]) {
      expect(sha256(path.join(snapshot, file))).toBe(sha256(hub.file(HUB_REPOS.sdxl, file)));
    }
    const fetched = (await hub.log()).requests.filter((r) => r.method === "GET").map((r) => r.path);
    expect(fetched.filter((p) => p.endsWith(".bin") || p.endsWith("sd_xl_base_1.0.safetensors") || p.endsWith("README.md"))).toEqual([]);
    expect(fetched.filter((p) => p.includes(".fp16."))).toEqual([]); // no fp16 on a CPU machine (variant auto)
  });

  it("installs a LoRA with its fit facts, and joins an identical install still running instead of starting another", async () => {
    await hub.faults({ throttleBps: 200_000 });
    const body = { name: "pixel-art-xl", source: HUB_REPOS.lora, kind: "lora" };
    const first = await request(stack.url).post("/models").send(body);
    const second = await request(stack.url).post("/models").send(body);
    expect(first.status).toBe(202);
    expect(second.status).toBe(200);
    expect(second.body.id).toBe(first.body.id);
    await hub.faults();
    const done = await finished(first.body.id);
    expect(done.status).toBe("completed");
    const model = (await request(stack.url).get("/models/pixel-art-xl")).body;
    const file = hub.file(HUB_REPOS.lora, "pixel-art-xl.safetensors");
    expect(model).toMatchObject({
      kind: "lora",
      origin: "hub",
      architecture: "sdxl",
      sha256: sha256(file),
      sizeBytes: fs.statSync(file).size,
    });
    const base = (await request(stack.url).get("/models/sdxl-base")).body;
    expect(model.crossAttentionDim).toBe(base.crossAttentionDim);
  });

  it("reports a hub that is down as HUB_UNREACHABLE with a hint, on the install and the model", async () => {
    await hub.faults({ down: true });
    const res = await request(stack.url)
      .post("/models")
      .send({ name: "down-model", source: HUB_REPOS.sdxl, kind: "base", revision: "main" });
    expect(res.status).toBe(202);
    const done = await finished(res.body.id);
    await hub.faults();
    expect(done.status).toBe("failed");
    expect(done.error).toMatchObject({ code: "HUB_UNREACHABLE" });
    expect(done.error!.hint).toMatch(/HF_ENDPOINT/);
    expect(done.error!.hint).toMatch(/models\//);
    const model = (await request(stack.url).get("/models/down-model")).body;
    expect(model.install).toMatchObject({ status: "failed", error: { code: "HUB_UNREACHABLE" } });
    expect(model.commit).toBeNull();
  });

  it.each([
    ["a LoRA", HUB_REPOS.pickleLora, "lora"],
    ["a pipeline", HUB_REPOS.pickleSd, "base"],
  ])("refuses %s published only as pickle (UNSAFE_WEIGHTS) and never fetches the pickle", async (_label, repo, kind) => {
    await hub.clearLog();
    const res = await request(stack.url)
      .post("/models")
      .send({ name: `pickle-${kind}`, source: repo, kind });
    expect(res.status).toBe(202);
    const done = await finished(res.body.id);
    expect(done.status).toBe("failed");
    expect(done.error?.code).toBe("UNSAFE_WEIGHTS");
    expect((await hub.log()).requests.filter((r) => r.path.endsWith(".bin"))).toEqual([]);
  });

  it.each([
    ["..", "../x", {}],
    ["a traversal inside", "a/../b", {}],
    ["an absolute path", "/etc/passwd", {}],
    ["a URL", "https://huggingface.co/nerijs/pixel-art-xl", {}],
    ["more than one '/'", "nerijs/pixel-art-xl/extra", {}],
    ["an over-long part", `nerijs/${"x".repeat(97)}`, {}],
    ["'--' in the id", "nerijs/pixel--art", {}],
    ["a revision that is no ref", HUB_REPOS.lora, { revision: "../../etc" }],
    ["a revision with spaces", `${HUB_REPOS.lora}@bad rev`, {}],
  ])("answers a hub id with %s with 400 INVALID_REQUEST and fetches nothing", async (_label, source, extra) => {
    await hub.clearLog();
    const res = await request(stack.url)
      .post("/models")
      .send({ name: "bad-id", source, kind: "lora", ...extra });
    expect(res.status).toBe(400);
    expect(res.body.error.code).toBe("INVALID_REQUEST");
    expect((await hub.log()).requests).toEqual([]);
  });

  it("treats a hub id as a hub id even when a folder of that name exists under models/", async () => {
    const shadow = path.join(modelsDir, "nerijs", "pixel-art-xl");
    fs.mkdirSync(shadow, { recursive: true });
    fs.writeFileSync(path.join(shadow, "model_index.json"), JSON.stringify({ _class_name: "StableDiffusionPipeline" }));
    const res = await request(stack.url).post("/models").send({ name: "shadowed", source: HUB_REPOS.lora, kind: "lora" });
    expect(res.status).toBe(202);
    const done = await finished(res.body.id);
    expect(done.status).toBe("completed");
    const model = (await request(stack.url).get("/models/shadowed")).body;
    expect(model).toMatchObject({ origin: "hub", source: HUB_REPOS.lora });
    expect(done.snapshotPath).toMatch(/^\.hub\//);
  });

  it("answers an unknown install id with 404", async () => {
    const res = await request(stack.url).get("/installs/0000000000aaaaaaaaaaaaaaaa");
    expect(res.status).toBe(404);
    expect(res.body.error.code).toBe("NOT_FOUND");
  });

  it("`pixelai install` installs through the running server and draws a progress bar", async () => {
    await hub.faults({ throttleBps: 150_000 });
    const result = await new Promise<{ code: number | null; stderr: string }>((resolve) => {
      execFile(
        process.execPath,
        [path.join(REPO, "dist", "cli.js"), "install", HUB_REPOS.lora, "--lora", "--name", "cli-lora", "--url", stack.url],
        { cwd: REPO, env: { ...process.env, PIXELAI_API_KEY: "" }, timeout: 120_000 },
        (err, _stdout, stderr) => resolve({ code: err ? ((err as { code?: number }).code ?? 1) : 0, stderr }),
      );
    });
    await hub.faults();
    expect(result.code).toBe(0);
    expect(result.stderr).toMatch(/installing nerijs\/pixel-art-xl@main as cli-lora/);
    expect(result.stderr).toMatch(/\[#+\.*\]\s+\d+% /);
    expect(result.stderr).toMatch(/installed cli-lora: nerijs\/pixel-art-xl@[0-9a-f]{12} in models\/\.hub\//);
    expect((await request(stack.url).get("/models/cli-lora")).body).toMatchObject({ origin: "hub", kind: "lora" });
  });
});
