import { insertJob, isUniqueViolation, setList, statusIn } from "./job-sql";

describe("job-sql", () => {
  it("binds every value and names only Job's columns", () => {
    const update = setList("sqlite", { status: "active", attempts: 2, errorCode: null });
    expect(update.sql).toBe('"status" = ?, "attempts" = ?, "errorCode" = NULL');
    expect(update.values).toEqual(["active", 2]);
    expect(() => setList("sqlite", { ["status; DROP TABLE Job" as "status"]: "x" })).toThrow(/not a Job column/);
  });

  it("stores JSON as text, cast to JSONB on PostgreSQL only", () => {
    const report = { colors: 8 };
    expect(setList("sqlite", { pixelReport: report }).sql).toBe('"pixelReport" = ?');
    const pg = setList("postgresql", { pixelReport: report });
    expect(pg.sql).toBe('"pixelReport" = CAST(? AS JSONB)');
    expect(pg.values).toEqual(['{"colors":8}']);
  });

  it("inserts the given columns in order; a status list is bound, an empty one matches nothing", () => {
    const insert = insertJob("sqlite", { id: "a", status: "queued", width: 64 });
    expect(insert.sql).toBe('INSERT INTO "Job" ("id", "status", "width") VALUES (?, ?, ?)');
    expect(statusIn(["queued", "active"]).values).toEqual(["queued", "active"]);
    expect(statusIn([]).sql).toBe("1 = 0");
  });

  it("recognises a unique-index refusal in each database's words", () => {
    expect(
      isUniqueViolation(
        Object.assign(new Error("UNIQUE constraint failed: Job.client, Job.idempotencyKey"), { code: "SQLITE_CONSTRAINT_UNIQUE" }),
      ),
    ).toBe(true);
    expect(isUniqueViolation(new Error('duplicate key value violates unique constraint "Job_client_idempotencyKey_key"'))).toBe(true);
    expect(isUniqueViolation(new Error("no such table: Job"))).toBe(false);
  });
});
