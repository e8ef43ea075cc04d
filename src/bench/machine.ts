import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import IORedis from "ioredis";

export interface MachineInfo {
  cpuModel: string;
  cores: number;
  memoryGiB: number;
  platform: string;
  node: string;
  bullmq: string;
  redis: string;
  /** Filled from the Python side (bench_direct's versions). */
  python?: string;
  torch?: string;
  diffusers?: string;
  /** 1-minute load average when the bench started and ended: on a shared 2-core box this says how noisy the run was. */
  loadAvgStart: number;
  loadAvgEnd?: number;
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

export async function machineInfo(repoRoot: string, redisUrl: string): Promise<MachineInfo> {
  const cpus = os.cpus();
  return {
    cpuModel: cpus[0]?.model.trim() ?? "unknown",
    cores: cpus.length,
    memoryGiB: Math.round(os.totalmem() / 2 ** 30),
    platform: `${os.platform()} ${os.release()} ${os.arch()}`,
    node: process.version,
    bullmq: packageVersion(repoRoot, "bullmq"),
    redis: await redisVersion(redisUrl),
    loadAvgStart: +os.loadavg()[0].toFixed(2),
  };
}
