import { AppError } from "../backends/error-codes";
import { createLogger } from "../infra/logger";
import type { ModelRecord } from "../models/models.repository";
import { HubModels, hubNeedsOf } from "./hub-models";
import type { InstallRequest } from "./installs.dto";
import type { InstallRecord, InstallsRepository } from "./installs.repository";
import { InstallsService, toInstallView } from "./installs.service";

const SDXL = "stabilityai/stable-diffusion-xl-base-1.0";

function installRow(over: Partial<InstallRecord>): InstallRecord {
  return {
    id: "01installinstallinstallins",
    name: "stable-diffusion-xl-base-1.0",
    repoId: SDXL,
    revision: "main",
    kind: "base",
    variant: null,
    weightName: null,
    status: "active",
    commitSha: null,
    snapshotPath: null,
    bytesDone: 10n,
    bytesTotal: 100n,
    bytesPresent: 0n,
    filesDone: 1,
    filesTotal: 5,
    rateBps: null,
    etaSeconds: null,
    currentFile: null,
    attempts: 1,
    errorCode: null,
    errorMessage: null,
    errorHint: null,
    createdAt: new Date(),
    startedAt: new Date(),
    finishedAt: null,
    updatedAt: new Date(),
    ...over,
  };
}

/** The parts HubModels uses, in memory: registry entries, install rows, the install queue's states. */
function setUp(opts: { autoInstall?: boolean; entries?: Partial<ModelRecord>[]; installs?: InstallRecord[]; queueState?: string } = {}) {
  const entries = (opts.entries ?? []) as ModelRecord[];
  const rows = [...(opts.installs ?? [])];
  const started: InstallRequest[] = [];
  const readded: string[] = [];
  const installsRepo = {
    latestFor: async (q: { repoId: string; revision: string; kind: string }) =>
      rows.filter((r) => r.repoId === q.repoId && r.revision === q.revision && r.kind === q.kind).at(-1) ?? null,
    find: async (id: string) => rows.find((r) => r.id === id) ?? null,
    fail: async (id: string, code: string, message: string) => {
      const row = rows.find((r) => r.id === id);
      if (row && (row.status === "queued" || row.status === "active"))
        Object.assign(row, { status: "failed", errorCode: code, errorMessage: message });
    },
  } as unknown as InstallsRepository;
  const installs = {
    request: async (req: InstallRequest) => {
      started.push(req);
      const row = installRow({
        id: `01install${String(started.length).padStart(17, "0")}`,
        status: "queued",
        name: req.name,
        repoId: req.repoId,
        kind: req.kind,
      });
      rows.push(row);
      return { view: toInstallView(row), created: true };
    },
  } as unknown as InstallsService;
  const hub = new HubModels({
    models: {
      installedHub: async (ref, kind) =>
        entries.find((e) => e.source === ref.repoId && e.kind === kind && e.snapshotPath && e.commitSha && e.revision === ref.revision) ??
        null,
      findByName: async (name) => entries.find((e) => e.name === name) ?? null,
    },
    installs,
    installsRepo,
    queue: {
      state: async () => ({ state: opts.queueState ?? "active", failedReason: "job stalled more than allowable limit" }),
      add: async (p) => void readded.push(p.installId),
    },
    autoInstall: opts.autoInstall ?? true,
    logger: createLogger("silent"),
  });
  return { hub, started, readded, rows };
}

const sdxlNeed = () => hubNeedsOf({ model: SDXL });

