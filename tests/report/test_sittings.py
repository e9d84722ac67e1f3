"""The report quotes the between-sitting spread from bench/sittings_bench.py's record."""

from __future__ import annotations

import json

import pytest

from stages.common.errors import StageError
from stages.report import sittings


def record() -> dict:
    spread = {name: {"low": low, "high": high, "spread": round(high / low, 3)} for name, low, high in
              [("train_seconds", 0.91, 1.07), ("inference_images_per_second", 0.31, 0.42),
               ("latency_ms_median", 0.08, 0.11)]}
    return {"date": "2026-12-04", "machine": "AMD EPYC, 2 cores", "frameworks": ["keras", "torch"], "seeds": ["1"],
            "sittings": [{}, {}, {}], "spread": {"torch": spread}}


def test_the_sentence_gives_each_ratios_range_across_the_sittings(tmp_path):
    path = tmp_path / "sittings.json"
    path.write_text(json.dumps(record()))
    text = sittings.sentence(sittings.load(path))
    assert "over 3 sittings on 2026-12-04" in text
    assert ("PyTorch / Keras: training time 0.91-1.07x, inference throughput 0.31-0.42x, single-image latency "
            "0.08-0.11x") in text


def test_without_a_record_the_report_says_the_spread_is_not_covered(tmp_path):
    assert sittings.load(tmp_path / "absent.json") is None
    assert "not the spread between sittings" in sittings.sentence(None)


@pytest.mark.parametrize("content", ["{not json", json.dumps({"date": "2026-12-04"}),
                                     json.dumps({**record(), "spread": {"torch": {}}})],
                         ids=["not-json", "no-spread", "a-measure-missing"])
def test_a_broken_record_is_one_error_naming_the_file(tmp_path, content):
    path = tmp_path / "sittings.json"
    path.write_text(content)
    with pytest.raises(StageError, match=rf"^{path}: not a bench/sittings_bench.py record"):
        sittings.load(path)
