"""hubkit.config_io: every config value typed before anything loads, one line naming field, value and type; unknown
keys answered with the nearest valid names."""

from __future__ import annotations

import time

import pytest
from click.testing import CliRunner

from hubkit.cli import cli
from hubkit.config import BuildConfig, TrainConfig
from hubkit.config_io import coerce, config_from_mapping
from hubkit.schema import Picker


@pytest.mark.parametrize("value,kind,want", [
    ("2e-4", float, 2e-4), (3, float, 3.0), ("8", int, 8), (4.0, int, 4), ("true", bool, True), ("off", bool, False),
    (None, int | None, None), ("5", int | None, 5), (["a", "b"], tuple[str, ...], ("a", "b")),
    ("geometry", Picker, Picker.GEOMETRY), (True, str | bool, True),
])
def test_values_become_their_declared_type(value, kind, want):
    got = coerce(value, kind, "field")
    assert got == want and type(got) is type(want)


@pytest.mark.parametrize("value,kind,words", [
    ("fast", float, "'fast' is not a number"), (2.5, int, "2.5 is not an integer"),
    (True, int, "True is not an integer"), ("maybe", bool, "'maybe' is not true or false"),
    (3, str, "3 is not a string"), ("a", tuple[str, ...], "not a list"),
    ("crop", Picker, "'crop' is not one of"), (float("inf"), float, None),
])
def test_a_value_of_another_type_is_one_line_naming_field_value_and_type(value, kind, words):
    if words is None:  # inf is a float: accepted by the type, refused (if at all) by the field's own range check
        assert coerce(value, kind, "f") == value
        return
    with pytest.raises(ValueError) as e:
        coerce(value, kind, "learning_rate", "my.yaml")
    assert str(e.value).startswith("my.yaml: learning_rate: ") and words in str(e.value) and "\n" not in str(e.value)


def test_configs_from_yaml_python_and_overrides_are_typed_alike(tmp_path):
    yaml = tmp_path / "r.yaml"
    yaml.write_text("learning_rate: 2e-4\nmax_steps: '12'\naugment: true\nlora_target_modules: [q_proj, v_proj]\n")
    cfg = TrainConfig.from_yaml(yaml)
    assert cfg.learning_rate == 2e-4 and isinstance(cfg.learning_rate, float)  # YAML read "2e-4" as a string
    assert (cfg.max_steps, cfg.augment, cfg.lora_target_modules) == (12, "full", ("q_proj", "v_proj"))
    assert TrainConfig(learning_rate="1e-3").learning_rate == 1e-3
    assert cfg.with_overrides(max_steps="3").max_steps == 3
    assert BuildConfig(slice_size="64", picker="geometry").slice_size == 64
    with pytest.raises(ValueError, match="overrides: max_steps: 'x' is not an integer"):
        cfg.with_overrides(max_steps="x")


def test_unknown_keys_get_the_nearest_names():
    with pytest.raises(ValueError) as e:
        config_from_mapping(TrainConfig, {"lora_rank": 8, "num_train_epoch": 1}, "typo.yaml")
    msg = str(e.value)
    assert "unknown key 'lora_rank' (did you mean 'lora_r'" in msg
    assert "unknown key 'num_train_epoch' (did you mean 'num_train_epochs'?)" in msg and "valid keys" not in msg
    with pytest.raises(ValueError, match=r"unknown key 'zzz' \(valid keys: attn_implementation, augment"):
        config_from_mapping(TrainConfig, {"zzz": 1})


@pytest.mark.parametrize("body,words", [
    ("learning_rate: fast\n", "learning_rate: 'fast' is not a number"),
    ("lora_rank: 8\n", "did you mean 'lora_r'"),
    ("load_in_4bit: sometimes\n", "load_in_4bit: 'sometimes' is not true or false"),
])
def test_train_refuses_a_bad_recipe_in_one_line_before_loading_anything(tmp_path, body, words):
    yaml = tmp_path / "bad.yaml"
    yaml.write_text(body)
    t0 = time.perf_counter()
    res = CliRunner().invoke(cli, ["train", "--config", str(yaml), "--dataset", "owner/not-read",
                                   "--base-model", "owner/not-loaded", "--output", str(tmp_path / "run")])
    lines = [x for x in res.output.splitlines() if x.strip()]
    assert res.exit_code == 1 and len(lines) == 1 and words in lines[0] and str(yaml) in lines[0], res.output
    assert time.perf_counter() - t0 < 5 and not (tmp_path / "run").exists()
