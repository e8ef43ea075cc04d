import { ChildProcess, spawn } from "node:child_process";
import { EventEmitter } from "node:events";
import readline from "node:readline";
import { AppError, ErrorCode, isErrorCode } from "./error-codes";
import {
  EngineName,
  EngineProbe,
  GenerateParams,
  GenerateResult,
  PixelizeParams,
  PixelizeResult,
  ProgressEvent,
  ReadyEvent,
  RequestFields,
  ResultPayload,
  RunnerOp,
  RunnerSettings,
  runnerArgv,
} from "./runner-contract";
import type { Logger } from "../infra/logger";

export type { ProgressEvent } from "./runner-contract";

/** A line as it comes off the runner's stdout, before it is matched to a request (shapes: runner-contract.ts). */
interface RawEvent {
  id?: string | number | null;
  event?: string;
  [key: string]: unknown;
}

export interface GenerateOptions {
  /** The request id; pass one to be able to `cancel(id)` this generation. */
  id?: string;
  onProgress?: (event: ProgressEvent) => void;
}

/**
 * A warm runner as its callers see it: one typed method per op of the runner contract
 * (contract/runner-protocol.schema.json). Supervision (restarts, timeouts) is the implementation's business.
 */
export interface RunnerClient {
  readonly engine: EngineName;
  /** The runner's ready line (device, chip, dtype, available); undefined until it first became ready. */
  readonly readyInfo: ReadyEvent | undefined;
  generate(params: GenerateParams, opts?: GenerateOptions): Promise<GenerateResult>;
  /** Post-processing alone on an input PNG (no model); queued with generations and cancellable by `opts.id`. */
  pixelize(params: PixelizeParams, opts?: { id?: string }): Promise<PixelizeResult>;
  probe(): Promise<EngineProbe>;
  /** Asks the runner to stop a generation between steps; true when it was still running (it then fails CANCELLED). */
  cancel(id: string): Promise<boolean>;
  /** Frees loaded pipelines (one model source, or all); resolves with the sources freed. */
  unload(model?: string): Promise<string[]>;
  /** Stops the runner for good (no restart). */
  shutdown(): Promise<void>;
}

const PROBE_TIMEOUT_MS = 30_000;
const CANCEL_TIMEOUT_MS = 10_000;

export interface RunnerOptions {
  /** What the runner is started with (`python -m pixelai_runner <runnerArgv(settings)>`); built from Config. */
  settings: RunnerSettings;
  python: string;
  cwd: string;
  /** Python module to run instead of the runner (the supervisor spec starts a fake one). */
  module?: string;
  /** Extra environment for the process (tests); runner settings go in `settings`, never here. */
  env?: NodeJS.ProcessEnv;
  /** A request with no line for this long fails with TIMEOUT and the runner is restarted (it is wedged). */
  silenceTimeoutMs: number;
  startTimeoutMs: number;
  /** Restarts allowed inside `restartWindowMs`; past that the supervisor gives up (state "failed"). */
  maxRestarts: number;
  restartWindowMs?: number;
  backoffBaseMs?: number;
  backoffMaxMs?: number;
  logger: Logger;
}

export type RunnerState = "idle" | "starting" | "ready" | "restarting" | "failed" | "stopped";

interface Pending {
  op: RunnerOp;
  resolve: (value: RawEvent) => void;
  reject: (err: AppError) => void;
  onProgress?: (event: ProgressEvent) => void;
  timer?: NodeJS.Timeout;
  timeoutMs: number;
}

/**
 * Owns one warm Python runner process: spawns it, frames JSON lines, matches answers to requests, times out silent
 * requests, and restarts a dead or wedged runner with backoff and a cap. Every request in flight when the runner dies
 * fails with ENGINE_INTERNAL; requests made after the cap is reached fail at once with ENGINE_UNAVAILABLE.
 */
export class RunnerSupervisor extends EventEmitter implements RunnerClient {
  private child: ChildProcess | undefined;
  private pending = new Map<string, Pending>();
  private nextId = 1;
  private restarts: number[] = [];
  private readyPromise: Promise<void> | undefined;
  private stopping = false;
  private lastFailure = "";
  state: RunnerState = "idle";
  readyInfo: ReadyEvent | undefined;

  constructor(private readonly opts: RunnerOptions) {
    super();
  }

  get pid(): number | undefined {
    return this.child?.pid;
  }

  get engine(): EngineName {
    return this.opts.settings.engine;
  }

  /** Starts the runner (once) and resolves when it printed `ready`. */
  start(): Promise<void> {
    if (this.state === "ready") return Promise.resolve();
    if (this.readyPromise) return this.readyPromise;
    this.stopping = false;
    this.readyPromise = this.spawnRunner().finally(() => {
      this.readyPromise = undefined;
    });
    return this.readyPromise;
  }

