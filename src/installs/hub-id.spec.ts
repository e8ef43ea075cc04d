import { execFileSync } from "node:child_process";
import path from "node:path";
import { AppError } from "../backends/error-codes";
import { formatHubRef, hubValidatorProblem, isHubReference, parseHubRef, revisionProblem } from "./hub-id";

const repo = path.resolve(__dirname, "../..");

/** Ids the port must judge exactly as huggingface_hub does: valid ones, and every way of escaping a root we know. */
const BATTERY = [
  "foo/bar",
  "foo",
  "123",
  "stabilityai/stable-diffusion-xl-base-1.0",
  "nerijs/pixel-art-xl",
  "ntc-ai/SDXL-LoRA-slider.pixel-art",
  "Foo-BAR_foo.bar123/x",
  "a_/b",
  "_a/b",
  "a/b_",
  "models/tiny-sd",
  "data/pixelai.db",
  `${"a".repeat(96)}/${"b".repeat(96)}`,
  `${"a".repeat(97)}/b`,
  `a/${"b".repeat(97)}`,
  "",
  "/",
  "a/",
  "/a",
  "a//b",
  "../x",
  "a/../b",
  "..",
  "a/..",
  "a/..b",
  "a..b/c",
  "/etc/passwd",
  "/abs",
  "C:\\models\\x",
  "a\\b",
  "owner\\name",
  "http://evil/x",
  "https://huggingface.co/a/b",
  "hf://a/b",
  "a/b/c",
  "datasets/foo/bar",
  ".repo/x",
  "a/.x",
  "a/x.",
  "a/-x",
  "a/x-",
  "-a/x",
  "a--b/c",
  "a/b--c",
  "a/b.git",
  "a/b.gitx",
  "a/b c",
  "a/b\n",
  "a/b\u0000",
  "a/café",
  "a/文件夹",
  "~/x",
  "a/b@main",
  "a/b?x=1",
  "a/b#frag",
  "a/b%2F..",
  "a/b:c",
];

function pythonVerdicts(ids: string[]): boolean[] {
  const script = [
    "import json, sys",
    "from huggingface_hub.utils import validate_repo_id",
    "from huggingface_hub.errors import HFValidationError",
    "out = []",
    "for i in json.load(sys.stdin):",
    "    try:",
    "        validate_repo_id(i); out.append(True)",
    "    except HFValidationError:",
    "        out.append(False)",
    "print(json.dumps(out))",
  ].join("\n");
  const stdout = execFileSync(path.join(repo, ".venv/bin/python"), ["-c", script], { input: JSON.stringify(ids) });
  return JSON.parse(stdout.toString()) as boolean[];
}

describe("hub ids", () => {
  it("the TypeScript port of validate_repo_id agrees with huggingface_hub on every id of the battery", () => {
    const python = pythonVerdicts(BATTERY);
    const port = BATTERY.map((id) => hubValidatorProblem(id) === null);
    const disagreements = BATTERY.filter((_, i) => python[i] !== port[i]);
    expect(disagreements).toEqual([]);
    // The battery exercises both answers, so agreement is not vacuous.
    expect(python.filter(Boolean).length).toBeGreaterThan(10);
    expect(python.filter((v) => !v).length).toBeGreaterThan(30);
  });

  it("accepts owner/name, with a revision after '@' or in its own field", () => {
    expect(parseHubRef("stabilityai/stable-diffusion-xl-base-1.0")).toEqual({
      repoId: "stabilityai/stable-diffusion-xl-base-1.0",
      revision: "main",
    });
    expect(parseHubRef("nerijs/pixel-art-xl@v1.0")).toEqual({ repoId: "nerijs/pixel-art-xl", revision: "v1.0" });
    const sha = "0123456789abcdef0123456789abcdef01234567";
    expect(parseHubRef("nerijs/pixel-art-xl", sha)).toEqual({ repoId: "nerijs/pixel-art-xl", revision: sha });
    expect(parseHubRef("a/b@refs/pr/1").revision).toBe("refs/pr/1");
    expect(formatHubRef({ repoId: "a/b", revision: "main" })).toBe("a/b");
    expect(formatHubRef({ repoId: "a/b", revision: "v2" })).toBe("a/b@v2");
  });

  it.each([
    ["..", "../x"],
    ["traversal inside", "a/../b"],
    ["backslashes", "owner\\name"],
    ["absolute path", "/etc/passwd"],
    ["Windows path", "C:\\models\\x"],
    ["URL", "https://huggingface.co/a/b"],
    ["more than one '/'", "a/b/c"],
    ["no owner", "justaname"],
    ["over-long part", `a/${"b".repeat(97)}`],
    ["empty", ""],
    ["two revisions", "a/b@main"],
  ])("refuses %s with 400 INVALID_REQUEST", (_label, id) => {
    const revision = id === "a/b@main" ? "v1" : undefined;
    let caught: unknown;
    try {
      parseHubRef(id, revision);
    } catch (err) {
      caught = err;
    }
    expect(caught).toBeInstanceOf(AppError);
    expect((caught as AppError).status).toBe(400);
    expect((caught as AppError).code).toBe("INVALID_REQUEST");
  });

  it.each(["main", "v1.0", "refs/pr/12", "release_2024-01", "0123456789abcdef0123456789abcdef01234567"])("accepts revision %s", (rev) => {
    expect(revisionProblem(rev)).toBeNull();
  });

  it.each([
    "",
    "..",
    "a..b",
    "-x",
    ".hidden",
    "a/.b",
    "a//b",
    "a/",
    "x.lock",
    "x.",
    "a b",
    "a~1",
    "a^",
    "a:b",
    "a@{1}",
    "a\\b",
    "r".repeat(129),
  ])("refuses revision %j, naming the revision field", (rev) => {
    expect(revisionProblem(rev)).not.toBeNull();
    expect(() => parseHubRef("a/b", rev)).toThrow(expect.objectContaining({ code: "INVALID_REQUEST", details: { field: "revision" } }));
  });

  it("decides hub vs local by form only: a '/' makes a hub id", () => {
    expect(isHubReference("tiny-sd")).toBe(false);
    expect(isHubReference("models/tiny-sd")).toBe(true);
    expect(isHubReference("nerijs/pixel-art-xl")).toBe(true);
  });
});
