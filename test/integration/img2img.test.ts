import fs from "node:fs";
import { PNG } from "pngjs";
import request from "supertest";
import WebSocket from "ws";
import { startTestStack, TestStack, waitFor, decodePng } from "../support/stack";
import { fetchPng, finishedJob, submitJob } from "../support/jobs-client";
import { privateModelStore } from "../support/model-store";

/**
 * Image-to-image and inpainting through the real stack (REST and /ws, both runners, the tiny models converted for
 * MLX here): strength 0 gives back the sprite, strength 1 the text-to-image picture, the engines agree within 2/255,
 * a mask keeps what it does not cover, and bad image fields are refused before anything is queued.
 */
const KEY = "test-admin-key";
let stack: TestStack;
let fixtures: string;

beforeAll(async () => {
  const store = privateModelStore("pixelai-img2img-");
  fixtures = store.root;
  stack = await startTestStack({ PIXELAI_MODELS_DIR: store.modelsDir, PIXELAI_LORAS_DIR: store.lorasDir, PIXELAI_API_KEY: KEY });
});

afterAll(async () => {
  await stack?.close();
  fs.rmSync(fixtures, { recursive: true, force: true });
});

const run = async (body: Record<string, unknown>) => finishedJob(stack.url, await submitJob(stack.url, body));
const pixels = async (id: string) => decodePng(await fetchPng(stack.url, id));

/** An opaque 16×16 sprite of four colours in 2×2 blocks: hard edges, like the art the feature is for. */
function sprite(size = 16): { width: number; height: number; rgba: Buffer; png: Buffer } {
  const colours = [
    [20, 30, 60],
    [200, 60, 40],
    [240, 220, 120],
    [60, 160, 80],
  ];
  const image = new PNG({ width: size, height: size });
  for (let y = 0; y < size; y++) {
    for (let x = 0; x < size; x++) {
      const c = colours[(Math.floor(x / 2) * 7 + Math.floor(y / 2) * 3) % 4];
      image.data.set([...c, 255], (y * size + x) * 4);
    }
  }
  return { width: size, height: size, rgba: Buffer.from(image.data), png: PNG.sync.write(image) };
}

/** White (regenerate) in the right half, transparent (keep) in the left. */
function rightHalfMask(size = 16): string {
  const image = new PNG({ width: size, height: size });
  for (let y = 0; y < size; y++) for (let x = size / 2; x < size; x++) image.data.set([255, 255, 255, 255], (y * size + x) * 4);
  return PNG.sync.write(image).toString("base64");
}

function maxChannelDiff(a: Buffer, b: Buffer): number {
  expect(a.length).toBe(b.length);
  let max = 0;
  for (let i = 0; i < a.length; i++) max = Math.max(max, Math.abs(a[i] - b[i]));
  return max;
}

const art = sprite();
const base = { prompt: "a knight", width: 64, height: 64, steps: 6, seed: 21, initNoise: "torch" };

describe("img2img on the torch engine", () => {
  it("GET /engines says img2img and inpaint on both engines", async () => {
    const { torch, mlx } = (await request(stack.url).get("/engines")).body.engines;
    expect(torch.features).toMatchObject({ img2img: true, inpaint: true });
    expect(mlx.features).toMatchObject({ img2img: true, inpaint: true });
  });

  it("strength 0 returns the init sprite exactly after pixelization, from a PNG or raw RGBA", async () => {
    const pixel = { width: 16, height: 16, colors: 0 };
    const fromPng = await run({ ...base, inputImage: art.png.toString("base64"), strength: 0, pixel });
    const raw = { width: art.width, height: art.height, rgba: art.rgba.toString("base64") };
    const fromRaw = await run({ ...base, inputImage: raw, strength: 0, pixel });
    for (const job of [fromPng, fromRaw]) {
      expect(job).toMatchObject({ status: "completed", kind: "img2img" });
      const out = await pixels(job.id);
      expect([out.width, out.height]).toEqual([16, 16]);
      expect(out.data.equals(art.rgba)).toBe(true);
    }
  });

  it("strength 1 is the text-to-image job with the same seed; 0.5 is another picture", async () => {
    const text = await run(base);
    const full = await run({ ...base, inputImage: art.png.toString("base64"), strength: 1 });
    const half = await run({ ...base, inputImage: art.png.toString("base64"), strength: 0.5 });
    expect([text.status, full.status, half.status]).toEqual(["completed", "completed", "completed"]);
    const textPixels = (await pixels(text.id)).data;
    expect((await pixels(full.id)).data.equals(textPixels)).toBe(true);
    expect(maxChannelDiff((await pixels(half.id)).data, textPixels)).toBeGreaterThan(10);
  });

  it("a mask keeps every pixel it does not cover (the scaled init image) and regenerates the rest", async () => {
    const job = await run({ ...base, inputImage: art.png.toString("base64"), mask: rightHalfMask(), strength: 0.8 });
    expect(job.status).toBe("completed");
    const out = await pixels(job.id);
    let keptDiff = 0;
    let changed = 0;
    for (let y = 0; y < 64; y++) {
      for (let x = 0; x < 64; x++) {
        const o = (y * 64 + x) * 4;
        const s = (Math.floor(y / 4) * 16 + Math.floor(x / 4)) * 4; // nearest-neighbour ×4
        const diff = Math.max(...[0, 1, 2].map((c) => Math.abs(out.data[o + c] - art.rgba[s + c])));
        if (x < 32) keptDiff = Math.max(keptDiff, diff);
        else if (diff > 10) changed++;
      }
    }
    expect(keptDiff).toBe(0);
    expect(changed).toBeGreaterThan(100);
  });

  it("a /ws submit with a raw RGBA canvas runs the same img2img job", async () => {
    const ws = new WebSocket(stack.url.replace(/^http/, "ws") + "/ws");
    const frames: Record<string, any>[] = [];
    ws.on("message", (data) => frames.push(JSON.parse(data.toString("utf8"))));
    await new Promise((resolve, reject) => ws.once("open", resolve).once("error", reject));
    try {
      const inputImage = { width: art.width, height: art.height, rgba: art.rgba.toString("base64") };
      const job = { ...base, inputImage, strength: 0, pixel: { width: 16, height: 16 } };
      ws.send(JSON.stringify({ type: "submit", requestId: "w1", job }));
      const accepted = await waitFor(async () => frames.find((f) => f.requestId === "w1"));
      expect(accepted.type).toBe("accepted");
      const done = await waitFor(async () => frames.find((f) => f.id === accepted.id && f.type === "completed"));
      expect(Buffer.from(done.rgbaBase64, "base64").equals(art.rgba)).toBe(true);
    } finally {
      ws.close();
    }
  });
});

