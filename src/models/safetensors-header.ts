import fs from "node:fs";

export interface TensorInfo {
  dtype: string;
  shape: number[];
}

export interface SafetensorsHeader {
  tensors: Record<string, TensorInfo>;
  metadata: Record<string, string>;
}

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
    const parsed = JSON.parse(json.toString("utf8")) as Record<string, unknown>;
    const { __metadata__: metadata = {}, ...tensors } = parsed;
    return { tensors: tensors as Record<string, TensorInfo>, metadata: metadata as Record<string, string> };
  } finally {
    fs.closeSync(fd);
  }
}

export interface LoraInfo {
  format: "diffusers" | "kohya";
  rank: number | null;
  /** Input width of a cross-attention key projection's down/A matrix: the text-embedding width the LoRA expects. */
  crossAttentionDim: number | null;
  architecture: "sd" | "sdxl";
}

/**
 * Tells which base models a LoRA fits. The cross-attention key projection (attn2.to_k) maps text embeddings into the
 * UNet, so its input width must equal the base UNet's `cross_attention_dim` (768 SD1, 1024 SD2, 2048 SDXL).
 */
export function inspectLora(file: string): LoraInfo {
  const { tensors, metadata } = readSafetensorsHeader(file);
  const keys = Object.keys(tensors);
  const kohya = keys.some((k) => k.startsWith("lora_unet_") || k.startsWith("lora_te"));
  const toK = keys.find((k) => /attn2[._]to_k.*(lora_A|lora\.down|lora_down)\.weight$/.test(k));
  const crossAttentionDim = toK ? tensors[toK].shape[1] ?? null : metadata["pixelai.cross_attention_dim"] ? Number(metadata["pixelai.cross_attention_dim"]) : null;
  const rankKey = keys.find((k) => /(lora_A|lora\.down|lora_down)\.weight$/.test(k));
  const sdxlHints = keys.some((k) => k.includes("text_encoder_2") || k.startsWith("lora_te2_")) || metadata["pixelai.base_architecture"] === "sdxl";
  return {
    format: kohya ? "kohya" : "diffusers",
    rank: rankKey ? tensors[rankKey].shape[0] ?? null : null,
    crossAttentionDim,
    architecture: sdxlHints || crossAttentionDim === 2048 ? "sdxl" : "sd",
  };
}
