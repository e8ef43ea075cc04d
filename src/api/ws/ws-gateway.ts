import http from "node:http";
import type { Duplex } from "node:stream";
import { RawData, WebSocket, WebSocketServer } from "ws";
import type { EngineStatusStore } from "../../backends/engine-status";
import type { Logger } from "../../infra/logger";
import type { StepPreview } from "../../jobs/job-queue";
import type { JobView } from "../../jobs/jobs.dto";
import type { JobsService } from "../../jobs/jobs.service";
import type { ModelsService } from "../../models/models.service";
import type { SettingsService } from "../../settings/settings.service";
import { enginesSummary } from "../engines-summary";
import { OriginPolicy, hostChecker } from "../host-check";
import type { JobEventsHub } from "../job-events";
import { pngToRgba } from "../job-validation";
import { ClientFrame, errorFrameOf, FrameError, MAX_SUBMIT_FRAME_BYTES, parseClientFrame } from "./frames";
import type { SubmitRateLimiter } from "../rate-limit";
import { watchInstallProgress } from "../install-progress-watch";
import type { WsLimits } from "../../config";
import { FinalFrameCache } from "./final-frame-cache";
import { base64Slot, EncodedRgba, frameWithBase64, frameWithBase64Parts, RgbaEncoder } from "./rgba-encoder";
import { ClientConnections, CLOSE_GRACE_MS, SEND_STALL_MS, tooManyWatchesMessage, WS_CLOSE } from "./ws-limits";
import type { Submitter } from "../../jobs/fair-use";
import { apiKeyHeader, submitterOf } from "../submitter";

export const WS_PATH = "/ws";

/**
 * ws closes the connection (1009) above maxPayload before we could answer. Frames over frames.MAX_FRAME_BYTES (a submit:
 * MAX_SUBMIT_FRAME_BYTES) up to this
 * get an error frame and the connection stays open; beyond it a client is not speaking our protocol and is dropped.
 */
const HARD_MAX_PAYLOAD = MAX_SUBMIT_FRAME_BYTES + 1024 * 1024;

export interface WsGatewayDeps {
  server: http.Server;
  jobs: JobsService;
  events: JobEventsHub;
  engines: EngineStatusStore;
  settings: SettingsService;
  models: ModelsService;
  originPolicy: OriginPolicy;
  logger: Logger;
  /** The admin key (PIXELAI_API_KEY): an upgrade carrying it in X-API-Key submits as its holder (priorities). */
  apiKey?: string;
  /** Same per-client submission budget as POST /jobs (shared through Redis). */
  rateLimiter?: SubmitRateLimiter;
  /** The budget of `subscribe` and `engines` frames per client, apart from submissions. */
  readLimiter?: SubmitRateLimiter;
  /** Per-client and per-connection caps (PIXELAI_WS_*); config.ts has the defaults. */
  limits: WsLimits;
  /** Ping interval; a client that has not answered the previous ping by the next one is dropped. */
  heartbeatMs?: number;
}

/** One connection: the jobs it submitted or subscribed to, each watched through the shared JobEventsHub. */
class Connection {
  alive = true;
  private disposed = false;
  private readonly watches = new Map<string, () => void>();
  private chain: Promise<void> = Promise.resolve();
  /** Bytes of client frames received and not yet handled (they wait while this peer does not read its answers). */
  private waitingBytes = 0;

  constructor(
    readonly ws: WebSocket,
    private readonly gateway: WsGateway,
    /** The peer's address: the rate limiter's key. */
    readonly client = "unknown",
    /** Who submits this connection's jobs (src/api/submitter.ts), from the upgrade request. */
    readonly submitter: Submitter = submitterOf(undefined, undefined, client),
  ) {}

  send(frame: Record<string, unknown>): void {
    this.sendEncoded(Buffer.from(JSON.stringify(frame)));
  }

  /**
   * Sends a frame already encoded as JSON (a text frame: ws queues the Buffer itself, so a cached frame sent to many
   * clients is one copy in memory). Answers and final frames come through `inOrder`, which waits for room first; this
   * bound is the backstop: past it nothing more is queued and the peer is closed (4008).
   */
  sendEncoded(frame: Buffer): void {
    if (this.ws.readyState !== WebSocket.OPEN) return;
    if (this.ws.bufferedAmount > this.gateway.deps.limits.maxBufferedBytes) return this.closeSlow();
    this.ws.send(frame, { binary: false });
  }

