import { spawn } from "node:child_process";
import path from "node:path";

/**
 * A WebSocket client in a child process, so that what it does (reading megabytes of frames, or not reading at all)
 * is not counted in the memory and event loop of the service under test, which runs in the test's own process.
 * It sends `frames` (JSON text) as soon as it is open; "paused" stops reading from the socket first, like a peer that
 * never reads. It reports, as one JSON line on exit: messages received, their byte sizes, the first 60 characters of
 * each distinct size's first message, and the close code.
 */
const SCRIPT = `
const WebSocket = require("ws");
const [url, framesJson, mode, wantRaw] = process.argv.slice(1);
const frames = JSON.parse(framesJson);
const want = Number(wantRaw);
const ws = new WebSocket(url, { perMessageDeflate: false });
const sizes = {};
let count = 0;
let done = false;
// a socket that is paused and has nothing left to write keeps no event loop alive: this does, until finish()
setInterval(() => undefined, 1000);
const finish = (code) => {
  if (done) return;
  done = true;
  process.stdout.write(JSON.stringify({ count, sizes, code }) + "\\n", () => process.exit(0));
};
ws.on("open", () => {
  if (mode === "paused") ws._socket.pause();
  for (const f of frames) ws.send(f);
});
ws.on("message", (data) => {
  count += 1;
  const key = String(data.length);
  if (!sizes[key]) sizes[key] = { n: 0, head: data.subarray(0, 60).toString("utf8") };
  sizes[key].n += 1;
  if (want > 0 && count >= want) ws.close(1000);
});
ws.on("close", (code) => finish(code));
ws.on("error", () => finish(-1));
process.on("SIGTERM", () => finish(0));
`;

export interface FloodReport {
  count: number;
  sizes: Record<string, { n: number; head: string }>;
  /** The close code the client saw; 0: stopped by the test before any close. */
  code: number;
}

export interface Flood {
  /** Settles when the child exits (after `want` messages, a close, or stop()). */
  done: Promise<FloodReport>;
  stop(): void;
}

/** Starts one flooding client. `want` > 0: it closes (1000) after that many messages. */
export function startFlood(url: string, frames: unknown[], opts: { mode: "reading" | "paused"; want?: number }): Flood {
  const repoRoot = path.resolve(__dirname, "..", "..");
  const child = spawn(
    process.execPath,
    ["-e", SCRIPT, url, JSON.stringify(frames.map((f) => JSON.stringify(f))), opts.mode, String(opts.want ?? 0)],
    {
      cwd: repoRoot,
      stdio: ["ignore", "pipe", "pipe"],
    },
  );
  let out = "";
  let err = "";
  child.stdout.on("data", (d: Buffer) => (out += d.toString("utf8")));
  child.stderr.on("data", (d: Buffer) => (err += d.toString("utf8")));
  const done = new Promise<FloodReport>((resolve, reject) => {
    child.once("error", reject);
    // "close", not "exit": only then has all of its output been read
    child.once("close", (code, signal) => {
      try {
        resolve(JSON.parse(out.trim().split("\n").pop() ?? "") as FloodReport);
      } catch {
        reject(new Error(`flood client gave no report (exit ${code ?? signal}): ${JSON.stringify(out)} ${err.slice(-2000)}`));
      }
    });
  });
  return { done, stop: () => child.kill("SIGTERM") };
}
