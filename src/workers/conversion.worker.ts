import { spawn } from "node:child_process";
import path from "node:path";
import readline from "node:readline";
import { Job, UnrecoverableError, Worker } from "bullmq";
import type IORedis from "ioredis";
import { encodeFailure, isErrorCode } from "../backends/error-codes";
import type { Logger } from "../infra/logger";
import { CONVERT_QUEUE, ConvertPayload } from "../conversions/conversion-queue";
import type { ConversionOptions } from "../conversions/conversions.dto";
import type { ConversionsRepository } from "../conversions/conversions.repository";
import type { MlxManifest } from "../models/mlx-manifest";
import type { ModelsService } from "../models/models.service";

export interface ConversionWorkerDeps {
  connection: IORedis;
  prefix: string;
  python: string;
  repoRoot: string;
  conversions: ConversionsRepository;
  models: ModelsService;
  logger: Logger;
}

interface ConverterOutcome {
  event: "done" | "error";
  code?: string;
  message?: string;
  path?: string;
  manifest?: MlxManifest;
}

/** Runs scripts/convert_to_mlx.py for each "convert" job; progress comes from its `PROGRESS done total` stderr lines. */
export class ConversionWorker {
  private worker: Worker<ConvertPayload> | undefined;
  /** BullMQ never closes a connection it was handed, so close() must. */
  private workerConnection: IORedis | undefined;

  constructor(private readonly deps: ConversionWorkerDeps) {}

  async start(): Promise<void> {
    this.workerConnection = this.deps.connection.duplicate({ maxRetriesPerRequest: null });
    this.worker = new Worker<ConvertPayload>(CONVERT_QUEUE, (job) => this.process(job), {
      connection: this.workerConnection,
      prefix: this.deps.prefix,
      concurrency: 1,
      // a big model converts for minutes while the lock is renewed from this (idle) event loop
      lockDuration: 60_000,
    });
    this.worker.on("error", (err) => this.deps.logger.error({ err: err.message }, "conversion worker error"));
    await this.worker.waitUntilReady();
  }

  async process(job: Job<ConvertPayload>): Promise<{ path: string }> {
    const { conversionId, model, dtype, quantize } = job.data;
    const { conversions, models, logger } = this.deps;
    if (!(await conversions.markActive(conversionId))) return { path: "" };
    try {
      const source = (await models.resolve(model, "torch")).source;
      const outcome = await this.runConverter(source, model, { dtype, quantize: quantize ?? null }, (percent) => {
        void job.updateProgress(percent).catch(() => undefined);
        void conversions.progress(conversionId, percent).catch(() => undefined);
      });
      if (outcome.event !== "done" || !outcome.manifest || !outcome.path) {
        const code = isErrorCode(outcome.code) ? outcome.code : "CONVERSION_FAILED";
        throw Object.assign(new Error(outcome.message ?? "converter failed"), { code });
      }
      const manifest = outcome.manifest;
      await conversions.complete(conversionId, {
        path: path.relative(this.deps.repoRoot, outcome.path) || outcome.path,
        manifest: JSON.stringify(manifest),
        sourceRevision: manifest.sourceRevision,
        converterVersion: manifest.converterVersion,
        files: Object.entries(manifest.files).map(([p, f]) => ({ path: p, sha256: f.sha256, size: f.size })),
      });
      logger.info({ conversion: conversionId, model, dtype }, "conversion completed");
      return { path: outcome.path };
    } catch (err) {
      const code = (err as { code?: string }).code;
      const finalCode = isErrorCode(code) && code !== "ENGINE_INTERNAL" ? code : "CONVERSION_FAILED";
      await conversions.fail(conversionId, finalCode, (err as Error).message);
      logger.error({ conversion: conversionId, code: finalCode, err: (err as Error).message }, "conversion failed");
      throw new UnrecoverableError(encodeFailure(finalCode, (err as Error).message));
    }
  }

  private runConverter(
    source: string,
    name: string,
    options: ConversionOptions,
    onProgress: (percent: number) => void,
  ): Promise<ConverterOutcome> {
    const { python, repoRoot, models } = this.deps;
    const args = [
      path.join(repoRoot, "scripts", "convert_to_mlx.py"),
      source,
      "--name",
      name,
      "--dtype",
      options.dtype,
      "--out",
      models.mlxRoot,
    ];
    if (options.quantize) args.push("--quantize", String(options.quantize.bits), "--group-size", String(options.quantize.groupSize));
    return new Promise((resolve, reject) => {
      const child = spawn(python, args, {
        cwd: repoRoot,
        env: { ...process.env, PYTHONPATH: path.join(repoRoot, "python") },
        stdio: ["ignore", "pipe", "pipe"],
      });
      let outcome: ConverterOutcome | undefined;
      const tail: string[] = [];
      readline.createInterface({ input: child.stdout }).on("line", (line) => {
        try {
          const parsed = JSON.parse(line) as ConverterOutcome;
          if (parsed.event === "done" || parsed.event === "error") outcome = parsed;
        } catch {
          // not a protocol line
        }
      });
      readline.createInterface({ input: child.stderr }).on("line", (line) => {
        const m = /^PROGRESS (\d+) (\d+)$/.exec(line.trim());
        if (m) onProgress(Math.min(99, Math.floor((100 * Number(m[1])) / Math.max(1, Number(m[2])))));
        else {
          tail.push(line);
          if (tail.length > 20) tail.shift();
        }
      });
      child.on("error", reject);
      child.on("close", (code) => {
        if (outcome) resolve(outcome);
        else resolve({ event: "error", code: "CONVERSION_FAILED", message: `converter exited with ${code}: ${tail.join(" | ")}` });
      });
    });
  }

  async close(): Promise<void> {
    await this.worker?.close();
    await this.workerConnection?.quit().catch(() => undefined);
  }
}
