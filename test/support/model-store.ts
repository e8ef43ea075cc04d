import { execFileSync } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { REPO } from "./processes";

/**
 * A private model store for a test file that converts, installs into or tampers with its models: copies of the tiny
 * SD and SDXL models and their tiny LoRAs under a fresh temp folder, so the repo's models/ is never touched.
 * The caller removes `root` when done.
 */
export function privateModelStore(prefix: string): { root: string; modelsDir: string; lorasDir: string } {
  const root = fs.mkdtempSync(path.join(os.tmpdir(), prefix));
  const modelsDir = path.join(root, "models");
  const lorasDir = path.join(root, "loras");
  for (const name of ["tiny-sd", "tiny-sdxl"]) fs.cpSync(path.join(REPO, "models", name), path.join(modelsDir, name), { recursive: true });
  execFileSync(path.join(REPO, ".venv/bin/python"), [
    path.join(REPO, "scripts/make_tiny_lora.py"),
    "--models",
    modelsDir,
    "--out",
    lorasDir,
  ]);
  return { root, modelsDir, lorasDir };
}
