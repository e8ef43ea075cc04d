import { spawn } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { loadConfig } from "../config";
import { startIsolatedService } from "../isolated-service";
import { residentBytes } from "../models/resident-size";
import { runPythonModule, lastJsonLine } from "./python-json";
import { round } from "./stats";

/**
 * Both engines warm on one machine, holding the same SD-1.5-sized model (random weights, built offline by
 * bench_mlx.py): peak RSS of the worker process tree (this process, which runs API and worker, plus both runners)
 * while one torch job and then one MLX job run, without a memory budget and with one that fits a single copy.
 *
 *     npm run build && node dist/bench/warm-memory.js [--out bench/results/warm-memory.json] [--size 256]
 */
const MB = 1024 * 1024;

function rssOf(pid: number, field: "VmRSS" | "VmHWM"): number {
  try {
    const status = fs.readFileSync(`/proc/${pid}/status`, "utf8");
    const kb = new RegExp(`^${field}:\\s+(\\d+) kB`, "m").exec(status);
    return kb ? Number(kb[1]) * 1024 : 0;
  } catch {
    return 0;
  }
}

function run(cmd: string, args: string[], timeoutMs: number): Promise<void> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { stdio: ["ignore", "ignore", "pipe"] });
    let tail = "";
    child.stderr.on("data", (d) => (tail = (tail + d.toString()).slice(-3000)));
    const timer = setTimeout(() => child.kill("SIGKILL"), timeoutMs);
    child.on("close", (code) => {
      clearTimeout(timer);
      if (code === 0) resolve();
      else reject(new Error(`${path.basename(args[0] ?? cmd)} exited ${code}: ${tail}`));
    });
  });
}

async function measure(modelsDir: string, budgetMb: number, size: number) {
  const service = await startIsolatedService({
    label: "warmmem",
    env: { PIXELAI_MODELS_DIR: modelsDir, PIXELAI_DEFAULT_MODEL: "sd15-random", PIXELAI_MEMORY_BUDGET_MB: String(budgetMb) },
  });
  try {
    const runnerPids = () => [...service.service.runners.values()].map((r) => r.readyInfo?.pid).filter((p): p is number => typeof p === "number");
    let peakTree = 0;
    const sample = () => {
      const total = [process.pid, ...runnerPids()].reduce((sum, pid) => sum + rssOf(pid, "VmRSS"), 0);
      peakTree = Math.max(peakTree, total);
    };
    const sampler = setInterval(sample, 200);
    const jobs: Record<string, unknown> = {};
    try {
      for (const engine of ["torch", "mlx"]) {
        const res = await fetch(`${service.url}/jobs`, {
          method: "POST",
          headers: { "content-type": "application/json" },
          body: JSON.stringify({ prompt: "a knight", width: size, height: size, steps: 1, seed: 1, engine, model: "sd15-random" }),
        });
        const accepted = (await res.json()) as { id?: string };
        if (res.status !== 202 || !accepted.id) throw new Error(`${engine} job refused: ${JSON.stringify(accepted)}`);
        for (;;) {
          const view = (await (await fetch(`${service.url}/jobs/${accepted.id}`)).json()) as {
            status: string;
            error?: unknown;
            timings?: unknown;
          };
          if (["completed", "failed", "cancelled"].includes(view.status)) {
            jobs[engine] = { status: view.status, error: view.error, timings: view.timings };
            break;
          }
          await new Promise((r) => setTimeout(r, 500));
        }
        sample();
      }
    } finally {
      clearInterval(sampler);
    }
    const loaded: Record<string, unknown> = {};
    for (const [engine, runner] of service.service.runners) loaded[engine] = ((await runner.probe()).loadedModels ?? []).length;
    const runnersPeak = Object.fromEntries(
      [...service.service.runners].map(([engine, r]) => [engine, round(rssOf(r.readyInfo?.pid ?? -1, "VmHWM") / MB, 1)]),
    );
    return {
      budgetMb,
      jobs,
      modelsLoadedAtEnd: loaded,
      peakTreeRssMB: round(peakTree / MB, 1),
      peakRssMB: { workerProcess: round(rssOf(process.pid, "VmHWM") / MB, 1), ...runnersPeak },
    };
  } finally {
    await service.close();
  }
}

async function main(): Promise<void> {
  const args = process.argv.slice(2);
  const opt = (name: string, fallback: string) => (args.includes(name) ? args[args.indexOf(name) + 1] : fallback);
  const config = loadConfig(process.env);
  const out = path.resolve(config.repoRoot, opt("--out", "bench/results/warm-memory.json"));
  const size = Number(opt("--size", "256"));
  const work = fs.mkdtempSync(path.join(os.tmpdir(), "pixelai-warmmem-"));
  const started = Date.now();
  const loadAvgStart = round(os.loadavg()[0], 2);
  try {
    const folder = path.join(work, "models", "sd15-random");
    const built = lastJsonLine<Record<string, unknown>>(
      await runPythonModule({
        python: config.python,
        repoRoot: config.repoRoot,
        module: "pixelai_runner.bench_mlx",
        args: ["--worker", "prepare-sd15-pipeline", folder],
        timeoutMs: 1_200_000,
      }),
    );
    process.stderr.write(`[warm-memory] built ${JSON.stringify(built)}\n`);
    await run(
      config.python,
      [path.join(config.repoRoot, "scripts", "convert_to_mlx.py"), folder, "--name", "sd15-random", "--dtype", "float32", "--out", path.join(work, "models", "mlx")],
      1_200_000,
    );
    const estimateMb = round(residentBytes(folder, 4) / MB, 1);
    const pythonVersions = JSON.parse(
      await runPythonModule({
        python: config.python,
        repoRoot: config.repoRoot,
        module: "pixelai_runner.versions",
        args: ["torch", "diffusers", "transformers", "mlx"],
        timeoutMs: 120_000,
      }),
    ) as Record<string, string>;
    // one fp32 copy fits with room for the activations, two do not
    const budgetMb = Math.round(estimateMb * 1.4);
    const runs = [];
    for (const budget of [0, budgetMb]) {
      process.stderr.write(`[warm-memory] budget ${budget} MB…\n`);
      runs.push(await measure(path.join(work, "models"), budget, size));
    }
    const report = {
      timestamp: new Date().toISOString(),
      machine: { cpus: os.cpus().length, cpuModel: os.cpus()[0]?.model ?? "unknown", memoryGiB: round(os.totalmem() / 1024 ** 3, 1), loadAvgStart, loadAvgEnd: round(os.loadavg()[0], 2) },
      versions: { node: process.version, ...pythonVersions },
      settings: { model: "SD-1.5-sized pipeline, random weights, float32 on both engines (CPU)", size, steps: 1, jobs: "one torch job, then one MLX job" },
      model: { ...built, estimateMB: estimateMb },
      runs,
      ratios: { budgetOverNoBudgetPeakTree: round(runs[1].peakTreeRssMB / runs[0].peakTreeRssMB, 3) },
      totalSeconds: round((Date.now() - started) / 1000, 1),
    };
    fs.mkdirSync(path.dirname(out), { recursive: true });
    fs.writeFileSync(out, JSON.stringify(report, null, 2) + "\n");
    process.stdout.write(JSON.stringify(report, null, 2) + "\n");
  } finally {
    fs.rmSync(work, { recursive: true, force: true });
  }
}

main().then(
  () => process.exit(0),
  (err) => {
    process.stderr.write(`[warm-memory] failed: ${(err as Error).stack ?? err}\n`);
    process.exit(1);
  },
);
