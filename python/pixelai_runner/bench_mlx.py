"""MLX vs Torch on this machine: seconds per image, peak memory, and MLX weight size float16 vs float32.

    PYTHONPATH=python python -m pixelai_runner.bench_mlx --out bench/results/mlx.json [--steps 4] [--no-sd15]

Cases
  tiny    the repo's tiny SD pipeline (models/tiny-sd, built when missing), whole text → image through each engine's
          backend (torch: TorchBackend on the diffusers folder;
          mlx: MLXBackend on a converted copy, float32 and float16)
  sd15    a UNet with SD 1.5's real size (block_out_channels 320/640/1280/1280, cross_attention_dim 768, 860 M
          parameters, random seeded weights) at a 64×64 image = 8×8 latents: the denoising loop only (Euler,
          classifier-free guidance = batch 2), since that is where an SD job spends its time
Every engine measurement runs in its own subprocess, so peak RSS (ru_maxrss) belongs to that engine alone; MLX also
reports its allocator's peak (mx.get_peak_memory). One warm-up image first, then the mean of `repeats`.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
SD15_UNET = dict(
    block_out_channels=(320, 640, 1280, 1280),
    layers_per_block=2,
    cross_attention_dim=768,
    attention_head_dim=8,
    down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
    up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
    sample_size=64,
)


def peak_rss_mb() -> float:
    # ru_maxrss is KiB on Linux, bytes on macOS
    scale = 1 / (1024 * 1024) if sys.platform == "darwin" else 1 / 1024
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale, 1)


def timed(fn, repeats: int) -> float:
    fn()  # warm-up: first-call compilation, allocator growth, lazy imports
    started = time.perf_counter()
    for _ in range(repeats):
        fn()
    return round((time.perf_counter() - started) / repeats, 4)


# --- workers (each runs in a fresh process) ---------------------------------------------------------------------


def bench_request(source: str, steps: int, size: int, lora: str | None = None):
    """The benches' job: a fixed prompt and seed, Euler, CFG 7.5, torch-compatible noise; a LoRA at strength 1."""
    from .backends.base import GenerateRequest

    req = GenerateRequest.from_params(
        dict(
            jobId="bench",
            modelSource=source,
            prompt="a pixel art knight",
            width=size,
            height=size,
            steps=steps,
            guidanceScale=7.5,
            seed=0,
            outputDir=tempfile.gettempdir(),
            scheduler="euler",
            initNoise="torch",
        )
    )
    req.lora = {"source": lora, "strength": 1.0} if lora else None
    return req


def report_header(*packages: str) -> dict:
    """When, on what machine and under what load, with which versions: the head of every bench result file."""
    from .versions import package_versions

    return {
        "timestamp": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {
            "platform": platform.platform(),
            "processor": platform.processor() or platform.machine(),
            "cpus": os.cpu_count(),
            # 1-minute load average at the start and end: above the core count, other work shared the CPUs.
            "loadAvgStart": round(os.getloadavg()[0], 2),
        },
        "versions": package_versions(*packages),
    }


def write_report(out: Path, report: dict) -> dict:
    report["machine"]["loadAvgEnd"] = round(os.getloadavg()[0], 2)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    return report


def worker_pipeline(engine: str, source: str, steps: int, size: int, repeats: int, dtype: str | None = None) -> dict:
    if engine == "torch":
        from .backends.torch_backend import TorchBackend

        backend = TorchBackend()
    else:
        from .backends.mlx import MLXBackend

        backend = MLXBackend(dtype=dtype)
    req = bench_request(source, steps, size)
    seconds = timed(lambda: backend.generate(req, lambda k, n: None, lambda: None), repeats)
    return {"secondsPerImage": seconds, "peakRssMB": peak_rss_mb(), **_mlx_peak(engine)}


def _mlx_peak(engine: str) -> dict:
    if engine == "torch":
        return {}
    import mlx.core as mx

    from .backends.mlx import cpu_blas

    return {"peakMlxMB": round(mx.get_peak_memory() / 2**20, 1), "cpuBlas": cpu_blas.loaded or "bundled"}


