import { PNG } from "pngjs";
import request from "supertest";
import WebSocket from "ws";
import { decodePng, opaqueColours, startTestStack, TestStack, waitFor } from "../support/stack";
import { fetchPng, finishedJob, submitJob } from "../support/jobs-client";

/** What the pixel-art post-processing did, as GET /jobs/{id} reports it (result.pixel); pixelize jobs. */
let stack: TestStack;

beforeAll(async () => {
  stack = await startTestStack();
});

afterAll(async () => {
  await stack?.close();
});

const FITS = /^(native|fixed|nearest from \d+x\d+)$/;

describe("the pixel report in job results", () => {
  it("a job with pixel grid auto shows the grid step's report in GET /jobs/{id}, and the history lists it too", async () => {
    const id = await submitJob(stack.url, {
      prompt: "a knight",
      width: 64,
      height: 64,
      steps: 3,
      seed: 11,
      removeBackground: "color-key",
      pixel: { width: 32, height: 32, colors: 8, grid: "auto" },
    });
    const job = await finishedJob(stack.url, id);
    expect(job.status).toBe("completed");
    const grid = job.result.pixel.grid;
    expect(grid.mode).toBe("auto");
    expect(grid.fit).toMatch(FITS);
    expect(grid.confidence).toBeGreaterThanOrEqual(0);
    expect(grid.confidence).toBeLessThanOrEqual(1);
    // The tiny model paints noise: a grid may or may not be found; when one is, it is described in full.
    if (grid.fit !== "fixed") {
      expect(grid.cells).toHaveLength(2);
      expect(grid.pitch).toHaveLength(2);
      expect(grid.phase).toHaveLength(2);
    }
    expect(job.result.pixel.background.colour).toHaveLength(3);
    expect(job.result.pixel.background.tolerance).toBeGreaterThan(0);
    const listed = await request(stack.url).get("/jobs?limit=5");
    expect(listed.body.items.find((j: { id: string }) => j.id === id).result.pixel).toEqual(job.result.pixel);
  });

  it("grid fixed says so; a job without a pixel spec has no report", async () => {
    const fixed = await submitJob(stack.url, {
      prompt: "a knight",
      width: 64,
      height: 64,
      steps: 2,
      seed: 1,
      pixel: { width: 16, height: 16, grid: "fixed" },
    });
    const plain = await submitJob(stack.url, { prompt: "a knight", width: 64, height: 64, steps: 2, seed: 1 });
    expect((await finishedJob(stack.url, fixed)).result.pixel).toEqual({ grid: { mode: "fixed" } });
    const plainJob = await finishedJob(stack.url, plain);
    expect(plainJob.status).toBe("completed");
    expect(plainJob.result.pixel).toBeUndefined();
  });

  it("the /ws completed frame carries the same report", async () => {
    const ws = new WebSocket(stack.url.replace(/^http/, "ws") + "/ws");
    const frames: Record<string, any>[] = [];
    ws.on("message", (data) => frames.push(JSON.parse(data.toString("utf8"))));
    await new Promise((resolve, reject) => ws.once("open", resolve).once("error", reject));
    try {
      const job = { prompt: "a knight", width: 64, height: 64, steps: 2, seed: 5, pixel: { width: 16, height: 16 } };
      ws.send(JSON.stringify({ type: "submit", requestId: "r1", job }));
      const accepted = await waitFor(async () => frames.find((f) => f.type === "accepted"));
      const completed = await waitFor(async () => frames.find((f) => f.type === "completed" && f.id === accepted.id));
      const view = (await request(stack.url).get(`/jobs/${accepted.id}`)).body;
      expect(completed.pixel).toEqual(view.result.pixel);
      expect(completed.pixel.grid.mode).toBe("auto");
    } finally {
      ws.close();
    }
  });
});

