import fs from "node:fs";
import path from "node:path";
import request from "supertest";
import { startTestStack, TestStack, waitFor, decodePng } from "../support/stack";
import { fetchPng, finishedJob, submitJob } from "../support/jobs-client";
import { privateModelStore, writeDoraLora } from "../support/model-store";

const KEY = "test-admin-key";
let stack: TestStack;
let modelsDir: string;
let lorasDir: string;
let fixtures: string;

beforeAll(async () => {
  // A private model store: this file converts, tampers with and adds to it, which must never touch the repo's models/.
  ({ root: fixtures, modelsDir, lorasDir } = privateModelStore("pixelai-models-"));
  writeDoraLora(path.join(lorasDir, "tiny-sd-dora.safetensors"));
  stack = await startTestStack({ PIXELAI_MODELS_DIR: modelsDir, PIXELAI_LORAS_DIR: lorasDir, PIXELAI_API_KEY: KEY });
});

afterAll(async () => {
  await stack?.close();
  fs.rmSync(fixtures, { recursive: true, force: true });
});

const admin = (req: request.Test) => req.set("X-API-Key", KEY);

const run = async (body: Record<string, unknown>) => finishedJob(stack.url, await submitJob(stack.url, body));
const image = (id: string) => fetchPng(stack.url, id);

function maxChannelDiff(a: Buffer, b: Buffer): number {
  const pa = decodePng(a).data;
  const pb = decodePng(b).data;
  expect(pa.length).toBe(pb.length);
  let max = 0;
  for (let i = 0; i < pa.length; i++) max = Math.max(max, Math.abs(pa[i] - pb[i]));
  return max;
}

const base = { prompt: "a knight", width: 64, height: 64, steps: 4, seed: 11, initNoise: "torch" };

describe("GET /engines", () => {
  it("shows both warm runners with device, versions and features", async () => {
    const res = await request(stack.url).get("/engines");
    expect(res.status).toBe(200);
    expect(res.body.default).toBe("torch");
    const { torch, mlx } = res.body.engines;
    expect(torch).toMatchObject({ available: true, device: "cpu", features: { lora: true, sdxl: true } });
    expect(mlx).toMatchObject({ available: true, features: { lora: true, sdxl: true } });
    expect(torch.versions.torch).toMatch(/^\d/);
    expect(mlx.versions.mlx).toMatch(/^\d/);
    expect(torch.schedulers).toEqual(expect.arrayContaining(["euler", "ddim"]));
    expect(mlx.schedulers).toEqual(expect.arrayContaining(["euler", "ddim"]));
  });
});

