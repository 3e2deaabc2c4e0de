import pytest

from mtm_engine import config
from mtm_engine.config import load_spec, spec_from_dict
from mtm_engine.errors import ConfigError
from mtm_engine.sweep_spec import load_sweep


def test_quickstart_is_shipped_and_valid():
    spec = load_spec()
    assert (spec.name, spec.data.dataset, spec.model.backbone, spec.loss.name) == (
        "quickstart", "digits", "convnet", "push_pull")
    assert spec.classifiers == ("cos", "cos_ce", "euc", "euc_ce")


def test_overrides_are_read_as_toml_values():
    spec = load_spec(overrides=["train.lr=0.01", "model.dim=7", "data.download=false",
                                "eval.classifiers=cos,euc", "name=mine", "data.root=/tmp/x"])
    assert spec.train.lr == 0.01 and spec.model.dim == 7 and spec.data.download is False
    assert spec.eval.classifiers == ("cos", "euc") and spec.name == "mine" and spec.data.root == "/tmp/x"


def test_spec_round_trips_through_a_plain_dict():
    spec = load_spec(overrides=["loss.name=proximity", "loss.r=1000"])
    again = spec_from_dict(spec.to_dict())
    assert again == spec


def test_pure_head_defaults_to_its_classifiers():
    spec = load_spec(overrides=["model.head=pure", "loss.name=cross_entropy"])
    assert spec.classifiers == ("pure", "cos", "euc")   # the pure head is scored by its own classifier first


@pytest.mark.parametrize("override, message", [
    ("loss.r=1.5", "loss.r = 1.5: push_pull needs r < 1 (at r >= 1 the loss is unbounded below); try 0.95"),
    ("loss.name=hinge", "loss.name = 'hinge': unknown; choose one of euclidean, cosine, proximity, proximity_authors, "
                        "push_pull, comparison, proxy_anchor, proxy_nca, normalized_softmax, arcface, cross_entropy"),
    ("model.backbone=vgg", "model.backbone = 'vgg': unknown; choose one of convnet, resnet18"),
    ("data.dataset=svhn", "data.dataset = 'svhn': unknown; choose one of digits, mnist"),
    ("train.lr=-1", "train.lr = -1.0: must be above 0"),
    ("train.epochs=2.5", "train.epochs = 2.5: must be a whole number"),
    ("train.epochs=lots", "train.epochs = 'lots': must be a whole number"),
    ("train.bogus=1", "train.bogus: unknown key; the keys of [train] are epochs"),
    ("optim.lr=1", "--set optim.lr: unknown section 'optim'"),
    ("model.depth=0", "model.depth = 0: must be at least 1"),
    ("model.shortcut=true", "model.shortcut = true: needs a convnet with model.depth >= 2"),
    ("data.val_fraction=1", "data.val_fraction = 1.0: must be in [0, 1)"),
    ("model.pretrained=true", "model.pretrained = true: only the resnet backbones"),
    ("eval.classifiers=pure", "eval.classifiers: 'pure' does not apply to a 'mtm' head"),
    ("model.head=pure", "loss.name = 'push_pull': does not train a 'pure' head; choose one of cross_entropy"),
    ("lr", "--set 'lr': expected section.key=value"),
])
def test_bad_values_name_the_key_the_value_and_the_fix(override, message):
    with pytest.raises(ConfigError) as info:
        load_spec(overrides=[override])
    assert str(info.value).startswith(message)
    assert "\n" not in str(info.value)


def test_shortcut_is_refused_where_it_would_build_the_same_network():
    for overrides in (["model.backbone=resnet18"], ["model.depth=2", "model.stages=1"]):
        with pytest.raises(ConfigError, match=r"^model.shortcut = true: needs a convnet with model.depth >= 2 and "):
            load_spec(overrides=[*overrides, "model.shortcut=true"])
    assert load_spec(overrides=["model.depth=2", "model.shortcut=true"]).model.shortcut


