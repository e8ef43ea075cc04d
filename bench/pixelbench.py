"""Run pixelbench (pseudo pixel art → true pixel art, against peer tools) and commit-ready results.

pixelbench lives beside the checkout, read-only (../shared/pixelbench: degrade.py, score.py, methods.py, run.py); this
script fetches its ground truth (the CC0 Dungeon Crawl Stone Soup tiles, Debian package crawl-tiles-data, downloaded
with apt-get at run time and never committed), runs it with the project's venv, and writes
bench/results/pixelbench-<seed>.json: the per method x mode x level summary, the settings, the machine and its load,
the versions, and the time the project's post-processing takes on a 1024x1024 picture.

    python bench/pixelbench.py                                  # project methods + baselines, seed 7, 48 sprites
    python bench/pixelbench.py --peers-python /path/to/venv/bin/python   # + the peer tools (~18 min of CPU)
    python bench/pixelbench.py --seed 11 --count 40             # other sprites, other degradations

Peers go in a scratch venv outside the repository: pip install numpy pillow proper-pixel-art pixel-snapper spritegrid
pxl-cleanup ai2pixelart, then pip install --no-deps pixeloe (pixelbench's README explains each).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
HARNESS = REPO.parent / "shared" / "pixelbench"
PROJECT_METHODS = ["nearest", "oracle-grid", "project", "project-allcolours", "project-off1", "project-cli"]
PEER_METHODS = ["proper-pixel-art", "pixel-snapper", "spritegrid", "unfake", "pxl-cleanup", "ai2pixelart", "pixeloe"]
ATLAS = "main.png"


def fetch_tiles(folder: Path) -> Path:
    """The folder holding the crawl-tiles-data atlases, downloading the Debian package into `folder` if need be."""
    atlases = folder / "x" / "usr" / "share" / "crawl" / "dat" / "tiles"
    if (atlases / ATLAS).exists():
        return atlases
    folder.mkdir(parents=True, exist_ok=True)
    subprocess.run(["apt-get", "download", "crawl-tiles-data"], cwd=folder, check=True)
    package = sorted(folder.glob("crawl-tiles-data*.deb"))[-1]
    subprocess.run(["dpkg-deb", "-x", str(package), str(folder / "x")], check=True)
    return atlases


def _load_average() -> float | None:
    try:
        return round(os.getloadavg()[0], 2)
    except OSError:
        return None


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _python_versions(python: str, modules: list[str]) -> dict:
    code = (
        "import json, importlib.metadata as m\n"
        "out = {}\n"
        f"for name in {modules!r}:\n"
        "    try: out[name] = m.version(name)\n"
        "    except m.PackageNotFoundError: pass\n"
        "print(json.dumps(out))"
    )
    done = subprocess.run([python, "-c", code], capture_output=True, text=True)
    return json.loads(done.stdout) if done.returncode == 0 else {}


def postprocess_timing(cases: Path, runs: int = 21) -> dict:
    """Wall and CPU ms of the project's post-processing (grid "auto", colour key, palette) on the 1024x1024 L2 cases,
    in this process: the step a job runs, without PNG decoding or encoding."""
    sys.path.insert(0, str(REPO / "python"))
    from PIL import Image
    from pixelai_runner.backends.base import PixelSpec
    from pixelai_runner.postprocess import postprocess_report

    picked = []
    for meta_path in sorted(cases.glob("L2-*/meta.json")):
        meta = json.loads(meta_path.read_text())
        if meta["canvas"] == 1024:
            picked.append((meta_path.parent, meta))
    picked = picked[:5]
    walls, cpus = [], []
    for folder, meta in picked:
        image = Image.open(folder / "gen.png").convert("RGB" if meta["background"] == "painted" else "RGBA")
        image.load()
        spec = PixelSpec(width=meta["grid"][0], height=meta["grid"][1], colors=16, fit_mode="contain")
        key = "color-key" if meta["background"] == "painted" else False
        postprocess_report(image, spec, key)  # warm-up
        for _ in range(runs):
            wall, cpu = time.perf_counter(), time.process_time()
            postprocess_report(image, spec, key)
            walls.append((time.perf_counter() - wall) * 1000)
            cpus.append((time.process_time() - cpu) * 1000)
    walls.sort()
    cpus.sort()
    return {
        "what": "postprocess_report(1024x1024 picture, PixelSpec(grid cells, colors=16), color-key if painted)",
        "images": [str(folder.name) for folder, _ in picked],
        "runsPerImage": runs,
        "wallMsP50": round(walls[len(walls) // 2], 1),
        "wallMsP90": round(walls[int(len(walls) * 0.9)], 1),
        "cpuMsP50": round(cpus[len(cpus) // 2], 1),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--harness", type=Path, default=HARNESS, help="pixelbench folder (default ../shared/pixelbench)")
    ap.add_argument("--work", type=Path, help="cases, outputs, tiles (default: a folder under the system temp dir)")
    ap.add_argument("--tiles", type=Path, help="folder with the atlases (default: downloaded into <work>/tiles)")
    ap.add_argument("--peers-python", help="interpreter with the peer tools; without it only ours and baselines run")
    ap.add_argument("--count", type=int, default=48)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--levels", default="0,1,2,3")
    ap.add_argument("--methods", help="comma list (default: ours + baselines, + peers with --peers-python)")
    ap.add_argument("--out", type=Path, help="result file (default bench/results/pixelbench-seed<seed>.json)")
    ap.add_argument("--rerun", default="", help="comma list of methods whose cached outputs are dropped first")
    ap.add_argument(
        "--timing-only",
        action="store_true",
        help="only re-measure the 1024x1024 post-processing time (on <work>'s cases) into the existing result file",
    )
    args = ap.parse_args()

    if not (args.harness / "run.py").exists():
        print(f"pixelbench not found at {args.harness} (pass --harness)", file=sys.stderr)
        return 2
    python = str(REPO / ".venv" / "bin" / "python") if (REPO / ".venv" / "bin" / "python").exists() else sys.executable
    work = args.work or Path(tempfile.gettempdir()) / f"pixelbench-{args.seed}-{args.count}"
    out = args.out or REPO / "bench" / "results" / f"pixelbench-seed{args.seed}.json"
    if args.timing_only:
        # Accuracy does not depend on load, time does: this re-times on a quieter moment without a 20-minute rerun.
        result = json.loads(out.read_text())
        load_start = _load_average()
        result["postprocess1024"] = postprocess_timing(work / "cases")
        result["postprocess1024"]["loadAvg"] = [load_start, _load_average()]
        result["postprocess1024"]["timestamp"] = dt.datetime.now(dt.UTC).replace(microsecond=0).isoformat()
        out.write_text(json.dumps(result, indent=1) + "\n")
        print(f"postprocess 1024x1024: p50 {result['postprocess1024']['wallMsP50']} ms wall; results: {out}")
        return 0
    tiles = args.tiles or fetch_tiles(work / "tiles")
    methods = args.methods or ",".join(PROJECT_METHODS + (PEER_METHODS if args.peers_python else []))
    for name in filter(None, args.rerun.split(",")):
        shutil.rmtree(work / "out" / name, ignore_errors=True)
    load_start = _load_average()
    started = time.time()
    cmd = [python, str(args.harness / "run.py"), "--tiles", str(tiles), "--work", str(work), "--project", str(REPO)]
    cmd += ["--project-python", python, "--count", str(args.count), "--seed", str(args.seed)]
    cmd += ["--levels", args.levels, "--methods", methods]
    if args.peers_python:
        cmd += ["--peers-python", args.peers_python]
    subprocess.run(cmd, check=True)
    timing = postprocess_timing(work / "cases")
    summary = json.loads((work / "summary.json").read_text())
    keep = ("accuracy", "accuracy_p10", "delta_e", "size_ok", "size_exact", "palette_ratio_median")
    keep += ("alpha_iou_painted", "ms_median", "errors", "n")
    rows = []
    for s in summary:
        row = {"method": s["method"], "mode": s["mode"], "level": s["level"], "version": s["version"]}
        row.update({k: (round(s[k], 4) if isinstance(s[k], float) else s[k]) for k in keep})
        # Percent with one decimal, as README and docs/pixelize.md quote it (README figures are checked against it).
        row["accuracy_pct"] = round(s["accuracy"] * 100, 1) if s["accuracy"] is not None else None
        rows.append(row)
    rows.sort(key=lambda r: (r["method"], r["mode"], r["level"]))
    result = {
        "timestamp": dt.datetime.now(dt.UTC).replace(microsecond=0).isoformat(),
        "machine": {
            "platform": platform.platform(),
            "cpu": _cpu_model(),
            "cpus": os.cpu_count(),
            "loadAvgStart": load_start,
            "loadAvgEnd": _load_average(),
        },
        "versions": {
            "python": platform.python_version(),
            **_python_versions(python, ["numpy", "pillow"]),
            "peers": _python_versions(args.peers_python, PEER_METHODS + ["unfake"]) if args.peers_python else {},
        },
        "settings": {
            "harness": "pixelbench (../shared/pixelbench)",
            "tiles": "Debian crawl-tiles-data",
            "count": args.count,
            "seed": args.seed,
            "levels": [int(x) for x in args.levels.split(",")],
            "methods": methods.split(","),
            "minutes": round((time.time() - started) / 60, 1),
        },
        "postprocess1024": timing,
        "summary": rows,
    }
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"\npostprocess 1024x1024: p50 {timing['wallMsP50']} ms wall, {timing['cpuMsP50']} ms CPU; results: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
