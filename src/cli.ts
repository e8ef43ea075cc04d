#!/usr/bin/env node
import { loadConfig } from "./config";
import { assertPortFree } from "./infra/port-check";
import { acquireStartLock, StartLock } from "./infra/start-lock";
import type { RunningService } from "./service";

/**
 * `pixelai start` (API + worker + runner), `pixelai api`, `pixelai worker [--engine torch|mlx] [--concurrency N]`,
 * `pixelai install <owner/name>` (a hub model, through the running server, with a progress bar).
 */
async function main(argv: string[]): Promise<void> {
  const [command = "start", ...rest] = argv;
  if (command === "install") {
    // A client of the running server: no lock, no service (src/installs/install-cli.ts).
    const { runInstallCli } = await import("./installs/install-cli");
    process.exit(await runInstallCli(rest, loadConfig(process.env)));
  }
  const env = { ...process.env };
  for (let i = 0; i < rest.length; i++) {
    if (rest[i] === "--engine") env.PIXELAI_ENGINES = rest[++i];
    else if (rest[i] === "--concurrency") env.PIXELAI_WORKER_CONCURRENCY = rest[++i];
    else if (rest[i] === "--port") env.PORT = rest[++i];
    else throw new Error(`unknown option ${rest[i]}`);
  }
  const config = loadConfig(env);
  const roles = { start: { api: true, worker: true }, api: { api: true, worker: false }, worker: { api: false, worker: true } }[command];
  if (!roles) throw new Error(`unknown command ${command}: use start, api or worker`);

  // Refusals come before anything is started (and before the service's modules load, so they are immediate). The
  // lock guards the managed Redis's AOF in the data folder; with REDIS_URL, many processes may share one folder.
  let lock: StartLock | undefined;
  if (!config.redisUrl) {
    lock = acquireStartLock({ dataDir: config.dataDir, role: command, ...(roles.api ? { host: config.host, port: config.port } : {}) });
    process.on("exit", () => lock?.release());
  }
  if (roles.api) await assertPortFree(config.host, config.port);

  const { createLogger } = await import("./infra/logger");
  const { startService } = await import("./service");
  const logger = createLogger(config.logLevel);
  // startService stops whatever it had started when it fails part-way, so a failed start leaves no process behind.
  const starting = startService(config, roles, logger);
  let closing = false;
  const shutdown = async (signal: string) => {
    if (closing) {
      // A second Ctrl-C: leave now. Managed Redis and the runners watch their stdin and stop when we are gone.
      process.exit(130);
    }
    closing = true;
    logger.info({ signal }, "shutting down");
    const service: RunningService | undefined = await starting.catch(() => undefined);
    await service?.close();
    lock?.release();
    process.exit(0);
  };
  // Installed before the start finishes: a signal during start-up still stops what was started, in order.
  process.on("SIGINT", () => void shutdown("SIGINT"));
  process.on("SIGTERM", () => void shutdown("SIGTERM"));
  await starting;
}

main(process.argv.slice(2)).catch((err) => {
  console.error(err instanceof Error ? err.message : err);
  process.exit(1);
});
