"""params.yaml validation: the shipped file loads, and each kind of problem is reported (all at once)."""

from __future__ import annotations

import dataclasses

import pytest

from stages.common import frameworks, params
from stages.common.errors import StageError
from stages.common.params import effective_train, load_params, validate
from tests.support import PROJECT_ROOT, make_dataset, project_params, write_params


def problems_of(raw) -> list[str]:
    """The problem lines of the StageError that validating ``raw`` raises."""
    with pytest.raises(StageError) as caught:
        validate(raw)
    header, *lines = str(caught.value).splitlines()
    assert header == f"{len(lines)} problem(s) in params.yaml:"
    prefix = "  params.yaml: "
    assert all(line.startswith(prefix) for line in lines), lines
    return [line[len(prefix):] for line in lines]


@pytest.fixture
def raw() -> dict:
    return project_params()


@pytest.fixture
def custom(tmp_path) -> dict:
    return make_dataset(tmp_path / "mirror", n_train=20, n_test=10)


def test_the_project_params_file_is_valid(raw):
    loaded = load_params(PROJECT_ROOT / "params.yaml")

    assert loaded.data.dataset == raw["data"]["dataset"]
    assert isinstance(loaded.data.mirrors, tuple) and isinstance(loaded.data.timeout_s, float)
    assert all(isinstance(block, params.ConvBlock) for block in loaded.model.conv_blocks)
    assert isinstance(loaded.model.dense, tuple) and isinstance(loaded.train.augment, params.AugmentParams)
    assert loaded.model.conv_blocks[0].filters == raw["model"]["conv_blocks"][0]["filters"]
    assert loaded.train.epochs == raw["train"]["epochs"]
    # as_dict gives back the plain structure (lists for tuples), override sections included.
    plain = params.as_dict(loaded)
    assert plain["model"] == raw["model"]
    assert plain["overrides"] == {name: raw[name] for name in frameworks.names() if name in raw}


def test_params_are_frozen(raw):
    loaded = validate(raw)

    with pytest.raises(dataclasses.FrozenInstanceError):
        loaded.train.epochs = 1  # type: ignore[misc]


def test_integers_are_accepted_for_numbers(raw):
    raw["train"]["learning_rate"] = 1

    loaded = validate(raw)

    assert loaded.train.learning_rate == 1.0 and isinstance(loaded.train.learning_rate, float)


def test_wrong_type(raw):
    raw["train"]["epochs"] = "four"

    assert problems_of(raw) == ["train.epochs: expected an integer, got 'four'"]


def test_float_given_for_int(raw):
    raw["train"]["batch_size"] = 12.5

    assert problems_of(raw) == ["train.batch_size: expected an integer, got 12.5"]


def test_bool_given_for_int(raw):
    raw["train"]["epochs"] = True  # a bool is an int in Python; not in params.yaml

    assert problems_of(raw) == ["train.epochs: expected an integer, got True"]


def test_bool_given_for_number(raw):
    raw["train"]["learning_rate"] = False

    assert problems_of(raw) == ["train.learning_rate: expected a number, got False"]


def test_number_given_for_bool(raw):
    raw["train"]["augment"]["enabled"] = 1

    assert problems_of(raw) == ["train.augment.enabled: expected true or false, got 1"]


def test_null_for_a_required_value(raw):
    raw["seed"] = None

    assert problems_of(raw) == ["seed: expected an integer, got null"]


def test_not_a_finite_number(raw):
    raw["train"]["weight_decay"] = float("nan")

    assert problems_of(raw) == ["train.weight_decay: expected a finite number, got nan"]


@pytest.mark.parametrize(("section", "key", "value", "problem"), [
    ("preprocess", "val_fraction", 0.9, "expected a value of at most 0.5, got 0.9"),
    ("preprocess", "val_fraction", 0.0, "expected a value greater than 0, got 0.0"),  # exclusive minimum
    ("data", "retries", -1, "expected a value of at least 0, got -1"),
    ("train", "momentum", 1.0, "expected a value below 1, got 1.0"),  # exclusive maximum
    ("preprocess", "max_train", 5, "expected a value of at least 10, got 5"),  # optional, but checked when set
])
def test_out_of_range(raw, section, key, value, problem):
    raw[section][key] = value

    assert problems_of(raw) == [f"{section}.{key}: {problem}"]


def test_range_in_a_list_item(raw):
    raw["model"]["conv_blocks"][1]["filters"] = 0

    assert problems_of(raw) == ["model.conv_blocks[1].filters: expected a value of at least 1, got 0"]


