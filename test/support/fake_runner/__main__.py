"""A protocol-speaking stand-in for the real runner, for the supervisor's unit tests: it can hang, die and misbehave
on request, which the real engine cannot be made to do on cue. A generate's prompt picks the behaviour."""

import json
import os
import sys

mode = os.environ.get("FAKE_RUNNER_MODE", "ok")
if mode == "crash-on-start":
    sys.stderr.write("fake runner: cannot start\n")
    sys.exit(3)
if mode == "never-ready":
    import time

    time.sleep(3600)  # alive but silent: the supervisor's start-up timeout must fire


def emit(obj):
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


ENGINE = sys.argv[sys.argv.index("--engine") + 1] if "--engine" in sys.argv else "torch"
print("library noise on stdout before ready")  # must be ignored, not fatal
emit(
    {
        "event": "ready",
        "engine": ENGINE,
        "pid": os.getpid(),
        "available": True,
        "device": "cpu",
        "chip": "fake",
        "dtype": "float32",
    }
)
hanging = set()
for line in sys.stdin:
    req = json.loads(line)
    rid, op = req.get("id"), req.get("op")
    if op == "generate":
        behaviour = req["params"]["prompt"]
        if behaviour == "fail":
            emit({"id": rid, "event": "error", "code": "CUDA_OOM", "message": "CUDA out of memory"})
        elif behaviour == "weird-code":
            emit({"id": rid, "event": "error", "code": "NOT_A_CODE", "message": "?"})
        elif behaviour == "hang":
            hanging.add(rid)  # never answers, but keeps reading (a wedged generation as the supervisor sees it)
        elif behaviour == "die":
            os._exit(9)
        else:
            for step in range(1, 4):
                emit({"id": rid, "event": "progress", "step": step, "totalSteps": 3})
            emit(
                {
                    "id": rid,
                    "event": "result",
                    "imagePath": "/nonexistent",
                    "width": 8,
                    "height": 8,
                    "argv": sys.argv[1:],
                }
            )
    elif op == "probe":
        emit({"id": rid, "event": "result", "engine": ENGINE, "available": True, "device": "cpu", "argv": sys.argv[1:]})
    elif op == "cancel":
        found = req["target"] in hanging
        emit({"id": rid, "event": "result", "cancelled": found})
        if found:
            hanging.discard(req["target"])
            emit({"id": req["target"], "event": "error", "code": "CANCELLED", "message": "cancelled"})
    elif op == "unload":
        emit({"id": rid, "event": "result", "unloaded": [req["model"]] if req.get("model") else ["a", "b"]})
    elif op == "shutdown":
        emit({"id": rid, "event": "result"})
        sys.exit(0)
