import { defineConfig } from "prisma/config";
import { PrismaBetterSQLite3 } from "@prisma/adapter-better-sqlite3";
import { databaseKind, SCHEMA_PATH } from "./src/infra/database-kind";
import { migrateAdapterForPostgres } from "./src/infra/pg-migrate-adapter";

// The JS schema engine works offline (Prisma 7's CLI downloads a native engine, which fails on our machines).
// DATABASE_URL picks the provider: file: → SQLite (prisma/schema.prisma), postgres:// → PostgreSQL
// (prisma/postgres/schema.prisma, its own migrations). The adapter's provider must match the schema's: with a mismatch
// the CLI falls back to downloading a native engine, so `npm run generate` sets DATABASE_URL for each --schema.
const url = process.env.DATABASE_URL ?? "file:./data/pixelai.db";
const kind = databaseKind(url);

export default defineConfig({
  experimental: { adapter: true },
  engine: "js",
  schema: SCHEMA_PATH[kind],
  adapter: async () => (kind === "postgresql" ? migrateAdapterForPostgres(url) : new PrismaBetterSQLite3({ url })),
});
