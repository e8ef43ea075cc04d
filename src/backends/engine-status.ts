import type IORedis from "ioredis";
import type { EngineName } from "./engine-names";
import type { LoraKeyRule } from "../generated/runner-protocol";

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
  /** LoRA tensors the engine cannot apply though it applies LoRAs (checked at submit: src/models/lora-fit.ts). */
  loraUnsupported?: LoraKeyRule[];
  [key: string]: unknown;
}

const TTL_SECONDS = 60;

/**
 * Workers publish their runners' probes here; API processes read them. A probe expires when its worker stops
 * refreshing it, so a dead worker's engine stops looking available. (The default engine and model are settings:
 * src/settings/settings.service.ts.)
 */
export class EngineStatusStore {
  constructor(
    private readonly redis: IORedis,
    private readonly prefix: string,
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
}

/**
 * How long a submit trusts a probe it read: a probe changes when a runner starts, fails or restarts (and is refreshed
 * every 20 s besides), so a second's delay in seeing that costs nothing a user would notice, where a Redis round trip
 * on every job is the longest wait of a submit (docs/environment.md, "Measuring the service overhead"). A job accepted
 * on a probe a second old whose engine has just gone away fails at its worker with ENGINE_UNAVAILABLE, as any job
 * queued before the engine went away does.
 */
export const PROBE_MAX_AGE_MS = 1_000;

/** Submits' view of the probes (JobsService): read once per PROBE_MAX_AGE_MS and engine at most, failed reads never kept. */
export class RecentProbes {
  private readonly seen = new Map<EngineName, { probe: EngineProbe | null; at: number }>();

  constructor(
    private readonly store: Pick<EngineStatusStore, "read">,
    private readonly maxAgeMs = PROBE_MAX_AGE_MS,
    private readonly now: () => number = () => performance.now(),
  ) {}

  async read(engine: EngineName): Promise<EngineProbe | null> {
    const kept = this.seen.get(engine);
    if (kept && this.now() - kept.at < this.maxAgeMs) return kept.probe;
    const at = this.now();
    const probe = await this.store.read(engine);
    this.seen.set(engine, { probe, at });
    return probe;
  }
}