def test_malformed_and_missing_files(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("[train\nepochs = 3\n")
    with pytest.raises(ConfigError, match=r"bad.toml: not valid TOML"):
        load_spec(bad)
    with pytest.raises(ConfigError, match="does not exist"):
        load_spec(tmp_path / "absent.toml")
    unknown = tmp_path / "unknown.toml"
    unknown.write_text("[optimiser]\nlr = 1\n")
    with pytest.raises(ConfigError, match="unknown section 'optimiser'"):
        load_spec(unknown)


def test_every_catalogue_entry_s_function_is_where_it_says():
    from mtm_engine.catalogue import BACKBONES, DATASETS, LOSSES, load, loss_function
    from mtm_engine.records import METRICS

    assert all(callable(load(entry.function)) for entry in (*DATASETS.values(), *BACKBONES.values()))
    assert all(callable(loss_function(name)) for name in LOSSES)
    assert all(callable(load(m.function)) for m in METRICS.values() if m.function)
    assert config.CHOICES["model.backbone"] == tuple(BACKBONES)


def test_experiment_files_and_every_paper_preset_validate():
    import tomllib
    from pathlib import Path

    experiments = Path(__file__).parents[1] / "experiments"
    files = sorted(experiments.rglob("*.toml"))
    sweeps = [p for p in files if "tune" in tomllib.loads(p.read_text()) and "paper" in p.parts]
    for protocol in (experiments / "paper", experiments / "paper" / "authors"):
        assert len(list(protocol.glob("*/RN*.toml"))) == 75          # 5 datasets x 3 ResNets x 5 losses
        assert len(list((protocol / "best").rglob("*.toml"))) == 75   # Tables 8-9
    for path in files:
        load_spec(path)
        if "tune" in tomllib.loads(path.read_text()):
            load_sweep(path)
    for path in sweeps:
        spec, tune = load_sweep(path)
        assert tune.num_samples == 50 and tune.max_epochs == 30 and "train.lr" in tune.space


def test_sweep_settings_and_space_are_validated(tmp_path):
    spec, tune = load_sweep(overrides=["tune.num_samples=4", "tune.max_epochs=3"])
    assert (tune.num_samples, tune.max_epochs, tune.metric) == (4, 3, "cos")
    assert tune.space == {"train.lr": {"loguniform": [1e-5, 1e-2]}, "model.dim": {"integer": [200, 2000]}}
    bad = tmp_path / "bad.toml"
    bad.write_text('[tune.space]\n"loss.r" = {uniform = [0.5, 1.5]}\n')
    with pytest.raises(ConfigError, match=r"tune.space.loss.r: the value 1.5 would make an invalid run: loss.r = 1.5"):
        load_sweep(bad)
    bad.write_text('[tune.space]\n"train.rate" = {uniform = [0.5, 1.5]}\n')
    with pytest.raises(ConfigError, match="'train.rate' is not a configuration key"):
        load_sweep(bad)
    with pytest.raises(ConfigError, match="tune.search = 'grid'"):
        load_sweep(overrides=["tune.search=grid"])
    bad.write_text('[tune.space]\n"model.dim" = {uniform = [16, 32]}\n')   # every draw would be fractional
    with pytest.raises(ConfigError, match="uniform draws fractional values, and model.dim is a whole number"):
        load_sweep(bad)


def test_loss_r_defaults_per_loss_where_a_config_leaves_it_out():
    """One default per loss: proximity 1e4 (the paper's range is 1e3..1e6), push-and-pull 0.95 (r < 1),
    and 0 for losses without r; an r given in the config is kept."""
    from mtm_engine.config import spec_from_dict

    assert spec_from_dict({"loss": {"name": "proximity"}}).loss.r == 1e4
    assert spec_from_dict({"loss": {"name": "push_pull"}}).loss.r == 0.95
    assert spec_from_dict({"loss": {"name": "euclidean"}}).loss.r == 0.0
    assert spec_from_dict({"loss": {"name": "proximity", "r": 2000.0}}).loss.r == 2000.0


def test_a_grid_sweep_plans_num_samples_trials_for_every_grid_point():
    """Ctrl-C of a grid sweep exited 0 with a "best trial": its ended trials were compared with num_samples alone."""
    from mtm_engine.sweep_spec import planned_trials

    _, t = load_sweep(overrides=["tune.num_samples=2", 'tune.space={"loss.name" = {grid = ["proximity", "push_pull"]}, '
                                 '"train.lr" = {grid = [1e-3, 2e-3, 3e-3]}, "loss.r" = {uniform = [0.1, 0.9]}}'])
    assert planned_trials(t.to_dict()) == 2 * 2 * 3
    _, plain = load_sweep(overrides=["tune.num_samples=5"])
    assert planned_trials(plain.to_dict()) == 5


def test_each_key_is_declared_once_and_mtm_keys_lists_them(mtm_env):
    """A key's choices come from its type (a Literal), its meaning from the reference, its default from the
    dataclass; `mtm keys` shows the three together, for every key of the spec."""
    import json
    import subprocess

    from conftest import MTM

    from mtm_engine.config import CHOICES, Spec, spec_from_dict
    from mtm_engine.errors import ConfigError
    from mtm_engine.records import flatten_spec

    assert CHOICES["model.head"] == ("mtm", "pure") and CHOICES["train.schedule"] == ("none", "cosine", "onecycle")
    with pytest.raises(ConfigError, match=r"model\.stem = 'big'.*imagenet, cifar"):
        spec_from_dict({}, ["model.stem=big"])
    listed = json.loads(subprocess.run(MTM + ["keys", "--json"], capture_output=True, text=True, env=mtm_env,
                                       timeout=60).stdout)
    defaults = flatten_spec(Spec().to_dict())
    assert set(listed) == set(defaults)
    assert listed["train.lr"]["default"] == 0.001 and listed["loss.reduction"]["choices"] == ["sum", "mean"]
    assert listed["train.lr"]["meaning"] == "learning rate"