describe("img2img bad input: 4xx JSON with a code, nothing queued", () => {
  const refused = async (body: Record<string, unknown>) => {
    const res = await request(stack.url).post("/jobs").send(body);
    return { status: res.status, ...res.body.error };
  };
  const image = art.png.toString("base64");

  it.each([
    ["strength without an image", 400, "INVALID_REQUEST", "strength", { ...base, strength: 0.5 }],
    ["a mask without an image", 400, "INVALID_REQUEST", "mask", { ...base, mask: rightHalfMask() }],
    [
      "strength on a pixelize job",
      400,
      "INVALID_REQUEST",
      "strength",
      { inputImage: image, strength: 0.5, pixel: { width: 8, height: 8 } },
    ],
    ["strength above 1", 400, "INVALID_REQUEST", "strength", { ...base, inputImage: image, strength: 1.5 }],
    ["a mask of the wrong kind", 400, "INVALID_REQUEST", "mask", { ...base, inputImage: image, mask: 12 }],
    ["a mask of another size", 400, "INVALID_REQUEST", "mask", { ...base, inputImage: image, mask: rightHalfMask(8) }],
    [
      "raw RGBA one pixel short",
      400,
      "INVALID_REQUEST",
      "inputImage",
      { ...base, inputImage: { width: 16, height: 16, rgba: art.rgba.subarray(4).toString("base64") } },
    ],
    [
      "raw RGBA over 8 MiB",
      413,
      "PAYLOAD_TOO_LARGE",
      "inputImage",
      { ...base, inputImage: { width: 2048, height: 1025, rgba: Buffer.alloc(2048 * 1025 * 4).toString("base64") } },
    ],
  ])("%s → %i %s naming %s", async (_name, status, code, field, body) => {
    const before = (await request(stack.url).get("/jobs?limit=100")).body.items.length;
    const res = await refused(body);
    expect([res.status, res.code]).toEqual([status, code]);
    expect(JSON.stringify(res)).toContain(field);
    expect((await request(stack.url).get("/jobs?limit=100")).body.items.length).toBe(before);
  });
});

describe("MLX and torch agree on img2img", () => {
  const admin = (req: request.Test) => req.set("X-API-Key", KEY);

  it.each(["tiny-sd", "tiny-sdxl"])("on %s at strength 0.5, and with a mask, within 2/255", async (model) => {
    const queued = await admin(request(stack.url).post(`/models/${model}/conversions`)).send({ dtype: "float32" });
    expect([200, 202]).toContain(queued.status);
    const conversion = await waitFor(async () => {
      const r = await request(stack.url).get(`/conversions/${queued.body.id}`);
      return ["completed", "failed"].includes(r.body.status) ? r.body : undefined;
    });
    expect(conversion.status).toBe("completed");
    for (const extra of [{ strength: 0.5 }, { strength: 0.7, mask: rightHalfMask() }]) {
      const body = { ...base, model, inputImage: art.png.toString("base64"), ...extra };
      const torchJob = await run({ ...body, engine: "torch" });
      const mlxJob = await run({ ...body, engine: "mlx" });
      expect([torchJob.status, mlxJob.status]).toEqual(["completed", "completed"]);
      const diff = maxChannelDiff((await pixels(torchJob.id)).data, (await pixels(mlxJob.id)).data);
      expect({ model, masked: "mask" in extra, diff: diff <= 2 }).toEqual({ model, masked: "mask" in extra, diff: true });
    }
  });
});
