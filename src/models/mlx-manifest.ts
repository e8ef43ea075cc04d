import { createHash } from "node:crypto";
import fs from "node:fs";
import path from "node:path";

/** manifest.json as scripts/convert_to_mlx.py writes it. */
export interface MlxManifest {
  name: string;
  source: string;
  sourceRevision: string;
  files: Record<string, { sha256: string; size: number }>;
  dtype: string;
  architecture: "sd" | "sdxl";
  converterVersion: string;
  createdAt: string;
}

export interface ManifestCheck {
  manifest: MlxManifest | null;
  verified: boolean;
  problem?: string;
}

// Hashing gigabytes on every GET /models would be absurd: a file is re-hashed only when its size or mtime changes.
const hashCache = new Map<string, { size: number; mtimeMs: number; sha256: string }>();

export function fileSha256(file: string): string {
  const st = fs.statSync(file);
  const cached = hashCache.get(file);
  if (cached && cached.size === st.size && cached.mtimeMs === st.mtimeMs) return cached.sha256;
  const hash = createHash("sha256");
  const fd = fs.openSync(file, "r");
  try {
    const buf = Buffer.alloc(1 << 20);
    let n: number;
    while ((n = fs.readSync(fd, buf, 0, buf.length, null)) > 0) hash.update(buf.subarray(0, n));
  } finally {
    fs.closeSync(fd);
  }
  const sha256 = hash.digest("hex");
  hashCache.set(file, { size: st.size, mtimeMs: st.mtimeMs, sha256 });
  return sha256;
}

/** Reads and verifies an MLX conversion folder: every listed file present, same size, same sha256. */
export function checkMlxFolder(dir: string): ManifestCheck {
  const manifestFile = path.join(dir, "manifest.json");
  if (!fs.existsSync(manifestFile)) return { manifest: null, verified: false, problem: "not converted" };
  let manifest: MlxManifest;
  try {
    manifest = JSON.parse(fs.readFileSync(manifestFile, "utf8")) as MlxManifest;
  } catch (err) {
    return { manifest: null, verified: false, problem: `unreadable manifest: ${(err as Error).message}` };
  }
  for (const [rel, expected] of Object.entries(manifest.files ?? {})) {
    const file = path.join(dir, rel);
    if (!fs.existsSync(file)) return { manifest, verified: false, problem: `missing ${rel}` };
    if (fs.statSync(file).size !== expected.size) return { manifest, verified: false, problem: `size of ${rel} changed` };
    if (fileSha256(file) !== expected.sha256) return { manifest, verified: false, problem: `sha256 of ${rel} changed` };
  }
  return { manifest, verified: true };
}

/** (relative path, size, mtime) of every file under `dir`: changes whenever a source file is replaced or edited. */
export function folderFingerprint(dir: string): string {
  const rows: string[] = [];
  const walk = (d: string) => {
    for (const entry of fs.readdirSync(d, { withFileTypes: true }).sort((a, b) => a.name.localeCompare(b.name))) {
      const p = path.join(d, entry.name);
      if (entry.isDirectory()) walk(p);
      else if (entry.isFile()) {
        const st = fs.statSync(p);
        rows.push(`${path.relative(dir, p)}\t${st.size}\t${Math.trunc(st.mtimeMs)}`);
      }
    }
  };
  walk(dir);
  return createHash("sha256").update(rows.join("\n")).digest("hex");
}
