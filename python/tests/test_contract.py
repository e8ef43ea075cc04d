"""The runner keeps to contract/runner-protocol.schema.json: its dataclasses match the schema's definitions (names,
required, defaults, types), its argument parser is the schema's RunnerSettings, what it writes validates, and a bad
request field is answered INVALID_REQUEST naming the field."""

from __future__ import annotations

import dataclasses
import itertools

import pytest
from pixelai_runner import contract, settings
from pixelai_runner.backends.base import GenerateRequest, PixelizeRequest, PixelSpec
from pixelai_runner.device import DeviceInfo
from pixelai_runner.protocol import OPS, request_definition
from pixelai_runner.runner import UnavailableEngine
from runner_client import RunnerProcess
from test_runner_loop import FlatBackend, _params, _serve

SCHEMA = contract.schema()
DEFS = SCHEMA["$defs"]


def _json_types(node: dict) -> set[str]:
    """The JSON types a schema node accepts (refs, anyOf and enums resolved)."""
    if "$ref" in node:
        return _json_types(DEFS[node["$ref"].rsplit("/", 1)[-1]])
    if "anyOf" in node:
        return set().union(*(_json_types(branch) for branch in node["anyOf"]))
    if "enum" in node or "const" in node:
        values = node.get("enum", [node.get("const")])
        names = {"bool": "boolean", "str": "string", "int": "integer", "float": "number", "NoneType": "null"}
        return {names[type(v).__name__] for v in values}
    kinds = node["type"]
    return set(kinds if isinstance(kinds, list) else [kinds])


_ANNOTATION_TYPES = {
    "str": {"string"},
    "int": {"integer"},
    "float": {"number"},
    "bool": {"boolean"},
    "dict": {"object"},
    "tuple[str, ...]": {"array"},
    "PixelSpec": {"object"},
    "None": {"null"},
}


def _annotation_types(annotation: str) -> set[str] | None:
    """JSON types a dataclass field annotation allows; None for Any (checked by the schema alone)."""
    if annotation == "Any":
        return None
    return set().union(*(_ANNOTATION_TYPES[part.strip()] for part in annotation.split("|")))


def _assert_dataclass_matches(cls, name: str, camel=settings._camel) -> None:
    definition = DEFS[name]
    props, required = definition["properties"], set(definition.get("required", ()))
    fields = {camel(f.name): f for f in dataclasses.fields(cls)}
    assert set(fields) == set(props), f"{cls.__name__} fields differ from the schema's {name}"
    hints = {f.name: f.type for f in dataclasses.fields(cls)}
    for key, field in fields.items():
        has_default = field.default is not dataclasses.MISSING or field.default_factory is not dataclasses.MISSING
        if cls is not settings.RunnerSettings:  # every setting has a default; the schema requires engine on the line
            assert has_default == (key not in required), f"{name}.{key}: required in one, optional in the other"
        if "default" in props[key]:
            assert field.default == props[key]["default"], f"{name}.{key}: default differs"
        allowed = _annotation_types(str(hints[field.name]))
        if allowed is not None:
            expected = _json_types(props[key])
            if "number" in allowed:
                allowed |= {"integer"}  # a float field takes JSON integers too
                expected |= {"integer"}
            assert allowed == expected, f"{name}.{key}: dataclass allows {allowed}, schema {expected}"


def test_the_checker_understands_every_keyword_the_schema_uses():
    assert contract.unknown_keywords() == []


def test_every_reference_resolves():
    refs = set(itertools.chain.from_iterable(_refs(DEFS[name]) for name in DEFS))
    assert refs and all(ref.rsplit("/", 1)[-1] in DEFS for ref in refs)


def _refs(node):
    if isinstance(node, dict):
        if "$ref" in node:
            yield node["$ref"]
        for value in node.values():
            yield from _refs(value)
    elif isinstance(node, list):
        for value in node:
            yield from _refs(value)


def test_generate_request_dataclasses_match_the_schema():
    _assert_dataclass_matches(GenerateRequest, "GenerateParams")
    _assert_dataclass_matches(PixelSpec, "PixelSpec")
    _assert_dataclass_matches(PixelizeRequest, "PixelizeParams")


def test_runner_settings_dataclass_and_options_match_the_schema():
    _assert_dataclass_matches(settings.RunnerSettings, "RunnerSettings")
    parser = settings.parser()
    options = {action.option_strings[0]: action for action in parser._actions if action.option_strings[0] != "-h"}
    props = DEFS["RunnerSettings"]["properties"]
    assert set(options) == {settings.option(name) for name in props}
    for name, prop in props.items():
        enum = DEFS[prop["$ref"].rsplit("/", 1)[-1]]["enum"] if "$ref" in prop else prop.get("enum")
        assert options[settings.option(name)].choices == enum, name


def test_options_parse_to_settings_and_defaults_are_the_schemas():
    assert settings.parse_args([]) == settings.RunnerSettings()
    parsed = settings.parse_args(
        ["--engine", "mlx", "--pipeline-cache", "4", "--mlx-dtype", "float16", "--mlx-blas", "off", "--auto-install"]
    )
    assert (parsed.engine, parsed.pipeline_cache, parsed.forced_mlx_dtype, parsed.mlx_blas, parsed.auto_install) == (
        "mlx",
        4,
        "float16",
        "off",
        True,
    )
    assert parsed.forced_device is None and settings.parse_args(["--device", "cpu"]).forced_device == "cpu"


