import fs from "node:fs";
import path from "node:path";
import { parse } from "yaml";
import { loadConfig } from "../../src/config";
import { databaseKind } from "../../src/infra/database-kind";

/**
 * docker-compose.yml cannot run on the CI machines (no container engine), so this checks what it promises: the services
 * and their wiring, durable Redis and PostgreSQL, and that every variable it hands our processes is one the code reads
 * (a misspelt name would be silently ignored at run time).
 */
const repoRoot = path.resolve(__dirname, "..", "..");

interface Service {
  image?: string;
  build?: unknown;
  command?: string[] | string;
  environment?: Record<string, string | number | boolean | null>;
  volumes?: string[];
  ports?: string[];
  healthcheck?: { test: string[] | string };
  depends_on?: Record<string, { condition: string }>;
  container_name?: string;
}

const compose = parse(fs.readFileSync(path.join(repoRoot, "docker-compose.yml"), "utf8"), { merge: true }) as {
  services: Record<string, Service>;
  volumes: Record<string, unknown>;
};
const { redis, postgres, api, worker } = compose.services;

function files(dir: string, ext: string): string[] {
  return fs.readdirSync(dir, { withFileTypes: true }).flatMap((e) => {
    const full = path.join(dir, e.name);
    if (e.isDirectory()) return e.name === "generated" || e.name === "__pycache__" ? [] : files(full, ext);
    return e.name.endsWith(ext) && !e.name.endsWith(`.spec${ext}`) ? [full] : [];
  });
}

/** Environment variable names the server (TypeScript) and the runners (Python) read. */
function namesTheCodeReads(): Set<string> {
  const names = new Set<string>();
  const patterns = [
    /process\.env\.([A-Z_][A-Z0-9_]*)/g,
    /process\.env\[["']([A-Z_][A-Z0-9_]*)["']\]/g,
    /\benv\.([A-Z_][A-Z0-9_]*)/g, // loadConfig(env) and cli.ts's copy of process.env
    /os\.environ(?:\.get\(|\[)\s*["']([A-Z_][A-Z0-9_]*)["']/g,
    /os\.getenv\(\s*["']([A-Z_][A-Z0-9_]*)["']/g,
  ];
  for (const file of [...files(path.join(repoRoot, "src"), ".ts"), ...files(path.join(repoRoot, "python"), ".py")]) {
    const text = fs.readFileSync(file, "utf8");
    for (const re of patterns) for (const m of text.matchAll(re)) names.add(m[1]);
  }
  return names;
}

const command = (s: Service) => (Array.isArray(s.command) ? s.command.join(" ") : (s.command ?? ""));
const mounts = (s: Service) => (s.volumes ?? []).map((v) => v.split(":"));
const env = (s: Service) => Object.fromEntries(Object.entries(s.environment ?? {}).map(([k, v]) => [k, String(v ?? "")]));

describe("docker-compose.yml", () => {
  it("has redis, postgres, api and worker", () => {
    expect(Object.keys(compose.services).sort()).toEqual(["api", "postgres", "redis", "worker"]);
  });

  it("keeps Redis durable: AOF on, data on a named volume, a health check", () => {
    expect(command(redis)).toMatch(/redis-server/);
    expect(command(redis)).toMatch(/--appendonly yes/);
    expect(mounts(redis)).toContainEqual(["redis-data", "/data"]);
    expect(JSON.stringify(redis.healthcheck?.test)).toMatch(/redis-cli.*ping/);
  });

  it("keeps PostgreSQL on a named volume with a pg_isready health check, and its credentials match DATABASE_URL", () => {
    expect(postgres.image).toMatch(/^postgres:/);
    expect(mounts(postgres)).toContainEqual(["postgres-data", "/var/lib/postgresql/data"]);
    expect(JSON.stringify(postgres.healthcheck?.test)).toMatch(/pg_isready/);
    for (const s of [api, worker]) {
      const url = new URL(env(s).DATABASE_URL);
      expect(databaseKind(url.href)).toBe("postgresql");
      const pgEnv = env(postgres);
      expect([url.hostname, url.username, url.password, url.pathname.slice(1)]).toEqual([
        "postgres",
        pgEnv.POSTGRES_USER,
        pgEnv.POSTGRES_PASSWORD,
        pgEnv.POSTGRES_DB,
      ]);
    }
  });

  it("runs the api role on 0.0.0.0 with a Host allow-list, and the worker role without ports (so it scales)", () => {
    expect(command(api)).toBe("node dist/cli.js api");
    expect(command(worker)).toBe("node dist/cli.js worker");
    const config = loadConfig(env(api));
    expect(config.host).toBe("0.0.0.0");
    expect(config.allowedHosts).toEqual(expect.arrayContaining(["localhost", "api"]));
    expect(api.ports).toEqual([`${config.port}:${config.port}`]);
    expect(worker.ports).toBeUndefined();
    expect(worker.container_name).toBeUndefined();
    expect(loadConfig(env(worker)).engines).toEqual(["torch"]);
  });

  it("gives API and workers the same database, Redis and models, and starts them after their dependencies are healthy", () => {
    for (const key of ["DATABASE_URL", "REDIS_URL", "PIXELAI_MODELS_DIR", "PIXELAI_LORAS_DIR", "PIXELAI_DEFAULT_MODEL"]) {
      expect(env(worker)[key]).toBe(env(api)[key]);
    }
    expect(new URL(env(api).REDIS_URL).hostname).toBe("redis");
    for (const s of [api, worker]) {
      expect(s.build).toBe(".");
      expect(s.depends_on?.redis.condition).toBe("service_healthy");
      expect(s.depends_on?.postgres.condition).toBe("service_healthy");
      expect(mounts(s).map((m) => m[0])).toEqual(expect.arrayContaining(["models", "loras"]));
    }
    expect(api.healthcheck).toBeDefined();
    expect(worker.depends_on?.api.condition).toBe("service_healthy");
  });

  it("declares every named volume it mounts", () => {
    const named = Object.values(compose.services)
      .flatMap(mounts)
      .map((m) => m[0])
      .filter((source) => !source.startsWith(".") && !source.startsWith("/"));
    for (const v of named) expect(Object.keys(compose.volumes)).toContain(v);
  });

  it("sets only environment variables the code reads (compose and Dockerfile)", () => {
    const read = namesTheCodeReads();
    // Sanity: the scan finds config.ts's and the Python runner's reads.
    for (const name of ["DATABASE_URL", "REDIS_URL", "HOST", "PIXELAI_ENGINES", "PIXELAI_ALLOWED_HOSTS", "PIXELAI_DEVICE"])
      expect(read.has(name)).toBe(true);
    const set = new Set([...Object.keys(env(api)), ...Object.keys(env(worker))]);
    const dockerfile = fs.readFileSync(path.join(repoRoot, "Dockerfile"), "utf8");
    for (const m of dockerfile.matchAll(/^ENV ([A-Z_][A-Z0-9_]*)=/gm)) set.add(m[1]);
    expect(set.size).toBeGreaterThan(5);
    expect([...set].filter((name) => !read.has(name))).toEqual([]);
  });

  it("builds an image that runs the same CLI", () => {
    const dockerfile = fs.readFileSync(path.join(repoRoot, "Dockerfile"), "utf8");
    expect(dockerfile).toMatch(/^RUN npm ci/m);
    expect(dockerfile).toMatch(/^RUN npm run build/m);
    expect(dockerfile).toMatch(/^CMD \["node", "dist\/cli\.js"/m);
    expect(fs.readFileSync(path.join(repoRoot, ".dockerignore"), "utf8")).toMatch(/^node_modules$/m);
  });
});
