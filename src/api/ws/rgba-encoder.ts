import { Worker } from "node:worker_threads";
import { PNG } from "pngjs";
import { pngSize } from "../../infra/png-size";

/**
 * Turns a result PNG into the base64 of its raw RGBA, on a worker thread. For 1024×1024 the decode alone holds a
 * thread for ~300 ms and the base64 and JSON around it another ~150 ms: on the main thread that is time in which
 * neither HTTP requests nor, under `make start`, the worker's BullMQ lock renewals run (docs/design.md "Event loop").
 * One thread, started on first use, takes requests in turn; a finished job is encoded once (FinalFrameCache), so
 * more would only take CPU from the runners.
 */

// Resolved here, so the thread (evaluated from a string: it runs the same under ts-jest and from dist/) loads the
// copy of pngjs this process uses, whatever the working directory.
const THREAD_CODE = `
const { parentPort } = require("node:worker_threads");
const { PNG } = require(${JSON.stringify(require.resolve("pngjs"))});
parentPort.on("message", ({ seq, png }) => {
  try {
    const decoded = PNG.sync.read(Buffer.from(png));
    const text = decoded.data.toString("base64");
    const out = new ArrayBuffer(text.length);
    Buffer.from(out).write(text, "latin1");
    parentPort.postMessage({ seq, width: decoded.width, height: decoded.height, base64: out }, [out]);
  } catch (err) {
    parentPort.postMessage({ seq, error: String((err && err.message) || err) });
  }
});
`;

export interface EncodedRgba {
  width: number;
  height: number;
  /** The base64 text of the raw RGBA as ASCII bytes, ready to be placed in a frame as is. */
  base64: Buffer;
}

interface Reply {
  seq: number;
  width?: number;
  height?: number;
  base64?: ArrayBuffer;
  error?: string;
}

/**
 * Pictures up to this many pixels (128×128: a pixel-art result, what most jobs return) are decoded where they are
 * asked for: about a millisecond, less than the two hand-offs to the thread and back cost, and the event loop can spare
 * it. Larger ones go to the thread.
 */
export const INLINE_MAX_PIXELS = 128 * 128;

export class RgbaEncoder {
  private thread: Worker | undefined;
  private seq = 0;
  private readonly waiting = new Map<number, { resolve: (v: EncodedRgba) => void; reject: (e: Error) => void }>();

  encode(png: Buffer): Promise<EncodedRgba> {
    const size = pngSize(png);
    if (size && size.width * size.height <= INLINE_MAX_PIXELS) return Promise.resolve().then(() => decodeHere(png));
    const thread = this.started();
    const seq = ++this.seq;
    return new Promise((resolve, reject) => {
      this.waiting.set(seq, { resolve, reject });
      // a copy goes over (the PNG, a fraction of the frame), so the caller's Buffer stays usable
      thread.postMessage({ seq, png: new Uint8Array(png) });
    });
  }

  async close(): Promise<void> {
    const thread = this.thread;
    this.thread = undefined;
    await thread?.terminate();
  }

  private started(): Worker {
    if (this.thread) return this.thread;
    const thread = new Worker(THREAD_CODE, { eval: true });
    thread.unref(); // an idle encoder never keeps the process alive
    thread.on("message", (reply: Reply) => this.answer(reply));
    const fail = (err: Error) => {
      if (this.thread === thread) this.thread = undefined; // the next request starts a new thread
      for (const { reject } of this.waiting.values()) reject(err);
      this.waiting.clear();
    };
    thread.on("error", fail);
    thread.on("exit", (code) => fail(new Error(`the RGBA encoder thread exited (${code})`)));
    this.thread = thread;
    return thread;
  }

  private answer(reply: Reply): void {
    const pending = this.waiting.get(reply.seq);
    if (!pending) return;
    this.waiting.delete(reply.seq);
    if (reply.error !== undefined || !reply.base64) return pending.reject(new Error(`the PNG could not be decoded: ${reply.error}`));
    pending.resolve({ width: reply.width!, height: reply.height!, base64: Buffer.from(reply.base64) });
  }
}

/** The thread's work, done on the caller's thread (a small picture). */
function decodeHere(png: Buffer): EncodedRgba {
  let decoded;
  try {
    decoded = PNG.sync.read(png);
  } catch (err) {
    throw new Error(`the PNG could not be decoded: ${(err as Error).message}`, { cause: err });
  }
  return { width: decoded.width, height: decoded.height, base64: Buffer.from(decoded.data.toString("base64"), "latin1") };
}

/**
 * A frame whose one large field is already base64 bytes: JSON around it, the bytes placed as they are. Base64 needs no
 * escaping in JSON, and skipping JSON.stringify of a multi-megabyte string saves the main thread ~100 ms a frame.
 * Fields keep their order: `field` sits where it is in `frame`.
 */
export function frameWithBase64(frame: Record<string, unknown>, field: string, base64: Buffer): Buffer {
  return frameWithBase64Parts({ ...frame, [field]: base64Slot(0) }, [base64]);
}

/** A marker standing for `parts[n]` of frameWithBase64Parts, to put anywhere in a frame (nested objects and arrays too). */
export function base64Slot(n: number): string {
  return `\u0000base64:${n}\u0000`;
}

/**
 * A frame with several large base64 fields (a `completed` frame with candidates): each base64Slot(n) in `frame` is
 * replaced by `parts[n]`'s bytes, every slot exactly once.
 */
export function frameWithBase64Parts(frame: unknown, parts: Buffer[]): Buffer {
  const text = JSON.stringify(frame);
  const out: Buffer[] = [];
  let at = 0;
  const found = new Set<number>();
  const slot = /"\\u0000base64:(\d+)\\u0000"/g;
  for (const match of text.matchAll(slot)) {
    const n = Number(match[1]);
    if (n >= parts.length || found.has(n)) throw new Error("frame template is ambiguous");
    found.add(n);
    out.push(Buffer.from(text.slice(at, match.index) + '"'), parts[n], Buffer.from('"'));
    at = match.index + match[0].length;
  }
  if (found.size !== parts.length) throw new Error("frame template is ambiguous");
  out.push(Buffer.from(text.slice(at)));
  return Buffer.concat(out);
}
