import type { EngineName } from "../backends/engine-names";
import type { InstallView } from "../installs/installs.dto";

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
  /**
   * Hub ids: the weights variant to install: fp16 (half the download), none (the plain weights), or auto (fp16 where
   * the torch engine runs fp16). Default auto.
   */
  variant?: "fp16" | "none" | "auto";
  /**
   * Hub LoRAs: the weights file to install when the repository holds several.
   * @maxLength 300
   */
  weightName?: string;
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
  /** Engines this model can run on now (a LoRA: the engines that can apply it). */
  engines: EngineName[];
  mlx?: MlxStatus;
  /** local: a folder or file under models/ or loras/; hub: installed from the hub (`source` is its id). */
  origin: "local" | "hub";
  /** Hub models: the commit the installed snapshot is pinned to; null until installed. */
  commit: string | null;
  /** Hub models: the latest install, with its progress while it runs. */
  install?: InstallView;
}