def worker_prepare_sd15(folder: str) -> dict:
    """Random SD-1.5-sized UNet → diffusers folder + MLX weights in float32 and float16."""
    import numpy as np
    import torch
    from diffusers import UNet2DConditionModel
    from safetensors.numpy import save_file

    from .backends.mlx import weights as W

    out = Path(folder)
    torch.manual_seed(0)
    unet = UNet2DConditionModel(**SD15_UNET)
    unet.save_pretrained(str(out / "unet"), safe_serialization=True)
    mapped = W.map_unet(W.torch_state_dict_to_numpy(unet.state_dict().items()))
    del unet
    sizes = {}
    for dtype in ("float32", "float16"):
        path = out / f"mlx-unet-{dtype}.safetensors"
        save_file({k: np.ascontiguousarray(v.astype(dtype)) for k, v in mapped.items()}, str(path))
        sizes[dtype] = path.stat().st_size
    return {
        "parameters": int(sum(v.size for v in mapped.values())),
        "mlxBytes": sizes,
        "diffusersBytes": (out / "unet" / "diffusion_pytorch_model.safetensors").stat().st_size,
    }


def worker_prepare_sd15_pipeline(folder: str) -> dict:
    """A whole text-to-image pipeline of SD 1.5's real sizes with random seeded weights (UNet 860 M, CLIP text encoder
    123 M, VAE 84 M parameters), laid out as a diffusers folder the runners load like any model; tokenizer, scheduler
    and model_index.json come from the tiny SD model (the tokenizer's ids all fall inside the 49 408-token table)."""
    import shutil

    import torch
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    tiny = REPO_ROOT / "models" / "tiny-sd"
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    counts = {}
    unet = UNet2DConditionModel(**SD15_UNET)
    unet.save_pretrained(str(out / "unet"), safe_serialization=True)
    counts["unet"] = sum(p.numel() for p in unet.parameters())
    del unet
    text = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=49408,
            hidden_size=768,
            intermediate_size=3072,
            num_hidden_layers=12,
            num_attention_heads=12,
            max_position_embeddings=77,
            hidden_act="quick_gelu",
        )
    )
    text.save_pretrained(str(out / "text_encoder"), safe_serialization=True)
    counts["text_encoder"] = sum(p.numel() for p in text.parameters())
    del text
    vae = AutoencoderKL(
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=(128, 256, 512, 512),
        layers_per_block=2,
        latent_channels=4,
        sample_size=512,
    )
    vae.save_pretrained(str(out / "vae"), safe_serialization=True)
    counts["vae"] = sum(p.numel() for p in vae.parameters())
    del vae
    for name in ("tokenizer", "scheduler"):
        shutil.copytree(tiny / name, out / name, dirs_exist_ok=True)
    shutil.copyfile(tiny / "model_index.json", out / "model_index.json")
    return {"parameters": counts, "bytes": sum(p.stat().st_size for p in out.rglob("*.safetensors"))}


def worker_sd15_unet(engine: str, folder: str, steps: int, size: int, repeats: int, dtype: str) -> dict:
    """The denoising loop alone: Euler over `steps`, CFG batch of 2, fixed random text context."""
    import numpy as np

    rng = np.random.default_rng(0)
    latent = size // 8
    noise = rng.standard_normal((1, 4, latent, latent)).astype(np.float32)
    context = rng.standard_normal((2, 77, 768)).astype(np.float32)
    config = {
        "num_train_timesteps": 1000,
        "beta_start": 0.00085,
        "beta_end": 0.012,
        "beta_schedule": "scaled_linear",
        "timestep_spacing": "leading",
        "steps_offset": 1,
    }
    if engine == "torch":
        import torch
        from diffusers import EulerDiscreteScheduler, UNet2DConditionModel

        unet = UNet2DConditionModel.from_pretrained(str(Path(folder) / "unet")).eval()
        ctx = torch.from_numpy(context)

        def loop():
            scheduler = EulerDiscreteScheduler.from_config(config)
            scheduler.set_timesteps(steps)
            x = torch.from_numpy(noise) * scheduler.init_noise_sigma
            with torch.inference_mode():
                for t in scheduler.timesteps:
                    eps = unet(scheduler.scale_model_input(torch.cat([x, x]), t), t, ctx).sample
                    uncond, text = eps.chunk(2)
                    x = scheduler.step(uncond + 7.5 * (text - uncond), t, x).prev_sample
            return x
    else:
        from . import settings
        from .backends.mlx import cpu_blas

        cpu_blas.prefer_optimised_blas(settings.current().mlx_blas)  # must precede the first mlx import
        import mlx.core as mx

        from .backends.mlx.config import UNetConfig
        from .backends.mlx.sampler import make_sampler
        from .backends.mlx.unet import UNet2DConditionModel as MLXUNet

        unet = MLXUNet(UNetConfig.from_dict(json.loads((Path(folder) / "unet" / "config.json").read_text())))
        unet.load_weights(str(Path(folder) / f"mlx-unet-{dtype}.safetensors"), strict=True)
        unet.set_dtype(getattr(mx, dtype))
        mx.eval(unet.parameters())
        ctx = mx.array(context).astype(getattr(mx, dtype))

        def loop():
            sampler = make_sampler("euler", config, steps)
            x = mx.array(noise.transpose(0, 2, 3, 1)) * sampler.init_noise_sigma
            for index, t in enumerate(sampler.timesteps):
                eps = unet(sampler.scale_input(mx.concatenate([x, x]), index).astype(ctx.dtype), float(t), ctx)
                uncond, text = mx.split(eps, 2)
                x = sampler.step(uncond + 7.5 * (text - uncond), index, x)
                mx.eval(x)
            return x

    seconds = timed(loop, repeats)
    return {"secondsPerImage": seconds, "peakRssMB": peak_rss_mb(), **_mlx_peak(engine)}