@pytest.mark.parametrize(("dense", "problem"), [
    ([0], "model.dense[0]: expected a value of at least 1, got 0"),
    ([128, -5], "model.dense[1]: expected a value of at least 1, got -5"),
    ([10**9], "model.dense[0]: expected a value of at most 4096, got 1000000000"),
    ([64] * 9, "model.dense: expected at most 8 items, got 9"),
    ([1.5], "model.dense[0]: expected an integer, got 1.5"),
], ids=["zero", "negative", "absurdly-large", "too-many-layers", "not-an-integer"])
def test_dense_sizes_are_bounded(raw, dense, problem):
    raw["model"]["dense"] = dense

    assert problems_of(raw) == [problem]


def test_no_hidden_dense_layer_is_valid(raw):
    raw["model"]["dense"] = []  # the tutorial's model: flatten straight into the output layer

    assert validate(raw).model.dense == ()


@pytest.mark.parametrize(("count", "problem"), [
    (0, "model.conv_blocks: expected at least 1 items, got 0"),
    (9, "model.conv_blocks: expected at most 8 items, got 9"),
])
def test_number_of_conv_blocks_is_bounded(raw, count, problem):
    raw["model"]["conv_blocks"] = [dict(raw["model"]["conv_blocks"][0]) for _ in range(count)]

    assert problems_of(raw) == [problem]


@pytest.mark.parametrize(("key", "value", "problem"), [
    ("filters", 0, "expected a value of at least 1, got 0"),
    ("filters", 100_000, "expected a value of at most 1024, got 100000"),
    ("kernel_size", 0, "expected a value of at least 1, got 0"),
    ("kernel_size", 29, "expected a value of at most 11, got 29"),
    ("convs", 0, "expected a value of at least 1, got 0"),
    ("convs", 50, "expected a value of at most 4, got 50"),
    ("pool", 0, "expected a value of at least 1, got 0"),
    ("pool", 8, "expected a value of at most 4, got 8"),
    ("dropout", -0.1, "expected a value of at least 0, got -0.1"),
    ("dropout", 1.0, "expected a value below 1, got 1.0"),
])
def test_conv_block_sizes_are_bounded(raw, key, value, problem):
    raw["model"]["conv_blocks"][0][key] = value

    assert problems_of(raw) == [f"model.conv_blocks[0].{key}: {problem}"]


def test_a_bad_dense_size_is_one_line_naming_file_and_key(tmp_path, raw):
    raw["model"]["dense"] = [0]
    path = write_params(tmp_path, raw)

    with pytest.raises(StageError) as caught:
        load_params(path)

    assert str(caught.value).splitlines()[1:] == [f"  {path}: model.dense[0]: expected a value of at least 1, got 0"]


def test_optional_value_may_be_null(raw):
    raw["preprocess"]["max_train"] = None

    assert validate(raw).preprocess.max_train is None


def test_not_an_allowed_value(raw):
    raw["train"]["optimizer"] = "rmsprop"

    assert problems_of(raw) == ["train.optimizer: expected one of 'adam', 'adamw', 'sgd', got 'rmsprop'"]


def test_block_order_names_both_orders(raw):
    raw["model"]["block_order"] = "pool-first"

    assert problems_of(raw) == ["model.block_order: expected one of 'conv-norm-act-pool', 'conv-pool-norm-act', "
                                "got 'pool-first'"]


def test_bool_is_not_an_allowed_value(raw):
    raw["preprocess"]["normalize"] = True

    assert problems_of(raw) == ["preprocess.normalize: expected one of 'standardize', 'scale', 'none', got True"]


def test_unknown_key_with_suggestion(raw):
    raw["train"]["learning_rte"] = 0.01

    (problem,) = problems_of(raw)
    assert problem.startswith("train.learning_rte: unknown key (did you mean 'learning_rate'?); allowed: epochs, ")


def test_unknown_key_without_a_close_match(raw):
    raw["model"]["colour"] = "blue"

    (problem,) = problems_of(raw)
    assert problem == ("model.colour: unknown key; allowed: conv_blocks, padding, block_order, activation, "
                       "dense, dense_dropout")


def test_unknown_top_level_section(raw):
    raw["evalute"] = {}

    (problem,) = problems_of(raw)
    assert problem.startswith("evalute: unknown key (did you mean 'evaluate'?)")


def test_missing_key(raw):
    del raw["train"]["batch_size"]

    assert problems_of(raw) == ["train.batch_size: missing (expected an integer)"]


