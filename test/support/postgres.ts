import { execFile } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { promisify } from "node:util";
import { freePort } from "../../src/infra/managed-redis";

const run = promisify(execFile);

export interface TestPostgres {
  /** postgresql://… for a fresh, empty database (connects over the cluster's private unix socket directory). */
  url: string;
  /** Another empty database in the same cluster (e.g. a shadow database for `prisma migrate diff`). */
  createDatabase(name: string): Promise<string>;
  /** Names of the cluster's databases. */
  databases(): Promise<string[]>;
  stop(): Promise<void>;
}

/** The server binaries: Debian keeps them off PATH in /usr/lib/postgresql/<major>/bin; elsewhere (brew) they are on it. */
function binDir(): string {
  if (process.env.PG_BIN_DIR) return process.env.PG_BIN_DIR;
  const root = "/usr/lib/postgresql";
  if (fs.existsSync(root)) {
    const majors = fs.readdirSync(root).filter((d) => fs.existsSync(path.join(root, d, "bin", "initdb")));
    majors.sort((a, b) => Number(b) - Number(a));
    if (majors.length) return path.join(root, majors[0], "bin");
  }
  return "";
}

/**
 * Starts a throwaway PostgreSQL cluster (initdb into a temp dir, pg_ctl on a free loopback port, socket in the temp dir)
 * and creates one database. initdb refuses to run as root, so as root the binaries run as the `postgres` user (the
 * Debian package creates it) on a temp dir it owns. Trust auth: the cluster only listens on 127.0.0.1 and lives for one
 * test file. stop() shuts it down fast and deletes the directory.
 */
export async function startTestPostgres(dbName = "pixelai"): Promise<TestPostgres> {
  const bin = binDir();
  const tool = (name: string) => (bin ? path.join(bin, name) : name);
  const asRoot = process.getuid?.() === 0;
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), "pixelai-pg-"));
  const data = path.join(tmp, "data");
  const user = asRoot ? "postgres" : os.userInfo().username;
  if (asRoot) {
    fs.chmodSync(tmp, 0o755);
    await run("chown", ["postgres:postgres", tmp]);
  }
  const pg = (name: string, args: string[]) =>
    asRoot ? run("runuser", ["-u", "postgres", "--", tool(name), ...args], { cwd: tmp }) : run(tool(name), args, { cwd: tmp });

  await pg("initdb", ["-D", data, "-U", user, "-A", "trust", "-E", "UTF8", "--no-sync"]);
  const port = await freePort();
  // fsync off: a test cluster is thrown away, durability would only cost time.
  const opts = `-p ${port} -k ${tmp} -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off -c full_page_writes=off`;
  await pg("pg_ctl", ["-D", data, "-o", opts, "-l", path.join(tmp, "server.log"), "-w", "-t", "60", "start"]);

  const urlOf = (name: string) => `postgresql://${user}@127.0.0.1:${port}/${name}`;
  const createDatabase = async (name: string) => {
    await pg("createdb", ["-h", tmp, "-p", String(port), "-U", user, name]);
    return urlOf(name);
  };
  let url: string;
  try {
    url = await createDatabase(dbName);
  } catch (err) {
    await pg("pg_ctl", ["-D", data, "-m", "immediate", "stop"]).catch(() => undefined);
    throw err;
  }
  return {
    url,
    createDatabase,
    databases: async () => {
      const { stdout } = await pg("psql", [
        "-h",
        tmp,
        "-p",
        String(port),
        "-U",
        user,
        "-d",
        "postgres",
        "-Atc",
        "SELECT datname FROM pg_database",
      ]);
      return stdout.split("\n").filter(Boolean);
    },
    stop: async () => {
      await pg("pg_ctl", ["-D", data, "-m", "fast", "-w", "stop"]).catch(() => undefined);
      fs.rmSync(tmp, { recursive: true, force: true });
    },
  };
}
