import { ENGINE_NAMES, EngineName } from "../backends/engine-names";
import type { EngineProbe, EngineStatusStore } from "../backends/engine-status";
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
}

export interface EnginesSummary {
  default: EngineName;
  engines: Record<EngineName, EngineSummary>;
  /** Registered base models and LoRAs (names), for pickers. */
  models: string[];
  loras: string[];
  defaultModel: string;
}

function summarise(probe: EngineProbe | null): EngineSummary {
  if (!probe) return { available: false, reason: "no worker runs this engine", features: {}, schedulers: [] };
  const { engine: _engine, seenAt: _seenAt, features, schedulers, ...rest } = probe;
  return {
    ...(rest as Omit<EngineSummary, "features" | "schedulers">),
    available: probe.available === true,
    features: features ?? {},
    schedulers: schedulers ?? [],
  };
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
  return {
    default: defaultEngine,
    engines: Object.fromEntries(ENGINE_NAMES.map((e, i) => [e, summarise(probes[i])])) as Record<EngineName, EngineSummary>,
    models: rows.filter((m) => m.kind !== "lora").map((m) => m.name),
    loras: rows.filter((m) => m.kind === "lora").map((m) => m.name),
    defaultModel,
  };
}
