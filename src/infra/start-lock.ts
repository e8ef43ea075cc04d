import fs from "node:fs";
import path from "node:path";
import { commandLine } from "./process-info";

/**
 * One server per data folder: with a managed Redis, two processes on one folder would append to one AOF and reconcile
 * one database against two queues. The lock is a file in the data folder naming its holder; it is written whole under
 * a temporary name and hard-linked into place, so a reader never sees half a file and only one of two racing starts
 * wins. A holder killed with SIGKILL leaves the file behind; the next start takes it over once that pid is gone.
 */
export const LOCK_FILE = "pixelai.lock";

export interface LockHolder {
  pid: number;
  /** `start`, `api` or `worker`. */
  role: string;
  /** Where its API listens; absent for a worker without one. */
  host?: string;
  port?: number;
  startedAt: string;
  /** Basename of the holder's main script (cli.js): a reused pid running something else is not the holder. */
  script: string;
}

export class StartLockError extends Error {
  constructor(
    message: string,
    readonly holder: LockHolder,
  ) {
    super(message);
    this.name = "StartLockError";
  }
}

export interface StartLock {
  readonly file: string;
  /** Removes the file if it is still ours; safe to call more than once, and from a process "exit" handler. */
  release(): void;
}

export function holderUrl(holder: Pick<LockHolder, "host" | "port">): string | undefined {
  if (holder.port === undefined || holder.host === undefined) return undefined;
  return `http://${holder.host.includes(":") ? `[${holder.host}]` : holder.host}:${holder.port}`;
}

export function refusalMessage(holder: LockHolder, dataDir: string): string {
  const url = holderUrl(holder);
  return url
    ? `already running at ${url} (pid ${holder.pid}); stop it first or set PIXELAI_DATA_DIR / PORT`
    : `already running on ${dataDir} (${holder.role}, pid ${holder.pid}); stop it first or set PIXELAI_DATA_DIR / PORT`;
}

/** Whether the lock's holder still runs: its pid exists, is not us, and (where we can see it) runs the same script. */
export function holderAlive(holder: LockHolder): boolean {
  // Our own pid in the file means a previous life of this pid (a container restarted on the same volume).
  if (holder.pid === process.pid) return false;
  try {
    process.kill(holder.pid, 0);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== "EPERM") return false;
  }
  const words = commandLine(holder.pid);
  // Unreadable (another user's process where ps is missing): err on the side of refusing.
  if (words === undefined || !holder.script) return true;
  return words.some((w) => path.basename(w) === holder.script);
}

function readHolder(file: string): { raw: string; holder: LockHolder | undefined } | undefined {
  let raw: string;
  try {
    raw = fs.readFileSync(file, "utf8");
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") return undefined;
    throw err;
  }
  try {
    const parsed = JSON.parse(raw) as LockHolder;
    return { raw, holder: Number.isInteger(parsed.pid) && parsed.pid > 0 ? parsed : undefined };
  } catch {
    return { raw, holder: undefined };
  }
}

/** Puts `content` at `file` only if nothing is there, atomically and whole. */
function createExclusive(file: string, content: string): boolean {
  const tmp = `${file}.${process.pid}.tmp`;
  fs.writeFileSync(tmp, content);
  try {
    fs.linkSync(tmp, file);
    return true;
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === "EEXIST") return false;
    if (code !== "EPERM" && code !== "ENOTSUP" && code !== "ENOSYS") throw err;
    // A file system without hard links: O_EXCL still lets only one start win, though a reader may see the file empty.
    try {
      fs.writeFileSync(file, content, { flag: "wx" });
      return true;
    } catch (inner) {
      if ((inner as NodeJS.ErrnoException).code === "EEXIST") return false;
      throw inner;
    }
  } finally {
    fs.rmSync(tmp, { force: true });
  }
}

/**
 * Takes the data folder's lock for this process, or throws StartLockError naming the live holder. Call it before
 * anything is started. A lock whose holder is gone (or that cannot be parsed) is taken over.
 */
export function acquireStartLock(opts: {
  dataDir: string;
  role: string;
  host?: string;
  port?: number;
  /** For the unit spec; defaults to this process's main script. */
  script?: string;
}): StartLock {
  fs.mkdirSync(opts.dataDir, { recursive: true });
  const file = path.join(opts.dataDir, LOCK_FILE);
  const mine: LockHolder = {
    pid: process.pid,
    role: opts.role,
    ...(opts.port !== undefined ? { host: opts.host ?? "127.0.0.1", port: opts.port } : {}),
    startedAt: new Date().toISOString(),
    script: opts.script ?? path.basename(process.argv[1] ?? ""),
  };
  const content = `${JSON.stringify(mine)}\n`;
  // Each round either wins, refuses, or removes one stale file; a few rounds cover starts racing over the same stale one.
  for (let round = 0; round < 5; round++) {
    if (createExclusive(file, content)) return lockHandle(file);
    const existing = readHolder(file);
    if (!existing) continue; // released between our try and our read
    if (existing.holder && holderAlive(existing.holder))
      throw new StartLockError(refusalMessage(existing.holder, opts.dataDir), existing.holder);
    // Stale: remove it only if it is still the very file we judged, not a fresh one another start just put there.
    if (readHolder(file)?.raw === existing.raw) fs.rmSync(file, { force: true });
  }
  throw new Error(`could not take the start lock ${file}: it keeps changing; is another start racing this one?`);
}

function lockHandle(file: string): StartLock {
  let released = false;
  return {
    file,
    release() {
      if (released) return;
      released = true;
      try {
        if (readHolder(file)?.holder?.pid === process.pid) fs.rmSync(file, { force: true });
      } catch {
        // the data folder went away: nothing left to release
      }
    },
  };
}
