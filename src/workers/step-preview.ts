import { createHash } from "node:crypto";
import fs from "node:fs/promises";
import path from "node:path";
import type { LiveProgress, StepPreview } from "../jobs/job-events-channel";
import { pngSize } from "../infra/png-size";

/** A runner's progress line (docs/runner-protocol.md); the preview fields are unchecked: they come from a child process. */
export interface ProgressLine {
  step: number;
  totalSteps: number;
  previewPath?: unknown;
  previewSha256?: unknown;
  /** count > 1: every candidate's preview file ({path, sha256, width, height}), entry 0 the same as previewPath. */
  previews?: unknown;
}

/**
 * A preview is the latent resolution (≤ 128 px a side, a few KiB); anything much bigger is not one of ours and would
 * bloat every Redis event and WebSocket frame it rides on.
 */
export const MAX_PREVIEW_BYTES = 256 * 1024;

/**
 * Reads the preview file a runner named on a progress line (docs/runner-protocol.md: bytes travel as files, path +
 * sha256 on the line), checks it, and deletes it. Null when the line has none or it is unusable: a preview is a
 * nicety and must never fail the job.
 */
export async function readStepPreview(outputDir: string, event: ProgressLine): Promise<StepPreview | null> {
  const file = event.previewPath;
  const sha256 = event.previewSha256;
  if (typeof file !== "string" || typeof sha256 !== "string") return null;
  // Only files in this job's own temp dir: the line comes from a child process, not from a trusted source of paths.
  const resolved = path.resolve(file);
  if (path.dirname(resolved) !== path.resolve(outputDir)) return null;
  try {
    const stat = await fs.stat(resolved);
    if (!stat.isFile() || stat.size > MAX_PREVIEW_BYTES) return null;
    const png = await fs.readFile(resolved);
    if (createHash("sha256").update(png).digest("hex") !== sha256) return null;
    const size = pngSize(png);
    return size ? { ...size, pngBase64: png.toString("base64") } : null;
  } catch {
    return null; // gone already (the job ended and its temp dir was removed)
  } finally {
    await fs.rm(resolved, { force: true }).catch(() => undefined);
  }
}

/**
 * Candidates 1.. of a step's previews (entry 0 is the line's previewPath, already read). All or nothing: a list with
 * a hole would shift every later candidate's picture onto the wrong index.
 */
async function readCandidatePreviews(outputDir: string, list: unknown): Promise<StepPreview[] | null> {
  if (!Array.isArray(list) || list.length < 2) return null;
  const rest = list.slice(1) as Array<{ path?: unknown; sha256?: unknown }>;
  const read = await Promise.all(
    rest.map((p) => readStepPreview(outputDir, { step: 0, totalSteps: 0, previewPath: p?.path, previewSha256: p?.sha256 })),
  );
  return read.every((p): p is StepPreview => p !== null) ? read : null;
}

/**
 * Publishes a runner's progress lines to the live channel (BullMQ job progress) strictly in step order: a line with a
 * preview needs a file read first, and a later plain step must not overtake it.
 */
export class ProgressRelay {
  private chain: Promise<void> = Promise.resolve();

  constructor(
    private readonly outputDir: string,
    private readonly publish: (progress: LiveProgress) => Promise<unknown>,
  ) {}

  push(event: ProgressLine): void {
    this.chain = this.chain
      .then(async () => {
        const live: LiveProgress = { step: event.step, totalSteps: event.totalSteps };
        const preview = event.previewPath ? await readStepPreview(this.outputDir, event) : null;
        if (preview) live.preview = preview;
        const previews = preview ? await readCandidatePreviews(this.outputDir, event.previews) : null;
        if (previews) live.previews = [preview!, ...previews];
        await this.publish(live);
      })
      .catch(() => undefined); // live progress is best effort; the database keeps the durable state
  }

  /** Resolves once everything pushed so far is published (or given up). */
  drain(): Promise<void> {
    return this.chain;
  }
}
