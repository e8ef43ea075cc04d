import { Queue } from "bullmq";
import type IORedis from "ioredis";
import type { ConversionOptions } from "./conversions.dto";

export const CONVERT_QUEUE = "convert";

export interface ConvertPayload {
  conversionId: string;
  model: string;
  dtype: "float16" | "float32";
  /** absent in payloads queued before quantization existed: none */
  quantize?: ConversionOptions["quantize"];
}

/** The second BullMQ queue: diffusers → MLX conversions, run by the conversion worker. */
export class ConversionQueue {
  readonly queue: Queue<ConvertPayload>;

  constructor(connection: IORedis, prefix: string) {
    this.queue = new Queue<ConvertPayload>(CONVERT_QUEUE, { connection, prefix });
  }

  async add(payload: ConvertPayload): Promise<void> {
    await this.queue.add("convert", payload, {
      jobId: payload.conversionId,
      attempts: 1,
      removeOnComplete: { age: 24 * 3600 },
      removeOnFail: { age: 7 * 24 * 3600 },
    });
  }

  async close(): Promise<void> {
    await this.queue.close();
  }
}
