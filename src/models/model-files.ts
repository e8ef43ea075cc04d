import { execFile } from "node:child_process";
import fs from "node:fs";
import path from "node:path";
import { MANIFEST_FILE, readMlxManifest } from "./mlx-manifest";

/** What a diffusers folder is, as python/pixelai_runner/model_files.py reads it. */
export interface ModelFacts {
  architecture: "sd" | "sdxl";
  crossAttentionDim: number | null;
}

export interface MlxCheck {
  converted: boolean;
  /** Every file the manifest lists is present with its recorded size and sha256. */
  verified: boolean;
  problem?: string;
}

type InspectLine = { path: string; error: string } | ({ path: string } & ModelFacts);

/**
 * Asks the Python side (`python -m pixelai_runner.model_files`) what a model folder is and whether a converted MLX
 * folder is intact: those rules live there, next to the engines that load the files, and nowhere else. Runs off the
 * event loop, in a short-lived interpreter that imports only the standard library (the MLX check adds its manifest
 * module).
 */
export class ModelFiles {
  /** Per converted folder: the stat fingerprint its last answer was for, so unchanged files are not hashed again. */
  private readonly verified = new Map<string, { fingerprint: string; check: MlxCheck }>();
  private readonly pending = new Map<string, Promise<MlxCheck>>();

  constructor(
    private readonly python: string,
    private readonly pythonDir: string,
    private readonly timeoutMs = 10 * 60_000,
  ) {}

  /** One answer per folder: its facts, or why it is not a model this server runs. */
  async inspect(dirs: string[]): Promise<Map<string, ModelFacts | { error: string }>> {
    const answers = new Map<string, ModelFacts | { error: string }>();
    if (dirs.length === 0) return answers;
    for (const line of await this.ask<InspectLine>("inspect", dirs)) {
      const { path: dir, ...answer } = line;
      answers.set(dir, answer);
    }
    for (const dir of dirs) if (!answers.has(dir)) answers.set(dir, { error: "no answer from model_files" });
    return answers;
  }

  /**
   * The MLX engine's own manifest check of a converted folder. A folder whose files kept their sizes and mtimes since
   * the last check gets that answer again, as the engine's verifier does, so listing models never re-hashes gigabytes.
   */
  async verifyMlx(dir: string): Promise<MlxCheck> {
    const fingerprint = statFingerprint(dir);
    if (fingerprint === null) return { converted: false, verified: false, problem: "not converted" };
    const known = this.verified.get(dir);
    if (known?.fingerprint === fingerprint) return known.check;
    const running = this.pending.get(dir);
    if (running) return running;
    const check = this.ask<{ path: string } & MlxCheck>("verify-mlx", [dir])
      .then(([line]) => {
        const { path: _dir, ...answer } = line ?? { path: dir, converted: true, verified: false, problem: "no answer from model_files" };
        // a change while the check ran leaves it unremembered: the next call looks again
        if (statFingerprint(dir) === fingerprint) this.verified.set(dir, { fingerprint, check: answer });
        return answer;
      })
      .catch((err: Error): MlxCheck => ({ converted: true, verified: false, problem: `cannot verify: ${err.message}` }))
      .finally(() => this.pending.delete(dir));
    this.pending.set(dir, check);
    return check;
  }

  private ask<T>(command: string, dirs: string[]): Promise<T[]> {
    return new Promise((resolve, reject) => {
      execFile(
        this.python,
        ["-m", "pixelai_runner.model_files", command, ...dirs],
        { env: { ...process.env, PYTHONPATH: this.pythonDir }, timeout: this.timeoutMs, maxBuffer: 16 * 1024 * 1024 },
        (err, stdout, stderr) => {
          if (err) return reject(new Error(`model_files ${command} failed: ${String(stderr).trim() || err.message}`));
          try {
            resolve(
              String(stdout)
                .split("\n")
                .filter((line) => line.trim())
                .map((line) => JSON.parse(line) as T),
            );
          } catch (parseErr) {
            reject(new Error(`model_files ${command} answered something that is not JSON lines: ${(parseErr as Error).message}`));
          }
        },
      );
    });
  }
}

/**
 * (size, mtime) of manifest.json and of every file it lists (reading what the converter wrote); null without a
 * manifest. Any replaced, edited or removed file changes it.
 */
function statFingerprint(dir: string): string | null {
  const manifestFile = path.join(dir, MANIFEST_FILE);
  const stamp = (file: string) => {
    try {
      const st = fs.statSync(file);
      return `${st.size}:${st.mtimeMs}`;
    } catch {
      return "missing";
    }
  };
  const own = stamp(manifestFile);
  if (own === "missing") return null;
  const files = Object.keys(readMlxManifest(dir)?.files ?? {}).sort();
  return [own, ...files.map((rel) => `${rel}=${stamp(path.join(dir, rel))}`)].join("\n");
}
