import fs from "node:fs";
import path from "node:path";
import { loadConfig } from "./config";

const repo = path.resolve(__dirname, "..");

/** Files under `dir` (recursively) whose name passes `keep`. */
function files(dir: string, keep: (name: string) => boolean): string[] {
  return fs.readdirSync(dir, { withFileTypes: true }).flatMap((entry) => {
    const full = path.join(dir, entry.name);
    if (entry.isDirectory()) return entry.name === "generated" || entry.name === "__pycache__" ? [] : files(full, keep);
    return keep(entry.name) ? [full] : [];
  });
}

// Extended, not configured: the interpreter's module search path, to which the repo's python/ folder is prepended.
const NOT_CONFIGURATION = new Set(["PYTHONPATH"]);

interface EnvRead {
  name: string;
  file: string;
}

/**
 * Every environment variable the server's code reads: `process.env.X`, `env.X` / `env["X"]` (config.ts's parameter),
 * and, where a file reads `process.env[expr]`, the upper-case string literals it passes around (the bench's envInt).
 * Copying the whole environment to a child process (`...process.env`) is not a read. Assignments (`env.X = …`, cli.ts
 * turning its flags into variables) are not either.
 */
function tsReads(): EnvRead[] {
  const reads: EnvRead[] = [];
  for (const file of files(path.join(repo, "src"), (n) => n.endsWith(".ts") && !n.endsWith(".spec.ts"))) {
    const text = fs.readFileSync(file, "utf8");
    const rel = path.relative(repo, file);
    for (const m of text.matchAll(/\b(?:process\.)?env(?:\.([A-Z][A-Z0-9_]*)(?![\w])|\[\s*["']([A-Z][A-Z0-9_]*)["']\s*\])(?!\s*=[^=])/g)) {
      reads.push({ name: m[1] ?? m[2], file: rel });
    }
    if (/process\.env\[\s*[a-z]/.test(text)) {
      for (const m of text.matchAll(/["']([A-Z][A-Z0-9]*_[A-Z0-9_]+)["']/g)) reads.push({ name: m[1], file: rel });
    }
  }
  return reads;
}

/** The same for the runner package: `os.environ.get("X")`, `os.environ["X"]`, `os.getenv("X")`; any other use of the
 * environment than copying it for a child process (`dict(os.environ, …)`) fails, so nothing slips past unnamed. */
function pythonReads(): { reads: EnvRead[]; unrecognised: string[] } {
  const reads: EnvRead[] = [];
  const unrecognised: string[] = [];
  const pkg = path.join(repo, "python", "pixelai_runner");
  for (const file of files(pkg, (n) => n.endsWith(".py"))) {
    const rel = path.relative(repo, file);
    fs.readFileSync(file, "utf8")
      .split("\n")
      .forEach((line, index) => {
        const code = line.replace(/#.*$/, "");
        let rest = code;
        for (const m of code.matchAll(/os\.(?:environ\.get\(|environ\[|getenv\()\s*["']([A-Za-z_][A-Za-z0-9_]*)["']/g)) {
          reads.push({ name: m[1], file: rel });
          rest = rest.replace(m[0], "");
        }
        rest = rest.replace(/dict\(os\.environ\b/g, "");
        if (/\bos\.environ\b|\bgetenv\b|\benviron\b/.test(rest)) unrecognised.push(`${rel}:${index + 1}: ${line.trim()}`);
      });
  }
  return { reads, unrecognised };
}

/** Variable names in the first cell of each row of the table under `heading` (one name per row). */
function readmeTable(heading: RegExp): { names: string[]; rowsWithSeveral: string[] } {
  const readme = fs.readFileSync(path.join(repo, "README.md"), "utf8");
  const start = readme.search(heading);
  expect(start).toBeGreaterThanOrEqual(0);
  const lines = readme.slice(start).split("\n").slice(1);
  const tableStart = lines.findIndex((l) => l.startsWith("|"));
  const rows: string[] = [];
  for (const line of lines.slice(tableStart)) {
    if (!line.startsWith("|")) break;
    rows.push(line);
  }
  const names: string[] = [];
  const rowsWithSeveral: string[] = [];
  for (const row of rows.slice(2)) {
    const first = row.split("|")[1];
    const inRow = [...first.matchAll(/`([A-Z][A-Z0-9_]*)(?:=[^`]*)?`/g)].map((m) => m[1]);
    if (inRow.length !== 1) rowsWithSeveral.push(row);
    names.push(...inRow);
  }
  return { names, rowsWithSeveral };
}

const unique = (names: string[]) => [...new Set(names)].sort();
// The benchmarks (src/bench/, python/pixelai_runner/bench_*.py) keep their own reader and their own README table.
const isBench = (file: string) => file.startsWith(path.join("src", "bench")) || /[\\/]bench_[^\\/]*\.py$/.test(file);

describe("configuration", () => {
  it("reads runner settings and the redis-server binary from the environment, and refuses bad values", () => {
    const config = loadConfig({
      PIXELAI_DEVICE: "cpu",
      PIXELAI_PIPELINE_CACHE: "3",
      PIXELAI_MLX_DTYPE: "float16",
      PIXELAI_MLX_BLAS: "off",
      ALLOW_AUTO_INSTALL: "1",
      PIXELAI_MODELS_DIR: "/srv/models",
      PIXELAI_LORAS_DIR: "/srv/loras",
      REDIS_SERVER_BIN: "/opt/redis/bin/redis-server",
    });
    expect(config.runner).toEqual({
      device: "cpu",
      pipelineCache: 3,
      mlxDtype: "float16",
      mlxBlas: "off",
      birefnetDir: "/srv/models/birefnet",
      autoInstall: true,
      modelRoots: ["/srv/models", "/srv/loras"].join(path.delimiter),
    });
    expect(config.redisServerBin).toBe("/opt/redis/bin/redis-server");
    expect(loadConfig({}).runner).toMatchObject({
      device: "auto",
      pipelineCache: 2,
      mlxDtype: "auto",
      mlxBlas: "auto",
      autoInstall: false,
    });
    expect(() => loadConfig({ PIXELAI_DEVICE: "tpu" })).toThrow(/PIXELAI_DEVICE must be one of auto, cuda, mps, cpu/);
    expect(() => loadConfig({ PIXELAI_MLX_DTYPE: "float8" })).toThrow(/PIXELAI_MLX_DTYPE/);
  });

  it("reads the environment in src/config.ts only (the benches keep their own reader), and never in the runner", () => {
    const readers = unique(tsReads().map((r) => r.file)).filter((f) => !isBench(f));
    expect(readers).toEqual([path.join("src", "config.ts")]);
    const python = pythonReads();
    expect(python.unrecognised).toEqual([]);
    // runners get their settings as options (contract/runner-protocol.schema.json)
    expect(python.reads.filter((r) => !isBench(r.file))).toEqual([]);
  });

  it("README's configuration table names every variable the server reads, one per row, and no other", () => {
    const table = readmeTable(/^## Configuration/m);
    expect(table.rowsWithSeveral).toEqual([]);
    const read = unique(
      tsReads()
        .filter((r) => !isBench(r.file))
        .map((r) => r.name),
    );
    expect(unique(table.names)).toEqual(read);
  });

  it("README's benchmark settings table names every variable the bench reads, one per row, and no other", () => {
    const table = readmeTable(/^### Benchmark settings/m);
    expect(table.rowsWithSeveral).toEqual([]);
    const read = unique(
      [...tsReads(), ...pythonReads().reads].filter((r) => isBench(r.file) && !NOT_CONFIGURATION.has(r.name)).map((r) => r.name),
    );
    expect(unique(table.names)).toEqual(read);
  });
});
