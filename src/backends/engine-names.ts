/**
 * Every engine the server knows, in display order. Types, validation and the API's enums derive from this list; the
 * runner contract's EngineName (contract/runner-protocol.schema.json, which the Python runner reads) must say the same,
 * and engine-names.spec.ts checks that it does.
 */
export const ENGINE_NAMES = ["torch", "mlx"] as const;

export type EngineName = (typeof ENGINE_NAMES)[number];

export function isEngineName(value: unknown): value is EngineName {
  return typeof value === "string" && (ENGINE_NAMES as readonly string[]).includes(value);
}
