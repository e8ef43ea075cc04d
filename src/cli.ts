#!/usr/bin/env node
import { loadConfig } from "./config";
import { createLogger } from "./infra/logger";
import { startService } from "./service";

/** `pixelai start` (API + worker + runner), `pixelai api`, `pixelai worker [--engine torch|mlx] [--concurrency N]`. */
async function main(argv: string[]): Promise<void> {
  const [command = "start", ...rest] = argv;
  const env = { ...process.env };
  for (let i = 0; i < rest.length; i++) {
    if (rest[i] === "--engine") env.PIXELAI_ENGINES = rest[++i];
    else if (rest[i] === "--concurrency") env.PIXELAI_WORKER_CONCURRENCY = rest[++i];
    else if (rest[i] === "--port") env.PORT = rest[++i];
    else throw new Error(`unknown option ${rest[i]}`);
  }
  const config = loadConfig(env);
  const logger = createLogger(config.logLevel);
  const roles = { start: { api: true, worker: true }, api: { api: true, worker: false }, worker: { api: false, worker: true } }[command];
  if (!roles) throw new Error(`unknown command ${command}: use start, api or worker`);
  const service = await startService(config, roles, logger);
  let closing = false;
  const shutdown = async (signal: string) => {
    if (closing) return;
    closing = true;
    logger.info({ signal }, "shutting down");
    await service.close();
    process.exit(0);
  };
  process.on("SIGINT", () => void shutdown("SIGINT"));
  process.on("SIGTERM", () => void shutdown("SIGTERM"));
}

main(process.argv.slice(2)).catch((err) => {
  console.error(err instanceof Error ? err.message : err);
  process.exit(1);
});