def test_ops_and_their_requests_come_from_the_schema():
    assert OPS == ("probe", "generate", "pixelize", "cancel", "unload", "shutdown")
    assert [request_definition(op) for op in OPS] == [
        "ProbeRequest",
        "GenerateRequest",
        "PixelizeRequest",
        "CancelRequest",
        "UnloadRequest",
        "ShutdownRequest",
    ]


def test_probes_of_every_engine_validate():
    from pixelai_runner.backends.mlx import MLXBackend
    from pixelai_runner.backends.torch_backend import TorchBackend

    contract.validate("EngineProbe", TorchBackend(DeviceInfo("cpu", "test cpu", "float32")).probe())
    contract.validate("EngineProbe", MLXBackend().probe())
    contract.validate("EngineProbe", UnavailableEngine("mlx", "mlx is not installed").probe())


def test_each_engine_must_report_its_own_device_names():
    from pixelai_runner.backends.mlx import MLXBackend

    probe = MLXBackend().probe()
    contract.validate("EngineProbe", {**probe, "device": "gpu"})
    with pytest.raises(contract.ContractError) as info:
        contract.validate("EngineProbe", {**probe, "device": "cuda"})
    assert info.value.path == "device"
    with pytest.raises(contract.ContractError):
        contract.validate("EngineProbe", {**probe, "engine": "torch", "device": "gpu"})


@pytest.mark.parametrize(
    "override, field",
    [
        ({"width": 60}, "params.width"),
        ({"steps": 0}, "params.steps"),
        ({"seed": "7"}, "params.seed"),
        ({"scheduler": "plms"}, "params.scheduler"),
        ({"initNoise": "cuda"}, "params.initNoise"),
        ({"removeBackground": True}, "params.removeBackground"),
        ({"pixel": {"width": 8, "height": 8, "fitMode": "zoom"}}, "params.pixel.fitMode"),
        ({"pixel": {"width": 8, "height": 8, "grid": "magic"}}, "params.pixel.grid"),
        ({"pixel": {"width": 8, "height": 8, "colors": 300}}, "params.pixel.colors"),
        ({"lora": {"source": "x.safetensors"}}, "params.lora.strength"),
        ({"previewEvery": 0}, "params.previewEvery"),
        ({"guidance": 7}, "params.guidance"),
        ({"prompt": None}, "params.prompt"),
    ],
)
def test_a_bad_generate_field_is_invalid_request_naming_it(tmp_path, override, field):
    messages = _serve(FlatBackend(), [{"id": "g", "op": "generate", "params": _params(tmp_path, **override)}])
    error = messages[-1]
    assert error["event"] == "error" and error["code"] == "INVALID_REQUEST" and error["id"] == "g"
    assert f"{field}:" in error["message"], error["message"]


def test_a_missing_field_and_a_bad_control_request_are_named(tmp_path):
    params = _params(tmp_path)
    del params["outputDir"]
    messages = _serve(
        FlatBackend(),
        [
            {"id": "g", "op": "generate", "params": params},
            {"id": "c", "op": "cancel"},
            {"id": "u", "op": "unload", "model": 3},
        ],
    )
    errors = {m["id"]: m["message"] for m in messages if m.get("event") == "error"}
    assert "params.outputDir: is required" in errors["g"]
    assert "target: is required" in errors["c"]
    assert "model:" in errors["u"]


def test_everything_a_real_runner_writes_validates(tmp_path, tiny_sd):
    """The real runner (torch, CPU), every op and a bad line: each line it writes keeps to the schema."""
    proc = RunnerProcess(["-m", "pixelai_runner", "--engine", "torch", "--device", "cpu"], tmp_path / "stderr.log")
    ops: dict = {}

    def send(message: dict) -> None:
        ops[message["id"]] = message["op"]
        proc.send(message)

    try:
        ready = proc.next_message(lambda m: m.get("event") == "ready", timeout=120)
        contract.validate("ReadyEvent", ready)
        assert ready["device"] == "cpu" and ready["available"] is True
        out = tmp_path / "job"
        out.mkdir()
        params = {
            "jobId": "contract",
            "modelSource": str(tiny_sd),
            "prompt": "a knight",
            "width": 64,
            "height": 64,
            "steps": 2,
            "guidanceScale": 5.0,
            "seed": 3,
            "outputDir": str(out),
            "previewEvery": 1,
            "pixel": {"width": 16, "height": 16, "colors": 4},
        }
        send({"id": "probe", "op": "probe"})
        send({"id": "gen", "op": "generate", "params": params})
        progress, final = proc.events("gen", timeout=180)
        assert final["event"] == "result", final
        assert progress and all("previewPath" in p for p in progress)
        send({"id": "cancel", "op": "cancel", "target": "gen"})
        send({"id": "unload", "op": "unload"})
        proc.send("not json")
        lines = [proc.final(rid) for rid in ("probe", "cancel", "unload")]
        bad = proc.next_message(lambda m: m.get("id") is None and m.get("event") == "error")
        send({"id": "bye", "op": "shutdown"})
        lines += [*progress, final, bad, proc.final("bye")]
        for line in lines:
            contract.validate_event(line, ops.get(line.get("id")))
        assert proc.proc.wait(30) == 0
    finally:
        proc.close()
