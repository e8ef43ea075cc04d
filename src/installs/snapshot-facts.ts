import path from "node:path";
import { fileSha256 } from "../models/file-hash";
import type { ModelFiles } from "../models/model-files";
import { inspectLora } from "../models/safetensors-header";
import type { SnapshotFacts } from "./installs.repository";

/**
 * What an installed snapshot is, for its registry entry — read with the registry's own rules (src/models/*), exactly as
 * a local folder or file is when it is registered. `sha256` of a LoRA comes from the install (the hub's LFS hash, which
 * the installer verified) when known.
 */
export async function snapshotFacts(
  files: ModelFiles,
  kind: "base" | "lora",
  snapshotDir: string,
  weightName: string | null,
  bytesTotal: bigint,
  knownSha256: string | null,
): Promise<SnapshotFacts> {
  if (kind === "base") {
    const facts = (await files.inspect([snapshotDir])).get(snapshotDir);
    if (!facts || "error" in facts) throw new Error(facts?.error ?? `${snapshotDir}: no answer from model_files`);
    return { architecture: facts.architecture, crossAttentionDim: facts.crossAttentionDim, sizeBytes: bytesTotal, sha256: null };
  }
  if (!weightName) throw new Error("a LoRA install names its weights file");
  const file = path.join(snapshotDir, weightName);
  const info = inspectLora(file);
  return {
    architecture: info.architecture,
    crossAttentionDim: info.crossAttentionDim,
    sizeBytes: bytesTotal,
    sha256: knownSha256 ?? fileSha256(file),
  };
}