def test_missing_section(raw):
    del raw["report"]

    assert problems_of(raw) == ["report: missing (expected a mapping)"]


def test_section_that_is_not_a_mapping(raw):
    raw["evaluate"] = [1000, 200, 20]

    assert problems_of(raw) == ["evaluate: expected a mapping, got [1000, 200, 20]"]


def test_top_level_that_is_not_a_mapping():
    assert problems_of(["seed", 42]) == ["top level: expected a mapping, got ['seed', 42]"]


def test_empty_file():
    assert problems_of(None) == ["top level: expected a mapping, got None"]


def test_list_expected(raw):
    raw["model"]["dense"] = 128

    assert problems_of(raw) == ["model.dense: expected a list, got 128"]


def test_custom_dataset_without_custom_section(raw, custom):
    raw["data"].update(dataset="custom", mirrors=["https://example.org/data/"])

    assert problems_of(raw) == ["data.custom: required when data.dataset is 'custom'"]


def test_custom_dataset_without_mirrors(raw, custom):
    raw["data"].update(dataset="custom", custom=custom)

    assert problems_of(raw) == ["data.mirrors: a custom dataset needs at least one mirror"]


def test_custom_dataset_without_either_reports_both(raw):
    raw["data"]["dataset"] = "custom"

    assert problems_of(raw) == ["data.custom: required when data.dataset is 'custom'",
                                "data.mirrors: a custom dataset needs at least one mirror"]


def test_valid_custom_dataset(raw, custom):
    raw["data"].update(dataset="custom", custom=custom, mirrors=["/srv/mirror", "file:///srv/mirror",
                                                                 "https://example.org/data/"])

    loaded = validate(raw)

    assert loaded.data.custom.files.test_labels.sha256 == custom["files"]["test_labels"]["sha256"]
    assert loaded.data.custom.class_names == tuple(custom["class_names"])


def test_custom_dataset_details_are_checked(raw, custom):
    custom["files"]["train_images"]["sha256"] = "ABC"
    custom["files"]["test_labels"]["name"] = "../t10k-labels.gz"
    custom["class_names"] = ["only one"]
    del custom["files"]["test_images"]
    raw["data"].update(dataset="custom", custom=custom, mirrors=["/srv/mirror"])

    assert problems_of(raw) == [
        "data.custom.files.train_images.sha256: expected a string matching ^[0-9a-f]{64}$, got 'ABC'",
        "data.custom.files.test_images: missing (expected a mapping)",
        r"data.custom.files.test_labels.name: expected a string matching ^[A-Za-z0-9_-][A-Za-z0-9._-]*\.gz$, "
        "got '../t10k-labels.gz'",
        "data.custom.class_names: expected at least 2 items, got 1",
    ]


def test_two_custom_files_of_one_name_are_refused(raw, custom):
    custom["files"]["test_images"]["name"] = custom["files"]["train_images"]["name"]
    custom["files"]["test_labels"]["name"] = custom["files"]["train_images"]["name"]
    raw["data"].update(dataset="custom", custom=custom, mirrors=["/srv/mirror"])
    name = custom["files"]["train_images"]["name"]

    assert problems_of(raw) == [
        f"data.custom.files.test_images.name: {name!r} is also train_images's name; each file needs its own name "
        "on the mirror",
        f"data.custom.files.test_labels.name: {name!r} is also train_images's name; each file needs its own name "
        "on the mirror"]


@pytest.mark.parametrize("mirror", ["ftp://example.org/mnist/", "s3://bucket/mnist/", "HTTP2://example.org/"])
def test_unsupported_mirror_scheme(raw, mirror):
    raw["data"]["mirrors"] = ["https://example.org/mnist/", "/srv/mnist", mirror]

    (problem,) = problems_of(raw)
    assert problem.startswith(f"data.mirrors[2]: unsupported scheme in {mirror!r}")


def test_empty_mirror(raw):
    raw["data"]["mirrors"] = ["https://example.org/mnist/", ""]

    assert problems_of(raw) == ["data.mirrors[1]: expected a non-empty string"]


def test_several_problems_are_reported_together(raw):
    raw["seed"] = -1
    raw["train"]["epochs"] = "many"
    raw["train"]["optimiser"] = "adam"
    del raw["model"]["padding"]
    raw["evaluate"]["batch_size"] = 0

    assert problems_of(raw) == [
        "seed: expected a value of at least 0, got -1",
        "model.padding: missing (expected one of 'same', 'valid')",
        "train.optimiser: unknown key (did you mean 'optimizer'?); allowed: epochs, batch_size, optimizer, "
        "learning_rate, momentum, weight_decay, schedule, warmup_fraction, label_smoothing, input_scale, "
        "augment, threads, device, tuning, switches",
        "train.epochs: expected an integer, got 'many'",
        "evaluate.batch_size: expected a value of at least 1, got 0",
    ]


