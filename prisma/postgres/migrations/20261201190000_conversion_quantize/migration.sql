-- Quantized MLX conversions: bits per weight and group size of the linear layers (null = not quantized).
-- AlterTable
ALTER TABLE "MlxConversion" ADD COLUMN "quantizeBits" INTEGER;
ALTER TABLE "MlxConversion" ADD COLUMN "quantizeGroupSize" INTEGER;
