"""The protocol loop in-process with fake backends (no torch), plus the real `python -m` entry without its engine."""

from __future__ import annotations

import json
import sys
import threading
import time
from pathlib import Path

from PIL import Image
from pixelai_runner.backends.base import Backend, GenerateOutput
from pixelai_runner.errors import RunnerError
from pixelai_runner.protocol import ProtocolWriter
from pixelai_runner.runner import Runner, UnavailableEngine, load_backend
from pixelai_runner.settings import RunnerSettings
from runner_client import PYTHON_DIR, RunnerProcess


class CollectingWriter(ProtocolWriter):
    def __init__(self):
        self.messages: list[dict] = []
        self._lock = threading.Lock()

    def send(self, message: dict) -> None:
        json.dumps(message, allow_nan=False)  # must stay serialisable, as on the real stream
        with self._lock:
            self.messages.append(message)

    def close(self) -> None:
        pass


class FlatBackend(Backend):
    """Paints one colour per seed; enough to exercise the loop's PNG, hashing and error paths."""

    engine = "fake"

    def __init__(self, available=True, fail_with: Exception | None = None):
        self._available = available
        self.fail_with = fail_with

    def probe(self) -> dict:
        info = {"engine": "fake", "available": self._available, "device": "cpu", "features": {}}
        if not self._available:
            info["reason"] = "no fake accelerator"
        return info

    def ensure_loaded(self, source):
        return source

    def generate(self, req, on_step, check_cancel):
        for step in range(1, req.steps + 1):
            on_step(step, req.steps)
            check_cancel()
        if self.fail_with:
            raise self.fail_with
        colour = (req.seed % 256, 100, 200)
        return GenerateOutput(image=Image.new("RGB", (req.width, req.height), colour), device="cpu", dtype="float32")


def _serve(backend, lines: list, settings: RunnerSettings | None = None) -> list[dict]:
    """Feed `lines`, then hold stdin open until every request has its final answer (EOF cancels pending work)."""
    writer = CollectingWriter()
    ids = [line.get("id") for line in lines if isinstance(line, dict)]

    def stdin():
        for line in lines:
            yield (line if isinstance(line, str) else json.dumps(line)) + "\n"
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            answered = [m.get("id") for m in writer.messages if m.get("event") in ("result", "error")]
            if len(answered) >= len(ids):
                return
            time.sleep(0.01)

    settings = settings or RunnerSettings(engine="fake")
    assert Runner(settings, writer, backend_factory=lambda _settings: backend).serve(stdin()) == 0
    return writer.messages


def _params(tmp_path: Path, **overrides) -> dict:
    params = {
        "jobId": "j",
        "modelSource": "m",
        "prompt": "p",
        "width": 16,
        "height": 16,
        "steps": 3,
        "guidanceScale": 1.0,
        "seed": 5,
        "outputDir": str(tmp_path),
    }
    params.update(overrides)
    return params


def test_loop_writes_png_and_result_line(tmp_path):
    messages = _serve(FlatBackend(), [{"id": 1, "op": "generate", "params": _params(tmp_path)}])
    assert messages[0]["event"] == "ready"
    assert [m["step"] for m in messages if m.get("event") == "progress"] == [1, 2, 3]
    result = messages[-1]
    assert result["event"] == "result" and result["width"] == 16 and result["engine"] == "fake"
    with Image.open(result["imagePath"]) as img:
        assert img.mode == "RGBA" and img.getpixel((0, 0)) == (5, 100, 200, 255)
    assert not (tmp_path / "result.png.partial").exists()


def test_backend_exceptions_are_classified(tmp_path):
    oom = FlatBackend(fail_with=RuntimeError("CUDA out of memory. Tried to allocate 2 GiB"))
    messages = _serve(oom, [{"id": "a", "op": "generate", "params": _params(tmp_path)}])
    assert messages[-1]["code"] == "CUDA_OOM"
    boom = FlatBackend(fail_with=RunnerError("MODEL_NOT_FOUND", "gone"))
    assert _serve(boom, [{"id": "b", "op": "generate", "params": _params(tmp_path)}])[-1]["code"] == "MODEL_NOT_FOUND"
    odd = FlatBackend(fail_with=KeyError("x"))
    assert _serve(odd, [{"id": "c", "op": "generate", "params": _params(tmp_path)}])[-1]["code"] == "ENGINE_INTERNAL"