/** Pseudo pixel art: `cells` (rows of [r, g, b]) painted `pitch` px a cell, as an RGB PNG; also the art itself. */
function pseudoPixelArt(cols: number, rows: number, pitch: number): { png: Buffer; cell: (x: number, y: number) => number[] } {
  const palette = [
    [230, 40, 40],
    [40, 200, 60],
    [40, 60, 220],
    [240, 220, 60],
    [20, 20, 20],
  ];
  const cell = (x: number, y: number) => palette[(x * 7 + y * 3 + ((x * y) % 4)) % palette.length];
  const width = Math.round(cols * pitch);
  const height = Math.round(rows * pitch);
  const image = new PNG({ width, height, colorType: 2 });
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) {
      const [r, g, b] = cell(Math.min(cols - 1, Math.floor(x / pitch)), Math.min(rows - 1, Math.floor(y / pitch)));
      const i = (y * width + x) * 4;
      image.data[i] = r;
      image.data[i + 1] = g;
      image.data[i + 2] = b;
      image.data[i + 3] = 255;
    }
  }
  return { png: PNG.sync.write(image, { colorType: 2 }), cell };
}

async function refused(body: unknown): Promise<{ status: number; code: string; message: string }> {
  const res = await request(stack.url)
    .post("/jobs")
    .send(body as object);
  return { status: res.status, code: res.body?.error?.code, message: res.body?.error?.message };
}

