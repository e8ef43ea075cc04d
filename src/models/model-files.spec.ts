import { createHash } from "node:crypto";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { ModelFiles } from "./model-files";

const repo = path.resolve(__dirname, "../..");
let dir: string;
let calls: string;
let files: ModelFiles;

beforeAll(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), "model-files-"));
  // the real interpreter behind a wrapper that counts its starts, to see which answers came from the cache
  calls = path.join(dir, "calls.log");
  const wrapper = path.join(dir, "python");
  fs.writeFileSync(wrapper, `#!/bin/sh\necho "$3" >> "${calls}"\nexec "${path.join(repo, ".venv/bin/python")}" "$@"\n`, { mode: 0o755 });
  files = new ModelFiles(wrapper, path.join(repo, "python"));
});
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

const starts = () => (fs.existsSync(calls) ? fs.readFileSync(calls, "utf8").trim().split("\n").length : 0);

/** A converted-looking folder: one weights file and a manifest with its size and sha256, as the converter writes. */
function converted(name: string, bytes: Buffer): string {
  const folder = path.join(dir, name);
  fs.mkdirSync(path.join(folder, "unet"), { recursive: true });
  fs.writeFileSync(path.join(folder, "unet", "weights.safetensors"), bytes);
  const entry = { sha256: createHash("sha256").update(bytes).digest("hex"), size: bytes.length };
  fs.writeFileSync(path.join(folder, "manifest.json"), JSON.stringify({ name, files: { "unet/weights.safetensors": entry } }));
  return folder;
}

describe("ModelFiles (python model_files)", () => {
  it("inspects model folders in one start, and says why a folder is not one", async () => {
    const before = starts();
    const sd = path.join(repo, "models", "tiny-sd");
    const answers = await files.inspect([sd, path.join(repo, "models", "tiny-sdxl"), dir]);
    expect(starts() - before).toBe(1);
    expect(answers.get(sd)).toEqual({ architecture: "sd", crossAttentionDim: 32 });
    expect(answers.get(path.join(repo, "models", "tiny-sdxl"))).toMatchObject({ architecture: "sdxl" });
    expect(answers.get(dir)).toEqual({ error: expect.stringContaining("no model_index.json") });
  });

  it("verifies a conversion once, answers again from its stat fingerprint, and looks again after a change", async () => {
    const folder = converted("ok", Buffer.from("weights of a tiny unet"));
    const before = starts();
    expect(await files.verifyMlx(folder)).toEqual({ converted: true, verified: true });
    expect(await files.verifyMlx(folder)).toEqual({ converted: true, verified: true });
    expect(starts() - before).toBe(1);

    const weights = path.join(folder, "unet", "weights.safetensors");
    const tampered = Buffer.from("weights of a tiny UNET");
    fs.writeFileSync(weights, tampered); // same size, other bytes: only the hash can tell
    fs.utimesSync(weights, new Date(), new Date(Date.now() + 5000));
    const check = await files.verifyMlx(folder);
    expect(check).toMatchObject({ converted: true, verified: false, problem: expect.stringContaining("sha256") });
    expect(starts() - before).toBe(2);
  });

  it("answers a folder without a manifest without starting Python, and an unusable interpreter as a problem", async () => {
    const before = starts();
    expect(await files.verifyMlx(path.join(dir, "nothing-here"))).toEqual({ converted: false, verified: false, problem: "not converted" });
    expect(starts()).toBe(before);
    const broken = new ModelFiles(path.join(dir, "no-such-python"), path.join(repo, "python"));
    const check = await broken.verifyMlx(converted("other", Buffer.from("x")));
    expect(check).toMatchObject({ verified: false, problem: expect.stringMatching(/^cannot verify: /) });
    await expect(broken.inspect([dir])).rejects.toThrow(/model_files inspect failed/);
  });
});
