import fs from "node:fs";
import path from "node:path";
import { readSafetensorsHeader } from "./safetensors-header";

const STORED_BYTES: Record<string, number> = { F64: 8, F32: 4, F16: 2, BF16: 2, I64: 8, I32: 4, U32: 4, I16: 2, U16: 2, I8: 1, U8: 1, BOOL: 1 };
const FLOAT = new Set(["F64", "F32", "F16", "BF16"]);
// `model.fp16.safetensors`, `diffusion_pytorch_model.fp16-00001-of-00002.safetensors`: one variant of the same tensors
const VARIANT = /\.(fp16|bf16|fp32)(?=[.-])/;

/**
 * About how many bytes a runner holds once it has loaded the model folder at `folder`: every tensor of every
 * component (top level and one folder down, as diffusers and the MLX converter lay them out), floats at the runner's
 * `runtimeBytes` per value (fp32 on CPU, fp16 on a GPU: a runner casts on load), packed integers (quantized MLX
 * layers) as stored. Where a component ships several variants (fp16 beside fp32) it loads one, so one is counted.
 * Read from the safetensors headers only. Activations and library overhead are not in it: an estimate for budgeting.
 */
export function residentBytes(folder: string, runtimeBytes: number): number {
  let total = 0;
  const dirs = [folder, ...fs.readdirSync(folder, { withFileTypes: true }).filter((e) => e.isDirectory()).map((e) => path.join(folder, e.name))];
  for (const dir of dirs) {
    const variants = new Map<string, number>();
    for (const name of fs.readdirSync(dir)) {
      if (!name.endsWith(".safetensors")) continue;
      const variant = VARIANT.exec(name)?.[1] ?? "plain";
      variants.set(variant, (variants.get(variant) ?? 0) + tensorBytes(path.join(dir, name), runtimeBytes));
    }
    if (variants.size) total += Math.max(...variants.values());
  }
  return total;
}

function tensorBytes(file: string, runtimeBytes: number): number {
  let bytes = 0;
  for (const { dtype, shape } of Object.values(readSafetensorsHeader(file).tensors)) {
    const count = shape.reduce((a, b) => a * b, 1);
    bytes += count * (FLOAT.has(dtype) ? runtimeBytes : (STORED_BYTES[dtype] ?? 4));
  }
  return bytes;
}

/** Bytes per float value a runner computes in, from the dtype its ready line reports. */
export function runtimeBytesOf(dtype: string | null | undefined): number {
  return dtype === "float16" || dtype === "bfloat16" ? 2 : 4;
}
