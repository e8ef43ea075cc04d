import { Controller, Get, Route, Tags } from "tsoa";
import type { ApiServices } from "./services";
import { ENGINE_NAMES, EngineName } from "../backends/engine-names";
import type { EngineProbe } from "../backends/engine-status";
import { isDemoOnly } from "../models/demo-models";

export interface HealthResponse {
  status: "healthy" | "degraded";
  version: string;
  /** The default engine (also the legacy `engine` field). */
  engine: EngineName;
  device: string | null;
  chip: string | null;
  model_loaded: boolean;
  current_model: string;
  redis: boolean;
  /**
   * True while the only base models are the tiny demo ones (random weights: they draw noise). Install a real model
   * to end it: `node dist/cli.js install stabilityai/stable-diffusion-xl-base-1.0` (README "First run with a real model").
   */
  demo: boolean;
  engines: Record<string, { available: boolean; device?: string; reason?: string }>;
}

@Route("health")
@Tags("Service")
export class HealthController extends Controller {
  constructor(private readonly services: ApiServices) {
    super();
  }

  /** Liveness plus a device/engine summary. Keeps the seed server's fields (status, model_loaded, current_model, device, engine, version). */
  @Get()
  async health(): Promise<HealthResponse> {
    const { engines, settings, models, version } = this.services;
    let redis = true;
    const probes: Partial<Record<EngineName, EngineProbe | null>> = {};
    for (const engine of ENGINE_NAMES) {
      probes[engine] = await engines.read(engine).catch(() => {
        redis = false;
        return null;
      });
    }
    const defaultEngine = await settings.defaultEngine();
    const main = probes[defaultEngine] ?? null;
    return {
      status: redis ? "healthy" : "degraded",
      version,
      engine: defaultEngine,
      device: main?.device ?? null,
      chip: main?.chip ?? null,
      model_loaded: Boolean(main?.available),
      current_model: await settings.defaultModel(),
      redis,
      // a database outage must not turn a liveness check into a 500; demo is then unknown and reported as false
      demo: await models
        .list()
        .then(isDemoOnly)
        .catch(() => false),
      engines: Object.fromEntries(
        Object.entries(probes).map(([name, p]) => [
          name,
          p
            ? { available: p.available, device: p.device, ...(p.reason ? { reason: p.reason } : {}) }
            : { available: false, reason: "no worker runs this engine" },
        ]),
      ),
    };
  }
}
