import type IORedis from "ioredis";
import { AppError } from "../backends/error-codes";
import { ENGINE_NAMES, EngineName, isEngineName } from "../backends/engine-names";
import type { EngineProbe } from "../backends/engine-status";
import type { ModelsService } from "../models/models.service";

/** What the settings need to know about engines: the probe workers last published (null when none runs it). */
export interface EngineProbes {
  read(engine: EngineName): Promise<EngineProbe | null>;
}

export interface SettingsFallbacks {
  /** PIXELAI_DEFAULT_ENGINE: used until an admin picks one. */
  engine: EngineName;
  /** PIXELAI_DEFAULT_MODEL: used until an admin picks one. */
  model: string;
}

/**
 * The default engine and default model: what a request that names neither runs on. Kept in Redis so every API process
 * agrees. Every route that changes them (PUT /engines/default, PUT /models/default and the seed's /set_engine and
 * /load_model) goes through here, so they all apply the same checks: a default must be a pair a job can run on now.
 */
export class SettingsService {
  constructor(
    private readonly redis: IORedis,
    private readonly prefix: string,
    private readonly fallbacks: SettingsFallbacks,
    private readonly probes: EngineProbes,
    private readonly models: Pick<ModelsService, "find" | "resolve">,
  ) {}

  private get engineKey(): string {
    return `${this.prefix}:default-engine`;
  }

  private get modelKey(): string {
    return `${this.prefix}:default-model`;
  }

  /** A Redis outage answers the fallback: reads feed health checks and job defaults, which must not fail for it. */
  async defaultEngine(): Promise<EngineName> {
    const value = await this.redis.get(this.engineKey).catch(() => null);
    return isEngineName(value) ? value : this.fallbacks.engine;
  }

  async defaultModel(): Promise<string> {
    return (await this.redis.get(this.modelKey).catch(() => null)) ?? this.fallbacks.model;
  }

  /**
   * Makes `value` the default engine when it is a known engine (INVALID_REQUEST), a worker runs it
   * (ENGINE_UNAVAILABLE) and it can run the default model (MODEL_NOT_FOUND, MODEL_NOT_CONVERTED for MLX without a
   * conversion) — otherwise every later job that names no engine would fail instead of this one request.
   */
  async setDefaultEngine(value: unknown): Promise<{ engine: EngineName; probe: EngineProbe }> {
    if (!isEngineName(value)) {
      throw new AppError("INVALID_REQUEST", `unknown engine ${JSON.stringify(value ?? null)}; expected one of ${ENGINE_NAMES.join(", ")}`, {
        field: "engine",
      });
    }
    const probe = await this.probes.read(value);
    if (!probe?.available) {
      throw new AppError("ENGINE_UNAVAILABLE", `engine ${value} is not available: ${probe?.reason ?? "no worker runs it"}`);
    }
    await this.models.resolve(await this.defaultModel(), value);
    await this.redis.set(this.engineKey, value);
    return { engine: value, probe };
  }

  /**
   * Makes `value` the default model when it is a registered base model (MODEL_NOT_FOUND, also for a LoRA) that the
   * default engine can run (MODEL_NOT_CONVERTED for MLX without a conversion).
   */
  async setDefaultModel(value: unknown): Promise<{ model: string }> {
    if (typeof value !== "string" || value === "") {
      throw new AppError("INVALID_REQUEST", "a model name is required", { field: "model" });
    }
    const model = await this.models.find(value);
    if (model.kind !== "base") throw new AppError("MODEL_NOT_FOUND", `${value} is a LoRA, not a base model`);
    await this.models.resolve(model.name, await this.defaultEngine());
    await this.redis.set(this.modelKey, model.name);
    return { model: model.name };
  }
}
