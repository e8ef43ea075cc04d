import IORedis, { RedisOptions } from "ioredis";

/** Workers block on Redis commands, so BullMQ requires unlimited retries on their connection. */
export function workerConnection(url: string): IORedis {
  return quiet(new IORedis(url, { maxRetriesPerRequest: null, enableReadyCheck: true }));
}

/** Producers (the API) fail fast so an HTTP request never hangs while Redis is away. */
export function producerConnection(url: string, extra: RedisOptions = {}): IORedis {
  return quiet(new IORedis(url, { maxRetriesPerRequest: 1, enableOfflineQueue: false, connectTimeout: 2_000, ...extra }));
}

/**
 * A connection error (Redis restarted: EPIPE, ECONNREFUSED) reaches whoever issued a command, as a failed command, and
 * ioredis reconnects by itself; without a listener ioredis would also print each one to stderr as "Unhandled error".
 */
function quiet(connection: IORedis): IORedis {
  connection.on("error", () => undefined);
  return connection;
}
