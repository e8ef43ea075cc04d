import fs from "node:fs";
import path from "node:path";

export const MANIFEST_FILE = "manifest.json";

/**
 * manifest.json as the converter writes it (python/pixelai_runner/backends/mlx/manifest.py documents the layout). The
 * server only reads it for display; whether the files still match it is the Python check's answer (model-files.ts).
 */
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

/** The manifest of a converted folder, or null when there is none or it is not readable JSON. */
export function readMlxManifest(dir: string): MlxManifest | null {
  try {
    const parsed = JSON.parse(fs.readFileSync(path.join(dir, MANIFEST_FILE), "utf8")) as unknown;
    return typeof parsed === "object" && parsed !== null ? (parsed as MlxManifest) : null;
  } catch {
    return null;
  }
}
