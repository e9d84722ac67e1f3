"""The trainer contract and Keras' own checks (tests/keras_contract.py) for Keras on the PyTorch engine,
in a process that runs no other Keras engine."""

from tests.keras_contract import *  # noqa: F403 - the contract and every Keras engine's checks

FRAMEWORK = "keras_torch"


def test_train_device_cpu_hides_the_gpus_before_keras_chooses_its_device(tmp_path):
    """Keras on PyTorch picks its device when imported: ``backends.load(..., device="cpu")`` hides
    the GPUs first (``CUDA_VISIBLE_DEVICES``), ``auto`` leaves them; read back from Keras' tensors."""
    import json
    import os
    import subprocess
    import sys

    from tests.support import PROJECT_ROOT

    probe = ("import json, os; from stages import backends; backends.load('keras_torch', device={device!r}); "
             "import keras; print(json.dumps([os.environ.get('CUDA_VISIBLE_DEVICES'), "
             "keras.ops.convert_to_tensor([1.0]).device.type]))")
    environment = {key: value for key, value in os.environ.items() if key != "CUDA_VISIBLE_DEVICES"}
    seen = {}
    for device in ("cpu", "auto"):
        result = subprocess.run([sys.executable, "-c", probe.format(device=device)], cwd=PROJECT_ROOT, env=environment,
                                capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, result.stderr
        seen[device] = json.loads(result.stdout.strip().splitlines()[-1])
    assert seen["cpu"] == ["", "cpu"]
    assert seen["auto"][0] is None