# --- orchestration ------------------------------------------------------------------------------------------------


def _spawn(args: list[str], blas: str = "auto") -> dict:
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT / "python"))
    command = [sys.executable, "-m", "pixelai_runner.bench_mlx", "--mlx-blas", blas, "--worker", *args]
    proc = subprocess.run(command, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise RuntimeError(f"bench worker {args} failed:\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _tiny_source(workdir: Path) -> Path:
    import importlib.util

    spec = importlib.util.spec_from_file_location("make_tiny_model", REPO_ROOT / "scripts" / "make_tiny_model.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    shared = REPO_ROOT / "models"
    if module._is_current(shared / "tiny-sd"):
        return shared / "tiny-sd"
    return module.build_tiny_models(workdir / "models", names=("tiny-sd",))["tiny-sd"]


def _ratio(a: float, b: float) -> float:
    return round(a / b, 3) if b else float("nan")


def run(out: Path, steps: int, size: int, repeats: int, sd15: bool) -> dict:
    from .backends.mlx.convert import convert

    report: dict = {
        **report_header("torch", "diffusers", "transformers", "mlx", "numpy"),
        "settings": {
            "steps": steps,
            "width": size,
            "height": size,
            "repeats": repeats,
            "scheduler": "euler",
            "guidanceScale": 7.5,
            # Thread count of torch and of the BLAS MLX calls into (OpenBLAS reads it too); unset = one per core.
            "ompNumThreads": os.environ.get("OMP_NUM_THREADS", "unset"),
        },
    }
    with tempfile.TemporaryDirectory(prefix="pixelai-bench-") as tmp:
        workdir = Path(tmp)
        source = _tiny_source(workdir)
        tiny: dict = {"source": str(source)}
        sizes = {}
        for dtype in ("float32", "float16"):
            result = convert(str(source), f"tiny-{dtype}", dtype, workdir / "mlx")
            sizes[dtype] = sum(f["size"] for f in result["manifest"]["files"].values())
            tiny[f"mlx_{dtype}"] = _spawn(
                ["pipeline", "mlx", result["path"], str(steps), str(size), str(repeats), dtype]
            )
            if dtype == "float32" and sys.platform.startswith("linux"):
                # the same run on the reference BLAS the mlx[cpu] wheel bundles (see backends/mlx/cpu_blas.py)
                tiny["mlx_float32_bundledBlas"] = _spawn(
                    ["pipeline", "mlx", result["path"], str(steps), str(size), str(repeats), dtype],
                    blas="off",
                )
        tiny["torch"] = _spawn(["pipeline", "torch", str(source), str(steps), str(size), str(repeats)])
        tiny["mlxFolderBytes"] = sizes
        tiny["ratios"] = {
            "mlxFloat32SecondsOverTorch": _ratio(
                tiny["mlx_float32"]["secondsPerImage"], tiny["torch"]["secondsPerImage"]
            ),
            "mlxFloat32PeakRssOverTorch": _ratio(tiny["mlx_float32"]["peakRssMB"], tiny["torch"]["peakRssMB"]),
            "float16OverFloat32Bytes": _ratio(sizes["float16"], sizes["float32"]),
        }
        if "mlx_float32_bundledBlas" in tiny:
            tiny["ratios"]["bundledBlasOverOptimisedSeconds"] = _ratio(
                tiny["mlx_float32_bundledBlas"]["secondsPerImage"], tiny["mlx_float32"]["secondsPerImage"]
            )
        report["tiny"] = tiny
        if sd15:
            folder = workdir / "sd15"
            prepared = _spawn(["prepare-sd15", str(folder)])
            case = {"unet": prepared}
            case["torch"] = _spawn(["sd15", "torch", str(folder), str(steps), str(size), str(repeats), "float32"])
            case["mlx_float32"] = _spawn(["sd15", "mlx", str(folder), str(steps), str(size), str(repeats), "float32"])
            if sys.platform.startswith("linux"):
                case["mlx_float32_bundledBlas"] = _spawn(
                    ["sd15", "mlx", str(folder), str(steps), str(size), str(repeats), "float32"],
                    blas="off",
                )
            case["ratios"] = {
                "mlxSecondsOverTorch": _ratio(case["mlx_float32"]["secondsPerImage"], case["torch"]["secondsPerImage"]),
                "mlxPeakRssOverTorch": _ratio(case["mlx_float32"]["peakRssMB"], case["torch"]["peakRssMB"]),
                "float16OverFloat32Bytes": _ratio(prepared["mlxBytes"]["float16"], prepared["mlxBytes"]["float32"]),
            }
            if "mlx_float32_bundledBlas" in case:
                case["ratios"]["bundledBlasOverOptimisedSeconds"] = _ratio(
                    case["mlx_float32_bundledBlas"]["secondsPerImage"], case["mlx_float32"]["secondsPerImage"]
                )
            report["sd15Unet"] = case
    return write_report(out, report)


def _print_summary(report: dict) -> None:
    tiny = report["tiny"]
    print(
        f"tiny SD {report['settings']['width']}px {report['settings']['steps']} steps: "
        f"torch {tiny['torch']['secondsPerImage']}s/img, mlx fp32 {tiny['mlx_float32']['secondsPerImage']}s/img, "
        f"mlx fp16 {tiny['mlx_float16']['secondsPerImage']}s/img; ratios {tiny['ratios']}"
    )
    if "sd15Unet" in report:
        case = report["sd15Unet"]
        print(
            f"SD-1.5-sized UNet loop: torch {case['torch']['secondsPerImage']}s/img "
            f"(peak RSS {case['torch']['peakRssMB']} MB), mlx fp32 {case['mlx_float32']['secondsPerImage']}s/img "
            f"(peak RSS {case['mlx_float32']['peakRssMB']} MB, MLX peak {case['mlx_float32']['peakMlxMB']} MB); "
            f"ratios {case['ratios']}"
        )


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["--mlx-blas"]:
        from . import settings

        # Set before anything imports backends.mlx, which picks the BLAS mlx binds to (cpu_blas.py).
        settings.use(settings.RunnerSettings(mlx_blas=argv[1]))
        argv = argv[2:]
    if argv[:1] == ["--worker"]:
        kind, rest = argv[1], argv[2:]
        if kind == "pipeline":
            dtype = rest[5] if len(rest) > 5 else None
            result = worker_pipeline(rest[0], rest[1], int(rest[2]), int(rest[3]), int(rest[4]), dtype)
        elif kind == "prepare-sd15":
            result = worker_prepare_sd15(rest[0])
        elif kind == "prepare-sd15-pipeline":
            result = worker_prepare_sd15_pipeline(rest[0])
        else:
            result = worker_sd15_unet(rest[0], rest[1], int(rest[2]), int(rest[3]), int(rest[4]), rest[5])
        print(json.dumps(result), flush=True)
        return 0
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="bench/results/mlx.json")
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--size", type=int, default=64, help="image side in pixels (latents are size/8)")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--no-sd15", action="store_true", help="skip the SD-1.5-sized UNet (≈3.4 GB of weights)")
    args = parser.parse_args(argv)
    report = run(Path(args.out), args.steps, args.size, args.repeats, not args.no_sd15)
    _print_summary(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
