-- A pixelize job's input PNG, kept on the row until the job is final.
-- AlterTable
ALTER TABLE "Job" ADD COLUMN "inputPng" BLOB;
