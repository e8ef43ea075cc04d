-- AlterTable
ALTER TABLE "Job" ADD COLUMN "worker" TEXT;