  /**
   * Step and install frames are dropped, not queued, while the peer has half the bound unread: the next one says the
   * same, newer, so a slow reader misses nothing it needs.
   */
  sendLive(frame: Record<string, unknown>): void {
    if (this.ws.bufferedAmount > this.lowWater()) return;
    this.send(frame);
  }

  /**
   * Waits until the peer has read down to half the bound, so that what comes next fits. A peer that reads nothing for
   * SEND_STALL_MS is not keeping up (or not reading at all): it is closed with 4008, and its backlog cannot grow.
   */
  private async roomToSend(): Promise<boolean> {
    const deadline = Date.now() + SEND_STALL_MS;
    while (this.ws.readyState === WebSocket.OPEN && this.ws.bufferedAmount > this.lowWater()) {
      if (Date.now() > deadline) {
        this.closeSlow();
        return false;
      }
      await new Promise((r) => setTimeout(r, 20));
    }
    return this.ws.readyState === WebSocket.OPEN && !this.disposed;
  }

  private lowWater(): number {
    return this.gateway.deps.limits.maxBufferedBytes / 2;
  }

  private closeSlow(): void {
    const mib = Math.round(this.gateway.deps.limits.maxBufferedBytes / (1024 * 1024));
    this.closeWith(WS_CLOSE.SLOW_CONSUMER, `client is not reading its frames (${mib} MiB bound)`);
  }

  /** Closes with `code` and stops everything this connection does; a peer that never reads the close is dropped. */
  closeWith(code: number, reason: string): void {
    this.dispose();
    if (this.ws.readyState === WebSocket.OPEN) this.ws.close(code, reason);
    setTimeout(() => this.ws.terminate(), CLOSE_GRACE_MS).unref();
  }

  /** Whether this connection may follow one more job (one it already follows costs nothing). */
  canWatch(jobId: string): boolean {
    return this.watches.has(jobId) || this.hasRoom();
  }

  hasRoom(): boolean {
    return this.watches.size < this.gateway.deps.limits.maxWatchesPerConnection;
  }

  sendError(error: FrameError): void {
    this.send({ type: "error", ...error });
  }

  /**
   * Frames are handled one after another, so answers (and errors) come back in the order the frames were sent. Frames
   * that pile up unhandled (their sender does not read the answers) are bounded like unread answers are.
   */
  enqueue(data: Buffer, isBinary: boolean): void {
    this.waitingBytes += data.length;
    if (this.waitingBytes > this.gateway.deps.limits.maxBufferedBytes) return this.closeSlow();
    this.inOrder(async () => {
      this.waitingBytes -= data.length;
      await this.handle(data, isBinary);
    });
  }

  /** Runs `task` after everything this connection has to answer so far, once the peer has room for its answer. */
  inOrder(task: () => Promise<void>): void {
    this.chain = this.chain
      .then(async () => {
        if (await this.roomToSend()) await task();
      })
      .catch((err) => this.gateway.logFailure(err));
  }

  private async handle(data: Buffer, isBinary: boolean): Promise<void> {
    const parsed = parseClientFrame(data, isBinary);
    if (!parsed.ok) return this.sendError(parsed.error);
    await this.gateway.handleFrame(this, parsed.frame);
  }

  /** Watches a job for this connection only: other connections never get its frames unless they subscribe. */
  watch(jobId: string): void {
    // a frame still being handled when the socket closed must not leave a watch behind
    if (this.disposed || this.watches.has(jobId)) return;
    // a job waiting queued for its hub model or LoRA: `install` frames with the installs' progress as it changes
    const stopInstalls = watchInstallProgress(
      () => this.gateway.deps.jobs.get(jobId),
      (installs) => this.sendLive({ type: "install", id: jobId, installs }),
    );
    const stopEvents = this.gateway.deps.events.watch(jobId, {
      progress: (p) =>
        this.sendLive({
          type: "progress",
          id: jobId,
          step: p.step,
          totalSteps: p.totalSteps,
          ...previewField(p.preview),
          ...previewsField(p.previews),
        }),
      final: (view) => {
        stopInstalls();
        this.watches.delete(jobId);
        this.inOrder(() => this.gateway.sendFinal(this, view));
      },
    });
    this.watches.set(jobId, () => {
      stopInstalls();
      stopEvents();
    });
  }

