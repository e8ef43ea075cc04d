import type IORedis from "ioredis";
import { AppError } from "../backends/error-codes";
import { ENGINE_NAMES, EngineName, isEngineName } from "../backends/engine-names";
import type { EngineProbe } from "../backends/engine-status";
import type { ModelsService } from "../models/models.service";
import { isHubReference } from "../installs/hub-id";
import { HubModels, hubNeedsOf, normalisedHubReference } from "../installs/hub-models";
import type { InstallView } from "../installs/installs.dto";

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
    /** Hub ids as the default model (src/installs/hub-models.ts); absent: registry names only. */
    private readonly hub?: Pick<HubModels, "prepare" | "isInstalled">,
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
    await this.assertRunnable(await this.defaultModel(), value);
    await this.redis.set(this.engineKey, value);
    return { engine: value, probe };
  }

  /**
   * Makes `value` the default model when it is a registered base model (MODEL_NOT_FOUND, also for a LoRA) that the
   * default engine can run (MODEL_NOT_CONVERTED for MLX without a conversion).
   */
  async setDefaultModel(value: unknown): Promise<{ model: string; install?: InstallView }> {
    if (typeof value !== "string" || value === "") {
      throw new AppError("INVALID_REQUEST", "a model name is required", { field: "model" });
    }
    if (isHubReference(value)) {
      // A hub id: installed → checked like a name; not yet → its install starts (or is joined) and jobs that name no
      // model wait for it, as jobs naming it do (409 MODEL_NOT_INSTALLED when automatic installs are off).
      const reference = normalisedHubReference(value, "model");
      if (!this.hub)
        throw new AppError("INVALID_REQUEST", "hub ids are not available in this process; use a registry name", { field: "model" });
      const needs = hubNeedsOf({ model: reference });
      let install: InstallView | undefined;
      if (await this.hub.isInstalled(needs[0])) {
        await this.models.resolve(reference, await this.defaultEngine());
      } else {
        await this.assertRunnable(reference, await this.defaultEngine());
        [install] = await this.hub.prepare(needs);
      }
      await this.redis.set(this.modelKey, reference);
      return install ? { model: reference, install } : { model: reference };
    }
    const model = await this.models.find(value);
    if (model.kind !== "base") throw new AppError("MODEL_NOT_FOUND", `${value} is a LoRA, not a base model`);
    await this.models.resolve(model.name, await this.defaultEngine());
    await this.redis.set(this.modelKey, model.name);
    return { model: model.name };
  }

  /**
   * Whether `engine` can run `model` once it is there: an installed or local model is resolved (MODEL_NOT_FOUND,
   * MODEL_NOT_CONVERTED); a hub model still to be installed can run on torch, never on MLX (it needs a conversion).
   */
  private async assertRunnable(model: string, engine: EngineName): Promise<void> {
    if (isHubReference(model) && this.hub && !(await this.hub.isInstalled(hubNeedsOf({ model })[0]))) {
      if (engine === "mlx") {
        throw new AppError("MODEL_NOT_CONVERTED", `model ${model} is not installed yet, and MLX needs it installed and converted`, {
          model,
        });
      }
      return;
    }
    await this.models.resolve(model, engine);
  }
}
