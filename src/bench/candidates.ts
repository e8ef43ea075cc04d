import { createHash } from "node:crypto";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { loadConfig } from "../config";
import { startIsolatedService } from "../isolated-service";
import { runPythonModule } from "./python-json";
import { machineInfo } from "./machine";
import { percentile, round } from "./stats";

const median = (values: number[]) => percentile([...values].sort((a, b) => a - b), 50);

/**
 * Candidates: one job of `count` 4 (one batch through the UNet) against 4 single jobs with the same seeds, through the
 * real stack (HTTP, Redis, SQLite, the warm runners) on the tiny model, on each engine. Rounds alternate the two ways,
 * so load that comes and goes on a shared machine weighs on both; the ratio is from this one run.
 *
 *     npm run build && node dist/bench/candidates.js [--out bench/results/candidates.json] [--rounds 5]
 * (`make bench BENCH_CANDIDATES=1`)
 */
const COUNT = 4;
const JOB = { prompt: "a knight", width: 128, height: 128, steps: 8, initNoise: "torch", pixel: { width: 32, height: 32, colors: 16 } };

interface View {
  id: string;
  status: string;
  createdAt: string;
  finishedAt: string | null;
  timings: { generateMs: number | null };
  result?: { images: Array<{ index: number; sha256?: string }> };
}

async function submit(url: string, body: Record<string, unknown>): Promise<string> {
  const res = await fetch(`${url}/jobs`, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(body) });
  const answer = (await res.json()) as { id?: string };
  if (res.status !== 202 || !answer.id) throw new Error(`job refused: ${JSON.stringify(answer)}`);
  return answer.id;
}

async function finished(url: string, id: string): Promise<View> {
  for (;;) {
    const view = (await (await fetch(`${url}/jobs/${id}`)).json()) as View;
    if (view.status === "completed") return view;
    if (view.status === "failed" || view.status === "cancelled") throw new Error(`job ${id} ${view.status}: ${JSON.stringify(view)}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

async function png(url: string, id: string, n = 0): Promise<string> {
  const bytes = Buffer.from(await (await fetch(`${url}/jobs/${id}/images/${n}`)).arrayBuffer());
  return createHash("sha256").update(bytes).digest("hex");
}

/** Submit to last completion, wall clock, as a client sees it. */
async function timed(url: string, bodies: Record<string, unknown>[]): Promise<{ ms: number; views: View[] }> {
  const started = performance.now();
  const ids = await Promise.all(bodies.map((b) => submit(url, b)));
  const views = await Promise.all(ids.map((id) => finished(url, id)));
  return { ms: performance.now() - started, views };
}

async function benchEngine(url: string, engine: string, rounds: number) {
  await finished(url, await submit(url, { ...JOB, engine, seed: 1 })); // warm: the model loads here
  const batched: number[] = [];
  const singles: number[] = [];
  const batchedGenerate: number[] = [];
  const singlesGenerate: number[] = [];
  let firstEqualsSingle = 0;
  let distinct = true;
  for (let round = 0; round < rounds; round++) {
    const seed = 100 + 10 * round;
    const many = await timed(url, [{ ...JOB, engine, seed, count: COUNT }]);
    const ones = await timed(
      url,
      Array.from({ length: COUNT }, (_, i) => ({ ...JOB, engine, seed: seed + i })),
    );
    batched.push(many.ms);
    singles.push(ones.ms);
    batchedGenerate.push(many.views[0].timings.generateMs ?? 0);
    singlesGenerate.push(ones.views.reduce((sum, v) => sum + (v.timings.generateMs ?? 0), 0));
    const hashes = await Promise.all(Array.from({ length: COUNT }, (_, n) => png(url, many.views[0].id, n)));
    distinct &&= new Set(hashes).size === COUNT;
    if (hashes[0] === (await png(url, ones.views[0].id))) firstEqualsSingle++;
  }
  const wall = { batchedMs: round(median(batched), 0), fourSinglesMs: round(median(singles), 0) };
  return {
    engine,
    rounds,
    wallMedian: wall,
    wallEachRound: { batchedMs: batched.map((v) => round(v, 0)), fourSinglesMs: singles.map((v) => round(v, 0)) },
    generateMedian: { batchedMs: round(median(batchedGenerate), 0), fourSinglesMs: round(median(singlesGenerate), 0) },
    speedup: round(wall.fourSinglesMs / wall.batchedMs, 2),
    candidatesDistinct: distinct,
    firstEqualsSingleRounds: firstEqualsSingle,
  };
}

async function main(): Promise<void> {
  const args = process.argv.slice(2);
  const opt = (name: string, fallback: string) => (args.includes(name) ? args[args.indexOf(name) + 1] : fallback);
  const config = loadConfig(process.env);
  const out = path.resolve(config.repoRoot, opt("--out", "bench/results/candidates.json"));
  const rounds = Number(opt("--rounds", "5"));
  const started = Date.now();
  const machine = machineInfo();
  // a private model store: the MLX conversion is written beside the model, never into the repo's models/
  const work = fs.mkdtempSync(path.join(os.tmpdir(), "pixelai-candidates-"));
  const models = path.join(work, "models");
  fs.cpSync(path.join(config.repoRoot, "models", "tiny-sd"), path.join(models, "tiny-sd"), { recursive: true });
  const service = await startIsolatedService({ label: "candidates", env: { PIXELAI_MODELS_DIR: models, PIXELAI_DEFAULT_MODEL: "tiny-sd" } });
  try {
    const conversion = (await (
      await fetch(`${service.url}/models/tiny-sd/conversions`, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify({ dtype: "float32" }),
      })
    ).json()) as { id: string };
    for (;;) {
      const state = (await (await fetch(`${service.url}/conversions/${conversion.id}`)).json()) as { status: string };
      if (state.status === "completed") break;
      if (state.status === "failed") throw new Error(`MLX conversion failed: ${JSON.stringify(state)}`);
      await new Promise((r) => setTimeout(r, 200));
    }
    const engines = [];
    for (const engine of ["torch", "mlx"]) {
      process.stderr.write(`[candidates] ${engine}…\n`);
      engines.push(await benchEngine(service.url, engine, rounds));
    }
    const versions = JSON.parse(
      await runPythonModule({
        python: config.python,
        repoRoot: config.repoRoot,
        module: "pixelai_runner.versions",
        args: ["torch", "diffusers", "mlx"],
        timeoutMs: 120_000,
      }),
    ) as Record<string, string>;
    const report = {
      timestamp: new Date().toISOString(),
      machine: { ...machine, loadAvgEnd: round(os.loadavg()[0], 2) },
      versions: { node: process.version, ...versions },
      settings: {
        model: "tiny-sd (float32, CPU)",
        job: JOB,
        count: COUNT,
        compared: "one job with count 4 vs 4 count 1 jobs with seeds seed..seed+3, submitted together; wall = first submit to last completion",
      },
      engines,
      totalSeconds: round((Date.now() - started) / 1000, 1),
    };
    fs.mkdirSync(path.dirname(out), { recursive: true });
    fs.writeFileSync(out, JSON.stringify(report, null, 2) + "\n");
    process.stdout.write(JSON.stringify(report, null, 2) + "\n");
  } finally {
    await service.close();
    fs.rmSync(work, { recursive: true, force: true });
  }
}

main().then(
  () => process.exit(0),
  (err) => {
    process.stderr.write(`[candidates] failed: ${(err as Error).stack ?? err}\n`);
    process.exit(1);
  },
);