  private spawnRunner(): Promise<void> {
    this.state = this.state === "restarting" ? "restarting" : "starting";
    const { python, cwd, logger } = this.opts;
    const engine = this.engine;
    const args = ["-u", "-m", this.opts.module ?? "pixelai_runner", ...runnerArgv(this.opts.settings)];
    const child = spawn(python, args, {
      cwd,
      // The parent's environment passes through for the libraries (CUDA, HF caches, threads); our settings are args.
      env: { ...process.env, ...this.opts.env, PYTHONPATH: joinPath(`${cwd}/python`, this.opts.env?.PYTHONPATH) },
      stdio: ["pipe", "pipe", "pipe"],
    });
    this.child = child;

    return new Promise<void>((resolve, reject) => {
      let settled = false;
      // Not `settled`: a start-up timeout settles too, and a runner that never became ready must not be restarted.
      let becameReady = false;
      const settle = (err?: Error) => {
        if (settled) return;
        settled = true;
        clearTimeout(startTimer);
        if (err) reject(err);
        else resolve();
      };
      const startTimer = setTimeout(() => {
        logger.error({ engine }, "runner did not become ready in time; killing it");
        child.kill("SIGKILL");
        settle(new AppError("ENGINE_UNAVAILABLE", `${engine} runner did not start within ${this.opts.startTimeoutMs} ms`));
      }, this.opts.startTimeoutMs);

      // EPIPE on a dying runner's stdin surfaces through "exit" below; without a listener it would crash the process.
      child.stdin?.on("error", () => undefined);
      child.on("error", (err) => {
        this.lastFailure = err.message;
        if (child.pid === undefined && child === this.child) {
          this.child = undefined;
          this.state = "failed";
        }
        settle(new AppError("ENGINE_UNAVAILABLE", `cannot start ${engine} runner (${python}): ${err.message}`));
      });

      readline.createInterface({ input: child.stderr! }).on("line", (line) => {
        logger.info({ engine, runner: child.pid }, line);
        this.lastFailure = line;
      });

      readline.createInterface({ input: child.stdout! }).on("line", (line) => {
        let event: RawEvent;
        try {
          event = JSON.parse(line);
        } catch {
          logger.warn({ engine, line }, "runner wrote a non-JSON line to its protocol stream; ignored");
          return;
        }
        if (typeof event !== "object" || event === null) return;
        if (event.event === "ready" && child === this.child) {
          this.state = "ready";
          this.readyInfo = event as unknown as ReadyEvent;
          becameReady = true;
          logger.info({ engine, pid: child.pid, ready: event }, "runner ready");
          this.emit("ready", event);
          settle();
          return;
        }
        this.dispatch(event);
      });

      child.on("exit", (code, signal) => {
        const wasReady = becameReady;
        settle(
          new AppError(
            "ENGINE_UNAVAILABLE",
            `${engine} runner exited during start-up (code ${code}, signal ${signal}): ${this.lastFailure}`,
          ),
        );
        if (child !== this.child) return;
        this.child = undefined;
        this.failAll("ENGINE_INTERNAL", `${engine} runner died (code ${code}, signal ${signal})`);
        if (this.stopping) {
          this.state = "stopped";
          return;
        }
        logger.warn({ engine, code, signal }, "runner exited");
        this.emit("exit", { code, signal });
        if (wasReady) this.scheduleRestart();
        else this.state = "failed";
      });
    });
  }

  private scheduleRestart(): void {
    const now = Date.now();
    const windowMs = this.opts.restartWindowMs ?? 10 * 60_000;
    this.restarts = this.restarts.filter((t) => now - t < windowMs);
    if (this.restarts.length >= this.opts.maxRestarts) {
      this.state = "failed";
      this.opts.logger.error({ engine: this.engine, restarts: this.restarts.length }, "runner restart cap reached; giving up");
      this.emit("failed");
      return;
    }
    const attempt = this.restarts.length;
    this.restarts.push(now);
    const delay = Math.min((this.opts.backoffBaseMs ?? 250) * 2 ** attempt, this.opts.backoffMaxMs ?? 10_000);
    this.state = "restarting";
    setTimeout(() => {
      if (this.stopping) return;
      this.start().then(
        () => this.emit("restarted"),
        (err) => {
          this.opts.logger.error({ engine: this.engine, err: err.message }, "runner restart failed");
          this.state = "failed";
          this.emit("failed");
        },
      );
    }, delay).unref();
  }

