import { fork } from "node:child_process";
import { CompletionTracker } from "./completions";
import { runHttpPhase, HttpPhaseResult } from "./http-path";
import { runWsPhase } from "./ws-path";

/** What the bench asks a client process to run: one (a) row against a running service. */
export interface ClientTask {
  url: string;
  redisUrl: string;
  prefix: string;
  jobs: number;
  concurrency: number;
  seedBase: number;
  jobTimeoutMs: number;
  /** (a) over HTTP (the default), or (g) the extension's WebSocket path (ws-path.ts). */
  path?: "http" | "ws";
}

/**
 * Runs one (a) or (g) row from a client in its own Node process, as a real client (Aseprite, curl) is: its HTTP calls and its
 * completion tracking (the service's job events) then do not share the service's event loop. It still shares the machine's
 * cores, as a local client does.
 */
export function runHttpPhaseInClient(task: ClientTask, timeoutMs: number): Promise<HttpPhaseResult> {
  return new Promise((resolve, reject) => {
    const child = fork(__filename, ["--client"], { stdio: ["ignore", "inherit", "inherit", "ipc"] });
    const timer = setTimeout(() => {
      child.kill("SIGKILL");
      reject(new Error(`bench client did not finish within ${timeoutMs} ms`));
    }, timeoutMs);
    let settled = false;
    child.once("message", (msg: { result?: HttpPhaseResult; error?: string }) => {
      settled = true;
      clearTimeout(timer);
      if (msg.result) resolve(msg.result);
      else reject(new Error(`bench client failed: ${msg.error}`));
    });
    child.once("exit", (code) => {
      clearTimeout(timer);
      if (!settled) reject(new Error(`bench client exited (code ${code}) without a result`));
    });
    child.send(task);
  });
}

async function clientMain(task: ClientTask): Promise<HttpPhaseResult> {
  if (task.path === "ws") return runWsPhase(task);
  const tracker = new CompletionTracker({ kind: "jobEvents", redisUrl: task.redisUrl, prefix: task.prefix });
  await tracker.ready();
  try {
    return await runHttpPhase({ ...task, tracker });
  } finally {
    await tracker.close();
  }
}

if (require.main === module && process.argv.includes("--client")) {
  process.once("message", (task: ClientTask) => {
    clientMain(task).then(
      (result) => process.send?.({ result }, () => process.exit(0)),
      (err: Error) => process.send?.({ error: err.stack ?? err.message }, () => process.exit(1)),
    );
  });
}
