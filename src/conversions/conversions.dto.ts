export interface ConversionRequest {
  /** float16 halves the size (Metal runs it natively); float32 is what CPU runs. */
  dtype?: "float16" | "float32";
}

export interface ConversionView {
  id: string;
  model: string;
  status: "queued" | "active" | "completed" | "failed";
  dtype: string;
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
  architecture: string;
  sourceRevision: string | null;
  converterVersion: string | null;
  createdAt: string;
  fileCount: number;
  totalBytes: number;
  verified: boolean;
  problem?: string;
}
