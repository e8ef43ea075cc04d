import { Prisma } from "../generated/prisma/client";
import type { Job } from "../generated/prisma/client";
import type { DatabaseKind } from "../infra/database-kind";

/**
 * The job writes every job makes (insert, each status move, progress), as parameterised SQL through Prisma's raw query
 * API instead of its model API. Prisma 6.19's JavaScript engine compiles every model query to a plan with no cache:
 * about 1.7–3.8 ms of CPU per write here against 0.4–0.5 ms for the same statement raw (docs/environment.md, "Prisma
 * and SQLite"), and a job makes four such writes on its way. The statements are written once for both databases:
 * identifiers quoted (both accept "Job"), values always bound, and only the JSON column differs (PostgreSQL's JSONB
 * takes text by a cast; SQLite keeps JSON as text, as Prisma does).
 */

/** A value a column takes: JSON columns take a plain object (stored as its JSON text). */
export type ColumnValue = string | number | null | Date | Uint8Array | { readonly [key: string]: unknown };
export type JobColumns = Partial<{ [K in keyof Job]: ColumnValue }>;

/** The columns holding JSON: bound as text, cast where the database has a JSON type. */
const JSON_COLUMNS: ReadonlySet<string> = new Set<keyof Job>(["pixelReport"]);
/** Every column of Job a raw write may name (the names are spliced into the statement, so only these pass). */
const JOB_COLUMNS: ReadonlySet<string> = new Set(Object.values(Prisma.JobScalarFieldEnum));

function column(name: string): Prisma.Sql {
  if (!JOB_COLUMNS.has(name)) throw new Error(`not a Job column: ${name}`);
  return Prisma.raw(`"${name}"`);
}

function value(kind: DatabaseKind, name: string, v: ColumnValue | undefined): Prisma.Sql {
  if (v === undefined || v === null) return Prisma.sql`NULL`;
  if (JSON_COLUMNS.has(name)) {
    const text = JSON.stringify(v);
    return kind === "postgresql" ? Prisma.sql`CAST(${text} AS JSONB)` : Prisma.sql`${text}`;
  }
  return Prisma.sql`${v}`;
}

/** `"a" = $1, "b" = $2, …` for an UPDATE. */
export function setList(kind: DatabaseKind, data: JobColumns): Prisma.Sql {
  const entries = Object.entries(data).filter(([, v]) => v !== undefined);
  return Prisma.join(
    entries.map(([name, v]) => Prisma.sql`${column(name)} = ${value(kind, name, v as ColumnValue)}`),
    ", ",
  );
}

/** INSERT INTO "Job" (…) VALUES (…). */
export function insertJob(kind: DatabaseKind, data: JobColumns): Prisma.Sql {
  const entries = Object.entries(data).filter(([, v]) => v !== undefined);
  const names = Prisma.join(
    entries.map(([name]) => column(name)),
    ", ",
  );
  const values = Prisma.join(
    entries.map(([name, v]) => value(kind, name, v as ColumnValue)),
    ", ",
  );
  return Prisma.sql`INSERT INTO "Job" (${names}) VALUES (${values})`;
}

/** `"status" IN ('a', 'b')`: the statuses are the state machine's own constants, bound like any value. */
export function statusIn(statuses: readonly string[]): Prisma.Sql {
  if (statuses.length === 0) return Prisma.sql`1 = 0`;
  return Prisma.sql`"status" IN (${Prisma.join(statuses.map((s) => Prisma.sql`${s}`))})`;
}

/** An equality that also matches a NULL column against null. */
export function columnIs(name: keyof Job, v: ColumnValue): Prisma.Sql {
  return v === null ? Prisma.sql`${column(name)} IS NULL` : Prisma.sql`${column(name)} = ${v}`;
}

/**
 * True for a write refused by a unique index: Prisma's model API says P2002 ("Unique constraint failed"); a raw
 * statement surfaces the database's own words (SQLite "UNIQUE constraint failed", PostgreSQL 23505 "duplicate key").
 */
export function isUniqueViolation(err: unknown): boolean {
  const text = `${(err as { code?: unknown })?.code ?? ""} ${String((err as Error)?.message ?? err)}`;
  return /P2002|unique constraint|duplicate key|23505/i.test(text);
}
