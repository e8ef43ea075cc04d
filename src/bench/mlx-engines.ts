import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { runPythonModule } from "./python-json";

export type MlxMode = "tiny" | "full" | "off";

export interface MlxPhaseResult {
  ran: boolean;
  reason?: string;
  reportPath?: string;
  /** Seconds per image of the tiny pipeline through each engine's backend (bench_mlx's "tiny" case). */
  tiny?: { torch?: number; mlxFloat32?: number; mlxFloat16?: number; ratios?: Record<string, number> };
  /** bench_mlx's SD-1.5-sized UNet loop ratios, only with BENCH_MLX=full (≈3.4 GB of weights, minutes). */
  sd15UnetRatios?: Record<string, number>;
}

interface EngineRun {
  secondsPerImage?: number;
}

interface MlxReport {
  tiny?: { torch?: EngineRun; mlx_float32?: EngineRun; mlx_float16?: EngineRun; ratios?: Record<string, number> };
  sd15Unet?: { ratios?: Record<string, number> };
}

/**
 * (d): the MLX-vs-Torch engine bench, another module's job; we only call it and keep its summary. Any failure is a
 * skip with a reason, never a failed bench: MLX may be missing or broken on a given machine.
 */
export async function runMlxPhase(opts: { python: string; repoRoot: string; mode: MlxMode; timeoutMs: number }): Promise<MlxPhaseResult> {
  if (opts.mode === "off") return { ran: false, reason: "BENCH_MLX=off" };
  const modulePath = path.join(opts.repoRoot, "python", "pixelai_runner", "bench_mlx.py");
  if (!fs.existsSync(modulePath)) return { ran: false, reason: "python/pixelai_runner/bench_mlx.py does not exist" };
  // The full run (with the SD-1.5-sized UNet) is what bench/results/mlx.json records; a tiny run must not replace it.
  const reportPath =
    opts.mode === "full" ? path.join(opts.repoRoot, "bench", "results", "mlx.json") : path.join(os.tmpdir(), `pixelai-bench-mlx-${process.pid}.json`);
  const args = ["--out", reportPath];
  if (opts.mode !== "full") args.push("--no-sd15");
  try {
    fs.rmSync(reportPath, { force: true });
    await runPythonModule({ python: opts.python, repoRoot: opts.repoRoot, module: "pixelai_runner.bench_mlx", args, timeoutMs: opts.timeoutMs });
    const report = JSON.parse(fs.readFileSync(reportPath, "utf8")) as MlxReport;
    if (opts.mode !== "full") fs.rmSync(reportPath, { force: true });
    return {
      ran: true,
      reportPath: opts.mode === "full" ? path.relative(opts.repoRoot, reportPath) : undefined,
      tiny: {
        torch: report.tiny?.torch?.secondsPerImage,
        mlxFloat32: report.tiny?.mlx_float32?.secondsPerImage,
        mlxFloat16: report.tiny?.mlx_float16?.secondsPerImage,
        ratios: report.tiny?.ratios,
      },
      sd15UnetRatios: report.sd15Unet?.ratios,
    };
  } catch (err) {
    return { ran: false, reason: (err as Error).message.slice(0, 500) };
  }
}
