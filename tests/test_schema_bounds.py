"""The workflow schema's bounds match what each step accepts (issue 19): every numeric
field of config/schema.yaml that the workflow passes to `wwgan train` or to a script has
the same minimum and maximum as the click option it feeds, so a value the schema admits is
never refused at run time, hours into a workflow, and the schema refuses nothing a step
would take."""

import math

import click
import fixed_fake_critics
import pytest
import yaml

import critic_probes
import fid
import motivating_example
import neighbours
import wwgan
from conftest import ROOT

SCHEMA = yaml.safe_load((ROOT / "config" / "schema.yaml").read_text())


def _train(name):
    return wwgan.train_command, name


# schema field (a path through `properties`; "*" for the items or values of a collection)
# -> the options it is passed to (rules/*.smk and rules/common.py)
FEEDS = {
    "seeds.*": [_train("seed")],
    "holdout": [_train("holdout"), (fid.cli.commands["stats"], "holdout"),
                (neighbours.cli, "holdout")],
    **{f"variants.*.{name}": [_train(name)]
       for name in ("lam", "lipschitz_target", "alpha", "gamma", "n_critic", "lr")},
    **{f"train.{name}": [_train(name)]
       for name in ("iterations", "width", "batch_size", "snapshot_every", "n_critic",
                    "max_images", "celeba_crop", "log_every", "sample_every",
                    "checkpoint_every", "checkpoint_minutes")},
    "critic_runs.iterations": [_train("iterations")],
    "critic_runs.snapshot_every": [_train("snapshot_every")],
    "critic_runs.match.target": [(critic_probes.cli.commands[c], "target")
                                 for c in ("shift", "noise")],
    "fid_stats_images": [(fid.cli.commands["stats"], "num_images")],
    "curve_samples": [(fid.cli.commands["curve"], "num_samples")],
    "fid_ttur_samples": [(fid.cli.commands["curve"], "ttur_samples")],
    "shift.num_images": [(critic_probes.cli.commands["shift"], "num_images")],
    "noise.num_images": [(critic_probes.cli.commands["noise"], "num_images")],
    "neighbours.num_queries": [(neighbours.cli, "num_queries")],
    "neighbours.num_candidates": [(neighbours.cli, "num_candidates")],
    "motivating_example.size": [(motivating_example.cli, "size")],
    **{f"datasets.*.{name}": [_train(name)]
       for name in ("iterations", "snapshot_every", "max_images")},
    "fixed_fake.sources.*.seed": [_train("seed")],  # the run the pool is drawn from
    "fixed_fake.pool.num_train": [(fixed_fake_critics.cli.commands["pool"], "num_train")],
    "fixed_fake.pool.num_eval": [(fixed_fake_critics.cli.commands["pool"], "num_eval")],
    "fixed_fake.groups.*.families.*.*": [(fixed_fake_critics.cli.commands["train"], "lams")],
    "fixed_fake.groups.*.width": [(fixed_fake_critics.cli.commands["train"], "width")],
    **{f"fixed_fake.{name}": [(fixed_fake_critics.cli.commands["train"], name)]
       for name in ("steps", "batch_size", "num_images", "shift_images", "real_images")},
}  # fmt: skip
# Stricter in the schema on purpose (the option's range still holds the schema's): a
# workflow run must train (iterations >= 1) and leave snapshots for the FID curves and
# the critic probes (snapshot_every >= 1; 0 turns them off in `wwgan train`).
STRICTER = {"train.iterations", "critic_runs.iterations", "train.snapshot_every",
            "critic_runs.snapshot_every", "datasets.*.iterations",
            "datasets.*.snapshot_every"}  # fmt: skip
# numeric fields that reach no click option: the launcher's process count and the
# OMP_NUM_THREADS of the jobs
NOT_A_FLAG = {"train.nproc_per_node", "threads.train", "threads.eval",
              # a count n of critic seeds (--seed 0 .. n-1), and which snapshot file a
              # fake pool is drawn from (its path, not a number, reaches the script)
              "fixed_fake.groups.*.seeds", "fixed_fake.sources.*.iteration",
              # how many of `seeds` a dataset's runs use: each seed reaches --seed itself
              "datasets.*.max_seeds"}  # fmt: skip


def _resolve(node: dict) -> dict:
    while "$ref" in node:
        node = SCHEMA["definitions"][node["$ref"].rsplit("/", 1)[1]]
    return node


def _numeric_fields(node: dict, path: str = ""):
    """(path, schema node) of every number or integer field under `node`."""
    node = _resolve(node)
    if node.get("type") in ("number", "integer"):
        yield path, node
    children = dict(node.get("properties", {}))
    for key in ("items", "additionalProperties"):
        if isinstance(node.get(key), dict):
            children["*"] = node[key]
    for name, child in children.items():
        yield from _numeric_fields(child, f"{path}.{name}" if path else name)


def _closed(low, high, low_open, high_open, integer):
    """Bounds as (min, max) of a closed range (integers) or with openness (numbers)."""
    low, high = -math.inf if low is None else low, math.inf if high is None else high
    if integer:
        return low + low_open, high - high_open
    return low, high, bool(low_open), bool(high_open)


def _schema_bounds(node: dict, integer: bool):
    low = node.get("minimum", node.get("exclusiveMinimum"))
    high = node.get("maximum", node.get("exclusiveMaximum"))
    return _closed(low, high, "exclusiveMinimum" in node, "exclusiveMaximum" in node, integer)


def _option_bounds(command: click.Command, name: str, integer: bool):
    (param,) = [p for p in command.params if p.name == name]
    kind = param.type
    if isinstance(kind, click.types._NumberRangeBase):
        return _closed(kind.min, kind.max, kind.min_open, kind.max_open, integer)
    assert kind in (click.INT, click.FLOAT), (command.name, name, kind)
    return _closed(None, None, False, False, integer)


FIELDS = dict(_numeric_fields(SCHEMA))


def test_every_numeric_schema_field_is_checked_or_reaches_no_flag():
    """A new numeric field needs its line in FEEDS (or NOT_A_FLAG), so this test sees it."""
    assert set(FIELDS) == set(FEEDS) | NOT_A_FLAG, set(FIELDS) ^ (set(FEEDS) | NOT_A_FLAG)


@pytest.mark.parametrize("field", sorted(FEEDS))
def test_schema_bounds_equal_the_bounds_of_the_options_they_feed(field):
    node = FIELDS[field]
    integer = node["type"] == "integer"
    schema = _schema_bounds(node, integer)
    for command, option in FEEDS[field]:
        step = _option_bounds(command, option, integer)
        if field in STRICTER:  # the schema admits nothing the step refuses
            assert step[0] <= schema[0] and schema[1] <= step[1] and schema != step, field
        else:
            assert schema == step, (field, command.name, option)


def test_a_value_the_schema_admits_is_one_the_step_accepts():
    """The comparison above, checked on values: each side's lowest value is accepted by
    the other, and the value just below it refused by both."""
    field, (command, option) = "curve_samples", FEEDS["curve_samples"][0]
    low = _schema_bounds(FIELDS[field], True)[0]
    (param,) = [p for p in command.params if p.name == option]
    assert param.type.convert(low, param, None) == low
    with pytest.raises(click.BadParameter):
        param.type.convert(low - 1, param, None)
