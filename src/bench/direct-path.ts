import path from "node:path";
import { TINY_JOB } from "./http-path";
import { lastJsonLine, runPythonModule } from "./python-json";
import type { Summary } from "./stats";

interface SecondsSummary {
  p50: number;
  p99: number;
  mean: number;
  min: number;
  max: number;
}

/** What python/pixelai_runner/bench_direct.py prints (seconds). */
export interface DirectRaw {
  jobs: number;
  warmup: number;
  coldFirstJobSeconds: number;
  coldLoadMs: number;
  outputSize: [number, number];
  seconds: SecondsSummary;
  generateSeconds: SecondsSummary;
  postprocessSeconds: SecondsSummary;
  samples: number[];
  device: string;
  torchThreads: number;
  versions: Record<string, string>;
}

export interface DirectPhaseResult {
  jobs: number;
  /** TorchBackend.generate + post-process + PNG write + sha256, per job, ms: the runner's work with no service around it. */
  latencyMs: Summary;
  generateMs: Summary;
  coldFirstJobSeconds: number;
  device: string;
  torchThreads: number;
  versions: Record<string, string>;
}

const ms = (s: SecondsSummary, n: number): Summary => ({
  n,
  p50: +(s.p50 * 1000).toFixed(1),
  p99: +(s.p99 * 1000).toFixed(1),
  mean: +(s.mean * 1000).toFixed(1),
  min: +(s.min * 1000).toFixed(1),
  max: +(s.max * 1000).toFixed(1),
});

/** (b): the same tiny job called in-process in a fresh Python, N times after warm-up. */
export async function runDirectPhase(opts: { python: string; repoRoot: string; modelsRoot: string; jobs: number; timeoutMs: number }): Promise<DirectPhaseResult> {
  const stdout = await runPythonModule({
    python: opts.python,
    repoRoot: opts.repoRoot,
    module: "pixelai_runner.bench_direct",
    args: [
      "--model", path.join(opts.modelsRoot, TINY_JOB.model),
      "--jobs", String(opts.jobs),
      "--warmup", "2",
      "--width", String(TINY_JOB.width),
      "--height", String(TINY_JOB.height),
      "--steps", String(TINY_JOB.steps),
      "--guidance", String(TINY_JOB.guidanceScale),
      "--pixel", String(TINY_JOB.pixel.width),
      "--colors", String(TINY_JOB.pixel.colors),
      "--prompt", TINY_JOB.prompt,
    ],
    timeoutMs: opts.timeoutMs,
  });
  const raw = lastJsonLine<DirectRaw>(stdout);
  return {
    jobs: raw.jobs,
    latencyMs: ms(raw.seconds, raw.jobs),
    generateMs: ms(raw.generateSeconds, raw.jobs),
    coldFirstJobSeconds: raw.coldFirstJobSeconds,
    device: raw.device,
    torchThreads: raw.torchThreads,
    versions: raw.versions,
  };
}
