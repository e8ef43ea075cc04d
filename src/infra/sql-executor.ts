import Database from "better-sqlite3";
import type { Prisma } from "../generated/prisma/client";
import type { Db } from "./prisma";

/**
 * Runs the few raw statements every job makes (src/jobs/job-sql.ts and the model lookup), built once with Prisma.sql
 * for both databases. On PostgreSQL they go through Prisma's raw API. On SQLite they run as prepared better-sqlite3
 * statements on a connection of their own: Prisma's raw path still costs 0.7–1.4 ms a statement here, a prepared
 * statement a few hundredths (docs/environment.md, "Prisma and SQLite").
 */
export interface SqlExecutor {
  /** Runs a write; the number of rows it changed. */
  run(statement: Prisma.Sql): Promise<number>;
  /** Runs a read; its rows as the driver gives them (SQLite: dates as text, see the callers' row mappers). */
  all<T>(statement: Prisma.Sql): Promise<T[]>;
  close(): void;
}

export class PrismaSqlExecutor implements SqlExecutor {
  constructor(private readonly db: Db) {}

  run(statement: Prisma.Sql): Promise<number> {
    return this.db.$executeRaw(statement);
  }

  all<T>(statement: Prisma.Sql): Promise<T[]> {
    return this.db.$queryRaw<T[]>(statement);
  }

  close(): void {}
}

/** How long a statement keeps retrying a database another connection has locked, as Prisma's busy_timeout waits. */
const BUSY_WAIT_MS = 5_000;
/** Distinct statement texts are few (one per set of columns written); the cache is only bounded in case. */
const MAX_CACHED_STATEMENTS = 128;

/**
 * A second connection to the SQLite file Prisma uses (WAL, set by openSqlite, lets both read while one writes). Its
 * statements are synchronous and never span an await, so it holds no lock across event-loop turns. The reverse can
 * happen: Prisma's own transactions hold the write lock across awaits, and a synchronous busy wait here would then
 * block the very event loop that lock's holder needs. So this connection never waits inside SQLite (busy_timeout 0):
 * a locked database is retried after a timer, up to BUSY_WAIT_MS.
 */
export class SqliteSqlExecutor implements SqlExecutor {
  private readonly conn: Database.Database;
  private readonly statements = new Map<string, Database.Statement>();

  constructor(file: string) {
    this.conn = new Database(file);
    this.conn.pragma("busy_timeout = 0");
    // Per connection: as Prisma's (openSqlite); WAL itself is a property of the file.
    this.conn.pragma("synchronous = NORMAL");
  }

  run(statement: Prisma.Sql): Promise<number> {
    return this.retryingBusy(() => this.prepare(statement).run(...bind(statement.values)).changes);
  }

  all<T>(statement: Prisma.Sql): Promise<T[]> {
    return this.retryingBusy(() => this.prepare(statement).all(...bind(statement.values)) as T[]);
  }

  close(): void {
    this.statements.clear();
    if (this.conn.open) this.conn.close();
  }

  private prepare(statement: Prisma.Sql): Database.Statement {
    let prepared = this.statements.get(statement.sql);
    if (!prepared) {
      if (this.statements.size >= MAX_CACHED_STATEMENTS) this.statements.clear();
      prepared = this.conn.prepare(statement.sql);
      this.statements.set(statement.sql, prepared);
    }
    return prepared;
  }

  private async retryingBusy<T>(attempt: () => T): Promise<T> {
    const deadline = Date.now() + BUSY_WAIT_MS;
    for (let delayMs = 1; ; delayMs = Math.min(delayMs * 2, 50)) {
      try {
        return attempt();
      } catch (err) {
        const code = (err as { code?: unknown }).code;
        if ((code !== "SQLITE_BUSY" && code !== "SQLITE_LOCKED") || Date.now() > deadline) throw err;
      }
      await new Promise((resolve) => setTimeout(resolve, delayMs));
    }
  }
}

/** Values as Prisma's SQLite adapter writes them, so rows read back through Prisma look the same either way. */
function bind(values: unknown[]): unknown[] {
  return values.map((v) => {
    if (v instanceof Date) return v.toISOString().replace("Z", "+00:00");
    if (v instanceof Uint8Array && !Buffer.isBuffer(v)) return Buffer.from(v.buffer, v.byteOffset, v.byteLength);
    if (typeof v === "boolean") return v ? 1 : 0;
    return v;
  });
}

/** A DateTime column as read through either executor: a Date from Prisma, ISO text from SQLite. */
export function dateOf(value: unknown): Date {
  return value instanceof Date ? value : new Date(String(value));
}
