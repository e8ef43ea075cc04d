import pino from "pino";

export type Logger = pino.Logger;

/** `level` comes from Config (LOG_LEVEL); src/config.ts is the one reader of the environment. */
export function createLogger(level = "info"): Logger {
  return pino({ level, base: { pid: process.pid } });
}
