"""A protocol-speaking stand-in for the real runner, for the supervisor's unit tests: it can hang, die and misbehave
on request, which the real engine cannot be made to do on cue."""

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


print("library noise on stdout before ready")  # must be ignored, not fatal
emit({"event": "ready", "engine": "fake", "pid": os.getpid(), "device": "cpu"})
for line in sys.stdin:
    req = json.loads(line)
    rid, op = req.get("id"), req.get("op")
    if op == "generate":
        for step in range(1, 4):
            emit({"id": rid, "event": "progress", "step": step, "totalSteps": 3})
        emit({"id": rid, "event": "result", "imagePath": "/nonexistent", "width": 8, "height": 8})
    elif op == "fail":
        emit({"id": rid, "event": "error", "code": "CUDA_OOM", "message": "CUDA out of memory"})
    elif op == "weird-code":
        emit({"id": rid, "event": "error", "code": "NOT_A_CODE", "message": "?"})
    elif op == "hang":
        pass  # never answers, but keeps reading (a wedged generation as the supervisor sees it)
    elif op == "die":
        os._exit(9)
    elif op == "shutdown":
        emit({"id": rid, "event": "result"})
        sys.exit(0)
    else:
        emit({"id": rid, "event": "result", "echo": req})
