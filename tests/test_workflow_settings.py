"""The workflow's settings (rules/common.py): a run's typed settings, the tag of its
directory against wwgan's own identity and resume check, the `wwgan train` flags built
from the same fields, and the cost estimate against measured times."""

import importlib.util
import shlex
import sys
from pathlib import Path

import pytest
import yaml

import wwgan

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("workflow_common", ROOT / "rules" / "common.py")
common = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = common  # dataclasses look their module up there
_spec.loader.exec_module(common)


def preset(name: str, **overrides) -> dict:
    return common.load_settings(ROOT, {"preset": name, **overrides})[1]


def paper_fields(**changes) -> dict:
    fields = common.run_fields(preset("paper"), "fid", "cifar10", "wwgan")
    return {**fields, **changes}


# A different value for every identity field the workflow can set (not channels,
# latent_dim, beta1, beta2: TrainConfig-only, fixed by the optimizer preset for the betas).
IDENTITY_CHANGES = {
    "dataset": "celeba",
    "image_size": 64,
    "loss": "wgan-gp",
    "batch_size": 32,
    "n_critic": 3,
    "lam": 450,
    "lipschitz_target": 2.0,
    "one_sided": True,
    "density_at": "fake",
    "density_scale": "unit-mass",
    "alpha": 0.5,
    "neighborhood": 8,
    "gamma": 2.0,
    "lr": 5e-4,
    "width": 256,
    "max_images": 1000,
    "holdout": 100,
    "celeba_crop": 140,
    "optimizer": "robustness",  # through lr, beta1 and beta2
}


def test_every_identity_field_is_covered_by_the_changes_checked_below():
    fixed = {"seed", "channels", "latent_dim", "beta1", "beta2"}
    settable = set(wwgan.IDENTITY_FIELDS) - fixed - {"lam_follows"}  # needs wgan-gp: below
    assert settable <= set(IDENTITY_CHANGES)


def test_the_tag_changes_when_the_control_tracks_wwgans_strength():
    control = paper_fields(loss="wgan-gp", lam=10)
    tracking = paper_fields(loss="wgan-gp", lam=10, lam_follows="intensity")
    assert common.run_tag(tracking) != common.run_tag(control)
    assert "--lam-follows intensity" in common.train_flags(tracking)


@pytest.mark.parametrize("name", sorted(IDENTITY_CHANGES))
def test_the_tag_changes_with_each_identity_field(name):
    base, changed = paper_fields(), paper_fields(**{name: IDENTITY_CHANGES[name]})
    assert common.run_tag(changed) != common.run_tag(base)
    # and wwgan's resume check refuses a checkpoint of the base config under the change
    saved = {"config": common.train_config(base).to_dict()}
    with pytest.raises(wwgan.WWGANError, match="different model or config"):
        wwgan.check_resumable(saved, common.train_config(changed), Path("checkpoint.pt"))


@pytest.mark.parametrize(
    "name, value",
    [("iterations", 5), ("label", "another name"), ("log_every", 7), ("snapshot_every", 3),
     ("checkpoint_every", 11), ("lam", 10)],
)  # fmt: skip
def test_the_tag_stays_when_a_non_identity_field_changes(name, value):
    """Length, logging and labels keep the directory; so does the default lam written
    out (10 and 10.0 are one value to the trainer)."""
    base, changed = paper_fields(), paper_fields(**{name: value})
    assert common.run_tag(changed) == common.run_tag(base)
    saved = {"config": common.train_config(base).to_dict()}
    wwgan.check_resumable(saved, common.train_config(changed), Path("checkpoint.pt"))


def test_the_tag_is_the_hash_of_trainconfig_identity():
    import hashlib
    import json

    fields = paper_fields()
    identity = wwgan.TrainConfig(**fields).identity(exclude=("seed",))
    expected = hashlib.sha1(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:8]
    assert common.run_tag(fields) == expected
    # the seed is in the run's path (seed<k>/), not in its tag
    assert common.run_tag(paper_fields(seed=4)) == common.run_tag(fields)
    # YAML's integer lam is the trainer's float: the same tag either way
    assert common.run_tag(paper_fields(lam=450)) == common.run_tag(paper_fields(lam=450.0))