  dispose(): void {
    this.disposed = true;
    for (const stop of this.watches.values()) stop();
    this.watches.clear();
  }
}

/**
 * The /ws endpoint for Aseprite (docs/design.md "WebSocket /ws"). Live updates come from Redis pub/sub via the
 * JobEventsHub, final states from the database, so it works with the worker in any process.
 */
export class WsGateway {
  private readonly wss = new WebSocketServer({ noServer: true, maxPayload: HARD_MAX_PAYLOAD, perMessageDeflate: false });
  private readonly connections = new Set<Connection>();
  private readonly checkHost: ReturnType<typeof hostChecker>;
  private readonly perClient: ClientConnections;
  /** Exposed for tests, which check that it stays within its bound. */
  readonly finalFrames: FinalFrameCache;
  private readonly rgba = new RgbaEncoder();
  private heartbeat: NodeJS.Timeout | undefined;
  private readonly onUpgrade = (req: http.IncomingMessage, socket: Duplex, head: Buffer) => this.upgrade(req, socket, head);

  constructor(readonly deps: WsGatewayDeps) {
    this.checkHost = hostChecker(deps.originPolicy);
    this.perClient = new ClientConnections(deps.limits.maxConnectionsPerClient);
    this.finalFrames = new FinalFrameCache(deps.limits.frameCacheBytes);
  }

  start(): void {
    this.deps.server.on("upgrade", this.onUpgrade);
    this.heartbeat = setInterval(() => this.beat(), this.deps.heartbeatMs ?? 30_000);
    this.heartbeat.unref();
  }

  clientCount(): number {
    return this.connections.size;
  }

  private upgrade(req: http.IncomingMessage, socket: Duplex, head: Buffer): void {
    const pathname = (req.url ?? "").split("?")[0];
    if (pathname !== WS_PATH) return refuse(socket, 404, "NOT_FOUND", `no WebSocket endpoint at ${pathname}; use ${WS_PATH}`);
    // Same DNS-rebinding guard as HTTP: the upgrade never passes through Express's middleware.
    const rejection = this.checkHost(req.headers.host, req.headers.origin);
    if (rejection)
      return req.headers.host ? refuse(socket, 403, "FORBIDDEN", rejection) : refuse(socket, 400, "INVALID_REQUEST", rejection);
    const address = req.socket.remoteAddress;
    const submitter = submitterOf(this.deps.apiKey, apiKeyHeader(req.headers["x-api-key"]), address);
    this.wss.handleUpgrade(req, socket, head, (ws) => this.accept(ws, address, submitter));
  }

  private accept(ws: WebSocket, client = "unknown", submitter: Submitter): void {
    const conn = new Connection(ws, this, client, submitter);
    ws.on("error", (err) => this.deps.logger.debug({ err: err.message }, "websocket error"));
    if (!this.perClient.tryOpen(client)) {
      // told in a frame (code and words) and in the close code, for clients that only see one of the two
      conn.sendError({ code: "TOO_MANY_CONNECTIONS", message: this.perClient.message() });
      conn.closeWith(WS_CLOSE.TOO_MANY_CONNECTIONS, "TOO_MANY_CONNECTIONS");
      return;
    }
    this.connections.add(conn);
    ws.on("pong", () => {
      conn.alive = true;
    });
    ws.on("message", (data, isBinary) => conn.enqueue(toBuffer(data), isBinary));
    ws.on("close", () => {
      conn.dispose();
      this.connections.delete(conn);
      this.perClient.closed(client);
    });
  }

