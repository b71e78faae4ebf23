"""Config validation: every bad value is refused with its dotted key named."""

import pytest

from prune_core.config import ConfigError, ExperimentConfig, parse_overrides


def test_dotted_and_nested_keys_agree():
    a = ExperimentConfig.from_dict({"prune.ratio": 0.3, "finetune.lr": 0.02})
    b = ExperimentConfig.from_dict({"prune": {"ratio": 0.3}, "finetune": {"lr": 0.02}})
    assert a == b and a.prune.ratio == 0.3 and a.finetune.lr == 0.02


@pytest.mark.parametrize("key,value,needle", [
    ("prune.ratio", 1.0, "prune.ratio=1.0"),
    ("prune.ratio", -0.1, "prune.ratio=-0.1"),
    ("prune.method", "magic", "prune.method='magic'"),
    ("prune.imp_fraction", 1.0, "prune.imp_fraction=1.0"),
    ("prune.rounds", -1, "prune.rounds=-1"),
    ("prune.rewind", "bn", "prune.rewind='bn'"),
    ("data.name", "mnist6k", "data.name='mnist6k'"),
    ("model.name", "resnet19", "model.name='resnet19'"),
    ("train.epochs", -1, "train.epochs=-1"),
    ("data.batch_size", 0, "data.batch_size=0"),
    ("prune.scope", "everywhere", "prune.scope"),
    ("prune.colour", "red", "prune.colour: unknown key"),
    ("finetune.lr", "fast", "finetune.lr='fast'"),
])
def test_bad_values_name_the_key(key, value, needle):
    with pytest.raises(ConfigError) as err:
        ExperimentConfig.from_dict({key: value})
    assert needle in str(err.value)
    assert "\n" not in str(err.value)


def test_criterion_follows_method():
    assert ExperimentConfig.from_dict({"prune.method": "snip"}).prune.criterion == "taylor"
    assert ExperimentConfig.from_dict({"prune.method": "imp"}).prune.criterion == "l1"
    with pytest.raises(ConfigError, match="prune.criterion='bn_scale'.*imp"):
        ExperimentConfig.from_dict({"prune.method": "imp", "prune.criterion": "bn_scale"})


def test_base_hash_ignores_pruning_and_finetune_but_not_training():
    a = ExperimentConfig.from_dict({"prune.ratio": 0.3})
    assert a.base_hash() == a.replace(**{"prune.ratio": 0.7, "finetune.lr": 0.5}).base_hash()
    assert a.base_hash() != a.replace(**{"train.lr": 0.05}).base_hash()
    assert a.base_hash() != a.replace(**{"runtime.seed": 1}).base_hash()
    assert a.run_hash() != a.replace(**{"prune.ratio": 0.7}).run_hash()


def test_yaml_strings_are_coerced(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("prune:\n  ratio: '0.25'\n  lamp: 'true'\n  scope: global\ntrain.epochs: 2\n")
    cfg = ExperimentConfig.from_yaml(path)
    assert cfg.prune.ratio == 0.25 and cfg.prune.lamp is True and cfg.train.epochs == 2


def test_unreadable_yaml_is_one_line(tmp_path):
    with pytest.raises(ConfigError, match="cannot read"):
        ExperimentConfig.from_yaml(tmp_path / "absent.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("prune: [unclosed\n")
    with pytest.raises(ConfigError) as err:
        ExperimentConfig.from_yaml(bad)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("values", [
    {"prune.method": "intra-kernel", "model.name": "vgg16_bn"},
    {"prune": {"method": "intra-kernel"}, "model": {"name": "vgg16_bn"}},
    parse_overrides(["prune.method=intra-kernel", "model.name=vgg16_bn"]),
])
def test_other_spellings_of_registry_names_are_normalised(values):
    cfg = ExperimentConfig.from_dict(values)
    assert cfg.prune.method == "intra_kernel" and cfg.model.name == "vgg16"
    assert cfg == ExperimentConfig.from_dict({"prune.method": "intra_kernel", "model.name": "vgg16"})


@pytest.mark.parametrize("word,read", [("off", "off"), ("no", "off"), ("false", "off"), ("on", "on"), ("yes", "on")])
def test_a_yaml_boolean_for_a_text_key_reads_as_set_reads_it(tmp_path, word, read):
    path = tmp_path / "c.yaml"
    path.write_text(f"runtime:\n  progress: {word}\nprune.method: intra-kernel\n")
    from_file = ExperimentConfig.from_yaml(path)
    assert from_file.runtime.progress == read and from_file.prune.method == "intra_kernel"
    assert from_file == ExperimentConfig.from_dict(parse_overrides([f"runtime.progress={read}",
                                                                    "prune.method=intra-kernel"]))


def test_on_and_off_read_as_booleans_for_a_boolean_key(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("runtime:\n  amp: 'off'\n  save_model: 'on'\n")
    cfg = ExperimentConfig.from_yaml(path)
    assert cfg.runtime.amp is False and cfg.runtime.save_model is True


@pytest.mark.parametrize("text,needle", [
    ("prune:\n  scope: off\n", "prune.scope=False: expected one of global, local"),
    ("train:\n  optimizer: yes\n", "train.optimizer=True: expected one of adamw, sgd"),
    ("data:\n  root: no\n", "data.root=False: expected a string"),
    ("prune.method: on\n", "prune.method=True: expected a string"),
])
def test_a_yaml_boolean_a_text_key_cannot_take_is_one_line(tmp_path, text, needle):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as err:
        ExperimentConfig.from_yaml(path)
    assert needle in str(err.value) and "\n" not in str(err.value)
