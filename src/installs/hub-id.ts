import { AppError } from "../backends/error-codes";

/**
 * Hub references: the one place that decides whether a model/LoRA reference is a hub id and whether it is valid.
 *
 * The form decides, never the disk: a reference with a '/' is a hub id `owner/name` (optionally `@revision`); registry
 * names and local sources cannot contain '/', so a hub id is never tried as a filesystem path, even when a folder of
 * that name exists under models/.
 */

export const DEFAULT_REVISION = "main";

/**
 * huggingface_hub 2.4.0, utils/_validators.py `REPO_ID_REGEX` (compiled there with re.VERBOSE | re.ASCII and used with
 * fullmatch). JavaScript's \w and \b are ASCII-only without the `u` flag, and ^…$ without `m` anchor the whole string.
 */
const REPO_ID_REGEX = /^(?:\b[\w\-.]{1,96}\b\/)?\b[\w\-.]{1,96}\b$/;

/**
 * An exact port of huggingface_hub's `validate_repo_id` (same checks, same order): null when the hub library accepts
 * `repoId`, else why not. hub-id.spec.ts runs the Python original on a battery of ids and compares.
 */
export function hubValidatorProblem(repoId: string): string | null {
  if ((repoId.match(/\//g) ?? []).length > 1) return "must be 'repo_name' or 'namespace/repo_name'";
  if (!REPO_ID_REGEX.test(repoId)) {
    return "must use letters, digits, '-', '_' or '.', cannot start or end with '-' or '.', and each part is at most 96 characters";
  }
  if (repoId.includes("--") || repoId.includes("..")) return "cannot contain '--' or '..'";
  if (repoId.endsWith(".git")) return "cannot end with '.git'";
  return null;
}

const COMMIT_SHA = /^[0-9a-f]{40}$/;
/** Branch and tag names as git allows them (check-ref-format), kept to a safe alphabet; `refs/pr/1` is a hub PR ref. */
const REF_NAME = /^[A-Za-z0-9][A-Za-z0-9._/-]{0,127}$/;

/** null when `revision` is a 40-hex commit or a plausible branch/tag name, else why not. */
export function revisionProblem(revision: string): string | null {
  if (COMMIT_SHA.test(revision)) return null;
  if (!REF_NAME.test(revision)) return "must be a 40-hex commit or a branch/tag name (letters, digits, '.', '_', '-', '/'; max 128)";
  if (
    revision.includes("..") ||
    revision.includes("//") ||
    revision.endsWith("/") ||
    revision.endsWith(".") ||
    revision.endsWith(".lock")
  ) {
    return "is not a valid git ref name";
  }
  if (revision.split("/").some((segment) => segment.startsWith(".") || segment.startsWith("-"))) return "is not a valid git ref name";
  return null;
}

export interface HubRef {
  /** `owner/name` */
  repoId: string;
  /** As asked: a branch, tag or commit (DEFAULT_REVISION when none was given). */
  revision: string;
}

/** True when `reference` has the form of a hub id (it may still be invalid: parseHubRef says why). */
export function isHubReference(reference: string): boolean {
  return reference.includes("/");
}

/**
 * Parses `owner/name`, `owner/name@revision`, or `owner/name` plus a separate `revision` field (not both), and proves
 * it valid: huggingface_hub's own rules, plus exactly one '/' (a bare `name` is a local reference here).
 * Bad input → 400 INVALID_REQUEST naming `field`.
 */
export function parseHubRef(reference: string, revision?: string | null, field = "source"): HubRef {
  const bad = (why: string): AppError =>
    new AppError("INVALID_REQUEST", `invalid hub id ${JSON.stringify(reference).slice(0, 200)}: ${why}`, { field });
  if (typeof reference !== "string" || reference.length === 0 || reference.length > 300) throw bad("must be 1–300 characters");
  const at = reference.indexOf("@");
  const repoId = at === -1 ? reference : reference.slice(0, at);
  const inline = at === -1 ? null : reference.slice(at + 1);
  if (inline !== null && revision) throw bad("give the revision either after '@' or in the revision field, not both");
  if ((repoId.match(/\//g) ?? []).length !== 1) throw bad("must be 'owner/name' (exactly one '/')");
  const problem = hubValidatorProblem(repoId);
  if (problem) throw bad(problem);
  const rev = inline ?? revision ?? DEFAULT_REVISION;
  const revProblem = revisionProblem(rev);
  if (revProblem) {
    throw new AppError("INVALID_REQUEST", `invalid revision ${JSON.stringify(rev).slice(0, 200)}: ${revProblem}`, {
      field: inline !== null ? field : "revision",
    });
  }
  return { repoId, revision: rev };
}

/** `owner/name` or `owner/name@revision` (the default revision is left out). */
export function formatHubRef(ref: HubRef): string {
  return ref.revision === DEFAULT_REVISION ? ref.repoId : `${ref.repoId}@${ref.revision}`;
}

/**
 * The registry name an install gets when none is given: the repository's name (hub names use the registry's alphabet;
 * trimmed to the registry's 64 characters and to a letter or digit at both ends).
 */
export function registryNameFor(repoId: string): string {
  const name = repoId.slice(repoId.indexOf("/") + 1).slice(0, 64);
  return name.replace(/^[^A-Za-z0-9]+/, "").replace(/[^A-Za-z0-9]+$/, "") || "hub-model";
}
