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
