import fs from "node:fs";
import http from "node:http";
import path from "node:path";
import request from "supertest";
import { startTestStack, TestStack, waitFor, decodePng, opaqueColours } from "../support/stack";
import { privateModelStore, writeDoraLora } from "../support/model-store";

let stack: TestStack;
let fixtures: string;

/** The old server's second hub LoRA, here as a hub LoRA the registry knows (its install is not what is tested). */
const SLIDER = "ntc-ai/SDXL-LoRA-slider.pixel-art";

beforeAll(async () => {
  // A private model store: the MLX test converts tiny-sd, which must not touch the repo's models/.
  const store = privateModelStore("pixelai-legacy-");
  fixtures = store.root;
  const { modelsDir, lorasDir } = store;
  writeDoraLora(path.join(lorasDir, "tiny-sd-dora.safetensors"));
  stack = await startTestStack({ PIXELAI_MODELS_DIR: modelsDir, PIXELAI_LORAS_DIR: lorasDir });
  // Two more registered LoRAs, one per architecture, so /loras has something to sort (no files are needed for that).
  await stack.service.db.model.create({
    data: { name: "pixel-sd", source: "loras/pixel-sd.safetensors", kind: "lora", architecture: "sd" },
  });
  await stack.service.db.model.create({
    data: { name: "pixel-slider", source: SLIDER, kind: "lora", architecture: "sdxl", origin: "hub", snapshotPath: `.hub/${SLIDER}/0` },
  });
});

afterAll(async () => {
  await stack?.close();
  if (fixtures) fs.rmSync(fixtures, { recursive: true, force: true });
});

/** The old extension's /generate body: "None" for no LoRA, no seed (random), extra fields the server never read. */
const oldClientBody = {
  prompt: "a knight",
  negative_prompt: "blurry",
  width: 64,
  height: 64,
  steps: 4,
  guidance_scale: 7.5,
  lora_model: "None",
  lora_strength: 1.0,
  remove_background: false,
  pixel_width: 32,
  pixel_height: 32,
  colors: 8,
  preserve_aspect: true,
  // fields older builds of the client sent; the seed server ignored them and so do we
  use_lora: false,
  client: "aseprite-extension",
};

/** The LoRA a legacy job ran with, as the queue carried it (JobView does not show it). */
async function jobLora(id: string): Promise<{ name: string; strength: number } | null> {
  const row = await stack.service.db.job.findUniqueOrThrow({ where: { id } });
  return (JSON.parse(row.request) as { lora: { name: string; strength: number } | null }).lora;
}

/** The id of the newest job with this prompt (the old client learns it only from the /generate answer). */
async function jobIdByPrompt(prompt: string): Promise<string> {
  return waitFor(async () => {
    const res = await request(stack.url).get("/jobs?limit=50");
    return (res.body.items as Array<{ id: string; prompt: string }>).find((j) => j.prompt === prompt)?.id;
  });
}

