import { spawn } from "node:child_process";
import path from "node:path";
import readline from "node:readline";
import { TINY_JOB } from "./http-path";
import { summarize, Summary } from "./stats";

export interface DirectPhaseResult {
  jobs: number;
  /** TorchBackend.generate + post-process + PNG write + sha256, per job, ms: the runner's work with no service around it. */
  latencyMs: Summary;
  generateMs: Summary;
  /** Jobs per second over the jobs' own time (1000 / mean latency). */
  jobsPerSecond: number;
  coldFirstJobSeconds: number;
  device: string;
  torchThreads: number;
  versions: Record<string, string>;
}

interface ReadyLine {
  ready: true;
  coldFirstJobSeconds: number;
  device: string;
  torchThreads: number;
  versions: Record<string, string>;
}

interface BlockLine {
  total: number[];
  generate: number[];
}

/**
 * (b): the same tiny job called in-process in a Python of its own (python/pixelai_runner/bench_direct.py --blocks),
 * warm, run in blocks on request. The bench alternates its blocks with blocks of (a), so when other work on a shared
 * machine comes and goes during the run, it weighs on both paths alike.
 */
export class DirectSession {
  private readonly totals: number[] = [];
  private readonly generates: number[] = [];
  private pending: ((line: BlockLine) => void) | undefined;

  private constructor(
    private readonly child: ReturnType<typeof spawn>,
    private readonly ready: ReadyLine,
    lines: readline.Interface,
  ) {
    lines.on("line", (line) => {
      const resolve = this.pending;
      this.pending = undefined;
      resolve?.(JSON.parse(line) as BlockLine);
    });
  }

  static async start(opts: { python: string; repoRoot: string; modelsRoot: string; timeoutMs: number }): Promise<DirectSession> {
    const pythonPath = [path.join(opts.repoRoot, "python"), process.env.PYTHONPATH].filter(Boolean).join(path.delimiter);
    const args = [
      ...["-m", "pixelai_runner.bench_direct", "--blocks", "--warmup", "2"],
      ...["--model", path.join(opts.modelsRoot, TINY_JOB.model), "--prompt", TINY_JOB.prompt],
      ...["--width", String(TINY_JOB.width), "--height", String(TINY_JOB.height), "--steps", String(TINY_JOB.steps)],
      ...["--guidance", String(TINY_JOB.guidanceScale), "--pixel", String(TINY_JOB.pixel.width), "--colors", String(TINY_JOB.pixel.colors)],
    ];
    const child = spawn(opts.python, args, { cwd: opts.repoRoot, env: { ...process.env, PYTHONPATH: pythonPath }, stdio: ["pipe", "pipe", "pipe"] });
    let stderr = "";
    child.stderr.on("data", (d) => (stderr = (stderr + d.toString()).slice(-4000)));
    const lines = readline.createInterface({ input: child.stdout });
    const ready = await new Promise<ReadyLine>((resolve, reject) => {
      const timer = setTimeout(() => {
        child.kill("SIGKILL");
        reject(new Error(`bench_direct did not warm up within ${opts.timeoutMs} ms: ${stderr.slice(-500)}`));
      }, opts.timeoutMs);
      lines.once("line", (line) => {
        clearTimeout(timer);
        resolve(JSON.parse(line) as ReadyLine);
      });
      child.once("exit", (code) => {
        clearTimeout(timer);
        reject(new Error(`bench_direct exited (code ${code}) before it was ready: ${stderr.slice(-500)}`));
      });
    });
    child.removeAllListeners("exit");
    return new DirectSession(child, ready, lines);
  }

  /** The Python process's id (its scheduling figures, sched-stats.ts). */
  get pid(): number | undefined {
    return this.child.pid;
  }

  get versions(): Record<string, string> {
    return this.ready.versions;
  }

  /** Runs `jobs` more jobs back to back; their per-job times join the phase's samples. */
  async run(jobs: number, timeoutMs: number): Promise<void> {
    const block = await new Promise<BlockLine>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`bench_direct did not finish a block of ${jobs} within ${timeoutMs} ms`)), timeoutMs);
      this.pending = (line) => {
        clearTimeout(timer);
        resolve(line);
      };
      this.child.stdin?.write(`${jobs}\n`);
    });
    this.totals.push(...block.total.map((s) => s * 1000));
    this.generates.push(...block.generate.map((s) => s * 1000));
  }

  /** Ends the Python process and summarizes every block it ran. */
  async finish(): Promise<DirectPhaseResult> {
    const exited = new Promise((resolve) => this.child.once("exit", resolve));
    this.child.stdin?.end();
    await exited;
    const latencyMs = summarize(this.totals, 1);
    return {
      jobs: this.totals.length,
      latencyMs,
      generateMs: summarize(this.generates, 1),
      jobsPerSecond: +(1000 / latencyMs.mean).toFixed(2),
      coldFirstJobSeconds: this.ready.coldFirstJobSeconds,
      device: this.ready.device,
      torchThreads: this.ready.torchThreads,
      versions: this.ready.versions,
    };
  }
}