describe("HubModels", () => {
  it("starts one install for an uninstalled reference and joins it from the next job", async () => {
    const { hub, started } = setUp();
    const [first] = await hub.prepare(sdxlNeed());
    const [second] = await hub.prepare(sdxlNeed());
    expect(started).toHaveLength(1);
    expect(started[0]).toMatchObject({
      repoId: SDXL,
      revision: "main",
      kind: "base",
      name: "stable-diffusion-xl-base-1.0",
      variant: "auto",
    });
    expect(second.id).toBe(first.id);
  });

  it("names an automatic install apart from a local entry that holds the repository's name", async () => {
    const { hub, started } = setUp({
      entries: [{ name: "pixel-art-xl", origin: "local", kind: "lora", source: "pixel-art-xl.safetensors" }],
    });
    await hub.prepare(hubNeedsOf({ model: "tiny-sd", lora: { name: "nerijs/pixel-art-xl" } }));
    expect(started[0].name).toMatch(/^pixel-art-xl-[0-9a-f]{8}$/);
  });

  it("refuses with 409 MODEL_NOT_INSTALLED naming the install call when automatic installs are off", async () => {
    const { hub, started } = setUp({ autoInstall: false });
    const err = await hub.prepare(sdxlNeed()).catch((e: AppError) => e);
    expect(err).toBeInstanceOf(AppError);
    expect((err as AppError).code).toBe("MODEL_NOT_INSTALLED");
    expect((err as AppError).status).toBe(409);
    expect((err as AppError).message).toContain(`POST /models {"source":"${SDXL}","kind":"base"`);
    expect(started).toEqual([]);
  });

  it("is ready once installed, and asks nothing of the installs then", async () => {
    const { hub, started } = setUp({
      entries: [
        { name: "sdxl", origin: "hub", kind: "base", source: SDXL, revision: "main", snapshotPath: ".hub/x", commitSha: "a".repeat(40) },
      ],
    });
    expect(await hub.readiness(sdxlNeed())).toEqual({ ready: true });
    expect(await hub.prepare(sdxlNeed())).toEqual([]);
    expect(started).toEqual([]);
  });

  it("keeps a job waiting on a running install, and fails it with the install's own code once that fails", async () => {
    const { hub, rows } = setUp({ installs: [installRow({ status: "active" })] });
    const waiting = await hub.readiness(sdxlNeed());
    expect(waiting).toMatchObject({ ready: false, installs: [{ id: rows[0].id, status: "active" }] });
    Object.assign(rows[0], { status: "failed", errorCode: "HUB_UNREACHABLE", errorMessage: "hub down", errorHint: "set HF_ENDPOINT" });
    const err = (await hub.readiness(sdxlNeed()).catch((e: AppError) => e)) as AppError;
    expect(err.code).toBe("HUB_UNREACHABLE");
    expect(err.message).toMatch(/hub down.*HF_ENDPOINT/);
  });

  it("queues again an install Redis lost, and fails one BullMQ gave up on (so its jobs do not wait forever)", async () => {
    const lost = setUp({ installs: [installRow({ status: "active" })], queueState: "missing" });
    expect((await lost.hub.readiness(sdxlNeed())).ready).toBe(false);
    expect(lost.readded).toEqual([lost.rows[0].id]);

    const gaveUp = setUp({ installs: [installRow({ status: "active" })], queueState: "failed" });
    const err = (await gaveUp.hub.readiness(sdxlNeed()).catch((e: AppError) => e)) as AppError;
    expect(err.code).toBe("INSTALL_FAILED");
    expect(gaveUp.rows[0].status).toBe("failed");
  });

  it("starts a new install from the worker when none ever ran (auto on), and refuses when auto is off", async () => {
    const on = setUp();
    expect((await on.hub.readiness(sdxlNeed())).ready).toBe(false);
    expect(on.started).toHaveLength(1);
    const off = setUp({ autoInstall: false });
    await expect(off.hub.readiness(sdxlNeed())).rejects.toMatchObject({ code: "MODEL_NOT_INSTALLED" });
  });

  it("reads hub references from a job: normalised, and 400 for bad ids", () => {
    expect(hubNeedsOf({ model: `${SDXL}@v1.0`, lora: { name: "local-lora" } })).toEqual([
      { ref: { repoId: SDXL, revision: "v1.0" }, kind: "base", field: "model" },
    ]);
    expect(() => hubNeedsOf({ model: "tiny-sd", lora: { name: "a/../b" } })).toThrow(AppError);
    expect(() => hubNeedsOf({ model: "https://huggingface.co/x/y" })).toThrow(/invalid hub id/);
  });
});
