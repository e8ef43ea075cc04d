-- Hub models: where a registry entry comes from and, once installed, the pinned snapshot it loads.
-- AlterTable
ALTER TABLE "Model" ADD COLUMN "origin" TEXT NOT NULL DEFAULT 'local';
ALTER TABLE "Model" ADD COLUMN "commitSha" TEXT;
ALTER TABLE "Model" ADD COLUMN "snapshotPath" TEXT;
ALTER TABLE "Model" ADD COLUMN "weightName" TEXT;
ALTER TABLE "Model" ADD COLUMN "variant" TEXT;

-- CreateTable
CREATE TABLE "Install" (
    "id" TEXT NOT NULL PRIMARY KEY,
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
    "rateBps" REAL,
    "etaSeconds" INTEGER,
    "currentFile" TEXT,
    "attempts" INTEGER NOT NULL DEFAULT 0,
    "errorCode" TEXT,
    "errorMessage" TEXT,
    "errorHint" TEXT,
    "createdAt" DATETIME NOT NULL DEFAULT CURRENT_TIMESTAMP,
    "startedAt" DATETIME,
    "finishedAt" DATETIME,
    "updatedAt" DATETIME NOT NULL
);

-- CreateIndex
CREATE INDEX "Install_repoId_status_idx" ON "Install"("repoId", "status");

-- CreateIndex
CREATE INDEX "Install_name_createdAt_idx" ON "Install"("name", "createdAt");
