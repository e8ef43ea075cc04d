import type { ModelRecord } from "./models.repository";

/** The offline, random-weight demo models scripts/make_tiny_model.py builds (its MODEL_NAMES). */
export const DEMO_MODEL_NAMES: readonly string[] = ["tiny-sd", "tiny-sdxl"];

/**
 * Demo mode: no base model the server can run draws real pictures. True while every base model in the registry is a
 * demo one; a registered local model, or a hub model whose install has finished, ends it (a hub entry still
 * installing does not: nothing can run it yet).
 */
export function isDemoOnly(models: Pick<ModelRecord, "name" | "kind" | "origin" | "snapshotPath">[]): boolean {
  return !models.some((m) => m.kind === "base" && !DEMO_MODEL_NAMES.includes(m.name) && (m.origin !== "hub" || m.snapshotPath !== null));
}