class LoadRecordingBackend(FlatBackend):
    def __init__(self):
        super().__init__()
        self.generated: list[str] = []

    def generate(self, req, on_step, check_cancel):
        self.generated.append(req.model_source)
        return super().generate(req, on_step, check_cancel)


def test_a_model_linking_outside_the_model_roots_is_refused_before_it_loads(tmp_path):
    root, outside, out = tmp_path / "models", tmp_path / "outside", tmp_path / "out"
    for d in (root / "good" / "unet", root / "bad", outside / "unet", out):
        d.mkdir(parents=True)
    (root / "good" / "model_index.json").write_text("{}")
    # a component folder that a top-level check would miss: models/bad/unet -> a folder outside the root
    (root / "bad" / "unet").symlink_to(outside / "unet")
    lora = tmp_path / "stray.safetensors"
    lora.write_bytes(b"{}")
    settings = RunnerSettings(engine="fake", model_roots=str(root))
    backend = LoadRecordingBackend()
    messages = _serve(
        backend,
        [
            {"id": "ok", "op": "generate", "params": _params(out, modelSource=str(root / "good"))},
            {"id": "bad", "op": "generate", "params": _params(out, modelSource=str(root / "bad"))},
            {
                "id": "lora",
                "op": "generate",
                "params": _params(out, modelSource=str(root / "good"), lora={"source": str(lora), "strength": 1.0}),
            },
        ],
        settings,
    )
    final = {m["id"]: m for m in messages if m.get("event") in ("result", "error")}
    assert final["ok"]["event"] == "result"
    assert final["bad"]["code"] == "INVALID_REQUEST" and "outside the model roots" in final["bad"]["message"]
    assert final["lora"]["code"] == "INVALID_REQUEST" and "LoRA" in final["lora"]["message"]
    assert backend.generated == [str(root / "good")]


def test_backend_that_probes_unavailable_refuses_generate(tmp_path):
    messages = _serve(
        FlatBackend(available=False),
        [
            {"id": "p", "op": "probe"},
            {"id": "g", "op": "generate", "params": _params(tmp_path)},
        ],
    )
    assert messages[0]["event"] == "ready"
    assert messages[1]["available"] is False and messages[1]["reason"] == "no fake accelerator"
    assert messages[2]["code"] == "ENGINE_UNAVAILABLE" and "no fake accelerator" in messages[2]["message"]


def test_pixelize_needs_no_engine(tmp_path):
    """A runner whose engine cannot run still post-processes: pixelize loads no model."""
    Image.new("RGB", (40, 24), (10, 20, 30)).save(tmp_path / "in.png")
    params = {"jobId": "p", "inputPath": str(tmp_path / "in.png"), "pixel": {"width": 10, "height": 6}}
    messages = _serve(
        FlatBackend(available=False),
        [
            {"id": "g", "op": "generate", "params": _params(tmp_path)},
            {"id": "x", "op": "pixelize", "params": {**params, "outputDir": str(tmp_path)}},
        ],
    )
    answers = {m["id"]: m for m in messages if m.get("event") in ("result", "error")}
    assert answers["g"]["code"] == "ENGINE_UNAVAILABLE"
    assert answers["x"]["event"] == "result" and (answers["x"]["width"], answers["x"]["height"]) == (10, 6)
    with Image.open(answers["x"]["imagePath"]) as img:
        assert set(img.getdata()) == {(10, 20, 30, 255)}


def test_missing_ids_and_params(tmp_path):
    messages = _serve(
        FlatBackend(),
        [
            {"op": "probe"},
            {"id": True, "op": "probe"},
            {"id": "x", "op": "generate"},
            {"id": "y", "op": "generate", "params": {"prompt": "no model"}},
        ],
    )
    errors = messages[1:]
    assert [m["id"] for m in errors] == [None, None, "x", "y"]
    assert {m["code"] for m in errors} == {"INVALID_REQUEST"}


def test_failed_engine_import_gives_an_unavailable_engine(monkeypatch):
    monkeypatch.setitem(sys.modules, "pixelai_runner.backends.mlx", None)  # makes the import raise ImportError
    backend = load_backend(RunnerSettings(engine="mlx"))
    assert isinstance(backend, UnavailableEngine)
    info = backend.probe()
    assert info["available"] is False and "mlx" in info["reason"]
    assert info["features"] == {
        "lora": False,
        "sdxl": False,
        "backgroundRemoval": False,
        "img2img": False,
        "inpaint": False,
        "stepPreview": False,
    }


