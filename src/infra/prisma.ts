import { PrismaBetterSQLite3 } from "@prisma/adapter-better-sqlite3";
import { PrismaPg } from "@prisma/adapter-pg";
import { PrismaClient } from "../generated/prisma/client";
import { PrismaClient as PgPrismaClient } from "../generated/prisma-pg/client";
import { databaseKind } from "./database-kind";

/**
 * The repositories' database type. The PostgreSQL client is generated from the same models
 * (prisma/postgres/schema.prisma, kept identical by test/integration/prisma-sync.test.ts), so its API is the SQLite
 * client's API; one type keeps the repositories provider-agnostic.
 */
export type Db = PrismaClient;

/** Opens the database DATABASE_URL names: SQLite (file:) or PostgreSQL (postgres://, postgresql://). */
export async function openDatabase(url: string): Promise<Db> {
  if (databaseKind(url) === "postgresql") {
    const db = new PgPrismaClient({ adapter: new PrismaPg({ connectionString: url }) });
    await db.$connect();
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
  return db;
}
