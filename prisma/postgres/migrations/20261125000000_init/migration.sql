-- CreateSchema
CREATE SCHEMA IF NOT EXISTS "public";

-- CreateTable
CREATE TABLE "Job" (
    "id" TEXT NOT NULL,
    "status" TEXT NOT NULL,
    "engine" TEXT NOT NULL,
    "model" TEXT NOT NULL,
    "request" TEXT NOT NULL,
    "prompt" TEXT NOT NULL,
    "width" INTEGER NOT NULL,
    "height" INTEGER NOT NULL,
    "steps" INTEGER NOT NULL,
    "seed" INTEGER NOT NULL,
    "device" TEXT,
    "worker" TEXT,
    "progressStep" INTEGER NOT NULL DEFAULT 0,
    "progressTotal" INTEGER NOT NULL DEFAULT 0,
    "attempts" INTEGER NOT NULL DEFAULT 0,
    "queueMs" INTEGER,
    "loadMs" INTEGER,
    "generateMs" INTEGER,
    "postprocessMs" INTEGER,
    "errorCode" TEXT,
    "errorMessage" TEXT,
    "resultWidth" INTEGER,
    "resultHeight" INTEGER,
    "resultPng" BYTEA,
    "resultSha256" TEXT,
    "idempotencyKey" TEXT,
    "source" TEXT NOT NULL DEFAULT 'rest',
    "createdAt" TIMESTAMP(3) NOT NULL DEFAULT CURRENT_TIMESTAMP,
    "startedAt" TIMESTAMP(3),
    "finishedAt" TIMESTAMP(3),

    CONSTRAINT "Job_pkey" PRIMARY KEY ("id")
);

-- CreateTable
CREATE TABLE "Model" (
    "id" TEXT NOT NULL,
    "name" TEXT NOT NULL,
    "source" TEXT NOT NULL,
    "kind" TEXT NOT NULL,
    "architecture" TEXT NOT NULL,
    "revision" TEXT,
    "sizeBytes" BIGINT,
    "sha256" TEXT,
    "crossAttentionDim" INTEGER,
    "createdAt" TIMESTAMP(3) NOT NULL DEFAULT CURRENT_TIMESTAMP,
    "updatedAt" TIMESTAMP(3) NOT NULL,

    CONSTRAINT "Model_pkey" PRIMARY KEY ("id")
);

-- CreateTable
CREATE TABLE "MlxConversion" (
    "id" TEXT NOT NULL,
    "modelId" TEXT NOT NULL,
    "status" TEXT NOT NULL,
    "dtype" TEXT NOT NULL,
    "path" TEXT,
    "sourceRevision" TEXT,
    "sourceFingerprint" TEXT,
    "converterVersion" TEXT,
    "manifest" TEXT,
    "progress" INTEGER NOT NULL DEFAULT 0,
    "errorCode" TEXT,
    "errorMessage" TEXT,
    "createdAt" TIMESTAMP(3) NOT NULL DEFAULT CURRENT_TIMESTAMP,
    "finishedAt" TIMESTAMP(3),

    CONSTRAINT "MlxConversion_pkey" PRIMARY KEY ("id")
);

-- CreateTable
CREATE TABLE "MlxConversionFile" (
    "id" TEXT NOT NULL,
    "conversionId" TEXT NOT NULL,
    "path" TEXT NOT NULL,
    "sha256" TEXT NOT NULL,
    "sizeBytes" BIGINT NOT NULL,

    CONSTRAINT "MlxConversionFile_pkey" PRIMARY KEY ("id")
);

-- CreateIndex
CREATE UNIQUE INDEX "Job_idempotencyKey_key" ON "Job"("idempotencyKey");

-- CreateIndex
CREATE INDEX "Job_status_createdAt_idx" ON "Job"("status", "createdAt");

-- CreateIndex
CREATE INDEX "Job_engine_createdAt_idx" ON "Job"("engine", "createdAt");

-- CreateIndex
CREATE INDEX "Job_createdAt_idx" ON "Job"("createdAt");

-- CreateIndex
CREATE UNIQUE INDEX "Model_name_key" ON "Model"("name");

-- CreateIndex
CREATE INDEX "MlxConversion_modelId_createdAt_idx" ON "MlxConversion"("modelId", "createdAt");

-- CreateIndex
CREATE UNIQUE INDEX "MlxConversionFile_conversionId_path_key" ON "MlxConversionFile"("conversionId", "path");

-- AddForeignKey
ALTER TABLE "MlxConversion" ADD CONSTRAINT "MlxConversion_modelId_fkey" FOREIGN KEY ("modelId") REFERENCES "Model"("id") ON DELETE CASCADE ON UPDATE CASCADE;

-- AddForeignKey
ALTER TABLE "MlxConversionFile" ADD CONSTRAINT "MlxConversionFile_conversionId_fkey" FOREIGN KEY ("conversionId") REFERENCES "MlxConversion"("id") ON DELETE CASCADE ON UPDATE CASCADE;

