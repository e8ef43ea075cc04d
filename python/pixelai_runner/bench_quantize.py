"""Quantized MLX weights vs float32: size on disk, peak memory, time, and how far the output moves.

    PYTHONPATH=python python -m pixelai_runner.bench_quantize --out bench/results/mlx-quantize.json [--no-sd15]

Cases
  tiny    the repo's tiny SD and SDXL pipelines converted float32, int8 and int4 (group size 64 and 32), each run
          through MLXBackend with the same request (64×64, 4 Euler steps, seed 0, torch-compatible noise): seconds
          per image, peak RSS, folder bytes, and the image's max and mean difference from float32 in /255
  sd15    the SD-1.5-sized random UNet of bench_mlx.py (860 M parameters) float32, int8 and int4 (group 64): weight
          bytes, peak RSS, MLX's allocator peak, seconds per denoising step (classifier-free guidance = batch 2) at
          --size (default 512 px = 64×64 latents), and the final latents' difference from float32 (max and mean,
          relative to float32's largest magnitude): no VAE here, so no /255 figure
Quantization changes the output; these numbers are published instead of a parity claim. Each measurement runs in a
fresh process so its peak RSS is its own.
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

VARIANTS = {"float32": None, "int8-g64": (8, 64), "int4-g64": (4, 64), "int8-g32": (8, 32), "int4-g32": (4, 32)}
SD15_VARIANTS = ("float32", "int8-g64", "int4-g64")


def _mlx():
    import mlx.core as mx

    import pixelai_runner.backends.mlx  # noqa: F401  (picks the BLAS before mlx loads)

    return mx


def worker_tiny(folder: str, steps: int, size: int, repeats: int, image_out: str) -> dict:
    mx = _mlx()
    from .backends.mlx import MLXBackend

    backend = MLXBackend(dtype="float32")
    req = bench_request(folder, steps, size)
    out = backend.generate(req, lambda k, n: None, lambda: None)  # warm-up, and the image compared
    np.save(image_out, np.asarray(out.image, dtype=np.uint8))
    started = time.perf_counter()
    for _ in range(repeats):
        backend.generate(req, lambda k, n: None, lambda: None)
    seconds = (time.perf_counter() - started) / repeats
    return {"secondsPerImage": round(seconds, 4), "peakRssMB": peak_rss_mb(), "peakMlxMB": _peak(mx)}


def _peak(mx) -> float:
    return round(mx.get_peak_memory() / 2**20, 1)


def worker_sd15(folder: str, variant: str, size: int, steps: int, latents_out: str) -> dict:
    """Quantize (or not) the float32 SD-1.5-sized UNet, store it, load it back, time `steps` guided UNet steps."""
    mx = _mlx()
    from safetensors.numpy import load_file, save_file

    from .backends.mlx.config import UNetConfig
    from .backends.mlx.quantize import QuantizeSpec, quantize_component, quantize_like_file
    from .backends.mlx.sampler import make_sampler
    from .backends.mlx.unet import UNet2DConditionModel as MLXUNet

    config = UNetConfig.from_dict(json.loads((Path(folder) / "unet" / "config.json").read_text()))
    weights_file = Path(folder) / f"mlx-unet-{variant}.safetensors"
    if not weights_file.exists():
        bits, group = VARIANTS[variant]
        # the float32 MLX-layout UNet of bench_mlx's prepare step
        tensors = load_file(str(Path(folder) / "mlx-unet-float32.safetensors"))
        save_file(quantize_component(MLXUNet(config), tensors, QuantizeSpec(bits, group)), str(weights_file))
        del tensors
        mx.clear_cache()
        return {"prepared": str(weights_file)}
    unet = MLXUNet(config)
    weights = mx.load(str(weights_file))
    quantization = None if variant == "float32" else {"bits": VARIANTS[variant][0], "groupSize": VARIANTS[variant][1]}
    quantize_like_file(unet, weights, quantization)
    unet.load_weights(list(weights.items()), strict=True)
    del weights
    mx.eval(unet.parameters())
    rng = np.random.default_rng(0)
    latent = size // 8
    noise = mx.array(rng.standard_normal((1, latent, latent, 4)).astype(np.float32))
    context = mx.array(rng.standard_normal((2, 77, 768)).astype(np.float32))
    scheduler = {"beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear", "steps_offset": 1}

    def loop():
        sampler = make_sampler("euler", scheduler, steps)
        x = noise * sampler.init_noise_sigma
        for index, t in enumerate(sampler.timesteps):
            eps = unet(sampler.scale_input(mx.concatenate([x, x]), index), float(t), context)
            uncond, text = mx.split(eps, 2)
            x = sampler.step(uncond + 7.5 * (text - uncond), index, x)
            mx.eval(x)
        return x

    started = time.perf_counter()
    x = loop()
    seconds = time.perf_counter() - started
    np.save(latents_out, np.array(x))
    return {
        "secondsPerStep": round(seconds / steps, 3),
        "weightBytes": weights_file.stat().st_size,
        "peakRssMB": peak_rss_mb(),
        "peakMlxMB": _peak(mx),
    }


def _spawn(args: list[str]) -> dict:
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT / "python"))
    proc = subprocess.run(
        [sys.executable, "-m", "pixelai_runner.bench_quantize", "--worker", *args],
        capture_output=True,
        text=True,
        env=env,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"bench worker {args} failed:\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _diff255(a: np.ndarray, b: np.ndarray) -> dict:
    d = np.abs(a.astype(np.int16) - b.astype(np.int16))
    return {"max": int(d.max()), "mean": round(float(d.mean()), 3)}


def run(out: Path, sd15: bool, size: int, steps: int) -> dict:
    from .backends.mlx.convert import convert
    from .bench_mlx import _tiny_source

    report: dict = {
        **report_header("mlx", "numpy", "diffusers"),
        "settings": {
            "tiny": {"width": 64, "height": 64, "steps": 4, "repeats": 2},
            "sd15": {"size": size, "steps": steps},
        },
    }
    with tempfile.TemporaryDirectory(prefix="pixelai-bench-quant-") as tmp:
        work = Path(tmp)
        tiny_sd = _tiny_source(work)
        tiny_sdxl = tiny_sd.parent / "tiny-sdxl"
        report["tiny"] = {}
        for label, source in (("tiny-sd", tiny_sd), ("tiny-sdxl", tiny_sdxl)):
            if not source.is_dir():
                continue
            rows = {}
            for variant, spec in VARIANTS.items():
                kwargs = {} if spec is None else {"quantize": spec[0], "group_size": spec[1]}
                result = convert(str(source), f"{label}-{variant}", "float32", work / "mlx", **kwargs)
                image = work / f"{label}-{variant}.npy"
                row = _spawn(["tiny", result["path"], "4", "64", "2", str(image)])
                row["folderBytes"] = sum(f["size"] for f in result["manifest"]["files"].values())
                rows[variant] = row
            reference = np.load(work / f"{label}-float32.npy")
            for variant in VARIANTS:
                rows[variant]["imageDiff255"] = _diff255(np.load(work / f"{label}-{variant}.npy"), reference)
                rows[variant]["bytesOverFloat32"] = round(
                    rows[variant]["folderBytes"] / rows["float32"]["folderBytes"], 3
                )
            report["tiny"][label] = rows
        if sd15:
            from .bench_mlx import _spawn as mlx_spawn

            folder = work / "sd15"
            prepared = mlx_spawn(["prepare-sd15", str(folder)])
            case: dict = {"parameters": prepared["parameters"]}
            for variant in SD15_VARIANTS[1:]:
                _spawn(["sd15", str(folder), variant, str(size), str(steps), ""])  # quantize and store
            for variant in SD15_VARIANTS:
                case[variant] = _spawn(
                    ["sd15", str(folder), variant, str(size), str(steps), str(work / f"{variant}.npy")]
                )
            reference = np.load(work / "float32.npy")
            scale = float(np.abs(reference).max())
            for variant in SD15_VARIANTS:
                d = np.abs(np.load(work / f"{variant}.npy") - reference)
                case[variant]["latentDiff"] = {
                    "maxRel": round(float(d.max()) / scale, 5),
                    "meanRel": round(float(d.mean()) / scale, 6),
                }
                for key in ("weightBytes", "peakRssMB", "secondsPerStep"):
                    case[variant][f"{key}OverFloat32"] = round(case[variant][key] / case["float32"][key], 3)
            report["sd15Unet"] = case
    return write_report(out, report)


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["--worker"]:
        kind, rest = argv[1], argv[2:]
        if kind == "tiny":
            result = worker_tiny(rest[0], int(rest[1]), int(rest[2]), int(rest[3]), rest[4])
        else:
            result = worker_sd15(rest[0], rest[1], int(rest[2]), int(rest[3]), rest[4])
        print(json.dumps(result), flush=True)
        return 0
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="bench/results/mlx-quantize.json")
    parser.add_argument("--no-sd15", action="store_true", help="skip the SD-1.5-sized UNet (≈3.4 GB of weights)")
    parser.add_argument("--size", type=int, default=512, help="SD-1.5 case: image side in pixels (latents are size/8)")
    parser.add_argument("--steps", type=int, default=2, help="SD-1.5 case: guided UNet steps timed")
    args = parser.parse_args(argv)
    report = run(Path(args.out), not args.no_sd15, args.size, args.steps)
    print(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
