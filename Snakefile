"""The whole reproduction of Dukler et al. (ICML 2019) as one Snakemake graph.

    snakemake --cores all                          # preset "paper" (GPU; days)
    snakemake --cores all --config preset=smoke    # same graph, tiny, offline, CPU
    snakemake --profile profiles/slurm             # on a SLURM cluster

data -> reference FID statistics -> training (FID runs: every dataset x loss x seed;
critic runs for Sec. 4.1-4.2) -> FID/SWD curves -> shift, noise, neighbours and the
motivating example -> every figure -> results table. Every step is one command: `wwgan
train|download|samples` or a script of scripts/ (each has --help); settings live in
config/presets/<preset>.yaml, chosen by config/config.yaml's `preset`.
"""

import hashlib
import os
import shlex
import sys

import yaml

from snakemake.exceptions import WorkflowError
from snakemake.utils import min_version, validate

min_version("8.0")


configfile: os.path.join(workflow.basedir, "config", "config.yaml")


report: "report/workflow.rst"


# ---------------------------------------------------------------------------------------
# settings: the chosen preset's file, with top-level --config/--configfile values merged in
# ---------------------------------------------------------------------------------------


def schema_error(settings, what):
    """None, or Snakemake's schema validation error on one line that names the offending
    key (its own message prints the whole schema and config for a top-level error)."""
    from jsonschema import ValidationError

    try:
        validate(settings, os.path.join(workflow.basedir, "config", "schema.yaml"))
    except WorkflowError as exc:
        cause = exc.__context__
        if not isinstance(cause, ValidationError):
            raise
        key = ".".join(map(str, cause.absolute_path)) or "top level"
        return f"invalid {what}: {key}: {cause.message}"
    return None


def merged(preset, override):
    """`override` merged into `preset` key by key. `--config` hands nested values over as
    strings (YAML's BaseLoader): a string that YAML reads as a number or a boolean
    becomes one. A list given for a dictionary keeps only those keys (variants=[a, b])."""
    if isinstance(override, list) and isinstance(preset, dict):  # variants=[a, b]: a subset
        unknown = [key for key in override if key not in preset]
        if unknown:
            raise WorkflowError(
                f"unknown {', '.join(map(str, unknown))}; choose from {', '.join(preset)}"
            )
        return {key: preset[key] for key in override}
    if isinstance(override, dict) and isinstance(preset, dict):
        return {**preset, **{k: merged(preset.get(k), v) for k, v in override.items()}}
    if isinstance(override, list):
        return [merged(None, item) for item in override]
    if isinstance(override, str):
        value = yaml.safe_load(override) if override.strip() else override
        return value if isinstance(value, (bool, int, float)) else override
    return override


PRESET = str(config["preset"])
PRESETS = sorted(
    p[: -len(".yaml")] for p in os.listdir(os.path.join(workflow.basedir, "config", "presets"))
)
if PRESET not in PRESETS:
    raise WorkflowError(
        f"unknown preset {PRESET!r}; choose from {', '.join(PRESETS)} (config/presets/)"
    )
with open(os.path.join(workflow.basedir, "config", "presets", f"{PRESET}.yaml")) as _file:
    S = merged(yaml.safe_load(_file), {k: v for k, v in config.items() if k != "preset"})
_error = schema_error(S, f"preset {PRESET!r} with --config overrides")
if _error:
    raise WorkflowError(_error)
for _group in ("train", "critic_runs"):
    if S[_group]["snapshot_every"] > S[_group]["iterations"]:
        raise WorkflowError(f"{_group}.snapshot_every must not exceed {_group}.iterations")

RESULTS = f"results/{PRESET}"
LOGS = f"logs/{PRESET}"
FIGURES = S["figures_dir"].rstrip("/")
DATA_ROOT = S["data_root"].rstrip("/")
DOWNLOADABLE = ("cifar10", "celeba")
ENV = "envs/wwgan.yaml"


