"""The same LoRA job on both engines: seconds per image with and without the LoRA, what a LoRA switch costs on MLX,
and how far the two engines' images are apart.

    PYTHONPATH=python python -m pixelai_runner.bench_lora --out bench/results/mlx-lora.json

Tiny SD and tiny SDXL (the repo's offline models) with their tiny LoRAs (scripts/make_tiny_lora.py, rank 4 on every
attention projection, strength 1), 64×64, 4 Euler steps, CFG 7.5, torch-compatible noise; MLX on a float32
conversion. Each engine runs in its own process (peak RSS is its own): one warm-up image, then the mean of `repeats`
with the LoRA and without it (the MLX runner unfuses and refuses between the two, so the "with" figure includes a
fuse). On MLX also the time of one switch from no LoRA to the LoRA (`set_lora` alone).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from .bench_mlx import REPO_ROOT, bench_request, peak_rss_mb, report_header, write_report


def worker(engine: str, source: str, lora: str, repeats: int, image_out: str) -> dict:
    if engine == "torch":
        from .backends.torch_backend import TorchBackend

        backend = TorchBackend()
    else:
        import pixelai_runner.backends.mlx  # noqa: F401  (picks the BLAS before mlx loads)

        from .backends.mlx import MLXBackend

        backend = MLXBackend(dtype="float32")

    def run(with_lora: bool):
        req = bench_request(source, 4, 64, lora if with_lora else None)
        return backend.generate(req, lambda k, n: None, lambda: None)

    first = run(True)  # warm-up; its image is the one compared across engines
    np.save(image_out, np.asarray(first.image, dtype=np.uint8))
    timings = {}
    for label, with_lora in (("withLora", True), ("withoutLora", False)):
        started = time.perf_counter()
        for _ in range(repeats):
            run(with_lora)
        timings[label] = round((time.perf_counter() - started) / repeats, 4)
    result = {"secondsPerImage": timings, "peakRssMB": peak_rss_mb()}
    if engine == "mlx":
        from .backends.mlx import lora as L

        model = backend.ensure_loaded(source)
        prepared = L.prepare(lora, L.read(lora), model.base_shapes())
        model.set_lora(None)
        started = time.perf_counter()
        model.set_lora(prepared, 1.0)
        result["fuseMs"] = round((time.perf_counter() - started) * 1000, 1)
        model.set_lora(None)
    return result


def _spawn(args: list[str]) -> dict:
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT / "python"))
    command = [sys.executable, "-m", "pixelai_runner.bench_lora", "--worker", *args]
    proc = subprocess.run(command, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise RuntimeError(f"bench worker {args} failed:\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def run(out: Path, repeats: int) -> dict:
    import importlib.util

    from .backends.mlx.convert import convert
    from .bench_mlx import _tiny_source

    spec = importlib.util.spec_from_file_location("make_tiny_lora", REPO_ROOT / "scripts" / "make_tiny_lora.py")
    make_tiny_lora = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(make_tiny_lora)
    report: dict = {
        **report_header("torch", "diffusers", "mlx", "numpy"),
        "settings": {
            "width": 64,
            "height": 64,
            "steps": 4,
            "repeats": repeats,
            "loraStrength": 1.0,
            "mlxDtype": "float32",
        },
        "models": {},
    }
    with tempfile.TemporaryDirectory(prefix="pixelai-bench-lora-") as tmp:
        work = Path(tmp)
        tiny_sd = _tiny_source(work)
        loras = make_tiny_lora.build_tiny_loras(tiny_sd.parent, work / "loras")
        for model, lora in (("tiny-sd", "tiny-sd-lora"), ("tiny-sdxl", "tiny-sdxl-lora")):
            source = tiny_sd.parent / model
            converted = convert(str(source), model, "float32", work / "mlx")["path"]
            row = {"lora": lora}
            row["torch"] = _spawn(["torch", str(source), str(loras[lora]), str(repeats), str(work / "torch.npy")])
            row["mlx"] = _spawn(["mlx", converted, str(loras[lora]), str(repeats), str(work / "mlx.npy")])
            diff = np.abs(np.load(work / "torch.npy").astype(np.int16) - np.load(work / "mlx.npy").astype(np.int16))
            row["imageDiff255"] = {"max": int(diff.max()), "mean": round(float(diff.mean()), 4)}
            t, m = row["torch"]["secondsPerImage"], row["mlx"]["secondsPerImage"]
            row["ratios"] = {
                "mlxOverTorchWithLora": round(m["withLora"] / t["withLora"], 3),
                "loraOverPlainTorch": round(t["withLora"] / t["withoutLora"], 3),
                "loraOverPlainMlx": round(m["withLora"] / m["withoutLora"], 3),
            }
            report["models"][model] = row
    return write_report(out, report)


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["--worker"]:
        engine, source, lora, repeats, image_out = argv[1:6]
        print(json.dumps(worker(engine, source, lora, int(repeats), image_out)), flush=True)
        return 0
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="bench/results/mlx-lora.json")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    print(json.dumps(run(Path(args.out), args.repeats), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
