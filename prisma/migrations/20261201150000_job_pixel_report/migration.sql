-- What the pixel-art post-processing did (grid found, background keyed), shown in a job's result.
-- AlterTable
ALTER TABLE "Job" ADD COLUMN "pixelReport" JSONB;