def _shell_prefix():
    """Every rule runs `python -m wwgan ...` or `python "$SCRIPTS/<step>.py" ...`: wwgan.py
    is found through PYTHONPATH and the steps through $SCRIPTS (also with --directory
    elsewhere), and `python` is the conda env's under --sdm conda, else
    the interpreter running Snakemake (so a virtualenv need not be activated). Keeping
    both out of the rules' commands and params keeps a rerun from another checkout or
    interpreter from retriggering every job. Progress bars are noise in log files."""
    prefix = "set -euo pipefail; export TQDM_DISABLE=1; "
    # Snakemake formats the prefix too: {{ }} here reaches bash as { }.
    prefix += (
        f"export PYTHONPATH={shlex.quote(workflow.basedir)}${{{{PYTHONPATH:+:$PYTHONPATH}}}}; "
    )
    prefix += f"SCRIPTS={shlex.quote(os.path.join(workflow.basedir, 'scripts'))}; "
    prefix += f"BENCHMARKS={shlex.quote(os.path.join(workflow.basedir, 'benchmarks'))}; "
    methods = workflow.deployment_settings.deployment_method
    if not any(str(m).upper().endswith("CONDA") for m in methods):
        prefix += f"export PATH={shlex.quote(os.path.dirname(sys.executable))}:$PATH; "
    return prefix


shell.prefix(_shell_prefix())
NPROC = S["train"]["nproc_per_node"]
# Several processes per run: torchrun + DistributedDataParallel (NCCL on GPUs, gloo on
# CPU); --standalone picks a free port, so concurrent runs on one node do not collide.
TRAIN = (
    "python -m wwgan"
    if NPROC == 1
    else f"python -m torch.distributed.run --standalone --nproc_per_node={NPROC} -m wwgan"
)


# ---------------------------------------------------------------------------------------
# runs: results/<preset>/runs/<group>/<dataset>/<variant>/<hash>/seed<k>/
# ---------------------------------------------------------------------------------------
# A variant is a loss with its flags (config `variants`): WGAN-GP, the strength-matched
# WGAN-GP control, WWGAN in each density scale. Group "fid": the FID runs of Fig. 6;
# group "critic": the critics of the shift and noise experiments (Sec. 4.1-4.2), or the
# FID runs themselves when `critic_runs.separate` is false.
VARIANTS = S["variants"]
CRITIC_GROUP = "critic" if S["critic_runs"]["separate"] else "fid"


def image_size_flag(dataset):
    size = S["datasets"].get(dataset, {}).get("image_size")
    return f"--image-size {size}" if size else ""


def run_identity(group, dataset, variant):
    """The `wwgan train` flags that define a run's model and objective. Their hash names
    the run directory, so a changed setting trains a new run instead of failing to resume
    the old one. Length (iterations) and snapshot interval are left out: raising the
    length resumes and extends a run."""
    optimizer = S["train"]["optimizer"] if group == "fid" else S["critic_runs"]["optimizer"]
    spec = VARIANTS[variant]
    flags = (
        f"--dataset {dataset} {image_size_flag(dataset)} --loss {spec['loss']} "
        f"--width {S['train']['width']} --batch-size {S['train']['batch_size']} "
        f"--optimizer {optimizer} --holdout {S['holdout']} {spec['args']} "
        f"{S['train']['extra_args']}"
    )
    return " ".join(flags.split())


def run_tag(group, dataset, variant):
    return hashlib.sha1(run_identity(group, dataset, variant).encode()).hexdigest()[:8]


def run_dir(group, dataset, variant, seed):
    tag = run_tag(group, dataset, variant)
    return f"{RESULTS}/runs/{group}/{dataset}/{variant}/{tag}/seed{seed}"


def run_dirs(group, dataset):
    return [run_dir(group, dataset, v, seed) for v in VARIANTS for seed in S["seeds"]]


CRITIC_DATASET = S["critic_runs"]["dataset"]
FID_RUNS = [run for dataset in S["datasets"] for run in run_dirs("fid", dataset)]
CRITIC_RUNS = run_dirs(CRITIC_GROUP, CRITIC_DATASET)
RUN = "runs/{group}/{dataset}/{variant}/{tag}/seed{seed}"


