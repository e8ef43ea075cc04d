import type { EngineProbe, EngineStatusStore } from "../backends/engine-status";
import type { EngineName } from "../jobs/jobs.dto";
import type { ModelsService } from "../models/models.service";

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

const ENGINES: EngineName[] = ["torch", "mlx"];

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

/** What workers last published about each engine (Redis), the default engine, and the model registry's names. */
export async function enginesSummary(engines: EngineStatusStore, models: ModelsService): Promise<EnginesSummary> {
  const [probes, defaultEngine, defaultModel, rows] = await Promise.all([
    Promise.all(ENGINES.map((e) => engines.read(e).catch(() => null))),
    engines.defaultEngine(),
    engines.defaultModel(),
    models.list(),
  ]);
  return {
    default: defaultEngine,
    engines: Object.fromEntries(ENGINES.map((e, i) => [e, summarise(probes[i])])) as Record<EngineName, EngineSummary>,
    models: rows.filter((m) => m.kind !== "lora").map((m) => m.name),
    loras: rows.filter((m) => m.kind === "lora").map((m) => m.name),
    defaultModel,
  };
}