  async handleFrame(conn: Connection, frame: ClientFrame): Promise<void> {
    const { jobs } = this.deps;
    switch (frame.type) {
      case "submit": {
        const decision = await this.deps.rateLimiter?.take(conn.client);
        if (decision && !decision.allowed) {
          conn.sendError({ code: "RATE_LIMITED", message: this.deps.rateLimiter!.message(decision), requestId: frame.requestId });
          return;
        }
        if (!conn.hasRoom()) {
          // refused before it is queued: a job nobody hears about would be work for nothing
          conn.sendError({ code: "TOO_MANY_WATCHES", message: this.watchCapMessage(), requestId: frame.requestId });
          return;
        }
        try {
          const job = await jobs.submit(frame.job, "ws", conn.submitter);
          conn.send({ type: "accepted", requestId: frame.requestId, id: job.id });
          conn.watch(job.id); // a repeated idempotencyKey may name a finished job: watch answers it at once
        } catch (err) {
          this.logFailure(err);
          conn.sendError(errorFrameOf(err, { requestId: frame.requestId }));
        }
        return;
      }
      case "cancel": {
        try {
          await jobs.cancel(frame.id);
          // the `cancelled` frame (or the final state it raced with) follows. A cancel is never refused for the watch
          // cap (it frees work); past the cap it goes through without its final frame.
          if (conn.canWatch(frame.id)) conn.watch(frame.id);
        } catch (err) {
          conn.sendError(errorFrameOf(err, { id: frame.id }));
        }
        return;
      }
      case "subscribe": {
        if (await this.readRefused(conn, { id: frame.id })) return;
        try {
          const view = await jobs.get(frame.id); // unknown id → NOT_FOUND now, rather than a watch that never ends
          // a finished job is answered here, in this connection's frame order, without a watch
          if (isFinal(view)) return await this.sendFinal(conn, view);
          if (!conn.canWatch(frame.id)) {
            conn.sendError({ code: "TOO_MANY_WATCHES", message: this.watchCapMessage(), id: frame.id });
            return;
          }
          conn.watch(frame.id);
        } catch (err) {
          conn.sendError(errorFrameOf(err, { id: frame.id }));
        }
        return;
      }
      case "engines": {
        if (await this.readRefused(conn, {})) return;
        try {
          const summary = await enginesSummary(this.deps.engines, this.deps.settings, this.deps.models);
          conn.send({ type: "engines", ...summary });
        } catch (err) {
          conn.sendError(errorFrameOf(err, {}));
        }
        return;
      }
    }
  }

  /** Spends one of the client's `subscribe`/`engines` budget; true (and the error frame sent) when it has none left. */
  private async readRefused(conn: Connection, context: { id?: string }): Promise<boolean> {
    const decision = await this.deps.readLimiter?.take(conn.client);
    if (!decision || decision.allowed) return false;
    conn.sendError({ code: "RATE_LIMITED", message: this.deps.readLimiter!.message(decision), ...context });
    return true;
  }

  private watchCapMessage(): string {
    return tooManyWatchesMessage(this.deps.limits.maxWatchesPerConnection);
  }

  async sendFinal(conn: Connection, view: JobView): Promise<void> {
    if (view.status === "completed") {
      try {
        const encode = () => this.encodeCompleted(view);
        // a pruned image is never answered from the cache: encode() reads it, and fails with NOT_FOUND
        conn.sendEncoded(view.result?.pruned ? await encode() : await this.finalFrames.get(view.id, encode));
      } catch (err) {
        const e = errorFrameOf(err, {});
        conn.send({ type: "failed", id: view.id, code: e.code, message: `the result could not be read: ${e.message}` });
      }
    } else if (view.status === "cancelled") {
      conn.send({ type: "cancelled", id: view.id });
    } else {
      conn.send({
        type: "failed",
        id: view.id,
        code: view.error?.code ?? "ENGINE_INTERNAL",
        message: view.error?.message ?? "the job failed",
      });
    }
  }

  /**
   * A finished job's `completed` frame: raw RGBA for Aseprite's `Image.bytes`. Decoded and base64-encoded on the
   * encoder's thread; the main thread only places the bytes.
   */
  private async encodeCompleted(view: JobView): Promise<Buffer> {
    const images = view.result?.images ?? [];
    if (images.length <= 1) {
      const { width, height, base64 } = await this.rgba.encode(await this.deps.jobs.image(view.id));
      const pixel = view.result?.pixel;
      const frame = { type: "completed", id: view.id, width, height, rgbaBase64: null, seed: view.seed };
      return frameWithBase64(pixel ? { ...frame, pixel } : frame, "rgbaBase64", base64);
    }
    // count > 1: candidate 0 at the top level as before, and every candidate (0 included) in `candidates`; one
    // encoding per image, the top level and candidates[0] share its bytes
    const encoded: EncodedRgba[] = [];
    for (const image of images) encoded.push(await this.rgba.encode(await this.deps.jobs.image(view.id, image.index)));
    const candidates = images.map((image, i) => ({
      index: image.index,
      seed: image.seed,
      width: encoded[i].width,
      height: encoded[i].height,
      rgbaBase64: base64Slot(i),
    }));
    const first = encoded[0];
    const pixel = view.result?.pixel;
    const frame = { type: "completed", id: view.id, width: first.width, height: first.height, rgbaBase64: base64Slot(0), seed: view.seed };
    const parts = [...encoded.map((e) => e.base64), first.base64];
    candidates[0].rgbaBase64 = base64Slot(encoded.length);
    return frameWithBase64Parts({ ...frame, ...(pixel ? { pixel } : {}), candidates }, parts);
  }

