import { execFileSync } from "node:child_process";
import path from "node:path";
import WebSocket from "ws";
import { startTestStack, TestStack, waitFor } from "../support/stack";

/**
 * The artist's workflow end to end: submit frames built by the extension's own Lua (aseprite/tools/submit_frame.lua
 * runs request.lua + protocol.lua on dialog values, as Aseprite would), answered by the real stack, and completed
 * frames read back by the extension's parser (aseprite/tools/decode_frame.lua).
 */
type Frame = Record<string, any>;

let stack: TestStack;
const repoRoot = path.resolve(__dirname, "..", "..");
const lua = (tool: string, input: unknown, ...args: string[]) =>
  execFileSync("lua5.4", [path.join(repoRoot, "aseprite", "tools", tool), ...args], { input: JSON.stringify(input) })
    .toString()
    .trim();

beforeAll(async () => {
  stack = await startTestStack();
});

afterAll(async () => {
  await stack?.close();
});

/** Sends the extension's frame for `values` over /ws and returns the job's final frame. */
async function runFromDialog(values: Record<string, unknown>, requestId: string): Promise<Frame> {
  const frame = lua("submit_frame.lua", values, requestId);
  expect(frame.startsWith("{")).toBe(true);
  const ws = new WebSocket(stack.url.replace(/^http/, "ws") + "/ws");
  const frames: Frame[] = [];
  ws.on("message", (data) => frames.push(JSON.parse(data.toString("utf8"))));
  await new Promise((resolve, reject) => ws.once("open", resolve).once("error", reject));
  try {
    ws.send(frame);
    const accepted = await waitFor(async () => frames.find((f) => f.requestId === requestId && ["accepted", "error"].includes(f.type)));
    expect(accepted).toMatchObject({ type: "accepted" });
    return await waitFor(async () => frames.find((f) => ["completed", "failed", "cancelled"].includes(f.type) && f.id === accepted.id));
  } finally {
    ws.close();
  }
}

/** A small opaque sprite of a few flat colours, as Aseprite's Image.bytes gives it (RGBA rows). */
function sprite(width: number, height: number): Buffer {
  const colours = [
    [20, 12, 28],
    [208, 70, 72],
    [109, 170, 44],
    [222, 238, 214],
  ];
  const out = Buffer.alloc(width * height * 4);
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) {
      const c = colours[(Math.floor(x / 2) + 3 * Math.floor(y / 3)) % colours.length];
      out.set([...c, 255], (y * width + x) * 4);
    }
  }
  return out;
}

const tiny = { sizePreset: "Custom", width: "64", height: "64", steps: "2", seed: "17" };

describe("the extension's requests through the real stack", () => {
  it("From canvas at strength 0 puts the very sprite back, at its own size", async () => {
    const rgba = sprite(12, 9);
    const done = await runFromDialog(
      { ...tiny, prompt: "a knight", source: { width: 12, height: 9, rgbaBase64: rgba.toString("base64") }, strength: 0 },
      "canvas-0",
    );
    expect(done).toMatchObject({ type: "completed", width: 12, height: 9 });
    expect(Buffer.from(done.rgbaBase64, "base64").equals(rgba)).toBe(true);
    expect(lua("decode_frame.lua", done)).toBe(`ok completed 12 9 ${12 * 9 * 4}`);
  });

  it("From canvas at strength 0.5 runs img2img and lands at the source's size", async () => {
    const rgba = sprite(16, 16);
    const done = await runFromDialog(
      { ...tiny, prompt: "a knight", source: { width: 16, height: 16, rgbaBase64: rgba.toString("base64") }, strength: 50 },
      "canvas-50",
    );
    expect(done).toMatchObject({ type: "completed", width: 16, height: 16 });
    expect(Buffer.from(done.rgbaBase64, "base64").equals(rgba)).toBe(false);
  });

  it("Use sprite palette: the result uses only the sprite's colours", async () => {
    const palette = ["#140c1c", "#d04648", "#6daa2c", "#deeed6", "#597dce"];
    const done = await runFromDialog({ ...tiny, prompt: "a knight", pixelPreset: "32x32", palette }, "palette-1");
    expect(done).toMatchObject({ type: "completed", width: 32, height: 32 });
    const rgba = Buffer.from(done.rgbaBase64, "base64");
    const used = new Set<string>();
    for (let i = 0; i < rgba.length; i += 4) {
      if (rgba[i + 3] === 0) continue;
      used.add("#" + [0, 1, 2].map((c) => rgba[i + c].toString(16).padStart(2, "0")).join(""));
    }
    expect(used.size).toBeGreaterThan(0);
    for (const c of used) expect(palette).toContain(c);
  });

  it("Candidates: count 4 from the dialog gives 4 different images the extension's parser takes, seeds seed..seed+3", async () => {
    const done = await runFromDialog({ ...tiny, prompt: "a knight", pixelPreset: "32x32", count: 4 }, "candidates-4");
    expect(done).toMatchObject({ type: "completed", width: 32, height: 32, seed: 17 });
    expect(done.candidates).toHaveLength(4);
    expect(new Set(done.candidates.map((c: Frame) => c.rgbaBase64)).size).toBe(4);
    expect(done.candidates[0].rgbaBase64).toBe(done.rgbaBase64);
    expect(lua("decode_frame.lua", done)).toBe(`ok completed 32 32 ${32 * 32 * 4} candidates 4 17,18,19,20`);
  });

  it("From canvas with a selection mask and 2 candidates keeps the unselected pixels in both", async () => {
    const rgba = sprite(16, 16);
    const mask = Buffer.alloc(16 * 16 * 4);
    for (let y = 4; y < 12; y++) for (let x = 4; x < 12; x++) mask.set([255, 255, 255, 255], (y * 16 + x) * 4);
    const source = { width: 16, height: 16, rgbaBase64: rgba.toString("base64"), maskBase64: mask.toString("base64") };
    const done = await runFromDialog({ ...tiny, prompt: "a knight", source, strength: 80, count: 2 }, "canvas-mask");
    expect(done).toMatchObject({ type: "completed", width: 16, height: 16 });
    expect(done.candidates).toHaveLength(2);
    let changedInside = 0;
    for (const candidate of done.candidates) {
      const out = Buffer.from(candidate.rgbaBase64, "base64");
      for (let y = 4; y < 12; y++) {
        for (let x = 4; x < 12; x++) {
          const i = (y * 16 + x) * 4;
          if (!out.subarray(i, i + 4).equals(rgba.subarray(i, i + 4))) changedInside++;
        }
      }
      for (let y = 0; y < 16; y++) {
        for (let x = 0; x < 16; x++) {
          if (x >= 4 && x < 12 && y >= 4 && y < 12) continue;
          const i = (y * 16 + x) * 4;
          expect([...out.subarray(i, i + 4)]).toEqual([...rgba.subarray(i, i + 4)]);
        }
      }
    }
    expect(changedInside).toBeGreaterThan(0); // the selection itself was repainted
  });
});
