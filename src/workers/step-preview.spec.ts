import { createHash } from "node:crypto";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { PNG } from "pngjs";
import type { LiveProgress } from "../jobs/job-events-channel";
import { pngSize } from "../infra/png-size";
import { ProgressRelay, readStepPreview } from "./step-preview";

function tinyPng(width: number, height: number): Buffer {
  const png = new PNG({ width, height });
  png.data.fill(200);
  return PNG.sync.write(png);
}

describe("step previews from runner files", () => {
  let dir: string;
  beforeEach(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), "pixelai-preview-"));
  });
  afterEach(() => fs.rmSync(dir, { recursive: true, force: true }));

  function write(name: string, bytes: Buffer, where = dir): { previewPath: string; previewSha256: string } {
    const file = path.join(where, name);
    fs.writeFileSync(file, bytes);
    return { previewPath: file, previewSha256: createHash("sha256").update(bytes).digest("hex") };
  }

  it("reads a checked preview as base64 PNG with its size, and deletes the file", async () => {
    const png = tinyPng(8, 6);
    const line = write("preview-0001.png", png);
    const preview = await readStepPreview(dir, { step: 1, totalSteps: 4, ...line });
    expect(preview).toEqual({ width: 8, height: 6, pngBase64: png.toString("base64") });
    expect(fs.existsSync(line.previewPath)).toBe(false);
  });

  it("ignores a wrong hash, a path outside the job's dir, and a file that is not a PNG", async () => {
    const bad = { ...write("preview-0002.png", tinyPng(8, 8)), previewSha256: "0".repeat(64) };
    expect(await readStepPreview(dir, { step: 2, totalSteps: 4, ...bad })).toBeNull();
    const outside = fs.mkdtempSync(path.join(os.tmpdir(), "pixelai-elsewhere-"));
    try {
      const line = write("preview-0003.png", tinyPng(8, 8), outside);
      expect(await readStepPreview(dir, { step: 3, totalSteps: 4, ...line })).toBeNull();
      expect(fs.existsSync(line.previewPath)).toBe(true); // not ours: left alone
    } finally {
      fs.rmSync(outside, { recursive: true, force: true });
    }
    const text = write("preview-0004.png", Buffer.from("not a png at all, just text"));
    expect(await readStepPreview(dir, { step: 4, totalSteps: 4, ...text })).toBeNull();
    expect(pngSize(tinyPng(3, 5))).toEqual({ width: 3, height: 5 });
  });

  it("relays every candidate's preview of a count > 1 step in index order, or none if one is unusable", async () => {
    const published: LiveProgress[] = [];
    const relay = new ProgressRelay(dir, async (p) => void published.push(p));
    const first = write("preview-0002.png", tinyPng(8, 8));
    const second = write("preview-0002-1.png", tinyPng(8, 4));
    relay.push({
      step: 2,
      totalSteps: 4,
      ...first,
      previews: [
        { path: first.previewPath, sha256: first.previewSha256, width: 8, height: 8 },
        { path: second.previewPath, sha256: second.previewSha256, width: 8, height: 4 },
      ],
    });
    const third = write("preview-0004.png", tinyPng(8, 8));
    const broken = { ...write("preview-0004-1.png", tinyPng(8, 8)), previewSha256: "0".repeat(64) };
    relay.push({
      step: 4,
      totalSteps: 4,
      ...third,
      previews: [
        { path: third.previewPath, sha256: third.previewSha256 },
        { path: broken.previewPath, sha256: broken.previewSha256 },
      ],
    });
    await relay.drain();
    expect(published[0].previews?.map((p) => [p.width, p.height])).toEqual([
      [8, 8],
      [8, 4],
    ]);
    expect(published[0].previews?.[0]).toEqual(published[0].preview);
    expect(published[1].preview).toBeDefined();
    expect(published[1].previews).toBeUndefined();
  });

  it("publishes in step order even when an earlier step waits on its preview file", async () => {
    const published: Array<{ step: number; preview: boolean }> = [];
    const relay = new ProgressRelay(dir, async (p) => {
      published.push({ step: p.step, preview: !!p.preview });
    });
    relay.push({ step: 1, totalSteps: 3, ...write("preview-0001.png", tinyPng(8, 8)) });
    relay.push({ step: 2, totalSteps: 3 });
    relay.push({ step: 3, totalSteps: 3, previewPath: path.join(dir, "missing.png"), previewSha256: "x" });
    await relay.drain();
    expect(published).toEqual([
      { step: 1, preview: true },
      { step: 2, preview: false },
      { step: 3, preview: false },
    ]);
  });
});
