"""The workflow's settings (rules/common.py): a run's typed settings, the tag of its
directory against wwgan's own identity and resume check, the `wwgan train` flags built
from the same fields, and the cost estimate against measured times."""

import importlib.util
import re
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
    """The CPU preset's CIFAR-10 trainings (3 seeds each), measured twice by job time: the
    paper's four variants, 5,274 s with tests sharing the cores (2026-12-02); with the
    tracking control, 3,084 s alone (2026-12-05, README Results)."""
    settings = preset("cpu")
    for variants, measured in ((4, 5274), (5, 3084)):
        runs = [common.run_fields(settings, "fid", "cifar10", v)
                for v in list(settings["variants"])[:variants]] * 3  # fmt: skip
        plan = common.Plan(runs, runs, 1, False, {"cifar10"}, True, True)
        seconds = common.estimate_cpu_seconds(settings, plan)["training"]
        assert measured / 2 < seconds < measured * 2, (variants, seconds)


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


# ---------------------------------------------------------------------------------------
# fixed-fake critics (issue 21)
# ---------------------------------------------------------------------------------------


def test_the_schema_and_the_workflow_know_the_scripts_families():
    import fixed_fake_critics

    schema = yaml.safe_load((ROOT / "config" / "schema.yaml").read_text())
    group = schema["properties"]["fixed_fake"]["properties"]["groups"]["additionalProperties"]
    names = group["properties"]["families"]["propertyNames"]["enum"]
    assert sorted(names) == sorted(fixed_fake_critics.FAMILIES)
    assert set(common.FIXED_FAKE_CONTROLS) < set(fixed_fake_critics.FAMILIES)


def test_the_cpu_presets_fixed_fake_shards_pair_every_family_by_seed():
    shards = common.fixed_fake_shards(preset("cpu"))
    assert len(shards) == len(set(shards)) == 140
    sweep = {(s, f) for g, s, f, _ in shards if g == "sweep"}
    assert sweep == {
        (s, f)
        for s in ("early-wgan-gp", "final-wwgan")
        for f in ("wgan-gp", "wwgan-intensity", "wwgan-unit-mass")
    }
    for key in {(g, s, f) for g, s, f, _ in shards}:
        assert sorted(k for *rest, k in shards if tuple(rest) == key) == list(range(10))
    assert {s for g, s, _, _ in shards if g == "ablation"} == {"early-wgan-gp"}
    # the smoke preset's tiny design: 1 pool x (2 families + sobolev) x 2 seeds
    assert len(common.fixed_fake_shards(preset("smoke"))) == 6


def test_the_ablation_pairs_each_part_with_strength_and_with_its_full_penalty():
    families = ["wgan-gp", "wwgan-intensity", "wwgan-unit-mass", "wwgan-intensity-alpha0",
                "wwgan-unit-mass-8nb", "sobolev", "wgan-gp-low-target"]  # fmt: skip
    assert common.fixed_fake_ablation_pairs(families) == [
        "wwgan-intensity:wgan-gp",
        "wwgan-unit-mass:wgan-gp",
        "wwgan-intensity-alpha0:wgan-gp",
        "wwgan-intensity-alpha0:wwgan-intensity",
        "wwgan-unit-mass-8nb:wgan-gp",
        "wwgan-unit-mass-8nb:wwgan-unit-mass",
        "sobolev:wgan-gp",
        "sobolev:wwgan-intensity",
        "wgan-gp-low-target:wgan-gp",
    ]
    # a pair whose reference was not trained is left out
    assert common.fixed_fake_ablation_pairs(["wgan-gp", "wwgan-intensity-8nb"]) == [
        "wwgan-intensity-8nb:wgan-gp"
    ]


@pytest.mark.parametrize(
    "override, message",
    [
        ({"sources": {"early-wgan-gp": {"iteration": 700}}}, "no snapshot at 700 (every 500 up to 1500)"),
        ({"sources": {"early-wgan-gp": {"iteration": 2000}}}, "no snapshot at 2000"),
        ({"sources": {"final-wwgan": {"variant": "wwgan-unit-mass", "seed": 7}}}, "seed: 7 is not among cifar10's seeds"),
        ({"groups": {"ablation": {"sources": ["late"]}}}, "ablation.sources: unknown late"),
        ({"groups": {"ablation": {"families": {"wgan-gp": [5]}}}}, "wgan-gp on early-wgan-gp is also in sweep"),
        ({"num_images": 2000}, "num_images must not exceed fixed_fake.pool.num_eval"),
        ({"shift_images": 300}, "shift_images must not exceed"),
    ],
)  # fmt: skip
def test_a_fixed_fake_setting_the_runs_cannot_serve_is_refused(override, message):
    with pytest.raises(common.SettingsError, match=re.escape(message)):
        preset("cpu", fixed_fake=override)


