"""End to end, issue 'foundation': download and preprocess through real DVC and a loopback mirror."""

from __future__ import annotations

import json

from tests.e2e.conftest import ran_stages


def test_repro_preprocess_caches_and_reruns_only_what_changed(fresh_repo):
    first = fresh_repo.dvc("repro", "preprocess")
    assert ran_stages(first.stdout) == {"download", "preprocess"}
    meta = json.loads((fresh_repo.path / "data/prepared/meta.json").read_text())
    assert meta["splits"]["train"]["count"] + meta["splits"]["val"]["count"] == 300
    assert meta["splits"]["test"]["count"] == 60

    second = fresh_repo.dvc("repro", "preprocess")
    assert ran_stages(second.stdout) == set()

    fresh_repo.set_params(lambda raw: raw["preprocess"].update(val_fraction=0.2))
    third = fresh_repo.dvc("repro", "preprocess")
    assert ran_stages(third.stdout) == {"preprocess"}
    meta = json.loads((fresh_repo.path / "data/prepared/meta.json").read_text())
    assert meta["splits"]["val"]["count"] == 60


def test_changing_only_the_mirror_keeps_the_cache(fresh_repo, tmp_path, served_dataset):
    fresh_repo.dvc("repro", "preprocess")
    server, _ = served_dataset
    # The same files from another kind of mirror: a local folder.
    fresh_repo.set_params(lambda raw: raw["data"].update(mirrors=[str(server.root)]))
    assert ran_stages(fresh_repo.dvc("repro", "preprocess").stdout) == set()


def test_bad_params_stop_the_stage_before_any_work(fresh_repo):
    fresh_repo.set_params(lambda raw: raw["preprocess"].update(val_fraction=2, normalise="yes"))
    result = fresh_repo.dvc("repro", "preprocess", check=False)
    assert result.returncode != 0
    output = result.stdout + result.stderr
    assert "preprocess.val_fraction: expected a value of at most 0.5, got 2" in output
    assert "preprocess.normalise: unknown key (did you mean 'normalize'?)" in output
    assert not (fresh_repo.path / "data/raw").exists() or not any((fresh_repo.path / "data/raw").iterdir())


def test_unreachable_mirrors_fail_fast_with_one_clear_message(fresh_repo):
    fresh_repo.set_params(lambda raw: raw["data"].update(mirrors=["http://127.0.0.1:9/", "/nonexistent/mirror"]))
    result = fresh_repo.dvc("repro", "download", check=False)
    assert result.returncode != 0
    message = next(line for line in result.stderr.splitlines() if line.startswith("error: download:"))
    assert "http://127.0.0.1:9/" in message and "/nonexistent/mirror" in message
    assert "Traceback" not in result.stderr