def test_python_m_entry_when_the_engine_library_is_missing(tmp_path):
    # A package named `mlx` that refuses to import, placed first on the path: what a machine without MLX looks like.
    fake = tmp_path / "site"
    (fake / "mlx").mkdir(parents=True)
    (fake / "mlx" / "__init__.py").write_text("raise ImportError('simulated: no mlx here')\n")
    proc = RunnerProcess(
        ["-m", "pixelai_runner", "--engine", "mlx"], tmp_path / "mlx.log", env={"PYTHONPATH": f"{fake}:{PYTHON_DIR}"}
    )
    try:
        assert proc.next_message(lambda m: m.get("event") == "ready", 60)["engine"] == "mlx"
        probe = proc.request({"id": "p", "op": "probe"})
        assert probe["available"] is False
        # The reason is actionable: the exact command for this interpreter, and the opt-in that lets the runner do it.
        requirement = "mlx" if sys.platform == "darwin" else "mlx[cpu]"
        assert probe["reason"].startswith("mlx is not installed")
        assert f'{sys.executable} -m pip install "{requirement}"' in probe["reason"]
        assert "ALLOW_AUTO_INSTALL=1" in probe["reason"]
        generate = proc.request({"id": "g", "op": "generate", "params": _params(tmp_path)})
        assert generate["code"] == "ENGINE_UNAVAILABLE"
        assert proc.request({"id": "s", "op": "shutdown"})["event"] == "result"
        assert proc.proc.wait(30) == 0
    finally:
        proc.close()


def _hidden_mlx(tmp_path: Path) -> Path:
    """A site dir whose `mlx` package refuses to import, shadowing the venv's real mlx."""
    site = tmp_path / "site"
    (site / "mlx").mkdir(parents=True)
    (site / "mlx" / "__init__.py").write_text("raise ImportError('simulated: no mlx here')\n")
    return site


def test_auto_install_runs_pip_and_retries_the_import(tmp_path):
    # The fake pip records its arguments and "installs" mlx by removing the shadowing package, so the retried
    # import finds the venv's real mlx: the runner must come up with a working engine, without a restart.
    site = _hidden_mlx(tmp_path)
    record = tmp_path / "pip-args.json"
    fake_pip = tmp_path / "fake_pip.py"
    fake_pip.write_text(
        "import json, shutil, sys\n"
        f"json.dump(sys.argv[1:], open({str(record)!r}, 'w'))\n"
        f"shutil.rmtree({str(site / 'mlx')!r})\n"
        "print('fake pip: installed mlx')\n"
    )
    proc = RunnerProcess(
        ["-m", "pixelai_runner", "--engine", "mlx", "--auto-install", "--pip-command", f"{sys.executable} {fake_pip}"],
        tmp_path / "mlx.log",
        env={"PYTHONPATH": f"{site}:{PYTHON_DIR}", "PYTHONDONTWRITEBYTECODE": "1"},
    )
    try:
        assert proc.next_message(lambda m: m.get("event") == "ready", 120)["engine"] == "mlx"
        probe = proc.request({"id": "p", "op": "probe"})
        assert probe["available"] is True, probe.get("reason")
        requirement = "mlx" if sys.platform == "darwin" else "mlx[cpu]"
        assert json.loads(record.read_text()) == ["install", requirement]
        log = proc.stderr_tail()
        assert "auto-install is on, running:" in log and "fake pip: installed mlx" in log  # pip output on stderr
        assert proc.request({"id": "s", "op": "shutdown"})["event"] == "result"
    finally:
        proc.close()


def test_auto_install_failure_names_the_manual_command(tmp_path, monkeypatch):
    # In-process: hide mlx (and any already-imported mlx.core) from the import system, and make "pip" fail.
    monkeypatch.setitem(sys.modules, "mlx", None)
    monkeypatch.setitem(sys.modules, "mlx.core", None)
    failing_pip = f"{sys.executable} -c 'import sys; sys.exit(3)'"
    backend = load_backend(RunnerSettings(engine="mlx", auto_install=True, pip_command=failing_pip))
    assert isinstance(backend, UnavailableEngine)
    assert "pip exit 3" in backend.reason and "-m pip install" in backend.reason

    backend = load_backend(RunnerSettings(engine="mlx", pip_command=failing_pip))
    assert isinstance(backend, UnavailableEngine) and "ALLOW_AUTO_INSTALL=1" in backend.reason
