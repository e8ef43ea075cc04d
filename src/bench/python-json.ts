import { spawn } from "node:child_process";
import path from "node:path";

/**
 * Runs `python -m <module> <args>` from the repo root (PYTHONPATH=python, like the runner supervisor does) and
 * returns its stdout. stderr is kept only for the error message: diffusers' progress bars would flood the table.
 */
export function runPythonModule(opts: { python: string; repoRoot: string; module: string; args: string[]; timeoutMs: number }): Promise<string> {
  return new Promise((resolve, reject) => {
    const pythonPath = [path.join(opts.repoRoot, "python"), process.env.PYTHONPATH].filter(Boolean).join(path.delimiter);
    const child = spawn(opts.python, ["-m", opts.module, ...opts.args], {
      cwd: opts.repoRoot,
      env: { ...process.env, PYTHONPATH: pythonPath },
      stdio: ["ignore", "pipe", "pipe"],
    });
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (d) => (stdout += d.toString()));
    child.stderr.on("data", (d) => (stderr = (stderr + d.toString()).slice(-4000)));
    const timer = setTimeout(() => child.kill("SIGKILL"), opts.timeoutMs);
    child.on("error", (err) => {
      clearTimeout(timer);
      reject(err);
    });
    child.on("close", (code, signal) => {
      clearTimeout(timer);
      if (code === 0) resolve(stdout);
      else reject(new Error(`${opts.module} exited ${signal ?? code}${signal === "SIGKILL" ? ` (over ${opts.timeoutMs} ms)` : ""}: ${stderr.trim().split("\n").slice(-5).join(" | ")}`));
    });
  });
}

/** The last stdout line that parses as a JSON object (the bench scripts' result line). */
export function lastJsonLine<T>(stdout: string): T {
  const lines = stdout.trim().split("\n").reverse();
  for (const line of lines) {
    if (!line.startsWith("{")) continue;
    try {
      return JSON.parse(line) as T;
    } catch {
      continue;
    }
  }
  throw new Error(`no JSON result line in output: ${stdout.slice(-300)}`);
}
