/**
 * Preloaded (`node -r`) into the out-of-process API the queue-depth bench starts. It answers the bench's IPC "memory"
 * message with process.memoryUsage() taken just after a full GC (the API runs with --expose-gc), so successive samples
 * show retained memory, not where the collector's sawtooth happened to be. Nothing else in the API changes.
 */
export interface MemorySample {
  rssMiB: number;
  heapUsedMiB: number;
  heapTotalMiB: number;
  externalMiB: number;
}

const MiB = 2 ** 20;

export function sampleMemory(): MemorySample {
  const gc = (globalThis as { gc?: () => void }).gc;
  gc?.();
  const m = process.memoryUsage();
  const mib = (n: number) => Math.round((n / MiB) * 10) / 10;
  return { rssMiB: mib(m.rss), heapUsedMiB: mib(m.heapUsed), heapTotalMiB: mib(m.heapTotal), externalMiB: mib(m.external) };
}

// Only when started with an IPC channel (the bench's child); requiring this module elsewhere does nothing.
if (process.send) {
  process.on("message", (msg: unknown) => {
    if (msg === "memory") process.send?.({ memory: sampleMemory() });
  });
  // The IPC channel must not keep an API that is shutting down alive.
  process.channel?.unref();
}
