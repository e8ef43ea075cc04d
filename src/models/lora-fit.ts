import type { LoraKeyRule } from "../generated/runner-protocol";

/** What the fit rule reads of a registered model or LoRA (both are rows of the model registry). */
export interface FitFacts {
  name: string;
  architecture: string;
  /** Text-embedding width: the base UNet's cross_attention_dim, or the width a LoRA was trained against. */
  crossAttentionDim: number | null;
}

/**
 * The one LoRA fit rule: a LoRA fits a base model when both are for the same architecture and, where both
 * text-embedding widths are known, the widths are equal (an SD 2.x LoRA, 1024 wide, does not fit an SD 1.5 model, 768).
 * Returns why it does not fit, or null when it fits. Checked before a job is queued and for the seed's /loras lists.
 */
export function loraMisfit(lora: FitFacts, base: FitFacts): string | null {
  const widthsDiffer = lora.crossAttentionDim !== null && base.crossAttentionDim !== null && lora.crossAttentionDim !== base.crossAttentionDim;
  if (lora.architecture === base.architecture && !widthsDiffer) return null;
  const width = (n: number | null) => (n === null ? "?" : String(n));
  return (
    `LoRA ${lora.name} (${lora.architecture}, text width ${width(lora.crossAttentionDim)}) does not fit model ` +
    `${base.name} (${base.architecture}, text width ${width(base.crossAttentionDim)})`
  );
}


/**
 * Why `engine` cannot apply a LoRA with these tensor names, by the rules its runner published, or null. The runner owns
 * the rules (for MLX: python/pixelai_runner/backends/mlx/lora.py); this only applies them before a job is queued. A rule
 * whose pattern is not a valid JavaScript regular expression is skipped: the runner still refuses such a file itself.
 */
export function loraRefusedBy(engine: string, loraName: string, tensorNames: string[], rules: LoraKeyRule[]): string | null {
  for (const rule of rules) {
    let pattern: RegExp;
    try {
      pattern = new RegExp(rule.pattern);
    } catch {
      continue;
    }
    const hit = tensorNames.find((name) => pattern.test(name));
    if (hit !== undefined) return `LoRA ${loraName} holds ${rule.what} (e.g. ${hit}), which the ${engine} engine cannot apply`;
  }
  return null;
}