describe("MLX conversion through the API", () => {
  it("refuses an MLX job on an unconverted model with 409 MODEL_NOT_CONVERTED naming the fix", async () => {
    const res = await request(stack.url)
      .post("/jobs")
      .send({ ...base, engine: "mlx" });
    expect(res.status).toBe(409);
    expect(res.body.error.code).toBe("MODEL_NOT_CONVERTED");
    expect(res.body.error.message).toContain("/models/tiny-sd/conversions");
  });

  it("GET /engines lists per engine which models run now, with the reason for the others (for pickers)", async () => {
    const { torch, mlx } = (await request(stack.url).get("/engines")).body.engines;
    expect(torch.models).toEqual(expect.arrayContaining([{ name: "tiny-sd", runnable: true }]));
    const unconverted = mlx.models.find((m: { name: string }) => m.name === "tiny-sd");
    expect(unconverted).toMatchObject({ runnable: false, reason: expect.stringContaining("POST /models/tiny-sd/conversions") });
  });

  it("PUT /engines/default applies /set_engine's checks: mlx is refused while the default model has no conversion", async () => {
    for (const res of [
      await admin(request(stack.url).put("/engines/default")).send({ engine: "mlx" }),
      await admin(request(stack.url).post("/set_engine")).send({ engine: "mlx" }),
    ]) {
      expect(res.status).toBe(409);
      expect(res.body.error?.code ?? res.body.code).toBe("MODEL_NOT_CONVERTED");
    }
    expect((await request(stack.url).get("/engines")).body.default).toBe("torch");
  });

  let conversionId: string;
  it("queues a conversion (admin), reports progress and completes with a hashed manifest", async () => {
    expect((await request(stack.url).post("/models/tiny-sd/conversions").send({ dtype: "float32" })).status).toBe(401);
    const res = await admin(request(stack.url).post("/models/tiny-sd/conversions")).send({ dtype: "float32" });
    expect(res.status).toBe(202);
    expect(res.body.status).toBe("queued");
    conversionId = res.body.id;
    const done = await waitFor(async () => {
      const r = await request(stack.url).get(`/conversions/${conversionId}`);
      return ["completed", "failed"].includes(r.body.status) ? r.body : undefined;
    });
    expect(done).toMatchObject({ status: "completed", progress: 100, model: "tiny-sd", dtype: "float32" });
    expect(done.manifest.architecture).toBe("sd");
    const files = Object.entries(done.manifest.files as Record<string, { sha256: string; size: number }>);
    expect(files.length).toBeGreaterThan(3);
    for (const [, f] of files) expect(f.sha256).toMatch(/^[0-9a-f]{64}$/);

    const model = await request(stack.url).get("/models/tiny-sd");
    expect(model.body.engines).toEqual(["torch", "mlx"]);
    const mlxModels0 = (await request(stack.url).get("/engines")).body.engines.mlx.models;
    expect(mlxModels0).toEqual(expect.arrayContaining([{ name: "tiny-sd", runnable: true }]));
    expect(model.body.mlx).toMatchObject({ converted: true, verified: true, dtype: "float32" });
    const mlxModels = await request(stack.url).get("/mlx_models");
    expect(mlxModels.body).toEqual([expect.objectContaining({ name: "tiny-sd", conversionId, verified: true, fileCount: files.length })]);
  });

  it("answers a re-conversion of the unchanged source with the existing conversion", async () => {
    const res = await admin(request(stack.url).post("/models/tiny-sd/conversions")).send({ dtype: "float32" });
    expect(res.status).toBe(200);
    expect(res.body).toMatchObject({ id: conversionId, status: "completed", reused: true });
  });

  it("runs the same request on both engines; with shared initial latents the images agree within 2/255", async () => {
    const torchJob = await run({ ...base, engine: "torch" });
    const mlxJob = await run({ ...base, engine: "mlx" });
    expect(torchJob).toMatchObject({ status: "completed", engine: "torch" });
    expect(mlxJob).toMatchObject({ status: "completed", engine: "mlx" });
    expect(maxChannelDiff(await image(torchJob.id), await image(mlxJob.id))).toBeLessThanOrEqual(2);
  });

  it("runs every scheduler either engine lists on both, and they agree within 2/255", async () => {
    const engines = (await request(stack.url).get("/engines")).body.engines;
    expect(engines.mlx.schedulers).toEqual(engines.torch.schedulers);
    expect(engines.torch.schedulers).toEqual(expect.arrayContaining(["dpmpp_2m", "dpmpp_2m_karras"]));
    const images: Buffer[] = [];
    for (const scheduler of engines.torch.schedulers as string[]) {
      const torchJob = await run({ ...base, steps: 5, scheduler, engine: "torch" });
      const mlxJob = await run({ ...base, steps: 5, scheduler, engine: "mlx" });
      expect([scheduler, torchJob.status, mlxJob.status]).toEqual([scheduler, "completed", "completed"]);
      const torchImage = await image(torchJob.id);
      const diff = maxChannelDiff(torchImage, await image(mlxJob.id));
      expect({ scheduler, agrees: diff <= 2 }).toEqual({ scheduler, agrees: true });
      images.push(torchImage);
    }
    // each scheduler is really used: no two give the same picture
    for (let i = 1; i < images.length; i++) expect(images[i].equals(images[0])).toBe(false);
  });

  it.each(["tiny-sd-lora", "tiny-sd-lora-kohya"])(
    "applies %s on MLX: the job differs from the no-LoRA job and agrees with torch's within 2/255",
    async (name) => {
      const plain = await run({ ...base, engine: "mlx" });
      const mlxJob = await run({ ...base, engine: "mlx", lora: { name, strength: 0.7 } });
      const torchJob = await run({ ...base, engine: "torch", lora: { name, strength: 0.7 } });
      expect(mlxJob).toMatchObject({ status: "completed", engine: "mlx" });
      expect(torchJob).toMatchObject({ status: "completed", engine: "torch" });
      const withLora = await image(mlxJob.id);
      expect(maxChannelDiff(withLora, await image(plain.id))).toBeGreaterThan(10);
      expect(maxChannelDiff(withLora, await image(torchJob.id))).toBeLessThanOrEqual(2);
      // the next plain job carries no LoRA: the runner went back to the kept base weights
      expect((await image((await run({ ...base, engine: "mlx" })).id)).equals(await image(plain.id))).toBe(true);
    },
  );

  it("refuses on MLX, before queueing, a LoRA file it cannot apply, naming what (422 LORA_UNSUPPORTED_ENGINE)", async () => {
    const res = await request(stack.url)
      .post("/jobs")
      .send({ ...base, engine: "mlx", lora: { name: "tiny-sd-dora" } });
    expect([res.status, res.body.error.code]).toEqual([422, "LORA_UNSUPPORTED_ENGINE"]);
    expect(res.body.error.message).toMatch(
      /tiny-sd-dora holds DoRA magnitude vectors \(e\.g\. .*lora_magnitude_vector\), which the mlx engine cannot apply/,
    );
  });

  it("follows PUT /engines/default (admin) for requests that name no engine", async () => {
    expect((await request(stack.url).put("/engines/default").send({ engine: "mlx" })).status).toBe(401);
    const set = await admin(request(stack.url).put("/engines/default")).send({ engine: "mlx" });
    expect(set.status).toBe(200);
    const job = await run({ prompt: "default engine", width: 64, height: 64, steps: 2, seed: 1 });
    expect(job.engine).toBe("mlx");
    // with mlx the default, a model without a conversion cannot become the default model, on either route
    const v1 = await admin(request(stack.url).put("/models/default")).send({ model: "tiny-sdxl" });
    const legacy = await admin(request(stack.url).post("/load_model")).send({ model_name: "tiny-sdxl" });
    expect([v1.status, v1.body.error.code]).toEqual([409, "MODEL_NOT_CONVERTED"]);
    expect([legacy.status, legacy.body]).toEqual([409, expect.objectContaining({ success: false, code: "MODEL_NOT_CONVERTED" })]);
    expect((await request(stack.url).get("/engines")).body.defaultModel).toBe("tiny-sd");
    await admin(request(stack.url).put("/engines/default")).send({ engine: "torch" });
    expect((await request(stack.url).get("/engines")).body.default).toBe("torch");
  });

  it("follows PUT /models/default (admin) for requests that name no model", async () => {
    expect((await request(stack.url).put("/models/default").send({ model: "tiny-sdxl" })).status).toBe(401);
    const lora = await admin(request(stack.url).put("/models/default")).send({ model: "tiny-sd-lora" });
    expect([lora.status, lora.body.error.code]).toEqual([404, "MODEL_NOT_FOUND"]);
    const set = await admin(request(stack.url).put("/models/default")).send({ model: "tiny-sdxl" });
    expect(set.body).toEqual({ default: "tiny-sdxl" });
    const job = await run({ prompt: "default model", width: 64, height: 64, steps: 2, seed: 1 });
    expect(job).toMatchObject({ status: "completed", model: "tiny-sdxl" });
    expect((await request(stack.url).get("/engines")).body.defaultModel).toBe("tiny-sdxl");
    await admin(request(stack.url).put("/models/default")).send({ model: "tiny-sd" });
  });

  it("fails the next MLX job with HASH_MISMATCH after a weight file is tampered with", async () => {
    const manifest = JSON.parse(fs.readFileSync(path.join(modelsDir, "mlx/tiny-sd/manifest.json"), "utf8"));
    const weights = Object.keys(manifest.files).find((f) => f.startsWith("unet/") && f.endsWith(".safetensors"))!;
    const file = path.join(modelsDir, "mlx/tiny-sd", weights);
    const bytes = fs.readFileSync(file);
    bytes[bytes.length - 10] ^= 0xff;
    fs.writeFileSync(file, bytes);
    const job = await run({ ...base, engine: "mlx" });
    expect(job.status).toBe("failed");
    expect(job.error.code).toBe("HASH_MISMATCH");
    const model = await request(stack.url).get("/models/tiny-sd");
    expect(model.body.engines).toEqual(["torch"]);
    expect(model.body.mlx.verified).toBe(false);
  });
});

