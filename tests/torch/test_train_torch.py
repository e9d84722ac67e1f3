"""The trainer contract (tests/trainer_contract.py) for PyTorch, in a PyTorch-only process, and
what only PyTorch has: its own classes and switches read back, and its weights-only loader
against a real pickle payload."""

import os

import numpy as np
import pytest

from stages.common.architecture import build_spec
from stages.common.errors import StageError
from tests.trainer_contract import *  # noqa: F403 - the shared contract tests
from tests.trainer_contract import SMALL, TUTORIAL, make_params

FRAMEWORK = "torch"


class WritesMarker:
    """Unpickling this calls exec(): what a malicious model file would do."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (exec, (f"open({self.marker!r}, 'w').write('ran')",))


def test_pickle_payload_in_a_model_file_is_refused_and_never_runs(tmp_path):
    import torch

    from stages.backends import torch as backend

    spec = build_spec(make_params(SMALL).model, (28, 28, 1), 10)
    marker = tmp_path / "marker"
    state = {name: tensor for name, tensor in backend.build_model(spec, 0).layers.state_dict().items()}
    state["payload"] = WritesMarker(marker)
    path = tmp_path / backend.MODEL_FILE
    torch.save(state, path)

    with pytest.raises(StageError, match=rf"{path}: not a loadable PyTorch state_dict .*Unsupported global: "
                                         r"GLOBAL (builtins\.)?exec was not an allowed global") as refused:
        backend.load_model(path, spec)
    assert not marker.exists()
    # One line, the reason only: none of PyTorch's advice (which opens with weights_only=False), no escape codes.
    assert "\n" not in str(refused.value) and "\x1b" not in str(refused.value)
    assert "weights_only" not in str(refused.value)

    # The payload is live: an unrestricted load runs it.
    torch.load(path, weights_only=False)
    assert marker.read_text() == "ran"


@pytest.mark.parametrize("change", ["missing", "unexpected"])
def test_state_dict_with_missing_or_unexpected_entries_is_refused(tmp_path, change):
    import torch

    from stages.backends import torch as backend

    spec = build_spec(make_params(SMALL).model, (28, 28, 1), 10)
    state = dict(backend.build_model(spec, 0).layers.state_dict())
    if change == "missing":
        del state[next(name for name in state if name.endswith("running_var"))]
    else:
        state["extra.weight"] = torch.zeros(3)
    path = tmp_path / backend.MODEL_FILE
    torch.save(state, path)

    refused = rf"{path}: not a loadable PyTorch state_dict .*Error\(s\) in loading state_dict"
    with pytest.raises(StageError, match=refused):
        backend.load_model(path, spec)


def test_only_the_tuned_inference_runs_through_torch_compile():
    """Read back from TorchDynamo: no graph captured in training at either level, nor in stock
    inference; the tuned level's inference (``compiled_inference``) is captured."""
    import torch
    from torch._dynamo.utils import counters

    from stages.backends import torch as backend
    from tests.trainer_contract import fit_small, make_split, small_settings

    def captured(tuning, switches):
        torch._dynamo.reset()
        counters.clear()
        model, _ = fit_small(backend, small_settings(epochs=1, tuning=tuning, switches=switches),
                             train=make_split(32, 1), val=make_split(10, 2))
        during_training = counters["stats"]["calls_captured"]
        backend.predict(backend.for_inference(model, switches), make_split(10, 3).images, batch_size=10)
        return during_training, counters["stats"]["calls_captured"] - during_training

    assert captured("stock", ()) == (0, 0)
    training, inference = captured("tuned", backend.TUNED)
    assert training == 0 and inference > 0


COMPILED_INFERENCE = """
import logging, sys
import numpy as np
from stages.backends import torch as backend
from stages.common.architecture import build_spec
from stages.common.errors import setup_logging
from tests.trainer_contract import SMALL, make_params

setup_logging()  # as run_stage sets it up in a stage
logging.getLogger("probe").warning("a line of the project's own")
model = backend.build_model(build_spec(make_params(SMALL).model, (28, 28, 1), 10), 0)
compiled = backend.for_inference(model, ("compiled_inference",))
backend.predict(compiled, np.zeros((4, 28, 28, 1), np.float32), batch_size=4)
"""


def test_compiled_inference_on_a_cpu_only_machine_prints_no_cuda_home_warning(tmp_path):
    """torch.compile imports torch.utils.cpp_extension, which warns "No CUDA runtime is found, using
    CUDA_HOME=..." wherever a CUDA toolkit is installed but no GPU is usable. Here: the GPU hidden
    and CUDA_HOME set to an existing folder, so that the warning's condition holds on any machine."""
    import subprocess
    import sys

    from tests.support import PROJECT_ROOT

    environment = {key: value for key, value in os.environ.items() if key not in ("TORCH_LOGS", "CUDA_PATH")}
    environment.update(CUDA_VISIBLE_DEVICES="", CUDA_HOME=str(tmp_path), PYTHONPATH=str(PROJECT_ROOT))
    result = subprocess.run([sys.executable, "-c", COMPILED_INFERENCE], cwd=PROJECT_ROOT, env=environment,
                            capture_output=True, text=True, timeout=600)

    assert result.returncode == 0, result.stderr
    assert "No CUDA runtime is found" not in result.stderr
    assert "a line of the project's own" in result.stderr  # only that line is silenced