describe("pixelize jobs: an input image and no prompt", () => {
  const art = pseudoPixelArt(20, 15, 9.6);

  it("runs through the queue and a runner without a model: completed, in the history, PNG of the grid's size and colours", async () => {
    const res = await request(stack.url)
      .post("/jobs")
      .send({ inputImage: art.png.toString("base64"), pixel: { width: 20, height: 15 } });
    expect(res.status).toBe(202);
    expect(res.body).toMatchObject({ status: "queued", engine: "torch", model: "", seed: 0 });
    const job = await finishedJob(stack.url, res.body.id);
    expect(job).toMatchObject({
      kind: "pixelize",
      status: "completed",
      model: "",
      prompt: "",
      steps: 0,
      width: 192,
      height: 144,
      device: "cpu",
    });
    expect(job.result).toMatchObject({ width: 20, height: 15, imageUrl: `/jobs/${job.id}/image` });
    expect(job.result.pixel.grid).toMatchObject({ mode: "auto", fit: "native", cells: [20, 15] });
    expect(job.result.pixel.grid.pitch[0]).toBeCloseTo(9.6, 0);
    expect(job.timings.postprocessMs).toEqual(expect.any(Number));
    expect(job.timings.generateMs).toBeNull();
    const png = decodePng(await fetchPng(stack.url, job.id));
    expect([png.width, png.height]).toEqual([20, 15]);
    let exact = 0;
    for (let y = 0; y < 15; y++) {
      for (let x = 0; x < 20; x++) {
        const i = (y * 20 + x) * 4;
        const want = art.cell(x, y);
        if ([0, 1, 2].every((c) => Math.abs(png.data[i + c] - want[c]) <= 2) && png.data[i + 3] === 255) exact++;
      }
    }
    expect(exact).toBe(300);
    const history = await request(stack.url).get("/jobs?status=completed&limit=100");
    expect(history.body.items.find((j: { id: string }) => j.id === job.id)).toMatchObject({ kind: "pixelize", model: "" });
  });

  it("colour-keys the background and reports it; a data URL is accepted", async () => {
    const id = await submitJob(stack.url, {
      inputImage: `data:image/png;base64,${art.png.toString("base64")}`,
      pixel: { width: 20, height: 15, colors: 4 },
      removeBackground: "color-key",
    });
    const job = await finishedJob(stack.url, id);
    expect(job.status).toBe("completed");
    expect(job.result.pixel.background.colour).toHaveLength(3);
    const png = decodePng(await fetchPng(stack.url, id));
    expect(opaqueColours(png)).toBeLessThanOrEqual(3);
  });

  it("refuses bad input with clear 4xx codes before anything is queued", async () => {
    const image = art.png.toString("base64");
    const pixel = { width: 20, height: 15 };
    expect(await refused({ inputImage: "not base64!", pixel })).toMatchObject({ status: 400, code: "INVALID_REQUEST" });
    const gif = Buffer.from("GIF89a, then some bytes that no PNG decoder takes").toString("base64");
    expect(await refused({ inputImage: gif, pixel })).toMatchObject({
      status: 400,
      code: "INVALID_REQUEST",
      message: expect.stringMatching(/not a PNG/),
    });
    const cut = art.png.subarray(0, art.png.length - 40).toString("base64");
    expect(await refused({ inputImage: cut, pixel })).toMatchObject({
      status: 400,
      code: "INVALID_REQUEST",
      message: expect.stringMatching(/not a valid PNG/),
    });
    expect(await refused({ inputImage: image, pixel, strength: 0.3 })).toMatchObject({
      status: 400,
      code: "INVALID_REQUEST",
      message: expect.stringMatching(/strength/),
    });
    expect(await refused({ inputImage: image })).toMatchObject({
      status: 400,
      code: "INVALID_REQUEST",
      message: expect.stringMatching(/pixel/),
    });
    expect(await refused({ inputImage: image, pixel, steps: 4, model: "tiny-sd" })).toMatchObject({
      status: 400,
      code: "INVALID_REQUEST",
      message: expect.stringMatching(/model, steps/),
    });
    expect(await refused({ pixel })).toMatchObject({
      status: 400,
      code: "INVALID_REQUEST",
      message: expect.stringMatching(/prompt is required/),
    });
  });

  it("an image over the limit is 413 PAYLOAD_TOO_LARGE in our error shape; so is any other body over 64 KiB", async () => {
    const tooBig = await refused({ inputImage: Buffer.alloc(8 * 1024 * 1024 + 3).toString("base64"), pixel: { width: 8, height: 8 } });
    expect(tooBig).toMatchObject({ status: 413, code: "PAYLOAD_TOO_LARGE", message: expect.stringMatching(/inputImage/) });
    const hugeBody = await refused({ inputImage: "A".repeat(12 * 1024 * 1024), pixel: { width: 8, height: 8 } });
    expect(hugeBody).toMatchObject({ status: 413, code: "PAYLOAD_TOO_LARGE" });
    const bigBeside = await refused({
      inputImage: art.png.toString("base64"),
      pixel: { width: 8, height: 8 },
      idempotencyKey: "k",
      extra: "x".repeat(70_000),
    });
    expect(bigBeside).toMatchObject({ status: 413, code: "PAYLOAD_TOO_LARGE" });
  });

  it("a /ws submit with an input image (a frame past 64 KiB) runs the same pixelize job", async () => {
    const { png } = pseudoPixelArt(40, 30, 12); // 480×360, well over 64 KiB as base64
    expect(png.length * (4 / 3)).toBeLessThan(64 * 1024 * 8);
    const ws = new WebSocket(stack.url.replace(/^http/, "ws") + "/ws");
    const frames: Record<string, any>[] = [];
    ws.on("message", (data) => frames.push(JSON.parse(data.toString("utf8"))));
    await new Promise((resolve, reject) => ws.once("open", resolve).once("error", reject));
    try {
      const big = Buffer.concat([png, Buffer.alloc(80 * 1024)]); // trailing bytes after IEND: still a PNG, frame > 64 KiB
      ws.send(
        JSON.stringify({ type: "submit", requestId: "p1", job: { inputImage: big.toString("base64"), pixel: { width: 40, height: 30 } } }),
      );
      const accepted = await waitFor(async () => frames.find((f) => f.requestId === "p1"));
      expect(accepted.type).toBe("accepted");
      const completed = await waitFor(async () =>
        frames.find((f) => f.id === accepted.id && f.type !== "accepted" && f.type !== "progress"),
      );
      expect(completed).toMatchObject({ type: "completed", width: 40, height: 30 });
      expect(completed.pixel.grid.cells).toEqual([40, 30]);
      ws.send(
        JSON.stringify({
          type: "submit",
          requestId: "p2",
          job: { inputImage: png.toString("base64"), mask: 7, prompt: "a knight", pixel: { width: 4, height: 4 } },
        }),
      );
      expect(await waitFor(async () => frames.find((f) => f.requestId === "p2"))).toMatchObject({
        type: "error",
        code: "INVALID_REQUEST",
      });
      ws.send(JSON.stringify({ type: "subscribe", id: "x".repeat(70 * 1024) }));
      expect(await waitFor(async () => frames.find((f) => f.type === "error" && f.code === "PAYLOAD_TOO_LARGE"))).toBeDefined();
    } finally {
      ws.close();
    }
  });
});

