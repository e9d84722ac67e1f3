"""The trainer contract (tests/trainer_contract.py) for PyTorch, in a PyTorch-only process, and
what only PyTorch has: its augmentation transforms and its weights-only loader against a real
pickle payload."""

import numpy as np
import pytest

from stages.common.architecture import build_spec
from stages.common.errors import StageError
from tests.trainer_contract import *  # noqa: F403 - the shared contract tests
from tests.trainer_contract import SMALL, make_params

FRAMEWORK = "torch"


def augment_images(images, settings, background, seed):
    """The augmentation fit() applies to each batch, seeded as configure() seeds it."""
    import torch

    from stages.backends.torch import _augmenter

    torch.manual_seed(seed)
    batch = torch.from_numpy(np.ascontiguousarray(images.transpose(0, 3, 1, 2)))
    return _augmenter(settings, background)(batch).numpy().transpose(0, 2, 3, 1)


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
    state = {name: tensor for name, tensor in backend.build_model(spec).state_dict().items()}
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
    state = dict(backend.build_model(spec).state_dict())
    if change == "missing":
        del state[next(name for name in state if name.endswith("running_var"))]
    else:
        state["extra.weight"] = torch.zeros(3)
    path = tmp_path / backend.MODEL_FILE
    torch.save(state, path)

    refused = rf"{path}: not a loadable PyTorch state_dict .*Error\(s\) in loading state_dict"
    with pytest.raises(StageError, match=refused):
        backend.load_model(path, spec)


def test_compiled_execution_runs_through_torch_compile():
    """Read back from TorchDynamo: graphs captured only in compiled mode, in training and inference."""
    import torch
    from torch._dynamo.utils import counters

    from stages.backends import torch as backend
    from tests.trainer_contract import fit_small, make_split, small_settings

    def captured(execution):
        torch._dynamo.reset()
        counters.clear()
        model, _ = fit_small(backend, small_settings(epochs=1, execution=execution), train=make_split(32, 1),
                             val=make_split(10, 2))
        during_training = counters["stats"]["calls_captured"]
        backend.predict(backend.for_inference(model, execution), make_split(10, 3).images, batch_size=10)
        return during_training, counters["stats"]["calls_captured"] - during_training

    assert captured("standard") == (0, 0)
    training, inference = captured("compiled")
    assert training > 0 and inference > 0


@pytest.mark.parametrize("model_params", [None, SMALL], ids=["default", "small"])
def test_forward_flops_match_torchs_flop_counter(model_params):
    """``ArchitectureSpec.forward_flops`` (what bench/fair_bench.py divides by) against PyTorch's
    own count of the built model's convolutions and matrix products."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from stages.backends import torch as backend

    spec = build_spec(make_params(model_params).model, (28, 28, 1), 10)
    model = backend.build_model(spec).eval()
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(torch.zeros(1, 1, 28, 28))
    assert spec.forward_flops() == counter.get_total_flops()


@pytest.mark.parametrize("augment", [False, True], ids=["plain", "augmented"])
def test_training_batches_reach_the_first_convolution_channels_last(backend, augment):
    """PyTorch's oneDNN convolutions run channels-last input faster than NCHW (BENCHMARKS.md):
    read back the strides of every training batch the first convolution receives."""
    import dataclasses

    import torch

    from stages.common.schedules import learning_rates
    from tests.trainer_contract import make_split, small_settings

    settings = small_settings(epochs=1)
    settings = dataclasses.replace(settings, augment=dataclasses.replace(settings.augment, enabled=augment))
    backend.configure(settings, 1)
    model = backend.build_model(build_spec(make_params(SMALL).model, (28, 28, 1), 10))
    seen = []
    first = next(module for module in model.modules() if isinstance(module, torch.nn.Conv2d))
    first.register_forward_pre_hook(lambda module, inputs: seen.append((module.training, inputs[0].stride())))

    backend.fit(model, make_split(64, 1), make_split(20, 2), settings, learning_rates(settings, 2), 1,
                lambda record: None)

    training = [strides for is_training, strides in seen if is_training]
    assert len(training) == 2 and all(strides == (28 * 28, 1, 28, 1) for strides in training)


@pytest.mark.parametrize(("optimizer", "kernel"), [("adamw", "aten::_fused_adam_"), ("adam", "aten::_fused_adam_"),
                                                   ("sgd", "aten::_fused_sgd_")])
def test_optimizer_updates_all_weights_with_one_fused_kernel_per_step(backend, optimizer, kernel):
    """Read back from PyTorch's profiler: one fused update per optimizer step, none of the
    per-parameter ops of PyTorch's default (looped) Adam."""
    from torch.profiler import ProfilerActivity, profile

    from tests.trainer_contract import fit_small, make_split, small_settings

    settings = small_settings(epochs=1, batch_size=16, optimizer=optimizer)
    with profile(activities=[ProfilerActivity.CPU]) as profiler:
        fit_small(backend, settings, train=make_split(64, 1), val=make_split(10, 2))
    names = [event.name for event in profiler.events()]
    assert names.count(kernel) == 64 // 16
    assert not {"aten::addcdiv_", "aten::lerp_"} & set(names)


@pytest.mark.skipif(__import__("platform").libc_ver()[0] != "glibc", reason="glibc's allocator only")
def test_configure_makes_freed_large_tensors_reusable_without_page_faults():
    """Read the effect back from the kernel: after configure(), 64 MB tensors allocated, touched
    and freed in turn are served from memory the process kept (no page faults once the heap
    has grown to hold them), not mapped afresh (one fault per page every time, as with
    glibc's defaults)."""
    import resource
    import subprocess
    import sys

    from tests.support import PROJECT_ROOT

    probe = ("import resource, torch\n"
             "from stages.backends import torch as backend\n"
             "from tests.trainer_contract import small_settings\n"
             "backend.configure(small_settings(epochs=1), 1)\n"
             "faults = []\n"
             "for _ in range(8):\n"
             "    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt\n"
             "    torch.empty(16 << 20).fill_(1.0)\n"  # 64 MB, touched, freed
             "    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)\n"
             "print('faults', *faults)")
    result = subprocess.run([sys.executable, "-c", probe], cwd=PROJECT_ROOT, capture_output=True, text=True,
                            check=True, timeout=120)
    faults = [int(count) for count in result.stdout.split("faults")[-1].split()]
    pages = (64 << 20) // resource.getpagesize()
    assert len(faults) == 8 and faults[0] >= pages // 2  # the first one really touched fresh memory
    # The heap needs a block or two to settle (alignment); after that, no fresh pages.
    assert sum(count < pages // 10 for count in faults) >= 4, f"page faults per 64 MB allocation: {faults}"