  logFailure(err: unknown): void {
    const status = (err as { status?: number })?.status;
    if (typeof status !== "number" || status >= 500) this.deps.logger.warn({ err: (err as Error)?.message }, "websocket frame failed");
  }

  private beat(): void {
    for (const conn of this.connections) {
      if (!conn.alive) {
        conn.ws.terminate(); // no pong since the last ping: a dead peer (sleeping laptop, killed Aseprite)
        continue;
      }
      conn.alive = false;
      try {
        conn.ws.ping();
      } catch {
        conn.ws.terminate();
      }
    }
  }

  /** Stops taking upgrades and closes every connection (1001 "going away"); clients reconnect to the next server. */
  async close(): Promise<void> {
    this.deps.server.off("upgrade", this.onUpgrade);
    if (this.heartbeat) clearInterval(this.heartbeat);
    const closing = [...this.connections].map(
      (conn) =>
        new Promise<void>((resolve) => {
          if (conn.ws.readyState === WebSocket.CLOSED) return resolve();
          const timer = setTimeout(() => {
            conn.ws.terminate();
            resolve();
          }, 1_000);
          conn.ws.once("close", () => {
            clearTimeout(timer);
            resolve();
          });
          conn.ws.close(1001, "server shutting down");
        }),
    );
    await Promise.all(closing);
    await new Promise<void>((resolve) => this.wss.close(() => resolve()));
    await this.rgba.close();
  }
}

const previewFields = new WeakMap<StepPreview, { preview?: Record<string, unknown> }>();

/**
 * A step preview for the extension: the PNG as sent everywhere else, plus its raw RGBA, because decoding a PNG in
 * Aseprite's Lua would cost more than the preview is worth while `Image.bytes` takes raw RGBA as is.
 */
function previewField(preview: StepPreview | undefined): { preview?: Record<string, unknown> } {
  if (!preview) return {};
  // every watcher of the job gets the same step object: one decode per step, not one per connection
  const known = previewFields.get(preview);
  if (known) return known;
  let field: { preview?: Record<string, unknown> };
  try {
    const { width, height, rgba } = pngToRgba(Buffer.from(preview.pngBase64, "base64"));
    field = { preview: { width, height, pngBase64: preview.pngBase64, rgbaBase64: rgba.toString("base64") } };
  } catch {
    field = {}; // an undecodable preview is dropped; the step's progress still goes out
  }
  previewFields.set(preview, field);
  return field;
}

/** A job with count > 1: every candidate's preview, each as previewField makes it; none if any cannot be decoded. */
function previewsField(previews: StepPreview[] | undefined): { previews?: Array<Record<string, unknown>> } {
  if (!previews || previews.length < 2) return {};
  const fields = previews.map((p) => previewField(p).preview);
  return fields.every((f) => f !== undefined) ? { previews: fields as Array<Record<string, unknown>> } : {};
}

function isFinal(view: JobView): boolean {
  return view.status === "completed" || view.status === "failed" || view.status === "cancelled";
}

function toBuffer(data: RawData): Buffer {
  if (Buffer.isBuffer(data)) return data;
  if (Array.isArray(data)) return Buffer.concat(data);
  return Buffer.from(data);
}

function refuse(socket: Duplex, status: number, code: string, message: string): void {
  const body = JSON.stringify({ error: { code, message } });
  const reason = http.STATUS_CODES[status] ?? "Error";
  socket.end(
    `HTTP/1.1 ${status} ${reason}\r\nContent-Type: application/json\r\nContent-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n${body}`,
  );
}