describe("palettes: pixel.palette and pixel.dither", () => {
  const art = pseudoPixelArt(20, 15, 9.6);

  function colourSet(png: { data: Buffer }): Set<string> {
    const seen = new Set<string>();
    for (let i = 0; i < png.data.length; i += 4) {
      if (png.data[i + 3] === 0) continue;
      seen.add("#" + [0, 1, 2].map((c) => png.data[i + c].toString(16).padStart(2, "0")).join(""));
    }
    return seen;
  }

  it("GET /palettes lists the built-ins with their colours", async () => {
    const res = await request(stack.url).get("/palettes");
    expect(res.status).toBe(200);
    const names = res.body.items.map((p: { name: string }) => p.name);
    expect(names).toEqual(expect.arrayContaining(["pico-8", "db16", "db32", "endesga-32", "gameboy", "nes"]));
    const sizes = Object.fromEntries(res.body.items.map((p: { name: string; colours: string[] }) => [p.name, p.colours.length]));
    expect(sizes).toMatchObject({ "pico-8": 16, db16: 16, db32: 32, "endesga-32": 32, gameboy: 4, nes: 55 });
  });

  it("a generation with a built-in palette uses only its colours, dithered or not", async () => {
    const gameboy = (await request(stack.url).get("/palettes")).body.items.find((p: { name: string }) => p.name === "gameboy");
    const allowed = new Set<string>(gameboy.colours);
    for (const dither of ["none", "floyd-steinberg"]) {
      const id = await submitJob(stack.url, {
        prompt: "a knight",
        width: 64,
        height: 64,
        steps: 2,
        seed: 21,
        pixel: { width: 32, height: 32, palette: "gameboy", dither },
      });
      const job = await finishedJob(stack.url, id);
      expect(job.status).toBe("completed");
      const used = colourSet(decodePng(await fetchPng(stack.url, id)));
      expect(used.size).toBeGreaterThan(0);
      for (const c of used) expect(allowed).toContain(c);
    }
  });

  it("a pixelize job maps onto the artist's own list; colors keeps that many of it; ordered dither stays in it", async () => {
    const mine = ["#101010", "#E0E0E0", "#c03030", "#3030c0", "#30c030"];
    const allowed = new Set(mine.map((c) => c.toLowerCase()));
    const full = await submitJob(stack.url, { inputImage: art.png.toString("base64"), pixel: { width: 20, height: 15, palette: mine } });
    const two = await submitJob(stack.url, {
      inputImage: art.png.toString("base64"),
      pixel: { width: 20, height: 15, palette: mine, colors: 2, dither: "ordered" },
    });
    const fullColours = colourSet(decodePng(await fetchPng(stack.url, (await finishedJob(stack.url, full)).id)));
    const twoColours = colourSet(decodePng(await fetchPng(stack.url, (await finishedJob(stack.url, two)).id)));
    for (const c of [...fullColours, ...twoColours]) expect(allowed).toContain(c);
    expect(fullColours.size).toBeGreaterThan(2);
    expect(twoColours.size).toBeLessThanOrEqual(2);
  });

  it("refuses a bad palette or dither with 400 naming the field, before anything is queued", async () => {
    const base = { prompt: "a knight", width: 64, height: 64, steps: 1 };
    const unknown = await refused({ ...base, pixel: { width: 16, height: 16, palette: "c64" } });
    expect(unknown).toMatchObject({ status: 400, code: "INVALID_REQUEST" });
    expect(unknown.message).toContain("pico-8");
    expect(await refused({ ...base, pixel: { width: 16, height: 16, palette: ["#12345"] } })).toMatchObject({
      status: 400,
      code: "INVALID_REQUEST",
    });
    expect(await refused({ ...base, pixel: { width: 16, height: 16, palette: [] } })).toMatchObject({ status: 400 });
    const many = Array.from({ length: 257 }, (_, i) => `#${i.toString(16).padStart(6, "0")}`);
    expect(await refused({ ...base, pixel: { width: 16, height: 16, palette: many } })).toMatchObject({ status: 400 });
    expect(await refused({ ...base, pixel: { width: 16, height: 16, dither: "bayer" } })).toMatchObject({
      status: 400,
      code: "INVALID_REQUEST",
    });
  });
});