@pytest.mark.parametrize("augment", [False, True], ids=["plain", "augmented"])
@pytest.mark.parametrize("tuning", ["stock", "tuned"])
def test_training_batches_reach_the_first_convolution_in_the_levels_memory_format(backend, augment, tuning):
    """Stock: PyTorch's default contiguous NCHW; tuned (``channels_last``): the channels-last format
    PyTorch's tuning guide recommends. Read back the layout of every training batch the last
    convolution receives (the first one's single-channel input is both at once), and of its weights."""
    import dataclasses

    import torch

    from stages.common.schedules import learning_rates
    from tests.trainer_contract import make_split, small_settings

    settings = small_settings(epochs=1, tuning=tuning, switches=backend.TUNED if tuning == "tuned" else ())
    settings = dataclasses.replace(settings, augment=dataclasses.replace(settings.augment, enabled=augment))
    backend.configure(settings, 1)
    model = backend.build_model(build_spec(make_params(None).model, (28, 28, 1), 10), 1)  # two conv blocks
    seen = []
    convolutions = [module for module in model.layers.modules() if isinstance(module, torch.nn.Conv2d)]
    convolutions[-1].register_forward_pre_hook(lambda module, inputs: seen.append((module.training, inputs[0])))

    backend.fit(model, make_split(64, 1), make_split(20, 2), settings, learning_rates(settings, 2), 1,
                lambda record: None)

    training = [batch for is_training, batch in seen if is_training]
    layout = torch.channels_last if tuning == "tuned" else torch.contiguous_format
    other = torch.contiguous_format if tuning == "tuned" else torch.channels_last
    assert len(training) == 2 and all(batch.size(1) > 1 and batch.is_contiguous(memory_format=layout)
                                      and not batch.is_contiguous(memory_format=other) for batch in training)
    last = convolutions[-1].weight
    assert last.is_contiguous(memory_format=torch.channels_last) is (tuning == "tuned")
    assert last.is_contiguous() is (tuning == "stock")


@pytest.mark.parametrize(("optimizer", "kernel"), [("adamw", "aten::_fused_adamw_"), ("adam", "aten::_fused_adamw_"),
                                                   ("sgd", "aten::_fused_sgd_")])  # adam with decay: AdamW
