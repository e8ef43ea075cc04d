import { PrismaPg } from "@prisma/adapter-pg";
import { randomUUID } from "node:crypto";
import pg from "pg";

/** Catalog-only PostgreSQL types that arrive as plain strings: `"char"` (18, e.g. pg_class.relkind), `name` (19, identifiers). */
const CATALOG_STRING_OIDS = new Set([18, 19]);
const TEXT_OID = 25;

type Fields = Array<{ dataTypeID: number }>;

function nameAsText<T>(result: T): T {
  const results = Array.isArray(result) ? result : [result];
  for (const r of results as Array<{ fields?: Fields } | undefined>) {
    for (const f of r?.fields ?? []) if (CATALOG_STRING_OIDS.has(f.dataTypeID)) f.dataTypeID = TEXT_OID;
  }
  return result;
}

/**
 * A pg client that reports catalog string columns as `text`. @prisma/adapter-pg 6.19 has no mapping for `name` (every
 * identifier in pg_catalog/information_schema) or `"char"`, so Prisma's JS schema engine fails on any migrate command with
 * "Column type 'name' could not be deserialized" (prisma/orm#27403, open). The values are plain strings either way; only
 * the reported type changes. Used for the Prisma CLI (migrate deploy/diff/status) only; the app's own queries never read
 * catalog columns.
 */
class NameAsTextClient extends pg.Client {
  // pg calls query() with a trailing callback (Pool.query does) or without (then it returns a promise): handle both.
  // eslint-disable-next-line @typescript-eslint/no-explicit-any
  query(...args: any[]): any {
    const last = args.length - 1;
    if (typeof args[last] === "function") {
      const callback = args[last] as (err: Error | null, res?: unknown) => void;
      args[last] = (err: Error | null, res?: unknown) => callback(err, res === undefined ? res : nameAsText(res));
      // eslint-disable-next-line @typescript-eslint/no-explicit-any
      return (super.query as any)(...args);
    }
    // eslint-disable-next-line @typescript-eslint/no-explicit-any
    const out = (super.query as any)(...args);
    return out && typeof out.then === "function" ? out.then(nameAsText) : out;
  }
}

/**
 * The adapter factory prisma.config.ts hands the Prisma CLI for PostgreSQL: `name` read as text (above), and a shadow
 * database (for `migrate diff --from-migrations`) that is dropped only after its pool has closed. The stock adapter drops
 * it first and fails with "database … is being accessed by other users", leaving the shadow database behind.
 */
class MigratePg extends PrismaPg {
  constructor(private readonly pgFields: pg.PoolConfig) {
    super(cliPool(pgFields));
  }

  override async connectToShadowDb() {
    const main = await this.connect();
    const database = `prisma_migrate_shadow_db_${randomUUID()}`;
    await main.executeScript(`CREATE DATABASE "${database}"`);
    const shadow = await new PrismaPg(cliPool({ ...this.pgFields, database })).connect();
    const closeShadowPool = shadow.dispose.bind(shadow);
    shadow.dispose = async () => {
      await closeShadowPool();
      await main.executeScript(`DROP DATABASE IF EXISTS "${database}"`);
      await main.dispose();
    };
    return shadow;
  }
}

/**
 * Pool options for a short-lived CLI process. allowExitOnIdle: the CLI never closes the adapter's pool, and idle pooled
 * connections would keep every `migrate deploy` (each service start) alive for pg's 10 s idle timeout.
 */
function cliPool(fields: pg.PoolConfig): pg.PoolConfig {
  return { ...fields, Client: NameAsTextClient, allowExitOnIdle: true };
}

export function migrateAdapterForPostgres(connectionString: string): PrismaPg {
  return new MigratePg(connectionFields(connectionString));
}

/**
 * The URL as separate pool options, so that `{ ...options, database }` really names another database (a
 * `connectionString` would win over `database` and point the "shadow" at the real database).
 */
export function connectionFields(connectionString: string): pg.PoolConfig {
  const u = new URL(connectionString);
  const params = u.searchParams;
  const sslmode = params.get("sslmode");
  return {
    // ?host=/run/postgresql selects a unix socket directory, as libpq allows.
    host: params.get("host") ?? (decodeURIComponent(u.hostname.replace(/^\[|\]$/g, "")) || "localhost"),
    port: u.port ? Number(u.port) : 5432,
    user: u.username ? decodeURIComponent(u.username) : undefined,
    password: u.password ? decodeURIComponent(u.password) : undefined,
    database: decodeURIComponent(u.pathname.replace(/^\//, "")) || undefined,
    ssl: sslmode && sslmode !== "disable" && sslmode !== "prefer" ? { rejectUnauthorized: sslmode === "verify-full" } : undefined,
  };
}
