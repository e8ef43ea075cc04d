export type InstallStatus = "queued" | "active" | "completed" | "failed";

export interface InstallProgress {
  bytesDone: number;
  /** Known once the hub has listed the files to fetch. */
  bytesTotal: number | null;
  /** Bytes already on disk when the latest attempt started (a resumed install fetches only the rest). */
  bytesPresent: number | null;
  filesDone: number;
  filesTotal: number | null;
  /** 0–100, once bytesTotal is known. */
  percent: number | null;
  /** Recent download rate, bytes per second. */
  rateBps: number | null;
  etaSeconds: number | null;
  /** The file being fetched now. */
  file: string | null;
}

export interface InstallView {
  id: string;
  /** Registry name the model is registered under once installed. */
  name: string;
  /** Hub id `owner/name`. */
  repo: string;
  /** As asked: branch, tag or commit. */
  revision: string;
  kind: "base" | "lora";
  /** Weights variant asked for (fp16), null for the plain weights. */
  variant: string | null;
  weightName: string | null;
  status: InstallStatus;
  /** The commit the snapshot is pinned to, once the hub has resolved the revision. */
  commit: string | null;
  /** The installed snapshot folder, relative to the models folder. */
  snapshotPath: string | null;
  progress: InstallProgress;
  /** Worker processes that ran it (more than one when a worker died mid-download). */
  attempts: number;
  error?: { code: string; message: string; hint?: string };
  createdAt: string;
  startedAt: string | null;
  finishedAt: string | null;
}

/** What an install is asked for (POST /models with a hub id as source, or `pixelai install`). */
export interface InstallRequest {
  repoId: string;
  revision: string;
  kind: "base" | "lora";
  name: string;
  /** auto: fp16 where the torch engine runs fp16 (CUDA, MPS), else the plain weights. */
  variant: "fp16" | "none" | "auto";
  weightName?: string;
  /** Shown until the install has inspected the files. */
  architecture?: "sd" | "sdxl";
}