describe("the old extension's calls", () => {
  it("GET /health keeps the seed server's fields", async () => {
    const res = await request(stack.url).get("/health");
    expect(res.status).toBe(200);
    expect(res.body).toMatchObject({ status: "healthy", model_loaded: true, current_model: "tiny-sd", device: "cpu", engine: "torch" });
    expect(typeof res.body.version).toBe("string");
    // only the tiny demo models are registered here (first-run.test.ts shows it turning false)
    expect(res.body.demo).toBe(true);
  });

  it("GET /models lists names in res.models", async () => {
    const res = await request(stack.url).get("/models");
    expect(res.status).toBe(200);
    expect(res.body.models).toEqual(expect.arrayContaining(["tiny-sd", "tiny-sdxl"]));
    expect(res.body.models).not.toContain("pixel-sd");
  });

  it("GET /loras: \"None\" first, hub LoRAs, the presets' LoRA, then local files, split by the current model's architecture", async () => {
    const res = await request(stack.url).get("/loras");
    expect(res.status).toBe(200);
    const local = ["pixel-sd", "tiny-sd-lora", "tiny-sd-lora-kohya", "tiny-sd-dora", "tiny-sdxl-lora"]
      .map((n) => `loras/${n}.safetensors`)
      .sort();
    expect(res.body.loras.slice(0, 3)).toEqual(["None", SLIDER, "nerijs/pixel-art-xl"]);
    expect([...res.body.loras.slice(3)].sort()).toEqual(local);
    expect(res.body).toMatchObject({ current_model: "tiny-sd", architecture: "sd" });
    expect(res.body.compatible_loras[0]).toBe("None");
    expect([...res.body.compatible_loras.slice(1)].sort()).toEqual(local.filter((l) => !l.includes("sdxl")));
    expect([...res.body.incompatible_loras].sort()).toEqual([SLIDER, "loras/tiny-sdxl-lora.safetensors", "nerijs/pixel-art-xl"].sort());
    expect(res.body.loras).not.toContain("tiny-sd");

    // with an SDXL model the split turns over (the preset's LoRA is known as SDXL before it is installed)
    expect((await request(stack.url).post("/load_model").send({ model_name: "tiny-sdxl" })).status).toBe(200);
    const xl = (await request(stack.url).get("/loras")).body;
    expect(xl.compatible_loras).toEqual(["None", SLIDER, "nerijs/pixel-art-xl", "loras/tiny-sdxl-lora.safetensors"]);
    expect(xl.architecture).toBe("sdxl");
    expect((await request(stack.url).post("/load_model").send({ model_name: "tiny-sd" })).status).toBe(200);
  });

  it("POST /set_engine sets the default engine; unknown → 400; one that cannot run the default model is refused", async () => {
    const ok = await request(stack.url).post("/set_engine").send({ engine: "torch" });
    expect(ok.status).toBe(200);
    expect(ok.body).toMatchObject({ success: true, engine: "torch" });
    const unknown = await request(stack.url).post("/set_engine").send({ engine: "cuda" });
    expect(unknown.status).toBe(400);
    expect(unknown.body).toMatchObject({ success: false, code: "INVALID_REQUEST" });
    // mlx becomes the default only where an MLX runner is up and tiny-sd has an MLX conversion (models/mlx/, which
    // other tests may create); otherwise the answer names why and the default stays torch.
    const mlx = await request(stack.url).post("/set_engine").send({ engine: "mlx" });
    if (mlx.body.success) {
      expect((await request(stack.url).get("/health")).body.engine).toBe("mlx");
    } else {
      expect(["ENGINE_UNAVAILABLE", "MODEL_NOT_CONVERTED"]).toContain(mlx.body.code);
      expect(mlx.status).toBe(mlx.body.code === "ENGINE_UNAVAILABLE" ? 503 : 409);
      expect((await request(stack.url).get("/health")).body.engine).toBe("torch");
    }
    expect((await request(stack.url).post("/set_engine").send({ engine: "torch" })).status).toBe(200);
    expect((await request(stack.url).get("/health")).body.engine).toBe("torch");
  });

  it("POST /load_model makes the picked model the one later /generate calls (which name none) run on", async () => {
    const ok = await request(stack.url).post("/load_model").send({ model_name: "tiny-sdxl" });
    expect(ok.status).toBe(200);
    expect(ok.body).toMatchObject({ success: true, model_name: "tiny-sdxl", current_model: "tiny-sdxl" });
    expect((await request(stack.url).get("/health")).body.current_model).toBe("tiny-sdxl");
    const gen = await request(stack.url)
      .post("/generate")
      .send({ ...oldClientBody, steps: 2 });
    expect(gen.status).toBe(200);
    const job = await request(stack.url).get(`/jobs/${gen.body.generation_id}`);
    expect(job.body.model).toBe("tiny-sdxl");
    const back = await request(stack.url).post("/load_model").send({ model_name: "tiny-sd" });
    expect(back.body.current_model).toBe("tiny-sd");
    const missing = await request(stack.url).post("/load_model").send({ model_name: "sd-turbo" });
    expect(missing.status).toBe(404);
    expect(missing.body).toMatchObject({ success: false, code: "MODEL_NOT_FOUND" });
  });

  it("POST /generate answers every field the old client reads, with raw RGBA of width·height·4 bytes", async () => {
    const res = await request(stack.url).post("/generate").send(oldClientBody);
    expect(res.status).toBe(200);
    const body = res.body;
    expect(body.success).toBe(true);
    expect(body.image).toMatchObject({ width: 32, height: 32, mode: "rgba", fit_mode: "contain", preserve_aspect: true });
    const rgba = Buffer.from(body.image.base64, "base64");
    expect(rgba.length).toBe(32 * 32 * 4);
    expect(opaqueColours({ data: rgba })).toBeLessThanOrEqual(8);
    expect(Number.isInteger(body.seed)).toBe(true);
    expect(body.prompt).toBe("a knight");
    expect(typeof body.generation_time).toBe("number");
    expect(body.generation_time).toBeGreaterThan(0);
    expect(typeof body.generation_id).toBe("string");

    // the job is a normal one: in history, with the same pixels as its PNG
    const job = await request(stack.url).get(`/jobs/${body.generation_id}`);
    expect(job.body).toMatchObject({ status: "completed", seed: body.seed, result: { width: 32, height: 32 } });
    const png = await request(stack.url)
      .get(`/jobs/${body.generation_id}/image`)
      .buffer(true)
      .parse((r, cb) => {
        const chunks: Buffer[] = [];
        r.on("data", (d: Buffer) => chunks.push(d));
        r.on("end", () => cb(null, Buffer.concat(chunks)));
      });
    expect(Buffer.compare(decodePng(png.body as Buffer).data, rgba)).toBe(0);
    const history = await request(stack.url).get("/jobs?limit=100");
    expect(history.body.items.map((j: { id: string }) => j.id)).toContain(body.generation_id);
  });

  it("POST /generate maps preserve_aspect false to stretch, a numeric-string size, and a fixed seed", async () => {
    const res = await request(stack.url)
      .post("/generate")
      .send({ ...oldClientBody, width: "64", seed: 5, preserve_aspect: false, pixel_width: 16, pixel_height: 24, remove_background: true });
    expect(res.status).toBe(200);
    expect(res.body.image).toMatchObject({ width: 16, height: 24, fit_mode: "stretch", preserve_aspect: false });
    expect(Buffer.from(res.body.image.base64, "base64").length).toBe(16 * 24 * 4);
    expect(res.body.seed).toBe(5);
  });

  it('maps lora_model "loras/<file>.safetensors" to that local LoRA, and "None" or "" to none', async () => {
    const withLora = await request(stack.url)
      .post("/generate")
      .send({ ...oldClientBody, seed: 11, lora_model: "loras/tiny-sd-lora.safetensors", lora_strength: 0.5 });
    expect(withLora.status).toBe(200);
    expect(await jobLora(withLora.body.generation_id)).toEqual({ name: "tiny-sd-lora", strength: 0.5 });
    expect(withLora.body.warning).toBeUndefined();
    for (const none of ["None", ""]) {
      const res = await request(stack.url)
        .post("/generate")
        .send({ ...oldClientBody, seed: 11, lora_model: none });
      expect(res.status).toBe(200);
      expect(await jobLora(res.body.generation_id)).toBeNull();
    }
  });

  it("generates the old client's 16:9 preset 1600×900 (rounded up to 1600×904, fitted back to the size asked for)", async () => {
    const raw = await request(stack.url)
      .post("/generate")
      .send({ ...oldClientBody, width: 1600, height: 900, steps: 1, pixel_width: 0, pixel_height: 0 });
    expect(raw.status).toBe(200);
    expect(raw.body.image).toMatchObject({ width: 1600, height: 900, fit_mode: null });
    expect(Buffer.from(raw.body.image.base64, "base64").length).toBe(1600 * 900 * 4);
    const job = (await request(stack.url).get(`/jobs/${raw.body.generation_id}`)).body;
    expect([job.width, job.height]).toEqual([1600, 904]);
    // with a pixel step the rounding is the same and the fit is the usual one (legacy-request.spec.ts)
  });

  it("queues several /generate calls at once", async () => {
    const results = await Promise.all(
      [1, 2, 3].map((seed) =>
        request(stack.url)
          .post("/generate")
          .send({ ...oldClientBody, seed }),
      ),
    );
    for (const r of results) expect(r.body.success).toBe(true);
    expect(new Set(results.map((r) => r.body.generation_id)).size).toBe(3);
  });
});