@pytest.mark.parametrize("tuning", ["stock", "tuned"])
def test_only_the_tuned_optimizer_updates_with_one_fused_kernel_per_step(backend, optimizer, kernel, tuning):
    """Read back from PyTorch's profiler: tuned (``fused_optimizer``), one fused update per step;
    stock, PyTorch's default implementation and no fused kernel."""
    from torch.profiler import ProfilerActivity, profile

    from tests.trainer_contract import fit_small, make_split, small_settings

    settings = small_settings(epochs=1, batch_size=16, optimizer=optimizer, tuning=tuning,
                              switches=backend.TUNED if tuning == "tuned" else ())
    with profile(activities=[ProfilerActivity.CPU]) as profiler:
        fit_small(backend, settings, train=make_split(64, 1), val=make_split(10, 2))
    names = [event.name for event in profiler.events()]
    assert names.count(kernel) == (64 // 16 if tuning == "tuned" else 0)
    assert tuning == "tuned" or not any("_fused_" in name for name in names)


@pytest.mark.parametrize(("optimizer", "weight_decay", "expected"), [
    ("adamw", 1e-4, "AdamW"), ("adam", 1e-4, "AdamW"), ("adam", 0.0, "Adam"), ("sgd", 1e-4, "SGD")])
def test_a_stock_replicate_trains_with_torchs_own_classes_and_loads_without_the_project(
        backend, tmp_path, optimizer, weight_decay, expected):
    """The stock level is PyTorch as its users write it: read back from PyTorch itself, every
    module of the trained model and the optimizer that stepped are torch's own classes, at their
    default implementation, with the recipe's values; no allocator is preloaded; and the saved
    state_dict loads into a model built with torch alone, in an interpreter that never imports
    the project, giving the project's predictions."""
    import json
    import os
    import subprocess
    import sys

    from torch.optim.optimizer import register_optimizer_step_pre_hook

    from tests.trainer_contract import fit_small, make_split, small_settings

    stepped = []
    handle = register_optimizer_step_pre_hook(
        lambda optimizer, args, kwargs: stepped.append(optimizer))
    try:
        settings = small_settings(epochs=1, optimizer=optimizer, weight_decay=weight_decay)
        model, _ = fit_small(backend, settings, train=make_split(64, 1), val=make_split(10, 2))
    finally:
        handle.remove()
    assert all(type(module).__module__.startswith("torch.nn.") for module in model.layers.modules())
    assert {type(optimizer).__name__ for optimizer in stepped} == {expected}
    used = stepped[0]
    assert type(used).__module__.startswith("torch.optim.") and not used.defaults.get("fused")
    assert not used.defaults.get("foreach")  # the default on the CPU: PyTorch's for-loop implementation
    assert used.defaults["weight_decay"] == weight_decay
    assert "LD_PRELOAD" not in os.environ

    backend.save_model(model, tmp_path / "model.pt")
    images = make_split(8, 3).images
    np.save(tmp_path / "images.npy", images)
    spec = build_spec(make_params(SMALL).model, (28, 28, 1), 10)
    (tmp_path / "spec.json").write_text(spec.to_json())
    plain = """
import json, sys
import numpy as np, torch
from torch import nn
spec = json.load(open("spec.json"))
modules, channels, shape = [], spec["input_shape"][2], spec["input_shape"]
for layer in spec["layers"]:
    kind, config = layer["kind"], layer["config"]
    if kind == "conv":
        modules.append(nn.Conv2d(channels, config["filters"], config["kernel_size"], padding=config["padding"],
                                 bias=config["bias"])); channels = config["filters"]
    elif kind == "batch_norm": modules.append(nn.BatchNorm2d(channels))
    elif kind == "activation": modules.append({"relu": nn.ReLU, "gelu": nn.GELU}[config["name"]]())
    elif kind == "max_pool": modules.append(nn.MaxPool2d(config["pool"]))
    elif kind == "dropout": modules.append(nn.Dropout(config["rate"]))
    elif kind == "flatten": modules.append(nn.Flatten())
    elif kind == "dense": modules.append(nn.Linear(int(np.prod(shape)), config["units"]))
    shape = layer["output_shape"]
model = nn.Sequential(*modules)
model.load_state_dict(torch.load("model.pt", weights_only=True))
model.eval()
with torch.inference_mode():
    logits = model(torch.from_numpy(np.load("images.npy")).permute(0, 3, 1, 2).contiguous())
np.save("plain.npy", torch.softmax(logits, 1).numpy())
print(json.dumps(sorted(name for name in sys.modules if name.split(".")[0] == "stages")))
"""
    result = subprocess.run([sys.executable, "-c", plain], cwd=tmp_path, capture_output=True, text=True,
                            timeout=300, env={key: value for key, value in os.environ.items() if key != "PYTHONPATH"})
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.splitlines()[-1]) == []
    np.testing.assert_allclose(np.load(tmp_path / "plain.npy"), backend.predict(model, images, batch_size=8),
                               atol=1e-6)


def test_a_write_the_file_system_refuses_names_the_output_not_its_temporary(tmp_path):
    """A real refusal by the kernel: the train stage in a process whose file-size limit
    (RLIMIT_FSIZE, SIGXFSZ ignored) lets the training logs through but not the model file."""
    import resource
    import signal
    import subprocess
    import sys

    from tests.support import PROJECT_ROOT
    from tests.trainer_contract import STAGE_MODEL, stage_project

    stage_project(tmp_path, "torch", model={**STAGE_MODEL, "dense": [64]})  # a model.pt of about 30 kB
    previous = tmp_path / "models" / "torch" / "1" / "model.pt"
    previous.parent.mkdir(parents=True)
    previous.write_bytes(b"the previous model")

    def small_files_only():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (8192, 8192))

    result = subprocess.run([sys.executable, "-m", "stages.train", "torch", "1"], cwd=tmp_path, capture_output=True,
                            text=True, timeout=600, preexec_fn=small_files_only,
                            env={**os.environ, "PYTHONPATH": str(PROJECT_ROOT), "PYTHONDONTWRITEBYTECODE": "1"})

    errors = [line for line in result.stderr.splitlines() if "error" in line.lower()]
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    assert errors == ["error: train: models/torch/1/model.pt: cannot write: file too large; nothing half-written "
                      "was left"], result.stderr
    assert previous.read_bytes() == b"the previous model"
    assert sorted(path.name for path in previous.parent.parent.iterdir()) == ["1"]  # no temporary left


@pytest.mark.parametrize("model_params", [None, TUTORIAL, SMALL], ids=["default", "tutorial", "small"])
def test_built_model_has_the_specs_layers_as_pytorchs_own_classes(backend, model_params):
    from torch import nn

    spec = build_spec(make_params(model_params).model, (28, 28, 1), 10)
    classes = {nn.Conv2d: "conv", nn.BatchNorm2d: "batch_norm", nn.MaxPool2d: "max_pool", nn.Dropout: "dropout",
               nn.Linear: "dense", nn.ReLU: "activation", nn.GELU: "activation", nn.Tanh: "activation",
               nn.Sigmoid: "activation", nn.Flatten: "flatten"}
    layers = list(backend.build_model(spec, 0).layers)
    assert [classes[type(layer)] for layer in layers] == [layer.kind for layer in spec.layers]
