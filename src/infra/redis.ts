import IORedis, { RedisOptions } from "ioredis";

/** Workers block on Redis commands, so BullMQ requires unlimited retries on their connection. */
export function workerConnection(url: string): IORedis {
  return new IORedis(url, { maxRetriesPerRequest: null, enableReadyCheck: true });
}

/** Producers (the API) fail fast so an HTTP request never hangs while Redis is away. */
export function producerConnection(url: string, extra: RedisOptions = {}): IORedis {
  return new IORedis(url, { maxRetriesPerRequest: 1, enableOfflineQueue: false, connectTimeout: 2_000, ...extra });
}
