import { createHash } from "node:crypto";
import IORedis from "ioredis";

/**
 * Every command the bench's Redis receives, via MONITOR, named the way a reader knows them: BullMQ's Lua scripts by
 * their script name (ioredis sends EVALSHA with the sha1 of the script text), everything else by command. Counting
 * round trips per job holds on a busy machine where timings do not: each one is a hop the job waits for.
 */
export class RedisMonitor {
  readonly commands: Array<{ at: number; name: string }> = [];
  private monitor: (IORedis & { disconnect(): void }) | undefined;
  private readonly scriptNames = new Map<string, string>();

  constructor(private readonly url: string) {
    // eslint-disable-next-line @typescript-eslint/no-require-imports -- BullMQ's script table is not a public export
    const scripts = require("bullmq/dist/cjs/scripts") as Record<string, { name: string; content: string }>;
    for (const s of Object.values(scripts)) this.scriptNames.set(createHash("sha1").update(s.content).digest("hex"), s.name);
  }

  async start(): Promise<void> {
    const conn = new IORedis(this.url, { maxRetriesPerRequest: 1 });
    const monitor = (await conn.monitor()) as IORedis & { disconnect(): void };
    conn.disconnect();
    monitor.on("monitor", (_time: string, args: string[], source: string) => {
      if (source === "lua") return; // run inside a script: part of that one round trip
      const command = String(args[0] ?? "").toLowerCase();
      const name = command === "evalsha" ? (this.scriptNames.get(String(args[1])) ?? "evalsha(other)") : command;
      this.commands.push({ at: performance.now(), name });
    });
    this.monitor = monitor;
  }

  /** Commands received in [from, to], counted by name. */
  countsWithin(from: number, to: number): Record<string, number> {
    const counts: Record<string, number> = {};
    for (const c of this.commands) if (c.at >= from && c.at <= to) counts[c.name] = (counts[c.name] ?? 0) + 1;
    return counts;
  }

  stop(): void {
    this.monitor?.disconnect();
  }
}
