-- Candidates 1.. of a job with count > 1 (candidate 0 stays on the Job row).
-- CreateTable
CREATE TABLE "JobImage" (
    "jobId" TEXT NOT NULL,
    "index" INTEGER NOT NULL,
    "png" BLOB,
    "sha256" TEXT NOT NULL,
    "width" INTEGER NOT NULL,
    "height" INTEGER NOT NULL,

    PRIMARY KEY ("jobId", "index"),
    CONSTRAINT "JobImage_jobId_fkey" FOREIGN KEY ("jobId") REFERENCES "Job" ("id") ON DELETE CASCADE ON UPDATE CASCADE
);