  private dispatch(event: RawEvent): void {
    const id = typeof event.id === "string" ? event.id : undefined;
    const pending = id ? this.pending.get(id) : undefined;
    if (!pending || !id) {
      if (event.event === "error") this.opts.logger.warn({ engine: this.engine, event }, "runner error without a request");
      return;
    }
    this.armTimer(id, pending);
    if (event.event === "progress") {
      pending.onProgress?.(event as unknown as ProgressEvent);
      return;
    }
    if (event.event !== "result" && event.event !== "error") return;
    this.pending.delete(id);
    clearTimeout(pending.timer);
    if (event.event === "result") pending.resolve(event);
    else if (event.event === "error") {
      const code: ErrorCode = isErrorCode(event.code) ? event.code : "ENGINE_INTERNAL";
      pending.reject(new AppError(code, String(event.message ?? "runner error")));
    }
  }

  private armTimer(id: string, pending: Pending): void {
    clearTimeout(pending.timer);
    pending.timer = setTimeout(() => {
      if (!this.pending.has(id)) return;
      this.pending.delete(id);
      pending.reject(new AppError("TIMEOUT", `${this.engine} runner was silent for ${pending.timeoutMs} ms during ${pending.op}`));
      this.opts.logger.error({ engine: this.engine, op: pending.op }, "runner wedged; killing it so it restarts");
      this.child?.kill("SIGKILL");
    }, pending.timeoutMs);
  }

  private failAll(code: ErrorCode, message: string): void {
    const all = [...this.pending.values()];
    this.pending.clear();
    for (const p of all) {
      clearTimeout(p.timer);
      p.reject(new AppError(code, message));
    }
  }

  generate(params: GenerateParams, opts: GenerateOptions = {}): Promise<GenerateResult> {
    return this.send("generate", { params }, { id: opts.id, onProgress: opts.onProgress });
  }

  pixelize(params: PixelizeParams, opts: { id?: string } = {}): Promise<PixelizeResult> {
    return this.send("pixelize", { params }, { id: opts.id });
  }

  probe(): Promise<EngineProbe> {
    return this.send("probe", {}, { timeoutMs: PROBE_TIMEOUT_MS });
  }

  async cancel(id: string): Promise<boolean> {
    if (!this.pending.has(id) || this.state !== "ready") return false;
    return (await this.send("cancel", { target: id }, { timeoutMs: CANCEL_TIMEOUT_MS })).cancelled;
  }

  async unload(model?: string): Promise<string[]> {
    return (await this.send("unload", model === undefined ? {} : { model })).unloaded;
  }

  shutdown(): Promise<void> {
    return this.stop();
  }

  /** Sends one request line and resolves with the payload of its `result` line; progress lines go to `onProgress`. */
  private async send<K extends RunnerOp>(
    op: K,
    fields: RequestFields<K>,
    options: { onProgress?: (e: ProgressEvent) => void; timeoutMs?: number; id?: string } = {},
  ): Promise<ResultPayload<K>> {
    if (this.state === "failed") {
      throw new AppError(
        "ENGINE_UNAVAILABLE",
        `${this.engine} runner is not available (it failed to start or kept dying): ${this.lastFailure}`,
      );
    }
    if (this.state !== "ready") await this.start();
    const child = this.child;
    if (!child?.stdin?.writable) throw new AppError("ENGINE_UNAVAILABLE", `${this.engine} runner is not running`);
    const id = options.id ?? `${op}-${process.pid}-${this.nextId++}`;
    const answer = await new Promise<RawEvent>((resolve, reject) => {
      const pending: Pending = {
        op,
        resolve,
        reject,
        onProgress: options.onProgress,
        timeoutMs: options.timeoutMs ?? this.opts.silenceTimeoutMs,
      };
      this.pending.set(id, pending);
      this.armTimer(id, pending);
      child.stdin!.write(`${JSON.stringify({ ...fields, id, op })}\n`);
    });
    const { id: _id, event: _event, ...payload } = answer;
    return payload as unknown as ResultPayload<K>;
  }

  /** Kills the runner process hard (tests and the wedge detector use this); the supervisor restarts it. */
  kill(signal: NodeJS.Signals = "SIGKILL"): void {
    this.child?.kill(signal);
  }

  async stop(graceMs = 5_000): Promise<void> {
    this.stopping = true;
    const child = this.child;
    if (!child) {
      this.state = "stopped";
      return;
    }
    const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()));
    try {
      child.stdin?.write(`${JSON.stringify({ id: "shutdown", op: "shutdown" })}\n`);
    } catch {
      // the pipe may already be closed; the kill below covers it
    }
    const timer = setTimeout(() => child.kill("SIGKILL"), graceMs);
    await exited;
    clearTimeout(timer);
    this.state = "stopped";
  }
}

function joinPath(first: string, rest: string | undefined): string {
  return rest ? `${first}:${rest}` : first;
}
