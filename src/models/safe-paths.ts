import fs from "node:fs";
import path from "node:path";
import { AppError } from "../backends/error-codes";

/** Registry names: what may appear in a URL, a folder name and a log line without escaping. */
export const MODEL_NAME_PATTERN = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/;

export function assertSafeName(name: string, what = "model name"): void {
  if (!MODEL_NAME_PATTERN.test(name) || name.includes("..")) {
    throw new AppError("INVALID_REQUEST", `invalid ${what} ${JSON.stringify(name)}: use letters, digits, '.', '_' and '-' (max 64, no '..')`);
  }
}

/**
 * Resolves `relative` under `root` and proves it stays there, before and after following symlinks. Rejects absolute
 * paths, NUL bytes and any '..' segment outright rather than normalising them away.
 */
export function resolveUnder(root: string, relative: string, what = "path"): string {
  if (relative.includes("\0")) throw new AppError("INVALID_REQUEST", `${what} contains a NUL byte`);
  if (path.isAbsolute(relative) || /^[A-Za-z]:[\\/]/.test(relative)) throw new AppError("INVALID_REQUEST", `${what} must be relative to its root`);
  if (relative.split(/[\\/]+/).some((seg) => seg === "..")) throw new AppError("INVALID_REQUEST", `${what} must not contain '..'`);
  const rootReal = fs.existsSync(root) ? fs.realpathSync(root) : path.resolve(root);
  const candidate = path.resolve(rootReal, relative);
  if (!isInside(rootReal, candidate)) throw new AppError("INVALID_REQUEST", `${what} leaves its root`);
  if (fs.existsSync(candidate)) {
    const real = fs.realpathSync(candidate);
    if (!isInside(rootReal, real)) throw new AppError("INVALID_REQUEST", `${what} resolves outside its root (symlink)`);
    return real;
  }
  return candidate;
}

function isInside(root: string, candidate: string): boolean {
  const rel = path.relative(root, candidate);
  return rel === "" || (!rel.startsWith("..") && !path.isAbsolute(rel));
}

/** More entries than any model folder holds: the walk stops there rather than hang on a hostile tree. */
const MAX_TREE_ENTRIES = 100_000;

/**
 * Proves that everything a loader could open under `target` (a model folder or file) stays under `root` after
 * following symlinks, at every level: a registered folder whose `unet` links to /etc would otherwise pass a check of
 * the top level only. Symlinked folders inside the root are walked too (a hub snapshot links into its blob store).
 */
export function assertTreeInside(root: string, target: string, what = "model path"): void {
  const rootReal = fs.realpathSync(root);
  const seen = new Set<string>();
  let entries = 0;
  const visit = (entry: string) => {
    const real = fs.realpathSync(entry);
    if (!isInside(rootReal, real)) {
      throw new AppError("INVALID_REQUEST", `${what} links outside its root: ${path.relative(rootReal, entry)}`);
    }
    if (seen.has(real) || !fs.statSync(real).isDirectory()) return;
    seen.add(real);
    for (const name of fs.readdirSync(real)) {
      if (++entries > MAX_TREE_ENTRIES) throw new AppError("INVALID_REQUEST", `${what} holds more than ${MAX_TREE_ENTRIES} entries`);
      visit(path.join(real, name));
    }
  };
  visit(target);
}
