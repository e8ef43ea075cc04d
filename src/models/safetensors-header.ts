import fs from "node:fs";

export interface TensorInfo {
  dtype: string;
  shape: number[];
}

export interface SafetensorsHeader {
  tensors: Record<string, TensorInfo>;
  metadata: Record<string, string>;
}

// safetensors itself refuses headers above 100 MB; a larger length means this is not a safetensors file.
const MAX_HEADER_BYTES = 100 * 1024 * 1024;

/** Reads only the JSON header of a .safetensors file (8-byte little-endian length, then JSON): no weights, no torch. */
export function readSafetensorsHeader(file: string): SafetensorsHeader {
  const fd = fs.openSync(file, "r");
  try {
    const lenBuf = Buffer.alloc(8);
    if (fs.readSync(fd, lenBuf, 0, 8, 0) !== 8) throw new Error("file too short for a safetensors header");
    const len = Number(lenBuf.readBigUInt64LE(0));
    if (!Number.isSafeInteger(len) || len <= 0 || len > MAX_HEADER_BYTES) throw new Error(`implausible header length ${len}`);
    const json = Buffer.alloc(len);
    if (fs.readSync(fd, json, 0, len, 8) !== len) throw new Error("truncated safetensors header");
    const parsed = JSON.parse(json.toString("utf8")) as unknown;
    if (typeof parsed !== "object" || parsed === null || Array.isArray(parsed)) throw new Error("the header is not a JSON object");
    const { __metadata__: metadata = {}, ...rest } = parsed as Record<string, unknown>;
    const tensors: Record<string, TensorInfo> = {};
    for (const [key, value] of Object.entries(rest)) {
      const shape = (value as { shape?: unknown })?.shape;
      if (Array.isArray(shape)) tensors[key] = { dtype: String((value as { dtype?: unknown }).dtype), shape: shape.map(Number) };
    }
    return { tensors, metadata: metadata as Record<string, string> };
  } finally {
    fs.closeSync(fd);
  }
}

/** A file's tensor names (header only); none when it cannot be read, for checks that leave the verdict to the runner. */
export function tensorNamesOf(file: string): string[] {
  try {
    return Object.keys(readSafetensorsHeader(file).tensors);
  } catch {
    return [];
  }
}

export interface LoraInfo {
  format: "diffusers" | "kohya";
  /** First dimension of a down/A matrix (the first in key order); null when no such matrix has two dimensions. */
  rank: number | null;
  /** Input width of a cross-attention key projection's down/A matrix: the text-embedding width the LoRA expects. */
  crossAttentionDim: number | null;
  architecture: "sd" | "sdxl";
  /** Number of tensors. */
  keys: number;
}

const DOWN_PARTS = [".lora_down.", ".lora_A.", ".lora.down."];

/**
 * What a LoRA is, from its header alone. The one place these rules live (the runner never inspects a LoRA before
 * loading it; a LoRA that does not fit fails there with INVALID_REQUEST "does not fit"):
 * - format: "kohya" when a key starts with `lora_unet_` / `lora_te` or holds `.lora_down.` / `.lora_up.`; "diffusers"
 *   when a key holds `.lora_A.` / `.lora_B.` (peft) or `.lora.down.` / `.lora.up.` (older diffusers); anything else
 *   is not a LoRA (an Error).
 * - crossAttentionDim: the input width of the UNet's attn2 to_k down/A matrix — the text embeddings the LoRA was
 *   trained against (SD 1.x 768, SD 2.x 1024, SDXL 2048; the tiny test models 32 and 64); null when the LoRA does not
 *   touch attn2.to_k (then the `pixelai.cross_attention_dim` metadata, when present, says it).
 * - architecture: "sdxl" when crossAttentionDim is 2048, a key belongs to a second text encoder (`lora_te2_`,
 *   `text_encoder_2.`), or the metadata says `pixelai.base_architecture: sdxl`; otherwise "sd".
 * Whether a LoRA fits a model is lora-fit.ts.
 */
export function describeLora({ tensors, metadata }: SafetensorsHeader): LoraInfo {
  const keys = Object.keys(tensors).sort();
  let format: LoraInfo["format"];
  if (keys.some((k) => k.startsWith("lora_unet_") || k.startsWith("lora_te") || k.includes(".lora_down.") || k.includes(".lora_up."))) {
    format = "kohya";
  } else if (keys.some((k) => [".lora_A.", ".lora_B.", ".lora.down.", ".lora.up."].some((part) => k.includes(part)))) {
    format = "diffusers";
  } else {
    throw new Error("no LoRA keys (lora_A/lora_B or lora_down/lora_up) in this file");
  }
  const downs = keys.filter((k) => DOWN_PARTS.some((part) => k.includes(part)) && tensors[k].shape.length >= 2);
  // kohya flattens module paths with "_" (…_attn2_to_k.lora_down…); diffusers keeps dots (…attn2.to_k.lora_A…)
  const toK = downs.find((k) => k.includes("attn2_to_k.") || k.includes("attn2.to_k."));
  const tagged = Number(metadata["pixelai.cross_attention_dim"]);
  const crossAttentionDim = toK ? tensors[toK].shape[1] : Number.isInteger(tagged) && tagged > 0 ? tagged : null;
  const secondEncoder = keys.some((k) => k.startsWith("lora_te2_") || k.startsWith("text_encoder_2."));
  const taggedXl = String(metadata["pixelai.base_architecture"] ?? "").toLowerCase() === "sdxl";
  return {
    format,
    rank: downs.length > 0 ? tensors[downs[0]].shape[0] : null,
    crossAttentionDim,
    architecture: crossAttentionDim === 2048 || secondEncoder || taggedXl ? "sdxl" : "sd",
    keys: keys.length,
  };
}

export function inspectLora(file: string): LoraInfo {
  return describeLora(readSafetensorsHeader(file));
}
