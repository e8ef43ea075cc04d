import { createHash } from "node:crypto";
import fs from "node:fs";
import path from "node:path";

// Hashing a large LoRA on every registration scan would be slow: a file is re-hashed only when its size or mtime changes.
const hashCache = new Map<string, { size: number; mtimeMs: number; sha256: string }>();

/** sha256 of a file (shown for registered LoRAs). */
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

/**
 * (relative path, size, mtime) of every file under `dir`, hashed: changes whenever a source file is replaced or
 * edited. Conversions use it to answer an unchanged source with the earlier conversion without hashing its contents.
 */
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
