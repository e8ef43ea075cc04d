import { AppError } from "../backends/error-codes";

export interface DeadlineOptions {
  /** The attempt's budget; 0 or less means none. */
  timeoutMs: number;
  /** After `onExpire`, how long the work may take to stop by itself before `onGraceOver` forces it. */
  graceMs: number;
  /** Ask the work to stop (the runner's `cancel`): cheap, keeps the runner and its loaded models. */
  onExpire: () => unknown;
  /** Force it (kill the runner, which the supervisor restarts): the runner is wedged or between steps for too long. */
  onGraceOver: () => unknown;
}

/**
 * Runs one attempt under a wall-clock budget. Once the budget is spent the attempt's outcome is TIMEOUT whatever the
 * work answers afterwards (CANCELLED from the cancel, ENGINE_INTERNAL from the kill, or even a late result), so a job
 * never reports success past its budget and the code says why it ended.
 */
export async function withDeadline<T>(work: Promise<T>, opts: DeadlineOptions): Promise<T> {
  if (!(opts.timeoutMs > 0)) return work;
  let expired = false;
  let graceTimer: NodeJS.Timeout | undefined;
  const budgetTimer = setTimeout(() => {
    expired = true;
    void Promise.resolve()
      .then(opts.onExpire)
      .catch(() => undefined); // a failed cancel is covered by the grace kill below
    graceTimer = setTimeout(
      () => {
        void Promise.resolve()
          .then(opts.onGraceOver)
          .catch(() => undefined);
      },
      Math.max(0, opts.graceMs),
    );
  }, opts.timeoutMs);
  const timeout = () => new AppError("TIMEOUT", `the job ran past its time budget of ${opts.timeoutMs} ms`, { timeoutMs: opts.timeoutMs });
  try {
    const value = await work;
    if (expired) throw timeout();
    return value;
  } catch (err) {
    if (expired) throw timeout();
    throw err;
  } finally {
    clearTimeout(budgetTimer);
    clearTimeout(graceTimer);
  }
}
