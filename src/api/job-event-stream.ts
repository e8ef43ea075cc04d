import type { Response } from "express";
import type { LiveProgress } from "../jobs/job-queue";
import type { JobView } from "../jobs/jobs.dto";
import { FINAL_STATUSES, JobEventsHub } from "./job-events";
import { watchInstallProgress } from "./install-progress-watch";

export interface JobEventStreamOptions {
  /** A comment line this often, so proxies and idle-connection timeouts keep the stream open. */
  heartbeatMs: number;
  /** Forward `preview` events (the job must have been submitted with `preview`). */
  previews: boolean;
  /**
   * Re-reads the job (GET /jobs/{id}) while it waits queued for a hub install, for `install` events: install progress
   * lives in the install's row, not on the live channel. Absent: no install events.
   */
  reread?: () => Promise<JobView>;
}

/**
 * Past this much unsent output (a client that reads slowly) previews are dropped: progress and the final event still
 * go out, previews are only worth having while they are current.
 */
const PREVIEW_BACKLOG_BYTES = 512 * 1024;

/**
 * GET /jobs/{id}/events as Server-Sent Events: `install {installs}` while a queued job waits for a hub install,
 * `progress {step,totalSteps}`, optionally `preview {step,width,height, pngBase64, previews?}` (`previews`: one per
 * candidate of a job with count > 1), then one event named after the final state (`completed` | `failed` | `cancelled`) carrying the job
 * (as GET /jobs/{id}), and the stream ends. Live updates come from the process-wide JobEventsHub (Redis pub/sub),
 * so the worker may run anywhere; a job that already ended gets its final event at once. EventSource reconnects when a
 * stream ends: a client closes it on the final event.
 */
export function streamJobEvents(res: Response, hub: JobEventsHub, current: JobView, opts: JobEventStreamOptions): void {
  res.status(200);
  res.set({
    "Content-Type": "text/event-stream; charset=utf-8",
    "Cache-Control": "no-cache, no-transform",
    Connection: "keep-alive",
    "X-Accel-Buffering": "no", // nginx would otherwise hold events back in its buffer
  });
  res.flushHeaders();
  res.socket?.setNoDelay(true);

  let open = true;
  const send = (event: string, data: unknown) => {
    if (open) res.write(`event: ${event}\ndata: ${JSON.stringify(data)}\n\n`);
  };
  const heartbeat = setInterval(() => open && res.write(": heartbeat\n\n"), opts.heartbeatMs);
  heartbeat.unref();
  let stop = () => {};
  const end = () => {
    if (!open) return;
    open = false;
    clearInterval(heartbeat);
    stop();
    res.end();
  };
  // The response's close (client gone, or our own end) rather than the request's: that one may fire once the
  // (empty) request body has been read.
  res.on("close", end);

  // Where the job is now, so a late subscriber does not wait for the next step to learn it.
  if (!FINAL_STATUSES.has(current.status)) send("progress", current.progress);
  // A job waiting for its hub model or LoRA: `install` events each time its installs' progress changes.
  if (opts.reread) {
    const stopInstalls = watchInstallProgress(opts.reread, (installs) => send("install", { installs }), current);
    res.on("close", stopInstalls);
  }
  stop = hub.watch(current.id, {
    progress: (p: LiveProgress) => {
      send("progress", { step: p.step, totalSteps: p.totalSteps });
      if (opts.previews && p.preview && res.writableLength < PREVIEW_BACKLOG_BYTES) {
        const previews = p.previews?.map((c) => ({ width: c.width, height: c.height, pngBase64: c.pngBase64 }));
        // a job with count > 1 adds every candidate's (entry 0 is the top-level one)
        send("preview", {
          step: p.step,
          width: p.preview.width,
          height: p.preview.height,
          pngBase64: p.preview.pngBase64,
          ...(previews ? { previews } : {}),
        });
      }
    },
    final: (view) => {
      send(view.status, view);
      end();
    },
  });
  if (!open) stop(); // the client left (or the job ended) while the watch was being set up
}
