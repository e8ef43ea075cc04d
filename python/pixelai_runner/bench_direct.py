"""The service-free baseline for `npm run bench`: the same generate job the runner would do, called in-process.

    PYTHONPATH=python python -m pixelai_runner.bench_direct --model models/tiny-sd --jobs 30 [--warmup 2]
    PYTHONPATH=python python -m pixelai_runner.bench_direct --model models/tiny-sd --blocks   (then "N" lines on stdin)

It goes through the same TorchBackend + post-processing + PNG write + sha256 as runner.py's generate path, but with no
protocol, no Node, no Redis, no database: so (HTTP latency − this) is what the service adds per job. Prints exactly one
JSON line on stdout (the last line); library chatter goes to stderr.

With --blocks it loads and warms up, prints one `ready` line, then runs N jobs for each line "N" read on stdin and
prints one line of their timings per block, until stdin closes: the bench alternates such blocks with blocks of HTTP
jobs, so a machine whose load changes during the run weighs on both sides alike.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import tempfile
import time

from .protocol import reserve_stdout_for_protocol


def _percentile(sorted_values: list[float], q: float) -> float:
    """Nearest-rank percentile: an observed value, the same definition the TypeScript side uses."""
    rank = max(1, int(-(-q * len(sorted_values) // 100)))  # ceil(q/100 * n)
    return sorted_values[min(rank, len(sorted_values)) - 1]


def main(argv=None) -> int:
    # Same guard as the runner: torch/diffusers may print to fd 1, and the caller parses our stdout.
    out_fd = reserve_stdout_for_protocol()
    parser = argparse.ArgumentParser(description="direct in-process generate baseline")
    parser.add_argument("--model", required=True, help="diffusers folder (e.g. models/tiny-sd)")
    parser.add_argument("--jobs", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--width", type=int, default=64)
    parser.add_argument("--height", type=int, default=64)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--guidance", type=float, default=7.0)
    parser.add_argument("--pixel", type=int, default=32, help="pixel grid side (square)")
    parser.add_argument("--colors", type=int, default=8)
    parser.add_argument("--prompt", default="a pixel art knight")
    parser.add_argument("--blocks", action="store_true", help="after warm-up, run N jobs per stdin line 'N'")
    args = parser.parse_args(argv)

    import torch

    from . import postprocess
    from .backends.base import GenerateRequest
    from .backends.torch_backend import TorchBackend
    from .versions import package_versions

    backend = TorchBackend()
    out_dir_handle = tempfile.TemporaryDirectory(prefix="pixelai-bench-direct-")  # removed when the bench ends
    out_dir = out_dir_handle.name

    def one(index: int) -> dict:
        req = GenerateRequest.from_params(
            dict(
                jobId=f"direct-{index}",
                modelSource=os.path.abspath(args.model),
                prompt=args.prompt,
                width=args.width,
                height=args.height,
                steps=args.steps,
                guidanceScale=args.guidance,
                seed=1000 + index,
                scheduler="euler",
                initNoise="torch",
                outputDir=out_dir,
                pixel={"width": args.pixel, "height": args.pixel, "colors": args.colors, "fitMode": "contain"},
            )
        )
        started = time.perf_counter()
        output = backend.generate(req, lambda _k, _n: None, lambda: None)
        gen_done = time.perf_counter()
        image = postprocess.postprocess(output.image, req.pixel, req.remove_background)
        path = os.path.join(out_dir, "result.png")
        image.save(path, format="PNG")
        with open(path, "rb") as fh:
            hashlib.sha256(fh.read()).hexdigest()
        finished = time.perf_counter()
        return {
            "total": finished - started,
            "generate": gen_done - started,
            "post": finished - gen_done,
            "loadMs": output.load_ms,
            "size": image.size,
        }

    load_started = time.perf_counter()
    first = one(-1)  # loads the pipeline (cold): reported, not counted
    load_s = time.perf_counter() - load_started
    for i in range(max(0, args.warmup - 1)):
        one(-2 - i)
    about = {
        "coldFirstJobSeconds": round(load_s, 3),
        "coldLoadMs": round(first["loadMs"], 1),
        "device": backend.info.device,
        "torchThreads": torch.get_num_threads(),
        "versions": package_versions("torch", "diffusers", "transformers"),
    }
    if args.blocks:
        return _serve_blocks(one, about, out_fd)
    runs = [one(i) for i in range(args.jobs)]

    def summary(key: str) -> dict:
        values = sorted(r[key] for r in runs)
        return {
            "p50": round(_percentile(values, 50), 4),
            "p99": round(_percentile(values, 99), 4),
            "mean": round(sum(values) / len(values), 4),
            "min": round(values[0], 4),
            "max": round(values[-1], 4),
        }

    result = {
        "jobs": args.jobs,
        "warmup": args.warmup,
        **about,
        "outputSize": list(runs[-1]["size"]) if runs else None,
        "seconds": summary("total") if runs else None,
        "generateSeconds": summary("generate") if runs else None,
        "postprocessSeconds": summary("post") if runs else None,
        "samples": [round(r["total"], 4) for r in runs],
    }
    with os.fdopen(out_fd, "w", encoding="utf-8") as out:
        out.write(json.dumps(result) + "\n")
    return 0


def _serve_blocks(one, about: dict, out_fd: int) -> int:
    """The --blocks loop: one JSON line per block of jobs, each job's seconds (total, generate, post-process)."""
    done = 0
    with os.fdopen(out_fd, "w", encoding="utf-8", buffering=1) as out:
        out.write(json.dumps({"ready": True, **about}) + "\n")
        for line in sys.stdin:
            if not line.strip():
                continue
            runs = [one(done + i) for i in range(int(line))]
            done += len(runs)
            keys = ("total", "generate", "post")
            out.write(json.dumps({key: [round(r[key], 5) for r in runs] for key in keys}) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
