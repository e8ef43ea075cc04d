/**
 * The Node side of the runner contract (contract/runner-protocol.schema.json, described in docs/runner-protocol.md).
 * The types are generated from the schema by `npm run generate`; import them from here, not from src/generated/.
 */
export type {
  CancelResult,
  Device,
  Dtype,
  EngineFeatures,
  EngineName,
  EngineProbe,
  ErrorEvent,
  GenerateParams,
  GenerateResult,
  InitNoise,
  LoraSpec,
  MlxDevice,
  PixelizeParams,
  PixelizeResult,
  PixelReport,
  PixelSpec,
  ProgressEvent,
  ReadyEvent,
  RequestId,
  ResultEvent,
  RunnerEvent,
  RunnerOps,
  RunnerRequest,
  RunnerSettings,
  SchedulerName,
  Timings,
  TorchDevice,
  UnloadResult,
} from "../generated/runner-protocol";
import type { RunnerOps, RunnerSettings } from "../generated/runner-protocol";

export type RunnerOp = keyof RunnerOps;
/** A request line for `op`, without the id the client assigns. */
export type RequestFields<K extends RunnerOp> = Omit<RunnerOps[K]["request"], "id" | "op">;
/** The fields next to `id` and `event` on the result line that answers `op`. */
export type ResultPayload<K extends RunnerOp> = RunnerOps[K]["result"];

/**
 * The runner's command line for its settings (the schema's RunnerSettings rule): `camelCase` → `--kebab-case value`,
 * a true boolean is a bare flag, false/undefined are left out so the runner's own default (the schema's) applies.
 */
export function runnerArgv(settings: RunnerSettings): string[] {
  const argv: string[] = [];
  for (const [key, value] of Object.entries(settings)) {
    if (value === undefined || value === false) continue;
    const option = `--${key.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`)}`;
    if (value === true) argv.push(option);
    else argv.push(option, String(value));
  }
  return argv;
}
