import { execFileSync } from "node:child_process";
import fs from "node:fs";

/** A process's command line as words (Linux: /proc; elsewhere: ps), or undefined where it cannot be read. */
export function commandLine(pid: number): string[] | undefined {
  try {
    if (fs.existsSync("/proc/self/cmdline")) {
      return fs.readFileSync(`/proc/${pid}/cmdline`, "utf8").split("\0").filter(Boolean);
    }
    // macOS and other systems without /proc: ps is part of the base system there.
    const out = execFileSync("ps", ["-o", "command=", "-p", String(pid)], { encoding: "utf8", stdio: ["ignore", "pipe", "ignore"] });
    return out.trim().split(/\s+/).filter(Boolean);
  } catch {
    return undefined;
  }
}
