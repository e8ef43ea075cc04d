export interface ConversionRequest {
  /** float16 halves the size (Metal runs it natively); float32 is what CPU runs. */
  dtype?: "float16" | "float32";
  /**
   * Store the linear layers of the UNet and text encoders as 8 or 4 bits per weight (MLX's own quantization); the VAE,
   * convolutions and norms keep `dtype`. Smaller and lighter, with a changed picture: README's benchmark has the figures.
   */
  quantize?: 4 | 8;
  /** Weights that share one scale when quantizing (default 64); smaller groups are closer to the original. */
  groupSize?: 32 | 64 | 128;
}

/** How the weights of a conversion are stored: the float dtype, and the quantization of its linear layers if any. */
export interface ConversionOptions {
  dtype: "float16" | "float32";
  quantize: { bits: 4 | 8; groupSize: 32 | 64 | 128 } | null;
}

export interface ConversionView {
  id: string;
  model: string;
  status: "queued" | "active" | "completed" | "failed";
  dtype: string;
  /** Bits and group size of the quantized linear layers; null = none. */
  quantize: { bits: number; groupSize: number } | null;
  /** 0–100 */
  progress: number;
  createdAt: string;
  finishedAt: string | null;
  path: string | null;
  sourceRevision: string | null;
  converterVersion: string | null;
  error?: { code: string; message: string };
  /** manifest.json of the converted folder, once completed. */
  manifest?: Record<string, unknown>;
  /** True when this answer is an earlier conversion of the unchanged source (nothing was queued). */
  reused?: boolean;
}

export interface MlxModelSummary {
  name: string;
  conversionId: string;
  dtype: string;
  quantize: { bits: number; groupSize: number } | null;
  architecture: string;
  sourceRevision: string | null;
  converterVersion: string | null;
  createdAt: string;
  fileCount: number;
  totalBytes: number;
  verified: boolean;
  problem?: string;
}