def test_invalid_yaml_names_the_file(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text("seed: 42\ndata: [unclosed\n")

    with pytest.raises(StageError, match=rf"^{path} is not valid YAML: "):
        load_params(path)


def test_invalid_yaml_gives_line_and_column(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text("seed: 42\ntrain:\n  epochs: 5\n   batch_size: 128\n")

    with pytest.raises(StageError) as caught:
        load_params(path)

    assert str(caught.value) == (f"{path} is not valid YAML: line 4, column 14: mapping values are not allowed in "
                                 "this context")


def test_invalid_yaml_names_where_the_unclosed_part_starts(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text("seed: 42\ndata: [unclosed\n")

    with pytest.raises(StageError) as caught:
        load_params(path)

    assert str(caught.value) == (f"{path} is not valid YAML: line 3, column 1: did not find expected ',' or "
                                 "']' (while parsing a flow sequence at line 2, column 7)")


def test_missing_file_names_it(tmp_path):
    path = tmp_path / "params.yaml"

    with pytest.raises(StageError, match=rf"^cannot read {path}: "):
        load_params(path)


def test_problems_name_the_file_they_come_from(tmp_path, raw):
    raw["train"]["epochs"] = 0
    path = write_params(tmp_path, raw)

    with pytest.raises(StageError) as caught:
        load_params(path)

    assert str(caught.value) == (f"1 problem(s) in {path}:\n"
                                 f"  {path}: train.epochs: expected a value of at least 1, got 0")


def test_check_command(tmp_path, raw, monkeypatch, capsys):
    path = write_params(tmp_path, raw)
    monkeypatch.setattr("sys.argv", ["params", str(path)])

    params.main()

    assert capsys.readouterr().out == f"{path}: ok\n"


# --------------------------------------------------------------------------------------------
# Framework overrides
# --------------------------------------------------------------------------------------------
def test_effective_train_applies_each_frameworks_overrides(raw):
    raw["keras"] = {"optimizer": "adam", "epochs": 2}
    raw["torch"] = {"augment": {"enabled": True, "max_shift": 0.05, "max_rotation_deg": 5.0}}

    loaded = validate(raw)
    keras, torch = effective_train(loaded, "keras"), effective_train(loaded, "torch")

    assert (keras.optimizer, keras.epochs) == ("adam", 2)
    assert keras.augment == loaded.train.augment and keras.batch_size == loaded.train.batch_size
    assert torch.augment == params.AugmentParams(enabled=True, max_shift=0.05, max_rotation_deg=5.0)
    assert (torch.optimizer, torch.epochs) == (loaded.train.optimizer, loaded.train.epochs)
    assert loaded.train.optimizer == "adamw"  # the shared recipe itself is unchanged


def test_no_overrides_is_the_shared_recipe(raw):
    raw["keras"], raw["torch"] = {}, {}
    loaded = validate(raw)

    assert effective_train(loaded, "keras") == loaded.train == effective_train(loaded, "torch")


def test_unknown_override_key_is_rejected(raw):
    raw["torch"] = {"optimiser": "sgd"}

    (problem,) = problems_of(raw)
    assert problem.startswith("torch.optimiser: unknown key (did you mean 'optimizer'?)")


def test_override_values_are_validated(raw):
    raw["keras"] = {"epochs": 0, "schedule": "linear"}

    assert problems_of(raw) == ["keras.epochs: expected a value of at least 1, got 0",
                                "keras.schedule: expected one of 'constant', 'cosine', 'onecycle', got 'linear'"]


def test_override_section_must_be_a_mapping(raw):
    raw["keras"] = ["adam"]

    assert problems_of(raw) == ["keras: expected a mapping of train: overrides, got ['adam']"]


def test_unknown_framework(raw):
    with pytest.raises(StageError, match="framework 'mxnet' is not in params.yaml's frameworks: keras, torch"):
        effective_train(validate(raw), "mxnet")


def test_the_tuning_level_is_not_a_param(raw):
    raw["train"]["tuning"] = "tuned"
    raw["torch"] = {"switches": ["fused_optimizer"]}

    problems = problems_of(raw)

    assert problems == [
        "torch.switches: set by the stage for each arm, not in params.yaml (the tuning level is dvc.yaml's `train` "
        "(stock) or `train-tuned` stage; replicates.tuned_seeds picks its seeds)",
        "train.tuning: set by the stage for each arm, not in params.yaml (the tuning level is dvc.yaml's `train` "
        "(stock) or `train-tuned` stage; replicates.tuned_seeds picks its seeds)"]


def test_tuned_seeds_must_be_stock_seeds_each_once(raw):
    raw["replicates"].update(seeds=[1, 2], tuned_seeds=[2, 3, 2])

    assert problems_of(raw) == [
        "replicates.tuned_seeds[1]: 3 is not one of replicates.seeds [1, 2]; the tuned level is compared with the "
        "stock level on the same seeds",
        "replicates.tuned_seeds: each seed once, got [2, 3, 2]"]


def test_no_tuned_seeds_is_allowed(raw):
    raw["replicates"]["tuned_seeds"] = []

    assert validate(raw).replicates.tuned_seeds == ()


def test_the_level_and_its_switches_reach_the_recipe_only_when_tuned(raw):
    params = validate(raw)

    tuned = effective_train(params, "torch", "tuned", ("fused_optimizer", "channels_last"))
    stock = effective_train(params, "torch", "stock", ("fused_optimizer",))

    assert (tuned.tuning, tuned.switches) == ("tuned", ("fused_optimizer", "channels_last"))
    assert (stock.tuning, stock.switches) == ("stock", ())
    with pytest.raises(StageError, match="unknown tuning level 'fast'; expected one of stock, tuned"):
        effective_train(params, "torch", "fast")




@pytest.mark.parametrize("written, number", [("1e-05", 1e-05), ("5e-3", 5e-3), ("1E-4", 1e-4), (".5e-2", 0.005)])
def test_a_learning_rate_in_exponent_form_loads_as_that_number(tmp_path, raw, written, number):
    # `dvc exp run -S train.learning_rate=0.00001` writes 1e-05, which YAML 1.1 reads as a string.
    path = write_params(tmp_path, raw)
    path.write_text(path.read_text(encoding="utf-8").replace("learning_rate: 0.005", f"learning_rate: {written}"),
                    encoding="utf-8")

    assert load_params(path).train.learning_rate == number


def test_a_duplicate_key_is_refused_naming_it_and_its_lines(tmp_path, raw):
    path = write_params(tmp_path, raw)
    lines = path.read_text(encoding="utf-8").splitlines()
    first = lines.index("  epochs: 5") + 1
    lines.insert(first, "  epochs: 6")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")

    with pytest.raises(StageError) as caught:
        load_params(path)

    assert str(caught.value) == (f"{path} is not valid YAML: line {first + 1}, column 3: duplicate key 'epochs' "
                                 f"(first at line {first}, column 3)")


def test_a_non_utf8_byte_is_refused_naming_its_line(tmp_path, raw):
    path = write_params(tmp_path, raw)
    data = path.read_bytes().replace(b"optimizer: adamw", b"optimizer: adam\xff")
    path.write_bytes(data)
    offset = data.index(b"\xff")

    with pytest.raises(StageError) as caught:
        load_params(path)

    line = data.count(b"\n", 0, offset) + 1
    assert str(caught.value) == (f"{path} is not UTF-8 text: byte 0xff at line {line}, column 18 "
                                 f"(offset {offset}); save it as UTF-8")


@pytest.mark.parametrize("name", ["..gz", "...gz", ".gz", ".hidden.gz", "sub/file.gz", "../file.gz", "/abs.gz",
                                  "file.gz/", "file"])
def test_a_custom_file_name_that_is_not_a_plain_gz_file_name_is_refused(raw, custom, name):
    custom["files"]["train_images"]["name"] = name
    raw["data"].update(dataset="custom", custom=custom, mirrors=["/srv/mirror"])

    assert problems_of(raw) == [f"data.custom.files.train_images.name: expected a string matching "
                                rf"^[A-Za-z0-9_-][A-Za-z0-9._-]*\.gz$, got {name!r}"]


@pytest.mark.parametrize("name", ["a.gz", "train-images-idx3-ubyte.gz", "t10k.labels_v2.gz", "_x..gz"])
def test_a_plain_gz_file_name_is_accepted(raw, custom, name):
    custom["files"]["train_images"]["name"] = name
    raw["data"].update(dataset="custom", custom=custom, mirrors=["/srv/mirror"])

    assert validate(raw).data.custom.files.train_images.name == name
