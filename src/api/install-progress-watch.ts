import type { InstallView } from "../installs/installs.dto";
import type { JobView } from "../jobs/jobs.dto";

/** How often a queued job waiting for an install is re-read for install progress. */
export const INSTALL_EVENT_MS = 1_000;

/**
 * Install progress for a job that waits queued for its hub model or LoRA, for SSE `install` events and `/ws` `install`
 * frames alike. Progress lives in the install's row, not on the live job channel, so the job is re-read once a second;
 * `onInstalls` gets the installs it waits on (as GET /installs/{id}) each time they change, until it leaves `queued` or
 * waits on none (so a job queued behind others costs one read).
 * `current`: the view already read (a job not queued is not watched); absent: the first read happens at once.
 * Returns the stop function.
 */
export function watchInstallProgress(
  reread: () => Promise<JobView>,
  onInstalls: (installs: InstallView[]) => void,
  current?: JobView,
): () => void {
  if (current && current.status !== "queued") return () => undefined;
  let last = "";
  let stopped = false;
  let reading = false;
  const report = (view: JobView) => {
    // No installs: the job never waited for one (they are started before it is queued) or they are done.
    if (!view.installs?.length) return stop();
    const installs = JSON.stringify(view.installs);
    if (!stopped && installs !== last) onInstalls(view.installs);
    last = installs;
  };
  const poll = setInterval(() => read(), INSTALL_EVENT_MS);
  poll.unref();
  const stop = () => {
    stopped = true;
    clearInterval(poll);
  };
  const read = () => {
    if (reading || stopped) return;
    reading = true;
    void reread()
      .then((view) => (view.status === "queued" ? report(view) : stop()))
      .catch(() => undefined)
      .finally(() => (reading = false));
  };
  if (current) report(current);
  else read();
  return stop;
}
