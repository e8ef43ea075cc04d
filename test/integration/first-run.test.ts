import fs from "node:fs";
import request from "supertest";
import WebSocket from "ws";
import { FakeHub, HUB_REPOS } from "../support/fake-hub";
import { finishedJob, submitJob } from "../support/jobs-client";
import { ensureBuilt } from "../support/processes";
import { startTestStack, TestStack, waitFor } from "../support/stack";
import { privateModelStore } from "../support/model-store";

/** The old Aseprite extension's default negative prompt, as its settings start. */
const OLD_CLIENT_NEGATIVE = "blurry, smooth, antialiased, realistic, photographic, 3d render, low quality";

/**
 * A first run through the real stack (torch runner on the tiny models, install worker, the stand-in hub on 127.0.0.1
 * via HF_ENDPOINT): /health says demo until a real model is installed, presets fill jobs, and the old client's
 * /load_model with a hub id starts (or joins) that model's install.
 */
let hub: FakeHub;
let stack: TestStack;
let tmp: string;
const savedEnv = { ...process.env };

beforeAll(async () => {
  ensureBuilt();
  hub = await FakeHub.start();
  const store = privateModelStore("pixelai-first-run-");
  tmp = store.root;
  const { modelsDir, lorasDir } = store;
  process.env.HF_ENDPOINT = hub.url;
  stack = await startTestStack({ PIXELAI_ENGINES: "torch,mlx", PIXELAI_MODELS_DIR: modelsDir, PIXELAI_LORAS_DIR: lorasDir });
});

afterAll(async () => {
  await stack?.close();
  await hub?.stop();
  process.env = savedEnv;
  if (tmp) fs.rmSync(tmp, { recursive: true, force: true });
});

/** What the queue carried for a job (negative prompt and LoRA are not in its view). */
async function carried(id: string): Promise<{ negativePrompt: string | null; lora: { name: string; strength: number } | null }> {
  const row = await stack.service.db.job.findUniqueOrThrow({ where: { id } });
  return JSON.parse(row.request);
}

describe("presets", () => {
  it("GET /presets lists pixel-art-xl, and the OpenAPI spec describes it", async () => {
    const res = await request(stack.url).get("/presets");
    expect(res.status).toBe(200);
    expect(res.body.items).toContainEqual({
      name: "pixel-art-xl",
      description: expect.any(String),
      model: HUB_REPOS.sdxl,
      lora: { name: HUB_REPOS.lora, strength: 0.8 },
      steps: 15,
      width: 1024,
      height: 1024,
      negativePrompt: OLD_CLIENT_NEGATIVE,
    });
    const spec = (await request(stack.url).get("/openapi.json")).body;
    expect(spec.paths["/presets"].get).toBeDefined();
    expect(spec.components.schemas.GenerateJobRequest.properties.preset).toMatchObject({ type: "string" });
  });

  it("fills a job's missing fields from the preset; fields the request gives win", async () => {
    // model and LoRA given (the preset's are hub ids, resolved by another part of the server), the rest from the preset
    const full = await request(stack.url)
      .post("/jobs")
      .send({ prompt: "a knight", preset: "pixel-art-xl", model: "tiny-sdxl", lora: { name: "tiny-sdxl-lora" } });
    expect(full.status).toBe(202);
    const view = (await request(stack.url).get(`/jobs/${full.body.id}`)).body;
    expect(view).toMatchObject({ model: "tiny-sdxl", width: 1024, height: 1024, steps: 15 });
    expect(await carried(full.body.id)).toMatchObject({
      negativePrompt: OLD_CLIENT_NEGATIVE,
      lora: { name: "tiny-sdxl-lora", strength: 1 },
    });
    await request(stack.url).post(`/jobs/${full.body.id}/cancel`);

    const id = await submitJob(stack.url, {
      prompt: "a knight",
      preset: "pixel-art-xl",
      model: "tiny-sdxl",
      lora: { name: "tiny-sdxl-lora", strength: 0.5 },
      width: 64,
      height: 64,
      steps: 2,
      negativePrompt: "blurry",
    });
    const done = await finishedJob(stack.url, id);
    expect(done).toMatchObject({ status: "completed", width: 64, height: 64, steps: 2, result: { width: 64, height: 64 } });
    expect(await carried(id)).toMatchObject({ negativePrompt: "blurry", lora: { name: "tiny-sdxl-lora", strength: 0.5 } });
  });

  it("refuses an unknown preset with 400 INVALID_REQUEST, over REST and /ws alike", async () => {
    const rest = await request(stack.url).post("/jobs").send({ prompt: "x", preset: "pixel-art-xxl" });
    expect(rest.status).toBe(400);
    expect(rest.body.error).toMatchObject({ code: "INVALID_REQUEST", details: { field: "preset" } });
    expect(rest.body.error.message).toMatch(/pixel-art-xl/);

    const ws = new WebSocket(stack.url.replace(/^http/, "ws") + "/ws");
    const frames: Array<Record<string, unknown>> = [];
    ws.on("message", (d) => frames.push(JSON.parse(d.toString())));
    await new Promise((resolve, reject) => ws.once("open", resolve).once("error", reject));
    ws.send(JSON.stringify({ type: "submit", requestId: "p1", job: { prompt: "x", preset: "pixel-art-xxl" } }));
    const answer = await waitFor(async () => frames.find((f) => f.requestId === "p1"), 10_000, 20);
    ws.close();
    expect(answer).toMatchObject({ type: "error", code: "INVALID_REQUEST" });
  });
});

