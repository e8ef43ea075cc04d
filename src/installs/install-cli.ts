import type { Config } from "../config";
import type { InstallView } from "./installs.dto";
import { parseHubRef, registryNameFor } from "./hub-id";

/**
 * `pixelai install <owner/name[@revision]> [--name N] [--lora] [--revision R] [--variant fp16|none|auto]
 * [--weight-name FILE] [--url URL]`: asks the running server to install a hub model (POST /models), then follows
 * the install (GET /installs/{id}) with a progress bar on stderr. Exit 0 installed, 1 failed, 2 usage or no server.
 */
export async function runInstallCli(args: string[], config: Config, out: NodeJS.WriteStream = process.stderr): Promise<number> {
  const opts: Record<string, string> = {};
  const positional: string[] = [];
  for (let i = 0; i < args.length; i++) {
    const a = args[i];
    if (a === "--lora") opts.kind = "lora";
    else if (["--name", "--revision", "--variant", "--weight-name", "--url"].includes(a) && i + 1 < args.length)
      opts[a.slice(2)] = args[++i];
    else if (a.startsWith("--")) return usage(`unknown option ${a}`);
    else positional.push(a);
  }
  if (positional.length !== 1) return usage("name one hub id, e.g. stabilityai/stable-diffusion-xl-base-1.0");
  let ref;
  try {
    ref = parseHubRef(positional[0], opts.revision);
  } catch (err) {
    return usage((err as Error).message);
  }
  const url = (opts.url ?? `http://${config.host.includes(":") ? `[${config.host}]` : config.host}:${config.port}`).replace(/\/$/, "");
  const body = {
    name: opts.name ?? registryNameFor(ref.repoId),
    source: ref.repoId,
    revision: ref.revision,
    kind: opts.kind ?? "base",
    ...(opts.variant ? { variant: opts.variant } : {}),
    ...(opts["weight-name"] ? { weightName: opts["weight-name"] } : {}),
  };
  const headers: Record<string, string> = { "Content-Type": "application/json", ...(config.apiKey ? { "X-API-Key": config.apiKey } : {}) };
  let res: Response;
  try {
    res = await fetch(`${url}/models`, { method: "POST", headers, body: JSON.stringify(body) });
  } catch (err) {
    out.write(`no PixelAI server answers at ${url} (${(err as Error).message}): start it with \`make start\`, or pass --url\n`);
    return 2;
  }
  let view = (await res.json()) as InstallView & { error?: { code: string; message: string } };
  if (res.status !== 202 && res.status !== 200) {
    out.write(`install refused: ${res.status} ${view.error?.code ?? ""} ${view.error?.message ?? JSON.stringify(view)}\n`);
    return 1;
  }
  out.write(`installing ${ref.repoId}@${ref.revision} as ${view.name} (install ${view.id})\n`);
  const bar = new ProgressBar(out);
  for (;;) {
    bar.draw(view);
    if (view.status === "completed" || view.status === "failed") break;
    await new Promise((r) => setTimeout(r, 500));
    const next = await fetch(`${url}/installs/${view.id}`, { headers }).catch(() => undefined);
    if (next?.ok) view = (await next.json()) as InstallView;
  }
  bar.end();
  if (view.status === "failed") {
    out.write(`install failed: ${view.error?.code}: ${view.error?.message}\n${view.error?.hint ? `hint: ${view.error.hint}\n` : ""}`);
    return 1;
  }
  out.write(`installed ${view.name}: ${view.repo}@${view.commit?.slice(0, 12)} in models/${view.snapshotPath}\n`);
  return 0;
}

function usage(problem: string): number {
  process.stderr.write(
    `${problem}\nusage: pixelai install <owner/name[@revision]> [--name NAME] [--lora] [--revision REV] [--variant fp16|none|auto] [--weight-name FILE] [--url URL]\n`,
  );
  return 2;
}

export function formatBytes(n: number): string {
  const units = ["B", "KB", "MB", "GB", "TB"];
  let v = n;
  let u = 0;
  while (v >= 1000 && u < units.length - 1) {
    v /= 1000;
    u++;
  }
  return `${v.toFixed(u === 0 ? 0 : 1)} ${units[u]}`;
}

function formatEta(s: number | null): string {
  if (s === null) return "--";
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m${String(s % 60).padStart(2, "0")}s`;
  return `${Math.floor(s / 3600)}h${String(Math.floor((s % 3600) / 60)).padStart(2, "0")}m`;
}

/** One line redrawn in place on a terminal; elsewhere (logs, CI) a line per 10 % step. */
export class ProgressBar {
  private last = "";
  private drawn = false;

  constructor(private readonly out: NodeJS.WriteStream) {}

  line(view: InstallView): string {
    const p = view.progress;
    const pct = p.percent ?? 0;
    const width = 30;
    const filled = Math.round((pct / 100) * width);
    const bytes = p.bytesTotal !== null ? `${formatBytes(p.bytesDone)}/${formatBytes(p.bytesTotal)}` : "listing files";
    const files = p.filesTotal !== null ? ` ${p.filesDone}/${p.filesTotal} files` : "";
    const rate = view.status === "active" && p.rateBps ? ` ${formatBytes(p.rateBps)}/s` : "";
    const eta = view.status === "active" && p.bytesTotal !== null ? ` ETA ${formatEta(p.etaSeconds)}` : "";
    return `[${"#".repeat(filled)}${".".repeat(width - filled)}] ${String(pct).padStart(3)}% ${bytes}${files}${rate}${eta} ${view.status}`;
  }

  draw(view: InstallView): void {
    const text = this.line(view);
    if (this.out.isTTY) {
      this.out.write(`\r${text}\u001b[K`);
      this.drawn = true;
      return;
    }
    const key = `${view.status}:${Math.floor((view.progress.percent ?? 0) / 10)}`;
    if (key !== this.last) this.out.write(`${text}\n`);
    this.last = key;
  }

  end(): void {
    if (this.out.isTTY && this.drawn) this.out.write("\n");
  }
}
