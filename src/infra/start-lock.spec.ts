import { ChildProcess, spawn, spawnSync } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import ts from "typescript";
import { acquireStartLock, LOCK_FILE, LockHolder, StartLockError } from "./start-lock";

let dir: string;
let sleeper: ChildProcess | undefined;

beforeEach(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), "pixelai-lock-"));
});

afterEach(() => {
  sleeper?.kill("SIGKILL");
  sleeper = undefined;
  fs.rmSync(dir, { recursive: true, force: true });
});

const lockFile = () => path.join(dir, LOCK_FILE);
const readLock = () => JSON.parse(fs.readFileSync(lockFile(), "utf8")) as LockHolder;
const writeLock = (holder: Partial<LockHolder>) =>
  fs.writeFileSync(lockFile(), JSON.stringify({ role: "start", startedAt: new Date().toISOString(), script: "cli.js", ...holder }));

/** A live process that is not us: `sleep`, so its command line names "sleep". */
function startSleeper(): number {
  sleeper = spawn("sleep", ["30"], { stdio: "ignore" });
  return sleeper.pid!;
}

/** A pid that existed and is gone now. */
function deadPid(): number {
  return Number(spawnSync("sh", ["-c", "echo $$"], { encoding: "utf8" }).stdout.trim());
}

describe("start lock", () => {
  it("writes pid, role, port and start time into the data folder (creating it) and removes the file on release", () => {
    const nested = path.join(dir, "not", "yet");
    const lock = acquireStartLock({ dataDir: nested, role: "start", host: "127.0.0.1", port: 5123 });
    const holder = JSON.parse(fs.readFileSync(path.join(nested, LOCK_FILE), "utf8")) as LockHolder;
    expect(holder).toMatchObject({ pid: process.pid, role: "start", host: "127.0.0.1", port: 5123 });
    expect(Math.abs(Date.parse(holder.startedAt) - Date.now())).toBeLessThan(5_000);
    expect(fs.readdirSync(nested)).toEqual([LOCK_FILE]); // no temporary file left beside it
    lock.release();
    lock.release();
    expect(fs.existsSync(path.join(nested, LOCK_FILE))).toBe(false);
  });

  it("refuses while the holder runs, with the one-line message naming its URL and pid, and leaves its file alone", () => {
    const pid = startSleeper();
    writeLock({ pid, host: "127.0.0.1", port: 5000, script: "sleep" });
    const before = fs.readFileSync(lockFile(), "utf8");
    let error: unknown;
    try {
      acquireStartLock({ dataDir: dir, role: "start", host: "127.0.0.1", port: 5000 });
    } catch (err) {
      error = err;
    }
    expect(error).toBeInstanceOf(StartLockError);
    expect((error as Error).message).toBe(
      `already running at http://127.0.0.1:5000 (pid ${pid}); stop it first or set PIXELAI_DATA_DIR / PORT`,
    );
    expect(fs.readFileSync(lockFile(), "utf8")).toBe(before);
  });

  it("names a worker holder by role and folder, and an IPv6 API host in brackets", () => {
    const pid = startSleeper();
    writeLock({ pid, role: "worker", script: "sleep" });
    expect(() => acquireStartLock({ dataDir: dir, role: "api", port: 5000 })).toThrow(
      `already running on ${dir} (worker, pid ${pid}); stop it first or set PIXELAI_DATA_DIR / PORT`,
    );
    writeLock({ pid, host: "::1", port: 5001, script: "sleep" });
    expect(() => acquireStartLock({ dataDir: dir, role: "worker" })).toThrow(`already running at http://[::1]:5001 (pid ${pid})`);
  });

  it.each([
    ["whose pid is gone", () => ({ pid: deadPid() })],
    ["whose pid now runs another program", () => ({ pid: startSleeper(), script: "cli.js" })],
    ["holding our own pid (a previous life of this pid, e.g. a restarted container)", () => ({ pid: process.pid })],
  ])("takes over a lock %s", (_name, holder) => {
    writeLock({ ...holder(), port: 5000, host: "127.0.0.1" });
    const lock = acquireStartLock({ dataDir: dir, role: "worker" });
    expect(readLock()).toMatchObject({ pid: process.pid, role: "worker" });
    expect(readLock().port).toBeUndefined();
    lock.release();
    expect(fs.existsSync(lockFile())).toBe(false);
  });

  it("takes over a file that is not a lock it can read", () => {
    fs.writeFileSync(lockFile(), "garbage{");
    acquireStartLock({ dataDir: dir, role: "start", port: 5000 }).release();
    fs.writeFileSync(lockFile(), JSON.stringify({ pid: -4 }));
    acquireStartLock({ dataDir: dir, role: "start", port: 5000 });
    expect(readLock().pid).toBe(process.pid);
  });

  it("release leaves a lock that another process has taken over since", () => {
    const lock = acquireStartLock({ dataDir: dir, role: "start", port: 5000 });
    const pid = startSleeper();
    writeLock({ pid, script: "sleep" });
    lock.release();
    expect(readLock().pid).toBe(pid);
  });

  it("lets exactly one of several processes racing for one folder win", async () => {
    // Real processes, so the atomic create decides: the module is transpiled to plain JS, each racer spins until the
    // same instant, tries once, prints what it got and stays alive a while (a live holder) before exiting.
    const build = fs.mkdtempSync(path.join(os.tmpdir(), "pixelai-lock-build-"));
    try {
      for (const name of ["start-lock", "process-info"]) {
        const source = fs.readFileSync(path.join(__dirname, `${name}.ts`), "utf8");
        const js = ts.transpileModule(source, {
          compilerOptions: { module: ts.ModuleKind.CommonJS, target: ts.ScriptTarget.ES2022, esModuleInterop: true },
        });
        fs.writeFileSync(path.join(build, `${name}.js`), js.outputText);
      }
      fs.writeFileSync(
        path.join(build, "racer.js"),
        `const { acquireStartLock } = require("./start-lock");
        const until = Number(process.argv[2]);
        while (Date.now() < until) {}
        try { acquireStartLock({ dataDir: process.argv[3], role: "start", port: 5000 }); console.log("won"); }
        catch (err) { console.log(err.name); }
        setTimeout(() => {}, 1500);`,
      );
      const until = Date.now() + 1_500;
      const outcomes = await Promise.all(
        Array.from(
          { length: 4 },
          () =>
            new Promise<string>((resolve) => {
              const child = spawn(process.execPath, [path.join(build, "racer.js"), String(until), dir], {
                stdio: ["ignore", "pipe", "inherit"],
              });
              let out = "";
              child.stdout.on("data", (d) => (out += d));
              child.on("exit", () => resolve(out.trim()));
            }),
        ),
      );
      expect(outcomes.sort()).toEqual(["StartLockError", "StartLockError", "StartLockError", "won"]);
    } finally {
      fs.rmSync(build, { recursive: true, force: true });
    }
  });
});
