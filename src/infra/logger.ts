import pino from "pino";

export type Logger = pino.Logger;

/**
 * `level` comes from Config (LOG_LEVEL); src/config.ts is the one reader of the environment.
 *
 * Synchronous stdout: the CLI ends with process.exit(), and pino's default asynchronous destination then flushes its
 * buffer with flushSync while an earlier line's write may still be in flight on the thread pool (sonic-boom#101), so
 * lines could reach stdout out of order (or be lost). Written synchronously, every line is out before the next call.
 */
export function createLogger(level = "info"): Logger {
  return pino({ level, base: { pid: process.pid } }, pino.destination({ dest: 1, sync: true }));
}
