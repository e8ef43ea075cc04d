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