describe("progress and cancel", () => {
  it("GET /progress/{id} reports a running job in the old shape, then 100 % completed", async () => {
    const prompt = "progress probe";
    const pending = request(stack.url)
      .post("/generate")
      .send({ ...oldClientBody, prompt, width: 256, height: 256, steps: 40 })
      .then((r) => r);
    const id = await jobIdByPrompt(prompt);
    const running = await waitFor(async () => {
      const res = await request(stack.url).get(`/progress/${id}`);
      return res.body.status === "generating" && res.body.current_step > 0 ? res.body : undefined;
    });
    expect(running.total_steps).toBe(40);
    expect(running.progress).toBeGreaterThan(0);
    expect(running.progress).toBeLessThanOrEqual(100);
    expect(running.seconds_per_it).toBeGreaterThan(0);
    expect(running.eta_seconds).toBeGreaterThanOrEqual(0);
    const done = await pending;
    expect(done.body).toMatchObject({ success: true, generation_id: id });
    const after = await request(stack.url).get(`/progress/${id}`);
    expect(after.body).toMatchObject({ progress: 100, status: "completed", current_step: 40, total_steps: 40, eta_seconds: 0 });
    const unknown = await request(stack.url).get("/progress/0000000000000000000000000z");
    expect(unknown.status).toBe(404);
    expect(unknown.body).toMatchObject({ success: false, code: "NOT_FOUND" });
  });

  it("POST /cancel/{id}: 202 on a running job (its /generate fails CANCELLED), 409 once finished, 404 unknown", async () => {
    const prompt = "cancel probe";
    const pending = request(stack.url)
      .post("/generate")
      .send({ ...oldClientBody, prompt, width: 512, height: 512, steps: 150 })
      .then((r) => r);
    const id = await jobIdByPrompt(prompt);
    await waitFor(async () => (await request(stack.url).get(`/progress/${id}`)).body.current_step > 0);
    const cancel = await request(stack.url).post(`/cancel/${id}`);
    expect(cancel.status).toBe(202);
    expect(cancel.body.success).toBe(true);
    const answer = await pending;
    expect(answer.status).toBe(409);
    expect(answer.body).toMatchObject({ success: false, code: "CANCELLED", generation_id: id });
    expect((await request(stack.url).get(`/progress/${id}`)).body.status).toBe("canceled");
    const again = await request(stack.url).post(`/cancel/${id}`);
    expect(again.status).toBe(409);
    expect(again.body).toMatchObject({ success: false, code: "JOB_NOT_CANCELLABLE" });
    const unknown = await request(stack.url).post("/cancel/0000000000000000000000000z");
    expect(unknown.status).toBe(404);
    expect(unknown.body).toMatchObject({ success: false, code: "NOT_FOUND" });
  });

  it("stops waiting when the client hangs up (no leaked watcher); the job still finishes", async () => {
    const prompt = "hang-up probe";
    const url = new URL(stack.url);
    const req = http.request({
      host: url.hostname,
      port: url.port,
      path: "/generate",
      method: "POST",
      headers: { "content-type": "application/json" },
    });
    req.on("error", () => undefined);
    req.end(JSON.stringify({ ...oldClientBody, prompt, width: 256, height: 256, steps: 30 }));
    const id = await jobIdByPrompt(prompt);
    await waitFor(async () => stack.service.events!.watchedJobs() > 0, 10_000);
    req.destroy();
    await waitFor(async () => stack.service.events!.watchedJobs() === 0, 10_000);
    await waitFor(async () => ((await request(stack.url).get(`/jobs/${id}`)).body.status === "completed" ? true : undefined));
  });
});

