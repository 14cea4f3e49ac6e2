"""Two variants that set one key differently are refused, naming both and the key."""

from __future__ import annotations

import pytest
from omegaconf import OmegaConf

from engine.config.compose import conf_dir
from engine.config.errors import ConfigError
from engine.config.variants import check_variant_conflicts, load_variant_files


def variants(*names: str) -> dict[str, dict]:
    return load_variant_files({n: conf_dir() / "variant" / f"{n}.yaml" for n in names}, names)


@pytest.mark.parametrize(("names", "key"), [
    (("rc", "mc"), "formulation"),
    (("mc", "rc"), "formulation"),
    (("0shot", "3shot"), "num_fewshot"),
    (("norm_none", "norm_per_char"), "normalization"),
    (("cot", "zero"), "chain_of_thought"),
    (("mc", "bpb"), "formulation"),
])
def test_conflicting_shipped_variants_are_refused(names, key):
    with pytest.raises(ConfigError) as err:
        check_variant_conflicts(variants(*names))
    text = str(err.value)
    assert f"'{names[0]}'" in text and f"'{names[1]}'" in text and f"`{key}:" in text
    assert "\n" not in text and "Fix:" in text


@pytest.mark.parametrize("names", [
    ("rc", "5shot"), ("mc", "3shot"), ("rc", "norm_per_char"), ("olmes",), ("cot",), ("pass_at_10",), ("judge",),
    ("cot", "pass_at_10"), (),
])
def test_compatible_variants_pass(names):
    check_variant_conflicts(variants(*names))


def test_nested_keys_conflict_only_when_they_differ():
    check_variant_conflicts({"a": {"generation": {"max_tokens": 512}}, "b": {"generation": {"temperature": 0.8}}})
    check_variant_conflicts({"a": {"stop": ["x"]}, "b": {"stop": ["x"]}, "c": None})
    with pytest.raises(ConfigError, match=r"'a' sets `generation.max_tokens: 512`.*'b' sets `generation.max_tokens: 64`"):
        check_variant_conflicts({"a": {"generation": {"max_tokens": 512}}, "b": {"generation": {"max_tokens": 64}}})
    with pytest.raises(ConfigError, match="`task.generation`"):  # a whole section against one of its keys
        check_variant_conflicts({"a": {"generation": None}, "b": {"generation": {"max_tokens": 64}}})


def test_every_shipped_suite_spec_is_conflict_free():
    specs = []
    for path in sorted((conf_dir() / "suite").glob("*.yaml")):
        specs += OmegaConf.load(path).get("tasks", [])
    assert specs
    for spec in specs:
        check_variant_conflicts(variants(*spec.split(":")[1:]))


def test_load_variant_files_keeps_order_and_content():
    loaded = load_variant_files({n: conf_dir() / "variant" / f"{n}.yaml" for n in ("mc", "3shot")}, ["mc", "3shot"])
    assert list(loaded) == ["mc", "3shot"]
    assert loaded["mc"] == {"formulation": "mc", "primary_metric": "acc"} and loaded["3shot"] == {"num_fewshot": 3}
