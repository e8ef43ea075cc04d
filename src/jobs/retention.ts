import type { Logger } from "../infra/logger";
import type { JobsRepository } from "./jobs.repository";

export interface RetentionPolicy {
  /** Images of jobs finished longer ago than this are pruned; 0 = no age limit. */
  maxAgeHours: number;
  /** Only the newest this many images are kept; 0 = no count limit. */
  maxImages: number;
}

export interface PruneResult {
  byAge: number;
  byCount: number;
}

/** Rows per update when trimming to the count limit: bounded statements, also on a first sweep over a big history. */
const BATCH = 500;

/**
 * Prunes completed jobs' images by the policy; the job records stay (GET /jobs/{id} works, result.pruned says why the
 * image answers 404). Idempotent and safe to run in several processes at once: every update is conditional.
 */
export async function pruneImages(repo: JobsRepository, policy: RetentionPolicy, now = new Date()): Promise<PruneResult> {
  const result: PruneResult = { byAge: 0, byCount: 0 };
  if (policy.maxAgeHours > 0) {
    result.byAge = await repo.pruneImagesFinishedBefore(new Date(now.getTime() - policy.maxAgeHours * 3600_000));
  }
  if (policy.maxImages > 0) {
    for (;;) {
      const ids = await repo.imagesBeyondNewest(policy.maxImages, BATCH);
      const pruned = await repo.pruneImages(ids);
      result.byCount += pruned;
      if (ids.length < BATCH || pruned === 0) break;
    }
  }
  return result;
}

export function retentionEnabled(policy: RetentionPolicy): boolean {
  return policy.maxAgeHours > 0 || policy.maxImages > 0;
}

/** The periodic sweep (the worker role runs it): once at start, then every `everyMs`. */
export class RetentionSweeper {
  private timer: NodeJS.Timeout | undefined;
  private running: Promise<unknown> | undefined;

  constructor(
    private readonly repo: JobsRepository,
    private readonly policy: RetentionPolicy,
    private readonly logger: Logger,
    private readonly everyMs = 10 * 60_000,
  ) {}

  start(): void {
    if (!retentionEnabled(this.policy)) return;
    void this.sweep();
    this.timer = setInterval(() => void this.sweep(), this.everyMs);
    this.timer.unref();
  }

  async sweep(): Promise<PruneResult | undefined> {
    if (this.running) return undefined; // a slow sweep is not stacked on by the next tick
    const run = pruneImages(this.repo, this.policy)
      .then((r) => {
        if (r.byAge + r.byCount > 0) this.logger.info({ ...r, policy: this.policy }, "retention pruned job images");
        return r;
      })
      .catch((err) => {
        this.logger.warn({ err: (err as Error).message }, "retention sweep failed");
        return undefined;
      })
      .finally(() => (this.running = undefined));
    this.running = run;
    return run;
  }

  async stop(): Promise<void> {
    clearInterval(this.timer);
    await this.running;
  }
}
