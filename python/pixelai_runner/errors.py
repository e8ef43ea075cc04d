"""The error taxonomy, shared with src/backends/error-codes.ts (a test checks they are equal)."""

from __future__ import annotations

# code -> HTTP status the API answers with when the code surfaces in a request.
ERROR_CODES: dict[str, int] = {
    "INVALID_REQUEST": 400,
    # width x height x steps above PIXELAI_MAX_PIXEL_STEPS
    "JOB_TOO_LARGE": 400,
    "UNAUTHORIZED": 401,
    "FORBIDDEN": 403,
    # a priority above the default without the admin key (src/jobs/fair-use.ts)
    "PRIORITY_FORBIDDEN": 403,
    "NOT_FOUND": 404,
    "MODEL_NOT_FOUND": 404,
    "LORA_NOT_FOUND": 404,
    "JOB_NOT_CANCELLABLE": 409,
    "JOB_NOT_FINISHED": 409,
    # an idempotency key repeated by its client with another body
    "IDEMPOTENCY_CONFLICT": 409,
    "MODEL_NOT_CONVERTED": 409,
    "MODEL_NOT_INSTALLED": 409,
    # the server's own refusals of a request's form (answered by the API, never by a runner)
    "METHOD_NOT_ALLOWED": 405,
    "REQUEST_TIMEOUT": 408,
    "PAYLOAD_TOO_LARGE": 413,
    "UNSUPPORTED_MEDIA_TYPE": 415,
    "HEADERS_TOO_LARGE": 431,
    "LORA_UNSUPPORTED_ENGINE": 422,
    # an img2img job (inputImage + prompt) on an engine whose probe says img2img false
    "IMG2IMG_UNSUPPORTED": 422,
    # a mask (inpainting) on an engine whose probe says inpaint false
    "INPAINT_UNSUPPORTED": 422,
    "RATE_LIMITED": 429,
    # a client already has PIXELAI_MAX_QUEUED_PER_CLIENT jobs queued or running
    "TOO_MANY_QUEUED": 429,
    "ENGINE_INTERNAL": 500,
    "HASH_MISMATCH": 500,
    "CONVERSION_FAILED": 500,
    "CANCELLED": 409,
    "ENGINE_UNAVAILABLE": 503,
    "TIMEOUT": 504,
    "CUDA_OOM": 507,
    "MPS_OOM": 507,
    # a model larger than the whole PIXELAI_MEMORY_BUDGET_MB (the worker's ledger; never raised by a runner)
    "INSUFFICIENT_MEMORY": 507,
    # Installs from the hub (python/pixelai_runner/hub_install.py); each comes with a hint.
    "HUB_NOT_FOUND": 404,
    "HUB_ACCESS_DENIED": 403,
    "UNSAFE_WEIGHTS": 422,
    "HUB_REPO_UNSUPPORTED": 422,
    "HUB_UNREACHABLE": 503,
    "INSUFFICIENT_STORAGE": 507,
    "INSTALL_FAILED": 500,
    # WebSocket limits, raised by the server only (src/api/ws/ws-limits.ts)
    "TOO_MANY_CONNECTIONS": 429,
    "TOO_MANY_WATCHES": 429,
}


class RunnerError(Exception):
    """An error that crosses the protocol with a taxonomy code."""

    def __init__(self, code: str, message: str):
        if code not in ERROR_CODES:
            raise ValueError(f"unknown error code {code!r}")
        super().__init__(message)
        self.code = code
        self.message = message


def classify_exception(exc: BaseException, device: str) -> RunnerError:
    """Map an engine exception to the taxonomy (OOM by message text + device)."""
    if isinstance(exc, RunnerError):
        return exc
    text = str(exc)
    lowered = text.lower()
    if "out of memory" in lowered or "outofmemory" in lowered:
        if device == "mps" or "mps" in lowered:
            return RunnerError("MPS_OOM", f"MPS ran out of memory: {text}")
        if device == "cuda" or "cuda" in lowered:
            return RunnerError("CUDA_OOM", f"CUDA ran out of memory: {text}")
    return RunnerError("ENGINE_INTERNAL", f"{type(exc).__name__}: {text}")
