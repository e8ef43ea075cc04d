import { ChildProcessWithoutNullStreams, execFileSync, spawn } from "node:child_process";
import path from "node:path";
import readline from "node:readline";
import { REPO } from "./processes";

/** The repositories the stand-in hub serves (test/support/fake-hub-repos.py builds them under the real ids). */
export const HUB_REPOS = {
  sdxl: "stabilityai/stable-diffusion-xl-base-1.0",
  lora: "nerijs/pixel-art-xl",
  pickleLora: "pixelai-test/pickle-only-lora",
  pickleSd: "pixelai-test/pickle-only-sd",
} as const;

export interface HubFaults {
  /** Every hub route answers 503. */
  down?: boolean;
  /** A download of `file` (`<repo>/<path>`) sends `afterBytes` bytes, then holds until the fault is cleared. */
  stall?: { file: string; afterBytes: number };
  /** File bodies at about this many bytes per second. */
  throttleBps?: number;
}

export interface HubRequest {
  method: string;
  path: string;
  rangeStart: number | null;
  status: number;
  bytesSent: number;
}

const PYTHON = path.join(REPO, ".venv", "bin", "python");

/**
 * The local stand-in hub (test/support/fake-hub.py, the same server the Python tests use) as a child process; reach
 * it with `HF_ENDPOINT=hub.url`. It exits with this process (its stdin is our pipe).
 */
export class FakeHub {
  private constructor(
    private readonly child: ChildProcessWithoutNullStreams,
    readonly url: string,
    readonly root: string,
  ) {}

  static async start(): Promise<FakeHub> {
    const root = execFileSync(PYTHON, [path.join(REPO, "test", "support", "fake-hub-repos.py")], { cwd: REPO })
      .toString()
      .trim();
    const child = spawn(PYTHON, [path.join(REPO, "test", "support", "fake-hub.py"), "--root", root, "--exit-with-parent"], {
      cwd: REPO,
      stdio: ["pipe", "pipe", "pipe"],
    });
    const url = await new Promise<string>((resolve, reject) => {
      const lines = readline.createInterface({ input: child.stdout });
      let stderr = "";
      child.stderr.on("data", (d: Buffer) => (stderr += d.toString()));
      lines.once("line", (line) => resolve((JSON.parse(line) as { url: string }).url));
      child.once("exit", (code) => reject(new Error(`fake hub exited with ${code}: ${stderr}`)));
    });
    return new FakeHub(child, url, root);
  }

  /** Replaces every fault; no argument clears them. */
  async faults(faults: HubFaults = {}): Promise<void> {
    const res = await fetch(`${this.url}/__fake_hub/faults`, { method: "POST", body: JSON.stringify(faults) });
    if (!res.ok) throw new Error(`fake hub faults: ${res.status}`);
  }

  async log(): Promise<{ requests: HubRequest[]; stalled: boolean }> {
    return (await (await fetch(`${this.url}/__fake_hub/log`)).json()) as { requests: HubRequest[]; stalled: boolean };
  }

  async clearLog(): Promise<void> {
    await fetch(`${this.url}/__fake_hub/log/clear`, { method: "POST", body: "{}" });
  }

  /** Absolute path of a served file. */
  file(repo: string, file: string): string {
    return path.join(this.root, repo, file);
  }

  async stop(): Promise<void> {
    if (this.child.exitCode !== null || this.child.signalCode !== null) return;
    const exited = new Promise((resolve) => this.child.once("exit", resolve));
    this.child.stdin.end();
    const timer = setTimeout(() => this.child.kill("SIGKILL"), 5000);
    await exited;
    clearTimeout(timer);
  }
}
