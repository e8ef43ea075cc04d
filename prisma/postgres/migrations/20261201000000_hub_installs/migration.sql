-- Hub models: where a registry entry comes from and, once installed, the pinned snapshot it loads.
-- AlterTable
ALTER TABLE "Model" ADD COLUMN "origin" TEXT NOT NULL DEFAULT 'local',
ADD COLUMN "commitSha" TEXT,
ADD COLUMN "snapshotPath" TEXT,
ADD COLUMN "weightName" TEXT,
ADD COLUMN "variant" TEXT;

-- CreateTable
CREATE TABLE "Install" (
    "id" TEXT NOT NULL,
    "name" TEXT NOT NULL,
    "repoId" TEXT NOT NULL,
    "revision" TEXT NOT NULL,
    "kind" TEXT NOT NULL,
    "variant" TEXT,
    "weightName" TEXT,
    "status" TEXT NOT NULL,
    "commitSha" TEXT,
    "snapshotPath" TEXT,
    "bytesDone" BIGINT NOT NULL DEFAULT 0,
    "bytesTotal" BIGINT,
    "bytesPresent" BIGINT,
    "filesDone" INTEGER NOT NULL DEFAULT 0,
    "filesTotal" INTEGER,
    "rateBps" DOUBLE PRECISION,
    "etaSeconds" INTEGER,
    "currentFile" TEXT,
    "attempts" INTEGER NOT NULL DEFAULT 0,
    "errorCode" TEXT,
    "errorMessage" TEXT,
    "errorHint" TEXT,
    "createdAt" TIMESTAMP(3) NOT NULL DEFAULT CURRENT_TIMESTAMP,
    "startedAt" TIMESTAMP(3),
    "finishedAt" TIMESTAMP(3),
    "updatedAt" TIMESTAMP(3) NOT NULL,

    CONSTRAINT "Install_pkey" PRIMARY KEY ("id")
);

-- CreateIndex
CREATE INDEX "Install_repoId_status_idx" ON "Install"("repoId", "status");

-- CreateIndex
CREATE INDEX "Install_name_createdAt_idx" ON "Install"("name", "createdAt");
