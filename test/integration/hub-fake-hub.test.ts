import crypto from "node:crypto";
import fs from "node:fs";
import { FakeHub, HUB_REPOS } from "../support/fake-hub";

/** The TypeScript handle on the stand-in hub: same server as the Python tests, reached the way huggingface_hub does. */
let hub: FakeHub;

beforeAll(async () => {
  hub = await FakeHub.start();
});

afterAll(async () => {
  await hub?.stop();
});

describe("fake hub (TypeScript handle)", () => {
  it("lists a repository at a pinned commit and serves its files with the hub's headers and ranges", async () => {
    const info = (await (await fetch(`${hub.url}/api/models/${HUB_REPOS.lora}/revision/main?blobs=true`)).json()) as {
      sha: string;
      siblings: Array<{ rfilename: string; size: number; lfs?: { sha256: string } }>;
    };
    expect(info.sha).toMatch(/^[0-9a-f]{40}$/);
    const file = info.siblings.find((s) => s.rfilename === "pixel-art-xl.safetensors")!;
    const bytes = fs.readFileSync(hub.file(HUB_REPOS.lora, "pixel-art-xl.safetensors"));
    expect(file.size).toBe(bytes.length);
    expect(file.lfs?.sha256).toBe(crypto.createHash("sha256").update(bytes).digest("hex"));

    const ranged = await fetch(`${hub.url}/${HUB_REPOS.lora}/resolve/${info.sha}/pixel-art-xl.safetensors`, {
      headers: { Range: "bytes=100-" },
    });
    expect(ranged.status).toBe(206);
    expect(ranged.headers.get("x-repo-commit")).toBe(info.sha);
    expect(ranged.headers.get("content-range")).toBe(`bytes 100-${bytes.length - 1}/${bytes.length}`);
    expect(Buffer.from(await ranged.arrayBuffer()).equals(bytes.subarray(100))).toBe(true);
    const log = await hub.log();
    expect(log.requests.map((r) => [r.method, r.rangeStart, r.status])).toEqual([["GET", 100, 206]]);
  });

  it("answers unknown repositories the way the hub does, and goes down on request", async () => {
    const missing = await fetch(`${hub.url}/api/models/nobody/nothing`);
    expect(missing.status).toBe(404);
    expect(missing.headers.get("x-error-code")).toBe("RepoNotFound");
    await hub.faults({ down: true });
    expect((await fetch(`${hub.url}/api/models/${HUB_REPOS.sdxl}`)).status).toBe(503);
    await hub.faults();
    expect((await fetch(`${hub.url}/api/models/${HUB_REPOS.sdxl}`)).status).toBe(200);
  });
});