describe("the Host check on legacy paths", () => {
  it.each(["/generate", "/loras", "/progress/x", "/load_model"])("refuses a foreign Host on %s in the legacy shape", async (route) => {
    const call =
      route === "/loras" || route.startsWith("/progress") ? request(stack.url).get(route) : request(stack.url).post(route).send({});
    const res = await call.set("Host", "evil.example");
    expect(res.status).toBe(403);
    expect(res.body).toEqual({ success: false, code: "FORBIDDEN", error: expect.stringMatching(/evil\.example/) });
  });

  it("keeps the v1 shape on v1 paths", async () => {
    const res = await request(stack.url).get("/jobs").set("Host", "evil.example");
    expect(res.status).toBe(403);
    expect(res.body).toEqual({ error: { code: "FORBIDDEN", message: expect.stringMatching(/evil\.example/) } });
  });
});

describe("a LoRA on MLX through the legacy route", () => {
  it("is applied (the seed server dropped it): the image differs from the plain one and no warning is given", async () => {
    const conv = await request(stack.url).post("/models/tiny-sd/conversions").send({ dtype: "float32" });
    expect([200, 202]).toContain(conv.status);
    await waitFor(async () => {
      const c = (await request(stack.url).get(`/conversions/${conv.body.id}`)).body;
      if (c.status === "failed") throw new Error(`conversion failed: ${JSON.stringify(c.error)}`);
      return c.status === "completed";
    });
    const mlx = await request(stack.url).post("/set_engine").send({ engine: "mlx" });
    expect(mlx.body).toMatchObject({ success: true, engine: "mlx" });
    try {
      const body = { ...oldClientBody, seed: 5 };
      const res = await request(stack.url)
        .post("/generate")
        .send({ ...body, lora_model: "loras/tiny-sd-lora.safetensors", lora_strength: 0.8 });
      expect(res.status).toBe(200);
      expect(res.body).toMatchObject({ success: true, engine: "mlx", image: { width: 32, height: 32 } });
      expect(res.body.warning).toBeUndefined();
      expect(await jobLora(res.body.generation_id)).toMatchObject({ name: "tiny-sd-lora", strength: 0.8 });
      const plain = await request(stack.url).post("/generate").send(body);
      expect(plain.body).toMatchObject({ success: true, engine: "mlx" });
      expect(plain.body.warning).toBeUndefined();
      expect(plain.body.image.base64).not.toBe(res.body.image.base64);
      // a file MLX cannot apply is still dropped with a warning saying what, as the seed server did
      const dora = await request(stack.url)
        .post("/generate")
        .send({ ...body, lora_model: "loras/tiny-sd-dora.safetensors", lora_strength: 0.8 });
      expect(dora.body).toMatchObject({ success: true, engine: "mlx" });
      expect(dora.body.warning).toMatch(/tiny-sd-dora was not applied: .*DoRA magnitude vectors/);
      expect(await jobLora(dora.body.generation_id)).toBeNull();
      expect(dora.body.image.base64).toBe(plain.body.image.base64);
    } finally {
      expect((await request(stack.url).post("/set_engine").send({ engine: "torch" })).status).toBe(200);
    }
  });
});

