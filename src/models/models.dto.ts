import type { EngineName } from "../backends/engine-names";

export interface RegisterModelRequest {
  /**
   * Registry name: letters, digits, '.', '_', '-' (max 64).
   * @pattern ^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$
   */
  name: string;
  /**
   * A path relative to models/ (base) or loras/ (LoRA), or a hub id `owner/name`.
   * @minLength 1
   * @maxLength 300
   */
  source: string;
  kind: "base" | "lora";
  /** Needed for hub ids (local folders and files are inspected). */
  architecture?: "sd" | "sdxl";
  /**
   * Hub revision (commit or tag) for hub ids.
   * @maxLength 100
   */
  revision?: string;
}

export interface MlxStatus {
  converted: boolean;
  /** Every file listed in the manifest is present with its recorded size and sha256. */
  verified: boolean;
  problem?: string;
  dtype?: string;
  sourceRevision?: string;
  converterVersion?: string;
  /** relative path → sha256 */
  files?: Record<string, string>;
}

export interface ModelDetail {
  name: string;
  kind: "base" | "lora";
  architecture: "sd" | "sdxl";
  source: string;
  sizeBytes: number | null;
  sha256: string | null;
  crossAttentionDim: number | null;
  /** Engines this model can run on now. */
  engines: EngineName[];
  mlx?: MlxStatus;
}
