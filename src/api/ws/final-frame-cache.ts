/**
 * Encoded `completed` frames, kept for reuse: the first subscriber of a finished job pays for decoding its PNG into raw
 * RGBA, base64 and JSON (≈5.6 MB and tens of milliseconds of the event loop for 1024×1024); every later one gets the
 * same Buffer, which ws queues without copying. Concurrent requests for one job share one encoding.
 *
 * Kept in memory, bounded by bytes, rather than stored beside the PNG: the frame is 5.5× the PNG's size, most jobs are
 * read once, and a row that grows with every result would cost every process the disk and the PostgreSQL traffic
 * for the rare re-read this serves. In memory the cost is at most `maxBytes`, per API process, and only while it helps.
 */
export class FinalFrameCache {
  /** Insertion order is recency order: a hit is moved to the end, eviction takes from the front. */
  private readonly entries = new Map<string, Buffer>();
  private readonly pending = new Map<string, Promise<Buffer>>();
  private bytes = 0;

  constructor(private readonly maxBytes: number) {}

  /**
   * The frame under `key` (a job id with its image's hash, so a replaced or pruned image is never answered from here),
   * encoded by `encode` only if no one has it or is making it.
   */
  async get(key: string, encode: () => Promise<Buffer>): Promise<Buffer> {
    const hit = this.entries.get(key);
    if (hit) {
      this.entries.delete(key);
      this.entries.set(key, hit);
      return hit;
    }
    const running = this.pending.get(key);
    if (running) return running;
    const made = encode().then(
      (frame) => {
        this.pending.delete(key);
        this.put(key, frame);
        return frame;
      },
      (err: unknown) => {
        this.pending.delete(key);
        throw err;
      },
    );
    this.pending.set(key, made);
    return made;
  }

  /** Bytes held now (tests check the bound). */
  size(): number {
    return this.bytes;
  }

  private put(key: string, frame: Buffer): void {
    // a frame larger than the whole cache is sent but not kept: it would only push out everything else
    if (frame.length > this.maxBytes) return;
    this.entries.set(key, frame);
    this.bytes += frame.length;
    for (const [oldest, buf] of this.entries) {
      if (this.bytes <= this.maxBytes) break;
      this.entries.delete(oldest);
      this.bytes -= buf.length;
    }
  }
}
