-- Candidates 1.. of a job with count > 1 (candidate 0 stays on the Job row).
-- CreateTable
CREATE TABLE "JobImage" (
    "jobId" TEXT NOT NULL,
    "index" INTEGER NOT NULL,
    "png" BYTEA,
    "sha256" TEXT NOT NULL,
    "width" INTEGER NOT NULL,
    "height" INTEGER NOT NULL,

    CONSTRAINT "JobImage_pkey" PRIMARY KEY ("jobId","index")
);

-- AddForeignKey
ALTER TABLE "JobImage" ADD CONSTRAINT "JobImage_jobId_fkey" FOREIGN KEY ("jobId") REFERENCES "Job"("id") ON DELETE CASCADE ON UPDATE CASCADE;