describe("the old client's /load_model with a hub id, and /health demo", () => {
  it("is demo while only the tiny models exist", async () => {
    expect((await request(stack.url).get("/health")).body.demo).toBe(true);
  });

  it("answers a bad hub id in the legacy shape and fetches nothing", async () => {
    await hub.clearLog();
    const res = await request(stack.url).post("/load_model").send({ model_name: "stabilityai/../x" });
    expect(res.status).toBe(400);
    expect(res.body).toMatchObject({ success: false, code: "INVALID_REQUEST" });
    expect((await hub.log()).requests).toEqual([]);
  });

  it("makes the hub id the default at once, starts its install and joins it when asked again; demo ends once installed", async () => {
    await hub.faults({ throttleBps: 2_000_000 });
    const first = await request(stack.url).post("/load_model").send({ model_name: HUB_REPOS.sdxl });
    const again = await request(stack.url).post("/load_model").send({ model_name: HUB_REPOS.sdxl });
    expect(first.status).toBe(200);
    expect(first.body).toMatchObject({
      success: true,
      current_model: HUB_REPOS.sdxl,
      install_status: expect.stringMatching(/queued|active/),
    });
    expect(first.body.message).toMatch(/being installed/);
    expect(again.body).toMatchObject({ success: true, install_id: first.body.install_id });
    // still installing: the default names it, but it is not a real model on disk yet
    expect((await request(stack.url).get("/health")).body).toMatchObject({ demo: true, current_model: HUB_REPOS.sdxl });
    await hub.faults();

    const done = await waitFor(async () => {
      const i = (await request(stack.url).get(`/installs/${first.body.install_id}`)).body;
      return i.status === "completed" || i.status === "failed" ? i : undefined;
    });
    expect(done).toMatchObject({ status: "completed", name: "stable-diffusion-xl-base-1.0", repo: HUB_REPOS.sdxl });
    expect((await request(stack.url).get("/health")).body.demo).toBe(false);

    const loaded = await request(stack.url).post("/load_model").send({ model_name: HUB_REPOS.sdxl });
    expect(loaded.status).toBe(200);
    expect(loaded.body).toMatchObject({ success: true, current_model: HUB_REPOS.sdxl });
    expect(loaded.body.install_id).toBeUndefined();

    // the preset's LoRA now fits the current (SDXL) model in the old picker's lists
    const loras = (await request(stack.url).get("/loras")).body;
    expect(loras).toMatchObject({ current_model: HUB_REPOS.sdxl, architecture: "sdxl" });
    expect(loras.compatible_loras).toEqual(expect.arrayContaining(["None", HUB_REPOS.lora, "loras/tiny-sdxl-lora.safetensors"]));
    expect(loras.incompatible_loras).toContain("loras/tiny-sd-lora.safetensors");
    expect((await request(stack.url).post("/load_model").send({ model_name: "tiny-sd" })).status).toBe(200);
  });
});

/**
 * The old Aseprite extension's first generation, as its source sets it up: it lists models, LoRAs and health, picks
 * SDXL base 1.0 through /load_model, then sends /generate with its dialog's defaults (the pixel-art-xl LoRA by hub id at
 * 0.8, 15 steps, the 512×512 base-resolution preset, 64×64 pixels, 16 colours, seed -1 so none is sent). Neither the
 * LoRA is installed when it starts (the model was installed by the /load_model test above): the job waits for the
 * LoRA's install and completes.
 */
