import { execFileSync } from "node:child_process";
import path from "node:path";

const repo = path.resolve(__dirname, "../..");
const script = path.join(repo, "scripts", "runner-contract.js");

function run(...args: string[]): { code: number; out: string } {
  try {
    return { code: 0, out: execFileSync(process.execPath, [script, ...args], { cwd: repo, encoding: "utf8", stdio: "pipe" }) };
  } catch (err) {
    const e = err as { status: number; stderr: string };
    return { code: e.status, out: e.stderr };
  }
}

describe("runner contract (contract/runner-protocol.schema.json)", () => {
  it("the TypeScript types in src/generated are what the schema generates", () => {
    expect(run("types", "--check")).toEqual({ code: 0, out: "" });
  });

  it("docs/runner-protocol.md's tables are what the schema says", () => {
    expect(run("docs", "--check")).toEqual({ code: 0, out: "" });
  });

  it("docs/runner-protocol.md renders every definition of the schema", () => {
    expect(JSON.parse(run("undocumented").out)).toEqual([]);
  });
});
