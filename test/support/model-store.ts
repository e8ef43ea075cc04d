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

/**
 * A DoRA for tiny-sd (text width 32, peft keys with a `lora_magnitude_vector`): registered like any LoRA (diffusers
 * format), but something the MLX engine refuses (it fuses plain low-rank LoRAs). Zero weights: only names count here.
 */
export function writeDoraLora(file: string): void {
  const module = "unet.down_blocks.1.attentions.0.transformer_blocks.0.attn2.to_k";
  const shapes: Record<string, number[]> = {
    [`${module}.lora_A.weight`]: [4, 32],
    [`${module}.lora_B.weight`]: [64, 4],
    [`${module}.lora_magnitude_vector`]: [64],
  };
  const header: Record<string, unknown> = {};
  let offset = 0;
  for (const [key, shape] of Object.entries(shapes)) {
    const bytes = shape.reduce((a, b) => a * b, 1) * 4;
    header[key] = { dtype: "F32", shape, data_offsets: [offset, offset + bytes] };
    offset += bytes;
  }
  const json = Buffer.from(JSON.stringify(header));
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(BigInt(json.length));
  fs.writeFileSync(file, Buffer.concat([len, json, Buffer.alloc(offset)]));
}
