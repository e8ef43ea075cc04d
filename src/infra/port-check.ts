import { execFileSync } from "node:child_process";
import fs from "node:fs";
import net from "node:net";
import { commandLine } from "./process-info";

export class PortBusyError extends Error {
  constructor(
    message: string,
    readonly holderPid: number | undefined,
  ) {
    super(message);
    this.name = "PortBusyError";
  }
}

/**
 * Fails fast when the API could not listen: checked before Redis, runners or workers start, so a busy port costs
 * nothing to undo. The check is a real bind, closed at once; `exclusive` keeps cluster-shared handles out of it.
 */
export async function assertPortFree(host: string, port: number): Promise<void> {
  if (port === 0) return; // any free port will do
  const error = await new Promise<NodeJS.ErrnoException | undefined>((resolve) => {
    const srv = net.createServer();
    srv.once("error", (err) => resolve(err));
    srv.listen({ host, port, exclusive: true }, () => srv.close(() => resolve(undefined)));
  });
  if (!error) return;
  if (error.code === "EADDRINUSE") {
    const holder = portHolder(port);
    const by = holder ? ` by pid ${holder.pid}${holder.command ? ` (${holder.command})` : ""}` : "";
    throw new PortBusyError(`port ${port} on ${host} is already in use${by}; stop it first or set PORT`, holder?.pid);
  }
  throw new Error(`cannot listen on ${host}:${port}: ${error.code ?? error.message}; set HOST / PORT`);
}

export interface PortHolder {
  pid: number;
  command: string | undefined;
}

/** The process listening on a TCP port, when this user may see it (Linux: /proc; elsewhere: lsof); else undefined. */
export function portHolder(port: number): PortHolder | undefined {
  try {
    const pid = fs.existsSync("/proc/net/tcp") ? procListener(port) : lsofListener(port);
    return pid === undefined ? undefined : { pid, command: commandOf(pid) };
  } catch {
    return undefined;
  }
}

/** Socket inodes listening on `port` from /proc/net/tcp{,6}, then the process holding one of them as an open fd. */
function procListener(port: number): number | undefined {
  const inodes = new Set<string>();
  for (const table of ["/proc/net/tcp", "/proc/net/tcp6"]) {
    if (!fs.existsSync(table)) continue;
    for (const line of fs.readFileSync(table, "utf8").split("\n").slice(1)) {
      const f = line.trim().split(/\s+/);
      // local_address is HEXIP:HEXPORT; state 0A is LISTEN; field 9 is the socket's inode
      if (f.length < 10 || f[3] !== "0A" || Number.parseInt(f[1].split(":")[1], 16) !== port) continue;
      inodes.add(`socket:[${f[9]}]`);
    }
  }
  if (inodes.size === 0) return undefined;
  for (const entry of fs.readdirSync("/proc")) {
    if (!/^\d+$/.test(entry)) continue;
    let fds: string[];
    try {
      fds = fs.readdirSync(`/proc/${entry}/fd`);
    } catch {
      continue; // another user's process, or gone
    }
    for (const fd of fds) {
      try {
        if (inodes.has(fs.readlinkSync(`/proc/${entry}/fd/${fd}`))) return Number(entry);
      } catch {
        // the fd closed while we looked
      }
    }
  }
  return undefined;
}

function lsofListener(port: number): number | undefined {
  const out = execFileSync("lsof", ["-nP", `-iTCP:${port}`, "-sTCP:LISTEN", "-t"], {
    encoding: "utf8",
    stdio: ["ignore", "pipe", "ignore"],
    timeout: 5_000,
  });
  const pid = Number.parseInt(out.trim().split("\n")[0], 10);
  return Number.isInteger(pid) ? pid : undefined;
}

function commandOf(pid: number): string | undefined {
  const command = commandLine(pid)?.join(" ");
  return command && command.length > 80 ? `${command.slice(0, 77)}...` : command || undefined;
}
