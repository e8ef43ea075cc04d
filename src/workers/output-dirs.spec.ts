import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { outputDirPrefix, sweepStaleOutputDirs } from "./output-dirs";

describe("stale output dirs", () => {
  let root: string;
  beforeEach(() => {
    root = fs.mkdtempSync(path.join(os.tmpdir(), "sweep-test-"));
  });
  afterEach(() => fs.rmSync(root, { recursive: true, force: true }));

  it("removes only old pixelai job dirs and leaves fresh ones and anything else alone", async () => {
    const old = fs.mkdtempSync(outputDirPrefix("01m86xqt9319enymr6q0p1jxtp", root));
    const fresh = fs.mkdtempSync(outputDirPrefix("01m86xqt9319enymr6q0p1jxtq", root));
    const other = path.join(root, "pixelai-not-a-job-dir");
    fs.mkdirSync(other);
    fs.writeFileSync(path.join(old, "result.png"), "x");
    const hourAgo = new Date(Date.now() - 3_600_000);
    fs.utimesSync(old, hourAgo, hourAgo);
    fs.utimesSync(other, hourAgo, hourAgo);
    const removed = await sweepStaleOutputDirs(600_000, root);
    expect(removed).toEqual([path.basename(old)]);
    expect(fs.existsSync(old)).toBe(false);
    expect(fs.existsSync(fresh)).toBe(true);
    expect(fs.existsSync(other)).toBe(true);
  });
});
