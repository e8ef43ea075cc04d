"""The protocol loop: a reader (the caller's thread) answers control ops at once; one worker thread runs generations
in arrival order and turns a backend's GenerateOutput into the final PNG. See docs/runner-protocol.md."""

from __future__ import annotations

import hashlib
import os
import queue
import sys
import threading
import time
from collections.abc import Callable
from typing import Any, TextIO

from . import background, img2img, model_files, postprocess, preview
from .backends.base import FEATURES, Backend, GenerateOutput, GenerateRequest, PixelizeRequest
from .errors import RunnerError, classify_exception
from .protocol import ProtocolError, ProtocolWriter, error_line, parse_request
from .settings import RunnerSettings

RESULT_NAME = "result.png"
SHUTDOWN_GRACE_S = 30.0


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


class UnavailableEngine:
    """Stands in for a backend that could not be imported or initialised, so the runner still starts and says why."""

    def __init__(self, engine: str, reason: str):
        self.engine = engine
        self.reason = reason

    def probe(self) -> dict:
        from . import device as devices
        from .versions import package_versions

        return {
            "engine": self.engine,
            "available": False,
            "reason": self.reason,
            "device": "cpu",
            "chip": devices.chip_name("cpu"),
            "dtype": "float32",
            "versions": package_versions("torch", "diffusers", "mlx"),
            "features": {name: False for name in FEATURES},
            "schedulers": [],
        }


def load_backend(settings: RunnerSettings) -> Backend | UnavailableEngine:
    """Import the engine lazily; any failure becomes an UnavailableEngine carrying the reason."""
    engine = settings.engine
    try:
        if engine == "torch":
            from .backends.torch_backend import TorchBackend

            return TorchBackend.from_settings(settings)
        if engine == "mlx":
            from .backends.mlx import MLXBackend

            def make() -> Backend:
                return MLXBackend.from_settings(settings)

            try:
                return make()
            except ImportError as exc:
                if _mlx_importable():
                    raise  # something else is missing: the generic reason below says what
                return _install_mlx_or_explain(make, exc, settings)
    except Exception as exc:  # an engine that cannot start must not take the runner down with it
        return UnavailableEngine(engine, f"{engine} engine unavailable: {type(exc).__name__}: {exc}")
    return UnavailableEngine(engine, f"unknown engine {engine!r}")


# The server-side switch behind --auto-install (src/config.ts), named in messages so an operator knows what to set.
AUTO_INSTALL_SWITCH = "ALLOW_AUTO_INSTALL=1"
PIP_TIMEOUT_S = 900.0


def _mlx_importable() -> bool:
    import importlib

    try:
        importlib.import_module("mlx.core")
        return True
    except ImportError:
        return False


def _mlx_requirement() -> str:
    # Linux needs the CPU extra (the plain wheel has no CPU backend there); macOS wheels carry Metal and CPU.
    return "mlx" if sys.platform == "darwin" else "mlx[cpu]"


def _install_mlx_or_explain(
    factory: Callable[[], Backend], error: ImportError, settings: RunnerSettings
) -> Backend | UnavailableEngine:
    """mlx is missing: with --auto-install pip-install it into this interpreter and retry once; otherwise say exactly
    which command installs it. Opt-in because installing packages is not something a server should do silently."""
    import importlib
    import shlex
    import subprocess

    requirement = _mlx_requirement()
    manual = f'{shlex.quote(sys.executable)} -m pip install "{requirement}"'
    if not settings.auto_install:
        return UnavailableEngine(
            "mlx",
            f"mlx is not installed ({type(error).__name__}: {error}): run {manual} "
            f"or set {AUTO_INSTALL_SWITCH} to let the runner install it",
        )
    pip = settings.pip_argv or [sys.executable, "-m", "pip"]
    command = [*pip, "install", requirement]
    log(f"[RUNNER][mlx] mlx is not installed; auto-install is on, running: {shlex.join(command)}")
    try:
        # pip's output goes to stderr (fd 2): stdout belongs to the protocol.
        code = subprocess.run(command, stdin=subprocess.DEVNULL, stdout=2, stderr=2, timeout=PIP_TIMEOUT_S).returncode
    except (OSError, subprocess.TimeoutExpired) as exc:
        return UnavailableEngine("mlx", f"automatic mlx install failed ({type(exc).__name__}: {exc}): run {manual}")
    if code != 0:
        return UnavailableEngine(
            "mlx", f"automatic mlx install failed (pip exit {code}, see the runner log): run {manual}"
        )
    importlib.invalidate_caches()  # the path finders cached the site-packages listing from before the install
    try:
        backend = factory()
    except ImportError as exc:
        return UnavailableEngine(
            "mlx", f"mlx was installed but still cannot be imported ({type(exc).__name__}: {exc}): run {manual}"
        )
    log("[RUNNER][mlx] mlx installed")
    return backend


