import { AppError } from "../backends/error-codes";
import type { EngineName } from "../backends/engine-names";
import type { Logger } from "../infra/logger";

/** What the ledger needs of a runner: to be told to free a model. */
export interface UnloadingRunner {
  unload(modelSource: string): Promise<unknown>;
}

export interface ModelMemoryOptions {
  /** The most model bytes all of this worker's runners may hold together; 0 = no budget. */
  budgetBytes: number;
  /** A model no job used for this long is unloaded; 0 = never. */
  idleMs: number;
  /** Each runner's own LRU size (PIXELAI_PIPELINE_CACHE): it evicts past that by itself, and the ledger follows. */
  cacheSize: number;
  sizeOf(engine: EngineName, modelSource: string): number;
  runners: Map<EngineName, UnloadingRunner>;
  logger: Logger;
  now?: () => number;
}

interface Resident {
  engine: EngineName;
  source: string;
  bytes: number;
  inUse: number;
  lastUsed: number;
}

/**
 * The worker's ledger of the models its warm runners hold, so that two runners on one machine (a unified-memory Mac
 * with both engines warm) never load past PIXELAI_MEMORY_BUDGET_MB together: before a load that would not fit, the
 * least recently used model that no job is using is unloaded, on whichever runner holds it; when every resident
 * model is in use, the load waits for one to be released. A model larger than the whole budget can never load and
 * fails with INSUFFICIENT_MEMORY at once. Models unused for PIXELAI_IDLE_UNLOAD_S are unloaded too.
 *
 * It mirrors each runner's own cache (same LRU rule, same size), so it knows what a runner evicted by itself; a
 * runner that restarts holds nothing, which the ledger learns as its entries age out or are evicted (an unload of a
 * model that is not loaded is a no-op).
 */
export class ModelMemory {
  private readonly residents = new Map<string, Resident>();
  private waiters: Array<() => void> = [];
  private sweeper: NodeJS.Timeout | undefined;
  private readonly now: () => number;

  constructor(private readonly opts: ModelMemoryOptions) {
    this.now = opts.now ?? Date.now;
  }

  /** Makes room for `modelSource` on `engine` and marks it in use; call the returned function when the job is done. */
  async acquire(engine: EngineName, modelSource: string): Promise<() => void> {
    const key = `${engine}\0${modelSource}`;
    for (;;) {
      const known = this.residents.get(key);
      if (known) {
        known.inUse++;
        return this.releaser(known);
      }
      const bytes = this.opts.sizeOf(engine, modelSource);
      const budget = this.opts.budgetBytes;
      if (budget > 0 && bytes > budget) {
        throw new AppError(
          "INSUFFICIENT_MEMORY",
          `the model needs about ${mb(bytes)} MB loaded, more than the memory budget of ${mb(budget)} MB (PIXELAI_MEMORY_BUDGET_MB)`,
          { neededMb: mb(bytes), budgetMb: mb(budget) },
        );
      }
      if (budget === 0 || this.total() + bytes <= budget) {
        const resident = { engine, source: modelSource, bytes, inUse: 1, lastUsed: this.now() };
        this.residents.set(key, resident);
        this.followRunnerCache(engine);
        return this.releaser(resident);
      }
      const victim = this.leastRecentlyUsedIdle();
      if (victim) await this.unload(victim, "to stay within the memory budget");
      else await new Promise<void>((resolve) => this.waiters.push(resolve));
    }
  }

  /** Starts unloading models idle past `idleMs` (checked a few times per period, at least every 30 s). */
  start(): void {
    if (this.opts.idleMs <= 0 || this.sweeper) return;
    this.sweeper = setInterval(() => void this.sweepIdle(), Math.min(30_000, Math.max(250, this.opts.idleMs / 4)));
    this.sweeper.unref();
  }

  stop(): void {
    if (this.sweeper) clearInterval(this.sweeper);
    this.sweeper = undefined;
  }

  /** What the ledger believes is loaded (for logs and tests). */
  resident(): Array<{ engine: EngineName; source: string; bytes: number; inUse: number }> {
    return [...this.residents.values()].map(({ engine, source, bytes, inUse }) => ({ engine, source, bytes, inUse }));
  }

  async sweepIdle(): Promise<void> {
    const cutoff = this.now() - this.opts.idleMs;
    for (const r of [...this.residents.values()]) {
      if (r.inUse === 0 && r.lastUsed <= cutoff) await this.unload(r, `idle for ${Math.round(this.opts.idleMs / 1000)} s`);
    }
  }

  private releaser(resident: Resident): () => void {
    let released = false;
    return () => {
      if (released) return;
      released = true;
      resident.inUse--;
      resident.lastUsed = this.now();
      const waiting = this.waiters;
      this.waiters = [];
      for (const wake of waiting) wake();
    };
  }

  private total(): number {
    let sum = 0;
    for (const r of this.residents.values()) sum += r.bytes;
    return sum;
  }

  private leastRecentlyUsedIdle(): Resident | undefined {
    let found: Resident | undefined;
    for (const r of this.residents.values()) if (r.inUse === 0 && (!found || r.lastUsed < found.lastUsed)) found = r;
    return found;
  }

  private followRunnerCache(engine: EngineName): void {
    const own = [...this.residents.values()].filter((r) => r.engine === engine).sort((a, b) => a.lastUsed - b.lastUsed);
    for (const r of own.slice(0, Math.max(0, own.length - this.opts.cacheSize))) {
      if (r.inUse === 0) this.residents.delete(`${r.engine}\0${r.source}`);
    }
  }

  private async unload(r: Resident, why: string): Promise<void> {
    this.residents.delete(`${r.engine}\0${r.source}`);
    this.opts.logger.info({ engine: r.engine, model: r.source, mb: mb(r.bytes) }, `unloading a model ${why}`);
    try {
      await this.opts.runners.get(r.engine)?.unload(r.source);
    } catch (err) {
      this.opts.logger.warn({ engine: r.engine, model: r.source, err: (err as Error).message }, "unload failed");
    }
  }
}

function mb(bytes: number): number {
  return Math.round((bytes / 1024 / 1024) * 10) / 10;
}
