-- Jobs remember who submitted them (API key or IP): idempotency keys are unique per client, a repeat with another
-- body is told apart by the body's hash, and the per-client cap on queued jobs counts by client and status.
-- DropIndex
DROP INDEX "Job_idempotencyKey_key";

-- AlterTable
ALTER TABLE "Job" ADD COLUMN "client" TEXT;
ALTER TABLE "Job" ADD COLUMN "requestHash" TEXT;

-- CreateIndex
CREATE INDEX "Job_client_status_idx" ON "Job"("client", "status");

-- CreateIndex
CREATE UNIQUE INDEX "Job_client_idempotencyKey_key" ON "Job"("client", "idempotencyKey");