def data_inputs(dataset):
    """The marker of the dataset's download, when the workflow downloads it."""
    if S["download"] and dataset in DOWNLOADABLE:
        return [f"{DATA_ROOT}/.downloaded-{dataset}"]
    return []


def data_root(files):
    """--data-root of a rule: the folder of its download marker, when it has one."""
    markers = [str(f) for f in files if os.path.basename(str(f)).startswith(".downloaded-")]
    return shlex.quote(os.path.dirname(markers[0]) if markers else DATA_ROOT)


def fid_stats(dataset):
    return f"{RESULTS}/fid_stats/{dataset}.npz"


def train_flags(wildcards):
    if wildcards.tag != run_tag(wildcards.group, wildcards.dataset, wildcards.variant):
        raise WorkflowError(
            f"run directory tag {wildcards.tag} does not match the current config of "
            f"{wildcards.group}/{wildcards.dataset}/{wildcards.variant}"
        )
    group = S["train"] if wildcards.group == "fid" else S["critic_runs"]
    label = shlex.quote(VARIANTS[wildcards.variant]["label"])
    return (
        f"{run_identity(wildcards.group, wildcards.dataset, wildcards.variant)} "
        f"--iterations {group['iterations']} --snapshot-every {group['snapshot_every']} "
        f"--seed {wildcards.seed} --label {label} --data-root {shlex.quote(DATA_ROOT)} "
        f"--device {S['device']}"
    )


def probe_flags(wildcards, input):
    """The critic runs, the snapshot matching (Figs. 4-5: critics at matched generator
    FID) and the images of the shift and noise experiments."""
    runs = " ".join(f"--run {shlex.quote(run)}" for run in CRITIC_RUNS)
    match = S["critic_runs"]["match"]
    return (
        f"{runs} --match {match['metric']} --target {match['target']} "
        f"--dataset {CRITIC_DATASET} --data-root {data_root(input)}"
    )


def figure_specs():
    """Output name -> (registered figure, input files). Paper figure numbers in README."""
    specs = {}
    for dataset in S["datasets"]:
        specs[f"fid-curves-{dataset}"] = (  # Fig. 6
            "fid-curves",
            [f"{run}/fid_curve.csv" for run in run_dirs("fid", dataset)],
        )
        specs[f"samples-{dataset}"] = (  # Supp. Figs. 1-2
            "samples",
            [f"{run_dir('fid', dataset, v, S['seeds'][0])}/samples.png" for v in VARIANTS],
        )
    specs["shift"] = ("shift", [f"{RESULTS}/shift.json"])  # Fig. 4
    specs["noise"] = ("noise", [f"{RESULTS}/noise.json"])  # Fig. 5
    specs["neighbours"] = ("neighbours", [f"{RESULTS}/neighbours.json"])  # Fig. 1
    specs["motivating-example"] = ("motivating-example", [f"{RESULTS}/motivating.csv"])  # Fig. 3
    return specs


FIGURE_SPECS = figure_specs()
TABLE_INPUTS = [f"{run}/fid_curve.csv" for run in dict.fromkeys(FID_RUNS + CRITIC_RUNS)] + [
    f"{RESULTS}/{name}.json" for name in ("shift", "noise", "neighbours")
]


def inputs_flags(files):
    return " ".join(f"--input {shlex.quote(str(path))}" for path in files)


wildcard_constraints:
    group="fid|critic",
    dataset="shapes|cifar10|celeba|folder",
    variant="|".join(VARIANTS),
    tag="[0-9a-f]{8}",
    seed=r"\d+",
    name="|".join(FIGURE_SPECS),


localrules:
    all,
    download,
    fid_weights,
    samples,
    figure,
    table,


rule all:
    default_target: True
    input:
        [f"{FIGURES}/{name}.{ext}" for name in FIGURE_SPECS for ext in ("png", "pdf")],
        f"{RESULTS}/table.md",
        [f"{RESULTS}/bench.json"] if S["bench"] else [],


rule download:
    output:
        touch(f"{DATA_ROOT}/.downloaded-{{dataset}}"),
    log:
        "logs/download/{dataset}.log",
    conda:
        ENV
    params:
        root=lambda w, output: shlex.quote(os.path.dirname(output[0])),
    shell:
        "python -m wwgan download {wildcards.dataset} --root {params.root} > {log} 2>&1"


