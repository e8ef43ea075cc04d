import type IORedis from "ioredis";
import type { FinalStateNotifier, FinalStatus } from "./jobs.repository";

/** An approximate image of the latents at one step (a job asked with `preview`): latent-sized PNG, base64. */
export interface StepPreview {
  width: number;
  height: number;
  pngBase64: string;
}

export interface LiveProgress {
  step: number;
  totalSteps: number;
  /** Only on the steps a preview was made for; the live channel carries it, the database never does. */
  preview?: StepPreview;
  /** A job with count > 1, on those steps: every candidate's preview in index order (`preview` is entry 0). */
  previews?: StepPreview[];
}

/** One message on the channel: a step of a running job, or "this job is final now: read it from the database". */
export type JobEventMessage = { jobId: string; progress: LiveProgress } | { jobId: string; final: FinalStatus };

export interface JobEventHandlers {
  message(event: JobEventMessage): void;
  /** The subscription is back after a Redis outage: messages sent meanwhile are lost, so re-read what matters. */
  resubscribed(): void;
}

/** A running job's latest step outlives any pause between steps; the key goes when the job ends (or after this). */
const LIVE_TTL_MS = 3_600_000;

/**
 * Live job events over Redis pub/sub, from whichever process runs the job to every API process: each step (with its
 * preview, if any) and the moment a row became final. Steps and final states travel on one channel, so a subscriber
 * sees them in the order they were published: a worker publishes every step before it writes the result, and the
 * repository publishes the final state only after its write landed. Messages only say "look now"; the database has the
 * state. The latest step of a running job is also kept under a key, for GET /jobs/{id} in any API process.
 */
export class JobEventsChannel implements FinalStateNotifier {
  constructor(
    private readonly redis: IORedis,
    private readonly prefix: string,
  ) {}

  private get channel(): string {
    return `${this.prefix}:job-events`;
  }

  private liveKey(jobId: string): string {
    return `${this.prefix}:live:${jobId}`;
  }

  /** Worker side, per step: one round trip for the key and the message. */
  async publishProgress(jobId: string, progress: LiveProgress): Promise<void> {
    const step = { step: progress.step, totalSteps: progress.totalSteps };
    const message: JobEventMessage = { jobId, progress };
    const results = await this.redis
      .pipeline()
      .set(this.liveKey(jobId), JSON.stringify(step), "PX", LIVE_TTL_MS)
      .publish(this.channel, JSON.stringify(message))
      .exec();
    const failed = results?.find(([err]) => err);
    if (failed) throw failed[0];
  }

  /** The repository calls this right after a final write landed. Best effort: subscribers also re-read on a timer. */
  finalized(jobId: string, status: FinalStatus): void {
    const message: JobEventMessage = { jobId, final: status };
    this.redis
      .pipeline()
      .del(this.liveKey(jobId))
      .publish(this.channel, JSON.stringify(message))
      .exec()
      .catch(() => undefined);
  }

  /** The latest step a worker published for a running job; null when there is none (yet, or any more). */
  async liveProgress(jobId: string): Promise<LiveProgress | null> {
    const raw = await this.redis.get(this.liveKey(jobId));
    const p = raw ? (JSON.parse(raw) as Partial<LiveProgress>) : null;
    return p && typeof p.step === "number" && typeof p.totalSteps === "number" ? { step: p.step, totalSteps: p.totalSteps } : null;
  }

  /** API side: every message from now on, on a connection of its own. Resolves once subscribed; returns the unsubscribe. */
  async subscribe(handlers: JobEventHandlers): Promise<() => Promise<void>> {
    // Commands wait for the connection (not fail fast as a producer's do): subscribing may start while Redis is away.
    const subscriber = this.redis.duplicate({ enableOfflineQueue: true, maxRetriesPerRequest: null });
    subscriber.on("error", () => undefined); // it reconnects by itself
    subscriber.on("message", (channel: string, raw: string) => {
      if (channel !== this.channel) return;
      const event = parseMessage(raw);
      if (event) handlers.message(event);
    });
    await subscriber.subscribe(this.channel);
    let subscribed = true;
    subscriber.on("close", () => (subscribed = false));
    subscriber.on("ready", () => {
      if (subscribed) return;
      // ioredis resubscribes by itself; subscribing again (idempotent) tells us when it is in effect.
      subscriber
        .subscribe(this.channel)
        .then(() => {
          subscribed = true;
          handlers.resubscribed();
        })
        .catch(() => undefined);
    });
    return async () => {
      await subscriber.quit().catch(() => undefined);
    };
  }
}

function parseMessage(raw: string): JobEventMessage | null {
  try {
    const m = JSON.parse(raw) as Partial<{ jobId: unknown; progress: Partial<LiveProgress>; final: unknown }>;
    if (typeof m.jobId !== "string") return null;
    if (m.final === "completed" || m.final === "failed" || m.final === "cancelled") return { jobId: m.jobId, final: m.final };
    const p = m.progress;
    if (!p || typeof p.step !== "number" || typeof p.totalSteps !== "number") return null;
    const progress: LiveProgress = { step: p.step, totalSteps: p.totalSteps };
    if (isStepPreview(p.preview)) progress.preview = p.preview;
    if (progress.preview && Array.isArray(p.previews) && p.previews.length > 1 && p.previews.every(isStepPreview)) {
      progress.previews = p.previews;
    }
    return { jobId: m.jobId, progress };
  } catch {
    return null;
  }
}

function isStepPreview(v: unknown): v is StepPreview {
  const p = v as Partial<StepPreview> | undefined;
  return !!p && typeof p === "object" && typeof p.pngBase64 === "string" && Number.isInteger(p.width) && Number.isInteger(p.height);
}