describe("quantized MLX conversions", () => {
  it("converts with int8 linear layers, records it, verifies, runs MLX jobs, and reuses only the same options", async () => {
    for (const bad of [{ quantize: 3 }, { groupSize: 32 }, { quantize: 8, groupSize: 48 }]) {
      const res = await admin(request(stack.url).post("/models/tiny-sdxl/conversions")).send(bad);
      expect([JSON.stringify(bad), res.status, res.body.error.code]).toEqual([JSON.stringify(bad), 400, "INVALID_REQUEST"]);
    }
    const res = await admin(request(stack.url).post("/models/tiny-sdxl/conversions")).send({
      dtype: "float32",
      quantize: 8,
      groupSize: 32,
    });
    expect(res.status).toBe(202);
    const done = await waitFor(async () => {
      const r = await request(stack.url).get(`/conversions/${res.body.id}`);
      return ["completed", "failed"].includes(r.body.status) ? r.body : undefined;
    });
    expect(done).toMatchObject({ status: "completed", dtype: "float32", quantize: { bits: 8, groupSize: 32 } });
    expect(done.manifest.quantize).toEqual({ bits: 8, groupSize: 32, components: ["unet", "text_encoder", "text_encoder_2"] });
    const model = await request(stack.url).get("/models/tiny-sdxl");
    expect(model.body.mlx).toMatchObject({ converted: true, verified: true });
    const listed = (await request(stack.url).get("/mlx_models")).body.find((m: { name: string }) => m.name === "tiny-sdxl");
    expect(listed).toMatchObject({ quantize: { bits: 8, groupSize: 32 }, verified: true });

    const job = await run({ ...base, model: "tiny-sdxl", engine: "mlx" });
    expect(job).toMatchObject({ status: "completed", engine: "mlx", model: "tiny-sdxl" });
    expect(decodePng(await image(job.id)).width).toBe(64);

    const same = await admin(request(stack.url).post("/models/tiny-sdxl/conversions")).send({
      dtype: "float32",
      quantize: 8,
      groupSize: 32,
    });
    expect([same.status, same.body.id, same.body.reused]).toEqual([200, res.body.id, true]);
    const other = await admin(request(stack.url).post("/models/tiny-sdxl/conversions")).send({
      dtype: "float32",
      quantize: 4,
      groupSize: 32,
    });
    expect(other.status).toBe(202);
    expect(other.body.id).not.toBe(res.body.id);
    await waitFor(async () =>
      (await request(stack.url).get(`/conversions/${other.body.id}`)).body.status === "completed" ? true : undefined,
    );
  });
});