rule fid_weights:
    output:
        touch("results/.fid-weights-downloaded"),
    log:
        "logs/fid-weights.log",
    conda:
        ENV
    shell:
        'python "$SCRIPTS/fid.py" weights > {log} 2>&1'


rule fid_stats:
    input:
        lambda w: data_inputs(w.dataset),
        "results/.fid-weights-downloaded",
    output:
        f"{RESULTS}/fid_stats/{{dataset}}.npz",
    log:
        f"{LOGS}/fid_stats/{{dataset}}.log",
    conda:
        ENV
    threads: S["threads"]["eval"]
    resources:
        gpu=1,
    params:
        root=lambda w, input: data_root(input),
        size=lambda w: image_size_flag(w.dataset),
        num_images=S["fid_stats_images"],
        holdout=S["holdout"],
    shell:
        'OMP_NUM_THREADS={threads} python "$SCRIPTS/fid.py" stats --dataset {wildcards.dataset} '
        "--data-root {params.root} {params.size} --num-images {params.num_images} "
        "--holdout {params.holdout} --out {output} > {log} 2>&1"


rule train:
    input:
        lambda w: data_inputs(w.dataset),
    output:
        # A marker, not checkpoint.pt: Snakemake deletes the outputs of an interrupted
        # job, and the checkpoint is what a rerun resumes from.
        touch(f"{RESULTS}/{RUN}/train.done"),
    log:
        f"{LOGS}/{RUN}/train.log",
    benchmark:
        f"{RESULTS}/benchmarks/{RUN}/train.tsv"
    conda:
        ENV
    threads: S["threads"]["train"]
    resources:
        gpu=NPROC,
    params:
        flags=train_flags,
        out=lambda w, output: shlex.quote(os.path.dirname(output[0])),
        launcher=TRAIN,
    shell:
        "OMP_NUM_THREADS={threads} {params.launcher} train {params.flags} --out {params.out} "
        "--no-progress > {log} 2>&1"


rule fid_curve:
    input:
        done=f"{RESULTS}/{RUN}/train.done",
        stats=lambda w: [fid_stats(w.dataset)] if S["fid"] else [],
    output:
        f"{RESULTS}/{RUN}/fid_curve.csv",
    log:
        f"{LOGS}/{RUN}/fid_curve.log",
    benchmark:
        f"{RESULTS}/benchmarks/{RUN}/fid_curve.tsv"
    conda:
        ENV
    threads: S["threads"]["eval"]
    resources:
        gpu=1,
    params:
        run=lambda w, input: shlex.quote(os.path.dirname(input.done)),
        stats=lambda w, input: f"--stats {input.stats[0]}" if S["fid"] else "--no-fid",
        root=lambda w, input: data_root(input),
        num_samples=S["curve_samples"],
        # Snakemake deletes a failed job's output; the scored snapshots of an interrupted
        # job stay in this file (one per sample count), which the rerun resumes from.
        partial=lambda w, output: shlex.quote(
            os.path.join(
                os.path.dirname(output[0]), f".fid_curve-{S['curve_samples']}.partial.csv"
            )
        ),
    shell:
        'OMP_NUM_THREADS={threads} python "$SCRIPTS/fid.py" curve {params.run} {params.stats} '
        "--dataset {wildcards.dataset} --data-root {params.root} "
        "--num-samples {params.num_samples} --out {params.partial} > {log} 2>&1 && "
        "mv {params.partial} {output}"


rule samples:
    input:
        f"{RESULTS}/{RUN}/train.done",
    output:
        f"{RESULTS}/{RUN}/samples.png",
    log:
        f"{LOGS}/{RUN}/samples.log",
    conda:
        ENV
    params:
        run=lambda w, input: shlex.quote(os.path.dirname(input[0])),
    shell:
        "python -m wwgan samples {params.run} --out {output} > {log} 2>&1"