describe("the old extension's default flow", () => {
  const oldDefaults = {
    prompt: "pixel art, cute character, 16-bit style, vibrant colors",
    negative_prompt: OLD_CLIENT_NEGATIVE,
    width: 512,
    height: 512,
    pixel_width: 64,
    pixel_height: 64,
    steps: 15,
    guidance_scale: 7.5,
    colors: 16,
    lora_model: HUB_REPOS.lora,
    remove_background: false,
    lora_strength: 0.8,
  };

  it("GET /models, /loras, /health, POST /load_model, POST /generate → a 64×64 raw RGBA image", async () => {
    // the LoRA has never been installed: its install starts from this /generate
    expect(await stack.service.db.model.count({ where: { source: HUB_REPOS.lora } })).toBe(0);
    expect((await request(stack.url).get("/models")).body.models).toEqual(expect.arrayContaining(["tiny-sd"]));
    const loras = (await request(stack.url).get("/loras")).body;
    expect(loras.loras[0]).toBe("None");
    expect(loras.loras).toContain(HUB_REPOS.lora);
    expect((await request(stack.url).get("/health")).body.status).toBe("healthy");
    const load = await request(stack.url).post("/load_model").send({ model_name: HUB_REPOS.sdxl });
    expect(load.body).toMatchObject({ success: true, current_model: HUB_REPOS.sdxl });

    const res = await request(stack.url).post("/generate").send(oldDefaults).timeout(400_000);
    expect(res.status).toBe(200);
    expect(res.body).toMatchObject({ success: true, image: { width: 64, height: 64, mode: "rgba" } });
    expect(Buffer.from(res.body.image.base64, "base64")).toHaveLength(64 * 64 * 4);
    expect(res.body.warning).toBeUndefined();
    const job = (await request(stack.url).get(`/jobs/${res.body.generation_id}`)).body;
    expect(job).toMatchObject({ status: "completed", model: HUB_REPOS.sdxl, engine: "torch" });
    const carriedLora = (await carried(res.body.generation_id)).lora;
    expect(carriedLora).toMatchObject({ name: HUB_REPOS.lora, strength: 0.8 });
    const installed = (await request(stack.url).get("/installs")).body as Array<{ repo: string; status: string }>;
    expect(installed.filter((i) => i.repo === HUB_REPOS.lora && i.status === "completed").length).toBeGreaterThan(0);
    expect((await request(stack.url).post("/load_model").send({ model_name: "tiny-sd" })).status).toBe(200);
  }, 420_000);

  it("the same with MLX as the default engine, after converting the installed model by its hub id: completes with the hub LoRA applied on MLX", async () => {
    const conv = await request(stack.url)
      .post(`/models/${encodeURIComponent(HUB_REPOS.sdxl)}/conversions`)
      .send({ dtype: "float32" });
    expect([200, 202]).toContain(conv.status);
    expect(conv.body.model).toBe("stable-diffusion-xl-base-1.0");
    await waitFor(async () => {
      const c = (await request(stack.url).get(`/conversions/${conv.body.id}`)).body;
      if (c.status === "failed") throw new Error(`conversion failed: ${JSON.stringify(c.error)}`);
      return c.status === "completed";
    }, 300_000);
    expect((await request(stack.url).post("/load_model").send({ model_name: HUB_REPOS.sdxl })).body).toMatchObject({ success: true });
    expect((await request(stack.url).post("/set_engine").send({ engine: "mlx" })).body).toMatchObject({ success: true, engine: "mlx" });
    try {
      const res = await request(stack.url).post("/generate").send(oldDefaults).timeout(400_000);
      expect(res.status).toBe(200);
      expect(res.body).toMatchObject({ success: true, engine: "mlx", image: { width: 64, height: 64, mode: "rgba" } });
      expect(Buffer.from(res.body.image.base64, "base64")).toHaveLength(64 * 64 * 4);
      expect(res.body.warning).toBeUndefined();
      expect((await carried(res.body.generation_id)).lora).toMatchObject({ name: HUB_REPOS.lora, strength: 0.8 });
    } finally {
      expect((await request(stack.url).post("/set_engine").send({ engine: "torch" })).status).toBe(200);
      expect((await request(stack.url).post("/load_model").send({ model_name: "tiny-sd" })).status).toBe(200);
    }
  }, 720_000);
});