describe("LoRA on Torch", () => {
  let baseline: Buffer;
  beforeAll(async () => {
    const job = await run(base);
    baseline = await image(job.id);
  });

  it("registers the LoRAs found under loras/ at start-up with their fit", async () => {
    const res = await request(stack.url).get("/models");
    const loras = res.body.items.filter((m: { kind: string }) => m.kind === "lora").map((m: { name: string }) => m.name);
    expect(loras).toEqual(expect.arrayContaining(["tiny-sd-lora", "tiny-sd-lora-kohya", "tiny-sdxl-lora"]));
    expect(res.body.models).not.toContain("tiny-sd-lora");
    const detail = await request(stack.url).get("/models/tiny-sd-lora");
    expect(detail.body).toMatchObject({ kind: "lora", architecture: "sd", crossAttentionDim: 32, engines: ["torch", "mlx"] });
    // a DoRA is applied by torch only: the MLX runner's published loraUnsupported rules refuse it
    expect((await request(stack.url).get("/models/tiny-sd-dora")).body.engines).toEqual(["torch"]);
    expect(detail.body.sha256).toMatch(/^[0-9a-f]{64}$/);
  });

  it.each(["tiny-sd-lora", "tiny-sd-lora-kohya"])(
    "%s changes the image; strength 0 does not; the next plain job is unchanged",
    async (name) => {
      const withLora = await run({ ...base, lora: { name, strength: 1 } });
      expect(withLora.status).toBe("completed");
      expect((await image(withLora.id)).equals(baseline)).toBe(false);
      const zero = await run({ ...base, lora: { name, strength: 0 } });
      expect((await image(zero.id)).equals(baseline)).toBe(true);
      const after = await run(base);
      expect((await image(after.id)).equals(baseline)).toBe(true);
    },
  );

  it("refuses an unknown LoRA (404) and an SD LoRA on SDXL (400) before queueing", async () => {
    const unknown = await request(stack.url)
      .post("/jobs")
      .send({ ...base, lora: { name: "nope" } });
    expect([unknown.status, unknown.body.error.code]).toEqual([404, "LORA_NOT_FOUND"]);
    const mismatch = await request(stack.url)
      .post("/jobs")
      .send({ ...base, model: "tiny-sdxl", lora: { name: "tiny-sd-lora" } });
    expect([mismatch.status, mismatch.body.error.code]).toEqual([400, "INVALID_REQUEST"]);
    expect(mismatch.body.error.message).toMatch(/does not fit/);
    const xlOnSd = await request(stack.url)
      .post("/jobs")
      .send({ ...base, lora: { name: "tiny-sdxl-lora" } });
    expect([xlOnSd.status, xlOnSd.body.error.message]).toEqual([
      400,
      expect.stringMatching(/tiny-sdxl-lora \(sdxl, text width 64\) does not fit/),
    ]);
  });

  it("runs an SDXL LoRA on tiny-sdxl", async () => {
    const job = await run({ ...base, model: "tiny-sdxl", lora: { name: "tiny-sdxl-lora", strength: 0.8 } });
    expect(job.status).toBe("completed");
  });

  it("refuses birefnet while no BiRefNet weights are present, naming what is missing", async () => {
    const res = await request(stack.url)
      .post("/jobs")
      .send({ ...base, removeBackground: "birefnet" });
    expect(res.status).toBe(503);
    expect(res.body.error.code).toBe("ENGINE_UNAVAILABLE");
    expect(res.body.error.message).toMatch(/BiRefNet/);
  });
});

describe("model folders stay inside their root until they load", () => {
  it("the runner refuses a registered model whose component was swapped for a link outside the root", async () => {
    fs.cpSync(path.join(modelsDir, "tiny-sd"), path.join(modelsDir, "late-escape"), { recursive: true });
    const registered = await admin(request(stack.url).post("/models")).send({ name: "late-escape", source: "late-escape", kind: "base" });
    expect(registered.status).toBe(201);
    // after registration (time of check), before the load (time of use): vae/ now leads out of models/
    const outside = path.join(fixtures, "outside-vae");
    fs.renameSync(path.join(modelsDir, "late-escape", "vae"), outside);
    fs.symlinkSync(outside, path.join(modelsDir, "late-escape", "vae"));
    const job = await run({ ...base, model: "late-escape" });
    expect(job).toMatchObject({ status: "failed", error: { code: "INVALID_REQUEST" } });
    expect(job.error.message).toMatch(/outside the model roots/);
  });
});
