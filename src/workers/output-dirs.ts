import fs from "node:fs/promises";
import os from "node:os";
import path from "node:path";

/** Each attempt gets `<tmp>/pixelai-<jobId>-XXXXXX` for the runner's result and previews; the worker removes it after. */
export function outputDirPrefix(jobId: string, root = os.tmpdir()): string {
  return path.join(root, `pixelai-${jobId}-`);
}

const OUTPUT_DIR = /^pixelai-[0-9a-hjkmnp-tv-z]{26}-[A-Za-z0-9]{6}$/;

/**
 * Removes output dirs a SIGKILLed worker could not clean up. Only dirs untouched for longer than `olderThanMs` go: a
 * live attempt on this machine (any worker's) writes into its dir well within the job time budget.
 */
export async function sweepStaleOutputDirs(olderThanMs: number, root = os.tmpdir(), now = Date.now()): Promise<string[]> {
  const removed: string[] = [];
  for (const name of await fs.readdir(root).catch(() => [] as string[])) {
    if (!OUTPUT_DIR.test(name)) continue;
    const dir = path.join(root, name);
    const st = await fs.stat(dir).catch(() => null);
    if (!st?.isDirectory() || now - st.mtimeMs < olderThanMs) continue;
    await fs.rm(dir, { recursive: true, force: true });
    removed.push(name);
  }
  return removed;
}
