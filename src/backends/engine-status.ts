import type IORedis from "ioredis";
import type { EngineName } from "../jobs/jobs.dto";

/** What a runner's `probe` says about its engine, as every API process sees it (published in Redis by workers). */
export interface EngineProbe {
  engine: EngineName;
  available: boolean;
  reason?: string;
  device?: string;
  chip?: string;
  dtype?: string;
  versions?: Record<string, string>;
  features?: Record<string, boolean>;
  schedulers?: string[];
  loadedModels?: string[];
  [key: string]: unknown;
}

const TTL_SECONDS = 60;

/**
 * Workers publish their runners' probes here; API processes read them. A probe expires when its worker stops
 * refreshing it, so a dead worker's engine stops looking available. The default engine lives here too, so every API
 * process agrees on it.
 */
export class EngineStatusStore {
  constructor(
    private readonly redis: IORedis,
    private readonly prefix: string,
    private readonly fallbackDefault: EngineName,
    private readonly fallbackModel = "tiny-sd",
  ) {}

  private key(engine: string): string {
    return `${this.prefix}:engine:${engine}`;
  }

  async publish(probe: EngineProbe): Promise<void> {
    await this.redis.set(this.key(probe.engine), JSON.stringify({ ...probe, seenAt: new Date().toISOString() }), "EX", TTL_SECONDS);
  }

  async read(engine: EngineName): Promise<EngineProbe | null> {
    const raw = await this.redis.get(this.key(engine));
    return raw ? (JSON.parse(raw) as EngineProbe) : null;
  }

  async defaultEngine(): Promise<EngineName> {
    const value = await this.redis.get(`${this.prefix}:default-engine`).catch(() => null);
    return value === "torch" || value === "mlx" ? value : this.fallbackDefault;
  }

  async setDefaultEngine(engine: EngineName): Promise<void> {
    await this.redis.set(`${this.prefix}:default-engine`, engine);
  }

  /** The model for requests that name none: PIXELAI_DEFAULT_MODEL until an admin (or the seed's /load_model) sets one. */
  async defaultModel(): Promise<string> {
    return (await this.redis.get(`${this.prefix}:default-model`).catch(() => null)) ?? this.fallbackModel;
  }

  async setDefaultModel(name: string): Promise<void> {
    await this.redis.set(`${this.prefix}:default-model`, name);
  }
}
