import { formatBytes, ProgressBar } from "./install-cli";
import type { InstallView } from "./installs.dto";

function view(
  status: InstallView["status"],
  done: number,
  total: number | null,
  extra: Partial<InstallView["progress"]> = {},
): InstallView {
  return {
    id: "x",
    name: "sdxl",
    repo: "a/b",
    revision: "main",
    kind: "base",
    variant: null,
    weightName: null,
    status,
    commit: null,
    snapshotPath: null,
    progress: {
      bytesDone: done,
      bytesTotal: total,
      bytesPresent: 0,
      filesDone: 1,
      filesTotal: 4,
      percent: total ? Math.floor((100 * done) / total) : null,
      rateBps: 2_500_000,
      etaSeconds: 75,
      file: "unet/x.safetensors",
      ...extra,
    },
    attempts: 1,
    createdAt: "",
    startedAt: null,
    finishedAt: null,
  };
}

function sink(isTTY: boolean): { out: NodeJS.WriteStream; text: () => string } {
  let buf = "";
  const out = { isTTY, write: (s: string) => ((buf += s), true) } as unknown as NodeJS.WriteStream;
  return { out, text: () => buf };
}

describe("pixelai install progress bar", () => {
  it("shows percent, bytes, files, rate and ETA", () => {
    const line = new ProgressBar(sink(false).out).line(view("active", 4_200_000_000, 6_900_000_000));
    expect(line).toBe("[##################............]  60% 4.2 GB/6.9 GB 1/4 files 2.5 MB/s ETA 1m15s active");
  });

  it("redraws one line in place on a terminal", () => {
    const s = sink(true);
    const bar = new ProgressBar(s.out);
    bar.draw(view("active", 10, 100));
    bar.draw(view("active", 50, 100));
    bar.end();
    expect(s.text().split("\r")).toHaveLength(3);
    expect(s.text().endsWith("\n")).toBe(true);
  });

  it("writes a line per 10 % step, and on a status change, when not a terminal", () => {
    const s = sink(false);
    const bar = new ProgressBar(s.out);
    for (const done of [0, 1, 5, 12, 19, 55, 100]) bar.draw(view("active", done, 100));
    bar.draw(view("completed", 100, 100));
    const lines = s.text().trim().split("\n");
    expect(lines.map((l) => l.match(/(\d+)% /)![1])).toEqual(["0", "12", "55", "100", "100"]);
    expect(lines.at(-1)).toMatch(/completed$/);
  });

  it("says so before the file list is known", () => {
    expect(new ProgressBar(sink(false).out).line(view("queued", 0, null, { filesTotal: null }))).toMatch(/listing files queued$/);
  });

  it("formats sizes in decimal units", () => {
    expect([formatBytes(512), formatBytes(1500), formatBytes(6_938_000_000)]).toEqual(["512 B", "1.5 KB", "6.9 GB"]);
  });
});