@pytest.mark.parametrize("name", ["paper", "cpu", "smoke"])
def test_the_train_flags_give_wwgan_the_same_run(name):
    """The flags the rule passes, parsed by `wwgan train`'s own click command, build a
    TrainConfig with every field the workflow set, hence the same identity and tag."""
    settings = preset(name)
    for group in ("fid", "critic"):
        for variant in settings["variants"]:
            fields = common.run_fields(settings, group, next(iter(settings["datasets"])), variant)
            argv = shlex.split(common.train_flags(fields)) + ["--out", "run"]
            params = wwgan.cli.commands["train"].make_context("train", argv).params
            params.pop("no_progress")
            parsed = wwgan.TrainConfig(**{**params, "neighborhood": int(params["neighborhood"])})
            expected = common.train_config(fields)
            assert parsed.identity() == expected.identity()
            assert {k: getattr(parsed, k) for k in fields} == {
                k: getattr(expected, k) for k in fields
            }


def test_the_schema_admits_only_trainconfig_names_for_run_settings():
    schema = yaml.safe_load((ROOT / "config" / "schema.yaml").read_text())
    props = schema["properties"]
    variant_keys = set(props["variants"]["additionalProperties"]["properties"]) - {"label"}
    train_keys = set(props["train"]["properties"]) - set(common.WORKFLOW_KEYS)
    fields = {f for f in wwgan.TrainConfig.__dataclass_fields__}
    assert variant_keys <= fields and train_keys <= fields
    assert not (variant_keys | train_keys) & {"out", "device", "data_root", "seed", "dataset"}


def test_the_cpu_estimate_is_within_a_factor_two_of_the_cpu_presets_measured_trainings():
    """README, Results: the CPU preset's 12 trainings took 5,274 s of job time in all."""
    settings = preset("cpu")
    runs = [common.run_fields(settings, "fid", "cifar10", v) for v in settings["variants"]] * len(
        settings["seeds"]
    )
    plan = common.Plan(runs, runs, 1, False, {"cifar10"}, True, True)
    seconds = common.estimate_cpu_seconds(settings, plan)["training"]
    assert 5274 / 2 < seconds < 5274 * 2, seconds


def test_the_h200_estimate_matches_the_epochs_measured_on_the_h200():
    """The preflight's GPU cost rests on benchmarks/results/device-check-h200.json: one
    CIFAR-10 epoch (157 iterations) at the paper's width through the trainer, WGAN-GP
    and WWGAN. The estimate of that epoch lies between the two measured epochs (to 5%),
    64x64 costs what bench item 4 measured there, and n_critic and batch scale it."""
    import json

    report = json.loads((ROOT / "benchmarks/results/device-check-h200.json").read_text())
    epochs = report["sections"]["epoch"]["losses"]
    measured = sorted(e["seconds_per_iteration"] * e["iterations"] for e in epochs.values())
    one_epoch = paper_fields(width=512, image_size=32, iterations=157)
    seconds = common.estimate_h200_training_seconds(common.Plan([one_epoch], [], 0, *[None] * 4))
    assert measured[0] * 0.95 < seconds < measured[1] * 1.05, (seconds, measured)
    rates = report["sections"]["bench_eager"]["summary"]
    per_64 = [
        1 / rates[f"throughput_64_{loss}_iterations_per_second"] for loss in ("wgan-gp", "wwgan")
    ]
    at_64 = paper_fields(image_size=64, iterations=1)
    seconds = common.estimate_h200_training_seconds(common.Plan([at_64], [], 0, *[None] * 4))
    assert min(per_64) * 0.95 < seconds < max(per_64) * 1.05, (seconds, per_64)
    halved = paper_fields(image_size=64, iterations=1, n_critic=2)  # 3 of 6 steps
    plan = common.Plan([halved], [], 0, *[None] * 4)
    assert common.estimate_h200_training_seconds(plan) == pytest.approx(seconds / 2)


def test_the_cost_model_reproduces_its_measured_points():
    for width, seconds in common.CPU_SECONDS_PER_ITERATION.items():
        fields = paper_fields(width=width, image_size=32, batch_size=64, n_critic=5)
        assert common.cpu_seconds_per_iteration(fields) == pytest.approx(seconds)
    # 64x64 has four times the pixels
    fields = paper_fields(image_size=64)
    assert common.cpu_seconds_per_iteration(fields) == pytest.approx(4 * 4.7)
