/**
 * Timestamps around the service's own methods, for the bench's per-job breakdown: wraps methods on class prototypes
 * (every instance, also those created later) and records when each call started and settled. Bench-only: it patches
 * the classes of the process it runs in, and restore() puts every original back.
 */

export interface Span {
  label: string;
  start: number;
  /** NaN while the call has not settled. */
  end: number;
  /** The settled value, kept only for labels that asked for it (e.g. the runner's result with its own timings). */
  value?: unknown;
}

type AnyMethod = (...args: unknown[]) => unknown;

export class SpanProbe {
  readonly spans: Span[] = [];
  /** Seams asked for that do not exist (a method renamed or gone): reported, so a breakdown never silently lacks one. */
  readonly missing: string[] = [];
  private readonly restores: Array<() => void> = [];

  /**
   * Records every call of `proto[method]` as a span named `label`. `keep` says whether to keep the settled value; `when`
   * filters calls by their arguments (e.g. only the runner's "generate" requests).
   */
  wrap(proto: object, method: string, label: string, opts: { keep?: boolean; when?: (args: unknown[]) => boolean } = {}): void {
    const target = proto as Record<string, unknown>;
    const original = target[method];
    if (typeof original !== "function") {
      this.missing.push(label);
      return;
    }
    const spans = this.spans;
    const wrapped = function (this: unknown, ...args: unknown[]): unknown {
      if (opts.when && !opts.when(args)) return (original as AnyMethod).apply(this, args);
      // Pushed at the call, completed when it settles: a caller may look while the call is still running.
      const span: Span = { label, start: performance.now(), end: Number.NaN };
      spans.push(span);
      const record = (value?: unknown) => {
        span.end = performance.now();
        if (opts.keep) span.value = value;
      };
      let out: unknown;
      try {
        out = (original as AnyMethod).apply(this, args);
      } catch (err) {
        record();
        throw err;
      }
      if (out !== null && typeof out === "object" && typeof (out as PromiseLike<unknown>).then === "function") {
        // Observed, not replaced: the caller gets its own object (Prisma's lazy promises have methods of their own).
        (out as PromiseLike<unknown>).then(record, () => record());
        return out;
      }
      record(out);
      return out;
    };
    target[method] = wrapped;
    this.restores.push(() => {
      target[method] = original;
    });
  }

  /** Wraps the first of `methods` that exists (a seam that was renamed keeps being measured under its old label). */
  wrapFirst(proto: object, methods: string[], label: string, opts: { keep?: boolean; when?: (args: unknown[]) => boolean } = {}): void {
    const method = methods.find((m) => typeof (proto as Record<string, unknown>)[m] === "function");
    if (method) this.wrap(proto, method, label, opts);
    else this.missing.push(label);
  }

  /** An instant (start = end), for moments no method boundary marks. */
  mark(label: string, at = performance.now()): void {
    this.spans.push({ label, start: at, end: at });
  }

  /** Spans that started inside [from, to], in start order. */
  within(from: number, to: number): Span[] {
    return this.spans.filter((s) => s.start >= from && s.start <= to).sort((a, b) => a.start - b.start);
  }

  /** Resolves once every span that started by now has settled (or after `timeoutMs`). */
  async settled(timeoutMs = 2_000): Promise<void> {
    const until = performance.now() + timeoutMs;
    while (this.spans.some((s) => Number.isNaN(s.end)) && performance.now() < until) await new Promise((r) => setTimeout(r, 5));
  }

  restore(): void {
    for (const undo of this.restores.reverse()) undo();
    this.restores.length = 0;
  }
}
