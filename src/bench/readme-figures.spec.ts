import { execFileSync } from "node:child_process";
import fs from "node:fs";
import path from "node:path";
import { isBacked, missingMetadata, numbersIn, quotedFigures } from "./readme-figures";

const repo = path.resolve(__dirname, "../..");

/** Result files in git (committed or staged): a figure backed only by a file on this disk would not survive a clone. */
function trackedResultFiles(): string[] {
  const out = execFileSync("git", ["ls-files", "--", "bench/results/*.json"], { cwd: repo }).toString();
  return out.split("\n").filter(Boolean);
}

describe("quotedFigures", () => {
  const readme = [
    "# x",
    "## Benchmarks",
    "Run 2026-11-24, tiny-sd 64×64, 4 steps, 100 jobs (`bench/results/a.json`, `BENCH_JOBS=100`), load average 2.7:",
    "",
    "| path | jobs/s | p50 ms |",
    "|---|---|---|",
    "| (a) HTTP, 8 clients | 15.9 | 10 000 |",
    "| (a) HTTP, 64 clients | **7.8** | 6.8 / 439 (the burst of 64 submits) |",
    "",
    "Overhead 16.4 ms, a/b ×1.37; from bench/results/b.json: 0.50 s/img, RSS 236 → 267 MiB, 14–25 ms, load average 6.5 to 9.7.",
    "### Settings",
    "| variable | default | meaning |",
    "|---|---|---|",
    "| `BENCH_JOBS` | `100` | jobs per row; at least 3 per client |",
    "## Tests",
    "12.5 ms here is outside the section",
  ].join("\n");
  const figures = quotedFigures(readme);

  it("takes numeric table cells (not their remarks in parentheses) and prose numbers with a unit, a × or a load average, ranges whole", () => {
    expect(figures.map((f) => f.text)).toEqual(["2.7", "15.9", "10 000", "7.8", "6.8", "439", "16.4", "1.37", "0.50", "236", "267", "14", "25", "6.5", "9.7"]);
  });

  it("attributes each figure to the result file named last before it, mid-line included", () => {
    expect(figures.map((f) => f.source)).toEqual([...Array(8).fill("bench/results/a.json"), ...Array(7).fill("bench/results/b.json")]);
    expect(figures.find((f) => f.text === "10 000")).toMatchObject({ value: 10000, decimals: 0, line: 7 });
  });

  it("finds a figure when a number in the file rounds to it at the figure's precision, and only then", () => {
    const fig = (text: string) => ({ text, value: Number(text), decimals: (text.split(".")[1] ?? "").length, source: "x", line: 1 });
    expect(isBacked(fig("0.92"), [0.918])).toBe(true);
    expect(isBacked(fig("0.918"), [0.918])).toBe(true);
    expect(isBacked(fig("2.4"), [0.918, 2.35])).toBe(true);
    expect(isBacked(fig("2.4"), [0.918, 2.46])).toBe(false);
    expect(isBacked(fig("4668"), [4667.8])).toBe(true);
    expect(isBacked(fig("16.4"), [16.3])).toBe(false);
  });

  it("forgets the named result file at a ### heading", () => {
    const [figure] = quotedFigures(["## Benchmarks", "From `bench/results/a.json`:", "### More", "It took 12.5 ms."].join("\n"));
    expect(figure).toMatchObject({ text: "12.5", source: undefined });
  });

  it("reads every number of a result file, nested ones included", () => {
    expect(numbersIn({ a: 1, b: [2, { c: 3.5 }], d: "4", e: null })).toEqual([1, 2, 3.5]);
  });

  it("asks each result file for its date, machine load and versions", () => {
    expect(missingMetadata({ machine: {} })).toEqual(["timestamp (ISO date)", "machine.loadAvg*", "versions"]);
    expect(missingMetadata({ timestamp: "2026-11-24T12:00:00Z", machine: { loadAvgStart: 1.2 }, versions: { node: "v20" } })).toEqual([]);
  });
});

describe("README's Benchmarks section", () => {
  const figures = quotedFigures(fs.readFileSync(path.join(repo, "README.md"), "utf8"));
  const tracked = trackedResultFiles();

  it("quotes figures, and names committed result files for them", () => {
    expect(figures.length).toBeGreaterThan(10);
    const sources = [...new Set(figures.map((f) => f.source ?? "(no result file named before it)"))];
    expect(sources.filter((s) => !tracked.includes(s))).toEqual([]);
  });

  it("quotes only figures found in the result file each one names", () => {
    const numbers = new Map(tracked.map((f) => [f, numbersIn(JSON.parse(fs.readFileSync(path.join(repo, f), "utf8")))]));
    const unbacked = figures
      .filter((f) => !f.source || !isBacked(f, numbers.get(f.source) ?? []))
      .map((f) => `README.md:${f.line} "${f.text}" not in ${f.source ?? "any named result file"}`);
    expect(unbacked).toEqual([]);
  });

  it("draws on result files that say when, on what machine, under what load and with which versions they were measured", () => {
    const incomplete = tracked
      .map((f) => [f, missingMetadata(JSON.parse(fs.readFileSync(path.join(repo, f), "utf8")))] as const)
      .filter(([, missing]) => missing.length > 0)
      .map(([f, missing]) => `${f} lacks ${missing.join(", ")}`);
    expect(incomplete).toEqual([]);
  });
});
