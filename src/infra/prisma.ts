import { PrismaBetterSQLite3 } from "@prisma/adapter-better-sqlite3";
import { PrismaPg } from "@prisma/adapter-pg";
import { PrismaClient } from "../generated/prisma/client";
import { PrismaClient as PgPrismaClient } from "../generated/prisma-pg/client";
import { databaseKind, DatabaseKind } from "./database-kind";
import { PrismaSqlExecutor, SqliteSqlExecutor, SqlExecutor } from "./sql-executor";

/**
 * The repositories' database type. The PostgreSQL client is generated from the same models
 * (prisma/postgres/schema.prisma, kept identical by test/integration/prisma-sync.test.ts), so its API is the SQLite
 * client's API; one type keeps the repositories provider-agnostic.
 */
export type Db = PrismaClient;

/** Which database each opened client talks to, and what runs its raw statements (src/infra/sql-executor.ts). */
const OPENED = new WeakMap<object, { kind: DatabaseKind; sql: SqlExecutor }>();

/** The kind of database `db` was opened on (openDatabase); SQLite for a client opened some other way. */
export function databaseKindOf(db: Db): DatabaseKind {
  return OPENED.get(db)?.kind ?? "sqlite";
}

/** What runs `db`'s raw statements: Prisma's raw API unless openDatabase gave it a faster one. */
export function sqlExecutorOf(db: Db): SqlExecutor {
  return OPENED.get(db)?.sql ?? new PrismaSqlExecutor(db);
}

/** Closes what openDatabase opened: the client and, on SQLite, the statements' own connection. */
export async function closeDatabase(db: Db): Promise<void> {
  OPENED.get(db)?.sql.close();
  await db.$disconnect();
}

/** Opens the database DATABASE_URL names: SQLite (file:) or PostgreSQL (postgres://, postgresql://). */
export async function openDatabase(url: string): Promise<Db> {
  if (databaseKind(url) === "postgresql") {
    const db = new PgPrismaClient({ adapter: new PrismaPg({ connectionString: url }) });
    await db.$connect();
    OPENED.set(db, { kind: "postgresql", sql: new PrismaSqlExecutor(db as unknown as Db) });
    // Structurally the same client (same models, same generator): the cast only renames the type.
    return db as unknown as Db;
  }
  return openSqlite(url);
}

/** SQLite gets WAL + synchronous=NORMAL (3× faster writes here, see docs/environment.md) and waits on a busy file. */
async function openSqlite(url: string): Promise<Db> {
  const adapter = new PrismaBetterSQLite3({ url });
  const db = new PrismaClient({ adapter });
  await db.$queryRawUnsafe("PRAGMA journal_mode=WAL");
  await db.$executeRawUnsafe("PRAGMA synchronous=NORMAL");
  await db.$queryRawUnsafe("PRAGMA busy_timeout=5000");
  // the same path the adapter opens (it strips "file:" and leaves the rest to SQLite)
  OPENED.set(db, { kind: "sqlite", sql: new SqliteSqlExecutor(url.replace(/^file:/, "")) });
  return db;
}
