import { ENGINE_NAMES, EngineName } from "../backends/engine-names";
import type { EngineProbe, EngineStatusStore } from "../backends/engine-status";
import type { ModelDetail } from "../models/models.dto";
import type { ModelsService } from "../models/models.service";
import type { SettingsService } from "../settings/settings.service";

export interface EngineSummary {
  available: boolean;
  reason?: string;
  device?: string;
  chip?: string;
  dtype?: string;
  versions?: Record<string, string>;
  /** Always present (empty when unknown), so clients need no nil checks. */
  features: Record<string, boolean>;
  schedulers: string[];
  /**
   * Every registered base model and whether this engine can run it now, with the reason when not (MLX: not converted,
   * or its converted files no longer verify). Whether the engine itself is up is `available`.
   */
  models: EngineModel[];
}

export interface EngineModel {
  name: string;
  runnable: boolean;
  reason?: string;
}

export interface EnginesSummary {
  default: EngineName;
  engines: Record<EngineName, EngineSummary>;
  /** Registered base models and LoRAs (names), for pickers. */
  models: string[];
  loras: string[];
  defaultModel: string;
}

function summarise(probe: EngineProbe | null, models: EngineModel[]): EngineSummary {
  if (!probe) return { available: false, reason: "no worker runs this engine", features: {}, schedulers: [], models };
  const { engine: _engine, seenAt: _seenAt, features, schedulers, ...rest } = probe;
  return {
    ...(rest as Omit<EngineSummary, "features" | "schedulers" | "models">),
    available: probe.available === true,
    features: features ?? {},
    schedulers: schedulers ?? [],
    models,
  };
}

/** Why a base model cannot run on an engine it is not listed for (ModelDetail.engines is the one judge of that). */
function whyNot(engine: EngineName, detail: ModelDetail): string {
  if (engine === "mlx" && detail.mlx) {
    if (!detail.mlx.converted) return `not converted for MLX: POST /models/${detail.name}/conversions`;
    return `its MLX conversion does not verify${detail.mlx.problem ? `: ${detail.mlx.problem}` : ""}; convert it again`;
  }
  return `cannot run on ${engine}`;
}

function runnableOn(engine: EngineName, details: ModelDetail[]): EngineModel[] {
  return details.map((d) =>
    d.engines.includes(engine) ? { name: d.name, runnable: true } : { name: d.name, runnable: false, reason: whyNot(engine, d) },
  );
}

/** What workers last published about each engine (Redis), the defaults, and the model registry's names. */
export async function enginesSummary(
  engines: EngineStatusStore,
  settings: SettingsService,
  models: ModelsService,
): Promise<EnginesSummary> {
  const [probes, defaultEngine, defaultModel, rows] = await Promise.all([
    Promise.all(ENGINE_NAMES.map((e) => engines.read(e).catch(() => null))),
    settings.defaultEngine(),
    settings.defaultModel(),
    models.list(),
  ]);
  const details = await Promise.all(rows.filter((m) => m.kind !== "lora").map((m) => models.detail(m)));
  return {
    default: defaultEngine,
    engines: Object.fromEntries(ENGINE_NAMES.map((e, i) => [e, summarise(probes[i], runnableOn(e, details))])) as Record<
      EngineName,
      EngineSummary
    >,
    models: rows.filter((m) => m.kind !== "lora").map((m) => m.name),
    loras: rows.filter((m) => m.kind === "lora").map((m) => m.name),
    defaultModel,
  };
}
