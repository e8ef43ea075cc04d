import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { applyMigrations } from "../../src/infra/migrate";
import { prisma } from "../support/prisma-cli";
import { startTestPostgres, TestPostgres } from "../support/postgres";

/**
 * SQLite (prisma/schema.prisma) and PostgreSQL (prisma/postgres/schema.prisma) each have a schema and a migration
 * history. This keeps the four in step: both schemas declare the same models, and each history, applied to an empty
 * database the way the service does it (migrate deploy), builds exactly its schema (introspect, then diff).
 */
const repoRoot = path.resolve(__dirname, "..", "..");
const SQLITE_SCHEMA = "prisma/schema.prisma";
const PG_SCHEMA = "prisma/postgres/schema.prisma";

/** The model blocks with comments and layout stripped: what the two providers must share. */
function models(schemaPath: string): Map<string, string> {
  const text = fs
    .readFileSync(path.join(repoRoot, schemaPath), "utf8")
    .replace(/\/\/.*$/gm, "")
    .replace(/[ \t]+/g, " ");
  const out = new Map<string, string>();
  for (const m of text.matchAll(/^model (\w+) \{([^}]*)\}/gm)) {
    const lines = m[2]
      .split("\n")
      .map((l) => l.trim())
      .filter(Boolean);
    out.set(m[1], lines.join("\n"));
  }
  return out;
}

let tmp: string;
let pg: TestPostgres;

beforeAll(async () => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), "pixelai-sync-"));
  pg = await startTestPostgres("sync");
});

afterAll(async () => {
  await pg?.stop();
  fs.rmSync(tmp, { recursive: true, force: true });
});

/** The service's migration step (migrate deploy) on an empty database, introspect it, and diff the result against the schema file. */
async function historyBuildsSchema(databaseUrl: string, schema: string): Promise<string> {
  await applyMigrations(repoRoot, databaseUrl);
  const pulled = await prisma(["db", "pull", "--print", "--schema", schema], databaseUrl);
  expect(pulled.code).toBe(0);
  // The CLI prints its driver-adapter warning on stdout too; the schema starts at its first block.
  const introspected = path.join(tmp, `introspected-${path.basename(path.dirname(path.resolve(repoRoot, schema)))}.prisma`);
  fs.writeFileSync(introspected, pulled.stdout.slice(pulled.stdout.search(/^(generator|datasource) /m)));
  const diff = await prisma(
    ["migrate", "diff", "--from-schema-datamodel", introspected, "--to-schema-datamodel", schema, "--exit-code", "--script"],
    databaseUrl,
  );
  expect(diff.code === 0 ? "" : diff.stdout + diff.stderr).toBe("");
  return introspected;
}

describe("SQLite and PostgreSQL schemas and migrations stay in step", () => {
  it("both schemas declare the same models, fields, types and attributes", () => {
    const sqlite = models(SQLITE_SCHEMA);
    const postgres = models(PG_SCHEMA);
    expect([...sqlite.keys()].sort()).toEqual(["Install", "Job", "JobImage", "MlxConversion", "MlxConversionFile", "Model"]);
    expect([...postgres.keys()].sort()).toEqual([...sqlite.keys()].sort());
    for (const [name, body] of sqlite) expect(`${name}\n${postgres.get(name)}`).toBe(`${name}\n${body}`);
    expect(sqlite.get("Job")).toMatch(/^worker String\?$/m);
  });

  it("both migration folders have their provider's lock file", () => {
    const lock = (dir: string) => fs.readFileSync(path.join(repoRoot, dir, "migration_lock.toml"), "utf8");
    expect(lock("prisma/migrations")).toMatch(/provider = "sqlite"/);
    expect(lock("prisma/postgres/migrations")).toMatch(/provider = "postgresql"/);
  });

  it("the SQLite migration history builds prisma/schema.prisma", async () => {
    await historyBuildsSchema(`file:${path.join(tmp, "sync.db")}`, SQLITE_SCHEMA);
  });

  it("the PostgreSQL migration history builds prisma/postgres/schema.prisma (introspection and shadow database agree)", async () => {
    await historyBuildsSchema(pg.url, PG_SCHEMA);
    const fromHistory = await prisma(
      ["migrate", "diff", "--from-migrations", "prisma/postgres/migrations", "--to-schema-datamodel", PG_SCHEMA, "--exit-code"],
      pg.url,
    );
    expect(fromHistory.stdout).toMatch(/No difference detected/);
    expect(fromHistory.code).toBe(0);
    // The shadow database migrate diff made is gone again (src/infra/pg-migrate-adapter.ts drops it after its pool closes).
    expect(await pg.databases()).not.toEqual(expect.arrayContaining([expect.stringMatching(/^prisma_migrate_shadow_db_/)]));
  });

  it("notices a schema its history does not build (the check can fail)", async () => {
    const url = await pg.createDatabase("drift");
    const introspected = await historyBuildsSchema(url, PG_SCHEMA);
    const drifted = path.join(tmp, "drifted.prisma");
    fs.writeFileSync(drifted, fs.readFileSync(path.join(repoRoot, PG_SCHEMA), "utf8").replace(/^ {2}worker .*$/m, ""));
    const diff = await prisma(
      ["migrate", "diff", "--from-schema-datamodel", introspected, "--to-schema-datamodel", drifted, "--exit-code", "--script"],
      url,
    );
    expect(diff.code).toBe(2);
    expect(diff.stdout).toMatch(/DROP COLUMN "worker"/);
  });
});
