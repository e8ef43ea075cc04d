-- AlterTable
ALTER TABLE "Model" ADD COLUMN "crossAttentionDim" INTEGER;
ALTER TABLE "Model" ADD COLUMN "sha256" TEXT;

-- AlterTable
ALTER TABLE "MlxConversion" ADD COLUMN "sourceFingerprint" TEXT;