describe("bad legacy bodies", () => {
  const cases: Array<[string, string | object, string]> = [
    ["malformed JSON", "{oops", "INVALID_REQUEST"],
    ["an array", "[1,2]", "INVALID_REQUEST"],
    ["a string", '"a knight"', "INVALID_REQUEST"],
    ["no prompt", { width: 64 }, "INVALID_REQUEST"],
    ["empty prompt", { prompt: "" }, "INVALID_REQUEST"],
    ["width too large", { ...oldClientBody, width: 4096 }, "INVALID_REQUEST"],
    ["width that rounds up past 2048", { ...oldClientBody, width: 2049 }, "INVALID_REQUEST"],
    ["zero steps", { ...oldClientBody, steps: 0 }, "INVALID_REQUEST"],
    ["guidance as a word", { ...oldClientBody, guidance_scale: "lots" }, "INVALID_REQUEST"],
    ["seed as a word", { ...oldClientBody, seed: "abc" }, "INVALID_REQUEST"],
    ["lora_model a number", { ...oldClientBody, lora_model: 5 }, "INVALID_REQUEST"],
    ["unknown local LoRA", { ...oldClientBody, lora_model: "loras/missing.safetensors" }, "LORA_NOT_FOUND"],
    ["lora strength out of range", { ...oldClientBody, lora_model: "loras/x.safetensors", lora_strength: 9 }, "INVALID_REQUEST"],
    ["remove_background unknown", { ...oldClientBody, remove_background: "maybe" }, "INVALID_REQUEST"],
    ["pixel_width alone", { ...oldClientBody, pixel_height: undefined }, "INVALID_REQUEST"],
    ["too many colours", { ...oldClientBody, colors: 999 }, "INVALID_REQUEST"],
    ["unknown fit_mode", { ...oldClientBody, fit_mode: "zoom" }, "INVALID_REQUEST"],
    ["preserve_aspect a word", { ...oldClientBody, preserve_aspect: "yes" }, "INVALID_REQUEST"],
    ["body over 64 KiB", { ...oldClientBody, prompt: "x".repeat(70 * 1024) }, "PAYLOAD_TOO_LARGE"],
  ];

  it.each(cases)("%s → {success:false, code} with a 4xx", async (_label, body, code) => {
    const req = request(stack.url).post("/generate").set("Content-Type", "application/json");
    const res = await req.send(typeof body === "string" ? body : JSON.stringify(body));
    expect(res.status).toBeGreaterThanOrEqual(400);
    expect(res.status).toBeLessThan(500);
    expect(res.body.success).toBe(false);
    expect(res.body.code).toBe(code);
    expect(typeof res.body.error).toBe("string");
  });

  it("names the old client's fields in validation messages", async () => {
    const res = await request(stack.url)
      .post("/generate")
      .send({ ...oldClientBody, guidance_scale: 99 });
    expect(res.status).toBe(400);
    expect(res.body.error).toMatch(/guidance_scale/);
  });
});
