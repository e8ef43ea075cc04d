/**
 * Which database a DATABASE_URL names, and where that provider's Prisma schema and migrations live. SQLite (file:) is the
 * one-machine default; postgres:// or postgresql:// is for many machines (docs/design.md "Scale"). prisma.config.ts, the
 * migration runner and openDatabase all decide by this one function, so they cannot disagree.
 */
export type DatabaseKind = "sqlite" | "postgresql";

export function databaseKind(url: string): DatabaseKind {
  if (/^postgres(ql)?:\/\//i.test(url)) return "postgresql";
  if (url.startsWith("file:")) return "sqlite";
  throw new Error(`unsupported DATABASE_URL scheme in ${JSON.stringify(url.replace(/\/\/[^@/]*@/, "//…@"))}: use file: or postgres://`);
}

/** Schema paths relative to the repository root (the migrations folder sits next to each schema). */
export const SCHEMA_PATH: Record<DatabaseKind, string> = {
  sqlite: "prisma/schema.prisma",
  postgresql: "prisma/postgres/schema.prisma",
};