rule shift:
    input:
        [f"{run}/fid_curve.csv" for run in CRITIC_RUNS],
        data_inputs(CRITIC_DATASET),
    output:
        f"{RESULTS}/shift.json",
    log:
        f"{LOGS}/shift.log",
    benchmark:
        f"{RESULTS}/benchmarks/shift.tsv"
    conda:
        ENV
    threads: S["threads"]["eval"]
    params:
        probe=probe_flags,
        num_images=S["shift"]["num_images"],
    shell:
        'OMP_NUM_THREADS={threads} python "$SCRIPTS/critic_probes.py" shift {params.probe} '
        "--num-images {params.num_images} --out {output} > {log} 2>&1"


rule noise:
    input:
        [f"{run}/fid_curve.csv" for run in CRITIC_RUNS],
        data_inputs(CRITIC_DATASET),
    output:
        f"{RESULTS}/noise.json",
    log:
        f"{LOGS}/noise.log",
    benchmark:
        f"{RESULTS}/benchmarks/noise.tsv"
    conda:
        ENV
    threads: S["threads"]["eval"]
    params:
        probe=probe_flags,
        num_images=S["noise"]["num_images"],
    shell:
        'OMP_NUM_THREADS={threads} python "$SCRIPTS/critic_probes.py" noise {params.probe} '
        "--num-images {params.num_images} --out {output} > {log} 2>&1"


rule neighbours:
    input:
        data_inputs(S["neighbours"]["dataset"]),
    output:
        f"{RESULTS}/neighbours.json",
    log:
        f"{LOGS}/neighbours.log",
    benchmark:
        f"{RESULTS}/benchmarks/neighbours.tsv"
    conda:
        ENV
    threads: S["threads"]["eval"]
    params:
        dataset=S["neighbours"]["dataset"],
        root=lambda w, input: data_root(input),
        queries=S["neighbours"]["num_queries"],
        candidates=S["neighbours"]["num_candidates"],
        holdout=S["holdout"],
    shell:
        'OMP_NUM_THREADS={threads} python "$SCRIPTS/neighbours.py" --dataset {params.dataset} '
        "--data-root {params.root} --num-queries {params.queries} --holdout {params.holdout} "
        "--num-candidates {params.candidates} --out {output} > {log} 2>&1"


rule motivating_example:
    output:
        f"{RESULTS}/motivating.csv",
    log:
        f"{LOGS}/motivating.log",
    conda:
        ENV
    params:
        size=S["motivating_example"]["size"],
    shell:
        'python "$SCRIPTS/motivating_example.py" --size {params.size} --out {output} > {log} 2>&1'


rule figure:
    input:
        lambda w: FIGURE_SPECS[w.name][1],
    output:
        report(f"{FIGURES}/{{name}}.png", caption="report/figure.rst", category="Figures"),
        f"{FIGURES}/{{name}}.pdf",
    log:
        f"{LOGS}/figures/{{name}}.log",
    conda:
        ENV
    params:
        figure=lambda w: FIGURE_SPECS[w.name][0],
        inputs=lambda w, input: inputs_flags(input),
        out=lambda w, output: shlex.quote(output[0][: -len(".png")]),
    shell:
        'python "$SCRIPTS/figures.py" {params.figure} {params.inputs} --out {params.out} > {log} 2>&1'


rule table:
    input:
        TABLE_INPUTS,
    output:
        md=f"{RESULTS}/table.md",
        csv=report(f"{RESULTS}/table.csv", caption="report/table.rst", category="Results"),
    log:
        f"{LOGS}/table.log",
    conda:
        ENV
    params:
        inputs=lambda w, input: inputs_flags(input),
        note=shlex.quote(f"snakemake --cores all --config preset={PRESET}"),
    shell:
        'python "$SCRIPTS/table.py" {params.inputs} --out {output.md} --command {params.note} > {log} 2>&1'


rule bench:
    output:
        f"{RESULTS}/bench.json",
    log:
        f"{LOGS}/bench.log",
    conda:
        ENV
    resources:
        gpu=1,
    shell:
        'python "$BENCHMARKS/bench.py" --out {output} > {log} 2>&1'
