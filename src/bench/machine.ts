import { execFileSync } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import IORedis from "ioredis";

export interface MachineInfo {
  cpuModel: string;
  cores: number;
  memoryGiB: number;
  platform: string;
  /** 1-minute load average when the bench started and ended: on a shared 2-core box this says how noisy the run was. */
  loadAvgStart: number;
  loadAvgEnd?: number;
  /** The bench's scheduling priority (nice); below 0 it was favoured over other work on a shared machine. */
  nice: number;
  /** OMP_NUM_THREADS as the bench found it: torch's thread count in both the runner and the direct path. */
  ompNumThreads: string;
}

/** Runtime and library versions; the Python ones are filled from bench_direct's answer. */
export interface Versions {
  node: string;
  bullmq: string;
  redis: string;
  /** The commit the bench ran on, "+dirty" when the tree had uncommitted changes (earlier results files aside). */
  commit: string;
  python?: string;
  torch?: string;
  diffusers?: string;
  transformers?: string;
}

function packageVersion(repoRoot: string, name: string): string {
  try {
    return JSON.parse(fs.readFileSync(path.join(repoRoot, "node_modules", name, "package.json"), "utf8")).version as string;
  } catch {
    return "unknown";
  }
}

async function redisVersion(url: string): Promise<string> {
  const conn = new IORedis(url, { maxRetriesPerRequest: 1, lazyConnect: true });
  try {
    await conn.connect();
    return /redis_version:(\S+)/.exec(await conn.info("server"))?.[1] ?? "unknown";
  } catch {
    return "unknown";
  } finally {
    conn.disconnect();
  }
}

function gitCommit(repoRoot: string): string {
  try {
    const head = execFileSync("git", ["rev-parse", "--short=12", "HEAD"], { cwd: repoRoot, stdio: ["ignore", "pipe", "ignore"] }).toString().trim();
    const dirty = execFileSync("git", ["status", "--porcelain", "--untracked-files=no", "--", ".", ":(exclude)bench/results"], { cwd: repoRoot, stdio: ["ignore", "pipe", "ignore"] }).length > 0;
    return dirty ? `${head}+dirty` : head;
  } catch {
    return "unknown (not a git checkout)";
  }
}

export function machineInfo(): MachineInfo {
  const cpus = os.cpus();
  return {
    cpuModel: cpus[0]?.model.trim() ?? "unknown",
    cores: cpus.length,
    memoryGiB: Math.round(os.totalmem() / 2 ** 30),
    platform: `${os.platform()} ${os.release()} ${os.arch()}`,
    loadAvgStart: +os.loadavg()[0].toFixed(2),
    nice: os.getPriority(),
    ompNumThreads: process.env.OMP_NUM_THREADS ?? "unset",
  };
}

export async function versionsInfo(repoRoot: string, redisUrl: string): Promise<Versions> {
  return {
    node: process.version,
    bullmq: packageVersion(repoRoot, "bullmq"),
    redis: await redisVersion(redisUrl),
    commit: gitCommit(repoRoot),
  };
}