def test_fixed_fake_sources_must_be_trained_on_its_dataset():
    sources = {"early-wgan-gp": {"iteration": 200}, "final-wwgan": {"variant": "wwgan-unit-mass"}}
    with pytest.raises(common.SettingsError, match="wwgan-unit-mass is not trained on celeba"):
        preset("cpu", fixed_fake={"dataset": "celeba", "sources": sources})
    # CelebA's own length (datasets.celeba): snapshots every 200 up to 400
    with pytest.raises(common.SettingsError, match="no snapshot at 500 .every 200 up to 400."):
        preset("cpu", fixed_fake={"dataset": "celeba"})
    celeba = preset(
        "cpu", fixed_fake={"dataset": "celeba", "sources": {"early-wgan-gp": {"iteration": 200}}}
    )
    assert len(common.fixed_fake_shards(celeba)) == 140


def test_a_dataset_sets_its_own_length_images_and_variants(capsys):
    cpu = preset("cpu")
    assert common.dataset_variants(cpu, "celeba") == ["wgan-gp", "wwgan"]
    assert common.dataset_variants(cpu, "cifar10") == list(cpu["variants"])
    # CelebA's runs cost more: the first 3 of the 5 seeds; a --config subset of `seeds`
    # narrows both
    assert common.dataset_seeds(cpu, "cifar10") == [0, 1, 2, 3, 4]
    assert common.dataset_seeds(cpu, "celeba") == [0, 1, 2]
    few = preset("cpu", seeds=[4, 0])
    assert common.dataset_seeds(few, "celeba") == [4, 0] == common.dataset_seeds(few, "cifar10")
    celeba = common.run_fields(cpu, "fid", "celeba", "wwgan")
    assert (celeba["iterations"], celeba["snapshot_every"], celeba["max_images"]) == (
        400,
        200,
        8000,
    )
    assert (celeba["image_size"], celeba["width"], celeba["holdout"]) == (64, 64, 1000)
    cifar = common.run_fields(cpu, "fid", "cifar10", "wwgan")
    assert (cifar["iterations"], cifar["snapshot_every"]) == (
        1500,
        500,
    ) and "max_images" not in cifar
    # a --config subset of the variants keeps the dataset's that remain
    subset = preset("cpu", variants=["wgan-gp", "wwgan-unit-mass"], fixed_fake={
        "sources": {"final-wwgan": {"variant": "wwgan-unit-mass"}}})  # fmt: skip
    assert common.dataset_variants(subset, "celeba") == ["wgan-gp"]
    with pytest.raises(common.SettingsError, match="datasets.celeba.variants: none of them"):
        preset("cpu", variants=["wwgan-unit-mass"])
    # a source whose run the subset no longer trains is left out, with its critics and a
    # warning, and the rest plans; one the preset never trains stays an error (above)
    subset = preset("cpu", variants=["wwgan"])
    assert list(subset["fixed_fake"]["sources"]) == ["final-wwgan"]
    assert {source for _, source, _, _ in common.fixed_fake_shards(subset)} == {"final-wwgan"}
    assert "no pool from early-wgan-gp" in capsys.readouterr().err
    assert preset("cpu", variants=["wgan-gp"], seeds=[1])["fixed_fake"] is None


def test_the_cost_estimate_counts_the_fixed_fake_critics():
    settings = preset("cpu")
    critics = [
        (
            settings["fixed_fake"]["steps"],
            64,
            len(settings["fixed_fake"]["groups"][g]["families"][f]),
        )
        for g, _, f, _ in common.fixed_fake_shards(settings)
    ]
    assert sum(n for *_, n in critics) == 420  # critics in the cpu preset
    plan = common.Plan([], [], 0, False, {"cifar10"}, False, True, critics)
    seconds = common.estimate_cpu_seconds(settings, plan)["fixed-fake critics"]
    assert seconds == pytest.approx(420 * (500 * 0.05 + 2.0))  # ~3.2 h of one core
    # a width-512 critic step, by the training's power law: within 2x of bench.py's
    # measured ~0.7 s per width-512 critic step on this CPU
    wide = common.Plan([], [], 0, False, set(), False, True, [(1, 512, 1)])
    step = common.estimate_cpu_seconds(settings, wide)["fixed-fake critics"] - 2.0
    assert 0.35 < step < 1.4, step


@pytest.mark.parametrize(
    "override, named",
    [
        ({"steps": 0}, "fixed_fake.steps: 0 is less than the minimum of 1"),
        ({"seeds": 10}, "fixed_fake: Additional properties are not allowed ('seeds' was unexpected)"),
        ({"groups": {"sweep": {"width": 9000}}}, "fixed_fake.groups.sweep.width: 9000 is greater than the maximum of 8192"),
        ({"groups": {"sweep": {"families": {"wgan-gpp": [1]}}}}, "fixed_fake.groups.sweep.families: 'wgan-gpp' is not one of"),
        ({"groups": {"late": {"width": 64}}}, "fixed_fake.groups: 'late' is not one of ['sweep', 'ablation', 'wide']"),
        ({"pool": {"num_train": "many"}}, "fixed_fake.pool.num_train: 'many' is not of type 'integer'"),
    ],
)  # fmt: skip
def test_the_schema_refuses_a_bad_fixed_fake_value(override, named):
    """Each bound is the one `fixed_fake_critics.py`'s click options accept; the one-line
    message names the key (the Snakefile prints it at parse time: tests/test_workflow.py)."""
    with pytest.raises(common.SettingsError) as caught:
        preset("smoke", fixed_fake=override)
    assert str(caught.value).startswith(f"invalid preset 'smoke' with --config overrides: {named}")