def _sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _ms(value: float) -> float:
    return round(value, 1)


class Runner:
    def __init__(
        self,
        settings: RunnerSettings,
        writer: ProtocolWriter,
        backend_factory: Callable[[RunnerSettings], Any] = load_backend,
    ):
        self.settings = settings
        self.engine = settings.engine
        self.out = writer
        self.backend = backend_factory(settings)
        self._probe_at_start: dict = {}
        self.available, self.unavailable_reason = self._availability()
        self._jobs: queue.Queue[tuple[str, Any, Any] | None] = queue.Queue()
        self._state_lock = threading.Lock()
        self._pending: set[Any] = set()  # generate ids queued or running
        self._cancelled: set[Any] = set()
        self._device_name: str | None = None
        self._remover: background.BiRefNetRemover | None = None  # loaded by the first birefnet job, then kept
        self._worker = threading.Thread(target=self._work, name="generation-worker", daemon=True)

    def _availability(self) -> tuple[bool, str]:
        """A backend may import fine and still find it cannot run (e.g. no Metal); its probe has the last word."""
        if isinstance(self.backend, UnavailableEngine):
            self._probe_at_start = self.backend.probe()
            return False, self.backend.reason
        try:
            info = self.backend.probe()
        except Exception as exc:
            return False, f"{self.engine} engine probe failed: {type(exc).__name__}: {exc}"
        self._probe_at_start = info
        if not info.get("available", False):
            return False, str(info.get("reason") or f"{self.engine} engine reports itself unavailable")
        return True, ""

    # ---- reader side ----------------------------------------------------------------------------------------
    def serve(self, stdin: TextIO) -> int:
        self._worker.start()
        self.out.send(self._ready_event())
        if not self.available:
            log(f"[RUNNER][{self.engine}] started without an engine: {self.unavailable_reason}")
        for line in stdin:
            if not line.strip():
                continue
            try:
                request = parse_request(line)
            except ProtocolError as exc:
                self.out.error(exc.request_id, "INVALID_REQUEST", str(exc))
                continue
            if request["op"] == "shutdown":
                self._shutdown(request["id"])
                return 0
            try:
                self._dispatch(request)
            except RunnerError as exc:
                self.out.error(request["id"], exc.code, exc.message)
            except Exception as exc:  # a bug in one request's handling must not end the loop
                err = classify_exception(exc, self._device())
                self.out.error(request["id"], err.code, err.message)
        # stdin closed: the supervisor is gone, stop whatever runs and leave quietly.
        self._stop_worker()
        return 0

    def _ready_event(self) -> dict:
        """The ready line (ReadyEvent): what Node needs before its first probe, the device above all."""
        from . import device as devices

        info = self._probe_at_start
        event = {
            "event": "ready",
            "engine": self.engine,
            "pid": os.getpid(),
            "available": self.available,
            "device": str(info.get("device") or "cpu"),
            "chip": str(info.get("chip") or devices.chip_name("cpu")),
            "dtype": str(info.get("dtype") or "float32"),
        }
        if not self.available:
            event["reason"] = self.unavailable_reason
        return event

    def _dispatch(self, request: dict) -> None:
        rid, op = request["id"], request["op"]
        if op == "probe":
            self.out.event(rid, "result", **self.backend.probe())
        elif op == "cancel":
            self.out.event(rid, "result", cancelled=self._cancel(request.get("target")))
        elif op == "unload":
            # Through the worker queue, so a pipeline is never freed under a running generation.
            self._jobs.put(("unload", rid, request.get("model")))
        elif op == "generate":
            self._accept_generate(rid, request.get("params"))
        elif op == "pixelize":
            self._accept_pixelize(rid, request.get("params"))

    def _accept_generate(self, rid: Any, params: Any) -> None:
        if not self.available:
            raise RunnerError("ENGINE_UNAVAILABLE", self.unavailable_reason)
        # params were checked against the schema (GenerateParams) with the request line (protocol.parse_request).
        req = GenerateRequest.from_params(params)
        for field, path in (("initImagePath", req.init_image_path), ("maskPath", req.mask_path)):
            if path is not None and not os.path.isfile(path):
                raise RunnerError("INVALID_REQUEST", f"{field} {path} is not an existing file")
        if req.mask_path and not req.init_image_path:
            raise RunnerError("INVALID_REQUEST", "maskPath needs initImagePath")
        if req.mask_path and not self.backend.supports("inpaint"):
            raise RunnerError("INPAINT_UNSUPPORTED", f"the {self.engine} engine cannot inpaint (maskPath)")
        self._enqueue("generate", rid, req)

    def _accept_pixelize(self, rid: Any, params: Any) -> None:
        # No engine check: post-processing needs no model, so even a runner whose engine is unavailable can do it.
        req = PixelizeRequest.from_params(params)
        if not os.path.isfile(req.input_path):
            raise RunnerError("INVALID_REQUEST", f"inputPath {req.input_path} is not an existing file")
        self._enqueue("pixelize", rid, req)

    def _enqueue(self, kind: str, rid: Any, req: GenerateRequest | PixelizeRequest) -> None:
        # Fail before queueing: a bad post-process option should not cost a whole generation first.
        birefnet_missing = self._birefnet_missing() if req.remove_background == "birefnet" else None
        postprocess.validate(req.pixel, req.remove_background, birefnet_missing)
        if not os.path.isdir(req.output_dir):
            raise RunnerError("INVALID_REQUEST", f"outputDir {req.output_dir} is not an existing directory")
        with self._state_lock:
            if rid in self._pending:
                raise RunnerError("INVALID_REQUEST", f"a request with id {rid!r} is already in progress")
            self._pending.add(rid)
        self._jobs.put((kind, rid, req))

    def _cancel(self, target: Any) -> bool:
        with self._state_lock:
            if target in self._pending:
                self._cancelled.add(target)
                return True
            return False

    def _shutdown(self, rid: Any) -> None:
        self._stop_worker()
        self.out.event(rid, "result")

    def _stop_worker(self) -> None:
        with self._state_lock:
            self._cancelled.update(self._pending)
        self._jobs.put(None)
        self._worker.join(SHUTDOWN_GRACE_S)

    def _birefnet_missing(self) -> str | None:
        """None when this runner can run BiRefNet (its engine's probe says backgroundRemoval), else why not."""
        try:
            if self.backend.supports("backgroundRemoval"):
                return None
        except Exception as exc:
            return f"removeBackground 'birefnet': {self.engine} engine probe failed: {type(exc).__name__}: {exc}"
        if self.engine == "torch":
            return background.missing_reason(self.settings.birefnet_dir)
        return (
            f"removeBackground 'birefnet' runs on the torch engine only (the {self.engine} runner has no torch at "
            "inference); use engine torch or 'color-key'"
        )

    def _background_remover(self) -> background.BiRefNetRemover:
        """The runner's one BiRefNet, on the engine's device and dtype; the model itself loads on first use."""
        folder = self.settings.birefnet_dir
        if not background.weights_present(folder):
            # The folder went away between accepting the job and running it.
            raise RunnerError("ENGINE_UNAVAILABLE", background.missing_reason(folder))
        if self._remover is None or self._remover.folder != folder:
            info = self.backend.probe()
            self._remover = background.BiRefNetRemover(
                folder, str(info.get("device") or "cpu"), str(info.get("dtype") or "float32")
            )
        return self._remover

    def _device(self) -> str:
        """The backend's device, for telling CUDA from MPS out-of-memory errors apart."""
        if self._device_name is None:
            try:
                self._device_name = str(self.backend.probe().get("device") or "cpu")
            except Exception:
                self._device_name = "cpu"
        return self._device_name

    # ---- worker side ----------------------------------------------------------------------------------------
    def _work(self) -> None:
        while True:
            item = self._jobs.get()
            if item is None:
                return
            kind, rid, payload = item
            if kind == "unload":
                self._run_unload(rid, payload)
            else:
                run = self._run_generate if kind == "generate" else self._run_pixelize
                final, note = run(rid, payload)
                # Forget the job before answering, so a `cancel` sent after the answer is already a no-op.
                with self._state_lock:
                    self._pending.discard(rid)
                    self._cancelled.discard(rid)
                self.out.send(final)
                # Logged after the answer: a line before it would wake the supervisor once more on the job's path.
                log(note)

    def _run_unload(self, rid: Any, model: str | None) -> None:
        try:
            unloaded = self.backend.unload(model) if self.available else []
            self.out.event(rid, "result", unloaded=unloaded)
        except Exception as exc:
            err = classify_exception(exc, "cpu")
            self.out.error(rid, err.code, err.message)

    def _run_generate(self, rid: Any, req: GenerateRequest) -> tuple[dict, str]:
        """Run one job to its final line (result or error), which the caller sends, and the line it logs."""

        def check_cancel() -> None:
            if rid in self._cancelled:
                raise RunnerError("CANCELLED", f"job {req.job_id} was cancelled")

        def on_step(step: int, total: int, preview_image: Any = None, previews: list | None = None) -> None:
            fields: dict[str, Any] = {"step": step, "totalSteps": total}
            if preview_image is not None:
                # Bytes travel as files (protocol rule); a preview that cannot be written is skipped, never fatal.
                try:
                    path, digest = preview.write_preview(preview_image, req.output_dir, step)
                    fields.update(
                        previewPath=path,
                        previewSha256=digest,
                        previewWidth=preview_image.width,
                        previewHeight=preview_image.height,
                    )
                    if previews and len(previews) > 1:
                        fields["previews"] = [
                            {
                                "path": path,
                                "sha256": digest,
                                "width": preview_image.width,
                                "height": preview_image.height,
                            }
                        ] + [
                            self._candidate_preview(image, req.output_dir, step, i)
                            for i, image in enumerate(previews)
                            if i
                        ]
                except OSError as exc:
                    log(f"[GEN][{self.engine}] job={req.job_id} preview at step {step} not written: {exc}")
                    fields.pop("previews", None)
            self.out.event(rid, "progress", **fields)

        tag = f"[GEN][{self.engine}] job={req.job_id} {req.width}x{req.height} steps={req.steps}"
        if req.count > 1:
            tag += f" count={req.count}"
        try:
            check_cancel()
            self._check_contained(req)
            output = self._generate_image(req, on_step, check_cancel)
            check_cancel()
            started = time.perf_counter()
            images = output.candidates()
            if len(images) != req.count:
                raise RunnerError("ENGINE_INTERNAL", f"the engine made {len(images)} images for count {req.count}")
            # Post-processing is per candidate: each has its own grid, palette and background.
            finished = []
            for index, (seed, image) in enumerate(zip(req.candidate_seeds(), images, strict=True)):
                check_cancel()
                name = RESULT_NAME if index == 0 else f"result-{index}.png"
                finished.append({"index": index, "seed": seed, **self._finish_image(image, req, name)})
            done = {k: v for k, v in finished[0].items() if k not in ("index", "seed")}
            post_ms = (time.perf_counter() - started) * 1000.0
        except Exception as exc:  # every failure must become exactly one error line
            err = classify_exception(exc, self._device())
            return error_line(rid, err.code, err.message), f"{tag} failed code={err.code}: {err.message}"
        note = (
            f"{tag} load={output.load_ms:.0f}ms gen={output.generate_ms:.0f}ms post={post_ms:.0f}ms"
            f" -> {done['width']}x{done['height']}"
        )
        return {
            "id": rid,
            "event": "result",
            **done,
            "seed": req.seed,
            "images": finished,
            "device": output.device,
            "engine": self.engine,
            "dtype": output.dtype,
            "timings": {
                "loadMs": _ms(output.load_ms),
                "generateMs": _ms(output.generate_ms),
                "postprocessMs": _ms(post_ms),
            },
        }, note

    def _generate_image(self, req: GenerateRequest, on_step: Any, check_cancel: Any) -> GenerateOutput:
        """The backend's image, with img2img.py's engine-neutral rules around it: no step left → the scaled init
        image itself (no model); a mask → the init image's own pixels outside it."""
        if not req.init_image_path:
            return self.backend.generate(req, on_step, check_cancel)
        plan = img2img.plan(req.steps, req.strength, bool(req.mask_path))
        init = img2img.load_init(req.init_image_path, req.width, req.height)
        if plan.mode == "copy":
            info = self.backend.probe()
            copies = [init.copy() for _ in range(req.count)] if req.count > 1 else []
            return GenerateOutput(
                image=init, images=copies, device=info["device"], dtype=info["dtype"], extra={"img2img": "copy"}
            )
        output = self.backend.generate(req, on_step, check_cancel)
        if req.mask_path:
            mask = img2img.load_mask(req.mask_path, req.width, req.height)
            pasted = [img2img.paste_outside(image, init, mask) for image in output.candidates()]
            output.image, output.images = pasted[0], pasted if len(pasted) > 1 else []
        return output

    def _check_contained(self, req: GenerateRequest) -> None:
        """Right before a load: the model (and LoRA) must still lie wholly inside the model roots (model_files.py)."""
        paths = [("model", req.model_source)]
        if req.lora and req.lora.get("source"):
            paths.append(("LoRA", str(req.lora["source"])))
        for what, path in paths:
            try:
                model_files.assert_inside_roots(path, self.settings.roots)
            except model_files.OutsideRoots as exc:
                raise RunnerError("INVALID_REQUEST", f"refusing to load the {what}: {exc}") from exc

    def _run_pixelize(self, rid: Any, req: PixelizeRequest) -> tuple[dict, str]:
        """Post-processing alone, on the input PNG Node wrote: the same step a generation ends with."""
        tag = f"[PIXELIZE][{self.engine}] job={req.job_id}"
        started = time.perf_counter()
        try:
            if rid in self._cancelled:
                raise RunnerError("CANCELLED", f"job {req.job_id} was cancelled")
            image = _read_input(req.input_path)
            done = self._finish_image(image, req)
            post_ms = (time.perf_counter() - started) * 1000.0
        except Exception as exc:
            err = classify_exception(exc, "cpu")
            return error_line(rid, err.code, err.message), f"{tag} failed code={err.code}: {err.message}"
        note = f"{tag} {image.width}x{image.height} post={post_ms:.0f}ms -> {done['width']}x{done['height']}"
        device = self._device() if req.remove_background == "birefnet" else "cpu"
        return {
            "id": rid,
            "event": "result",
            **done,
            "device": device,
            "engine": self.engine,
            "timings": {"postprocessMs": _ms(post_ms)},
        }, note

    @staticmethod
    def _candidate_preview(image: Any, output_dir: str, step: int, index: int) -> dict:
        path, digest = preview.write_preview(image, output_dir, step, index)
        return {"path": path, "sha256": digest, "width": image.width, "height": image.height}

    def _finish_image(self, image: Any, req: GenerateRequest | PixelizeRequest, name: str = RESULT_NAME) -> dict:
        """Post-process, write `name` (result.png) atomically and hash it: the result fields both ops share."""
        remover = self._background_remover() if req.remove_background == "birefnet" else None
        out, report = postprocess.postprocess_report(image, req.pixel, req.remove_background, remover=remover)
        path = os.path.join(req.output_dir, name)
        partial = path + ".partial"
        out.save(partial, format="PNG")
        os.replace(partial, path)  # Node never sees a half-written result.png
        done = {"imagePath": path, "sha256": _sha256(path), "width": out.width, "height": out.height}
        if report:
            done["pixel"] = report
        return done


def _read_input(path: str) -> Any:
    """The pixelize input: a PNG (Node checked it; a file that changed since is still refused cleanly)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path, formats=["PNG"]) as opened:
            opened.load()
            return opened.copy()
    except (OSError, UnidentifiedImageError, Image.DecompressionBombError) as exc:
        raise RunnerError("INVALID_REQUEST", f"inputPath is not a readable PNG: {exc}") from None
