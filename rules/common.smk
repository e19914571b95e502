# The graph's paths and the rules' parameters, from the settings S of the chosen preset;
# the logic itself is in rules/common.py.

import re
import shlex

RESULTS = f"results/{PRESET}"
LOGS = f"logs/{PRESET}"
FIGURES = S["figures_dir"].rstrip("/")
ENV = "../envs/wwgan.yaml"  # relative to rules/
# Declared output of `fid.py weights`, input of every FID rule; shared by the presets.
FID_WEIGHTS = "results/inception/pt_inception-2015-12-05-6726825d.pth"


def _shell_prefix():
    """Each job runs `python -m wwgan ...` or `python "$SCRIPTS/<step>.py" ...`: wwgan.py
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
# runs: results/<preset>/runs/<group>/<dataset>/<variant>/<tag>/seed<k>/
# ---------------------------------------------------------------------------------------
# A variant is a loss with its typed settings (config `variants`). Group "fid": the FID
# runs of Fig. 6; group "critic": the critics of the shift and noise experiments (Sec.
# 4.1-4.2), or the FID runs themselves when `critic_runs.separate` is false. The tag is
# the hash of the run's TrainConfig identity (common.run_tag).
VARIANTS = S["variants"]
CRITIC_GROUP = "critic" if S["critic_runs"]["separate"] else "fid"
CRITIC_DATASET = common.critic_dataset(S)
try:
    RUN_FIELDS = {
        (group, dataset, variant): common.run_fields(S, group, dataset, variant)
        for group, datasets in (("fid", S["datasets"]), (CRITIC_GROUP, [CRITIC_DATASET]))
        for dataset in datasets
        for variant in common.dataset_variants(S, dataset)
    }
    RUN_TAGS = {key: common.run_tag(fields) for key, fields in RUN_FIELDS.items()}
except common.SettingsError as exc:
    raise WorkflowError(str(exc)) from None


def run_dir(group, dataset, variant, seed):
    tag = RUN_TAGS[group, dataset, variant]
    return f"{RESULTS}/runs/{group}/{dataset}/{variant}/{tag}/seed{seed}"


def run_dirs(group, dataset):
    variants = common.dataset_variants(S, dataset)
    seeds = common.dataset_seeds(S, dataset)
    return [run_dir(group, dataset, v, seed) for v in variants for seed in seeds]


FID_RUNS = [run for dataset in S["datasets"] for run in run_dirs("fid", dataset)]
CRITIC_RUNS = run_dirs(CRITIC_GROUP, CRITIC_DATASET)
RUN = "runs/{group}/{dataset}/{variant}/{tag}/seed{seed}"


def data_root(dataset):
    return common.data_root(S, dataset)


# Datasets to download: absent from their root and `download` on. Present data is read
# where it is; absent data without a download stops the preflight.
DOWNLOADS = [
    d
    for d in common.used_datasets(S)
    if S["download"] and d in common.DOWNLOADABLE and common.data_present(d, data_root(d))
]


def data_inputs(dataset):
    """The marker of the dataset's download, when the workflow downloads it."""
    return [f"{data_root(dataset)}/.downloaded-{dataset}"] if dataset in DOWNLOADS else []


def fid_weights():
    return [FID_WEIGHTS] if S["fid"] else []


def curve_flags(wildcards, input):
    """FID against the reference statistics with the declared weights, and
    torch-fidelity's FID at `fid_ttur_samples` samples (always passed: 0 turns it off,
    where fid.py's own default would compute it at 5,000), or SWD only."""
    if not S["fid"]:
        return "--no-fid"
    return (
        f"--stats {input.stats[0]} --fid-weights {input.weights[0]} "
        f"--ttur-samples {S['fid_ttur_samples']}"
    )


def fid_stats(dataset):
    return f"{RESULTS}/fid_stats/{dataset}.npz"


def train_flags(wildcards):
    key = (wildcards.group, wildcards.dataset, wildcards.variant)
    if RUN_TAGS.get(key) != wildcards.tag:
        raise WorkflowError(
            f"run directory tag {wildcards.tag} does not match the current config of "
            f"{'/'.join(key)}"
        )
    return (
        f"{common.train_flags(RUN_FIELDS[key])} --seed {wildcards.seed} "
        f"--data-root {shlex.quote(data_root(wildcards.dataset))} --device {S['device']}"
    )


def probe_flags(wildcards):
    """The critic runs, the snapshot matching (Figs. 4-5: critics at matched generator
    FID) and the images of the shift and noise experiments."""
    runs = " ".join(f"--run {shlex.quote(run)}" for run in CRITIC_RUNS)
    match = S["critic_runs"]["match"]
    return (
        f"{runs} --match {match['metric']} --target {match['target']} "
        f"--dataset {CRITIC_DATASET} --data-root {shlex.quote(data_root(CRITIC_DATASET))}"
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
            [
                f"{run_dir('fid', dataset, v, S['seeds'][0])}/samples.png"
                for v in common.dataset_variants(S, dataset)
            ],
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


# ---------------------------------------------------------------------------------------
# fixed-fake critics (rules/fixed_fake.smk): results/<preset>/fixed_fake/<group>/<pool>/
# <family>-seed<k>.json, tables and figures in <figures_dir>/fixed-fake/
# ---------------------------------------------------------------------------------------
FF = S.get("fixed_fake") or {}
FF_RESULTS = f"{RESULTS}/fixed_fake"
FF_FIGURES = f"{FIGURES}/fixed-fake"
FF_SHARDS = common.fixed_fake_shards(S)
FF_DATASET = FF.get("dataset", "")
FF_MAIN = ("sweep", "ablation")  # the width of the dose-response; `wide` is tabled alone


def ff_result(group, source, family, seed):
    return f"{FF_RESULTS}/{group}/{source}/{family}-seed{seed}.json"


def ff_results(source, groups, families=None):
    return [
        ff_result(*shard)
        for shard in FF_SHARDS
        if shard[1] == source and shard[0] in groups and (families is None or shard[2] in families)
    ]


def ff_families(source, groups):
    return list(dict.fromkeys(s[2] for s in FF_SHARDS if s[1] == source and s[0] in groups))


def ff_source_run(source):
    spec = FF["sources"][source]
    return run_dir("fid", FF_DATASET, spec["variant"], spec["seed"])


def ff_source_path(wildcards):
    """The generator the pool is drawn from: a snapshot of the run, or its final model."""
    run, iteration = ff_source_run(wildcards.source), FF["sources"][wildcards.source].get(
        "iteration"
    )
    path = f"{run}/snapshots/snapshot_{iteration:07d}.pt" if iteration else run
    return shlex.quote(path)


def ff_critic_cost(group, family):
    """(steps, width, number of critics) of one critic job, for the cost estimate."""
    spec = FF["groups"][group]
    return FF["steps"], spec["width"], len(spec["families"][family])


def ff_critic_flags(wildcards):
    group = FF["groups"][wildcards.ffgroup]
    flags = [f"--family {wildcards.family}"]
    flags += [f"--lam {lam:g}" for lam in group["families"][wildcards.family]]
    flags += [
        f"--steps {FF['steps']} --width {group['width']} --batch-size {FF['batch_size']}",
        f"--real-images {FF['real_images']} --num-images {FF['num_images']}",
        f"--shift-images {FF['shift_images']} --device {S['device']}",
    ]
    if FF_DATASET != "shapes":
        flags.append(f"--data-root {shlex.quote(data_root(FF_DATASET))}")
    return " ".join(flags)


# The tables pair against WGAN-GP: a pool whose critics include it.
FF_TABLE_SOURCES = [
    s for s in (FF.get("sources") or {}) if common.FIXED_FAKE_REFERENCE in ff_families(s, FF_MAIN)
]


def ff_ablation_pairs(source):
    """Pairs of the ablation table whose first member is an ablation-group family."""
    ablated = set(ff_families(source, ("ablation",)))
    pairs = common.fixed_fake_ablation_pairs(ff_families(source, FF_MAIN))
    return [p for p in pairs if p.split(":")[0] in ablated]


def ff_pair_flags(wildcards):
    return " ".join(f"--pair {p}" for p in ff_ablation_pairs(wildcards.source))


FF_TARGETS = [
    *[f"{FF_FIGURES}/{kind}-{s}.md" for s in FF_TABLE_SOURCES for kind in ("table", "separation")],
    *[f"{FF_FIGURES}/dose-response-{s}.{ext}" for s in FF_TABLE_SOURCES for ext in ("png", "pdf")],
    *[f"{FF_FIGURES}/ablation-{s}.md" for s in FF_TABLE_SOURCES if ff_ablation_pairs(s)],
    *([f"{FF_FIGURES}/verdict.md"] if FF_TABLE_SOURCES else []),
    *[
        f"{FF_FIGURES}/wide-{s}.md"
        for s in (FF.get("sources") or {})
        if common.FIXED_FAKE_REFERENCE in ff_families(s, ("wide",))
        and len(ff_families(s, ("wide",))) > 1
    ],
]


# ---------------------------------------------------------------------------------------
# preflight (before any job) and the failed-job screen
# ---------------------------------------------------------------------------------------


# Rules whose jobs the presets mean for a GPU (they declare the `gpu` resource).
GPU_RULES = {"train", "fid_stats", "fid_curve", "bench", "fixed_fake_pool", "fixed_fake_critic"}


def whole_plan():
    """The plan of the whole graph (a dry run: the DAG is not built yet)."""
    runs = [fields for (_, dataset, _), fields in RUN_FIELDS.items()
            for _ in common.dataset_seeds(S, dataset)]  # fmt: skip
    critics = [ff_critic_cost(group, family) for group, _, family, _ in FF_SHARDS]
    return common.Plan(
        trainings=runs,
        curves=runs,
        statistics=len(S["datasets"]) if S["fid"] else 0,
        bench=S["bench"],
        datasets=set(common.used_datasets(S)),
        weights=S["fid"],
        gpu=True,
        critics=critics,
    )


def plan_of(jobs):
    """The plan of the jobs this run would start (the targets, --until, what is done)."""
    trainings, curves, statistics, datasets, rules = [], [], 0, set(), set()
    critics = []
    reads = {"probe": CRITIC_DATASET, "neighbours": common.neighbours_dataset(S)}
    if S.get("fixed_fake"):
        reads.update(
            dict.fromkeys(("fixed_fake_pool", "fixed_fake_critic"), S["fixed_fake"]["dataset"])
        )
    for job in jobs:
        name, wildcards = job.rule.name, job.wildcards
        rules.add(name)
        dataset = getattr(wildcards, "dataset", None) or reads.get(name)
        if dataset:
            datasets.add(dataset)
        statistics += name == "fid_stats"
        key = tuple(getattr(wildcards, k, None) for k in ("group", "dataset", "variant"))
        if name in ("train", "fid_curve") and key in RUN_FIELDS:
            (trainings if name == "train" else curves).append(RUN_FIELDS[key])
        if name == "fixed_fake_critic":
            critics.append(ff_critic_cost(wildcards.ffgroup, wildcards.family))
    return common.Plan(
        trainings, curves, statistics, "bench" in rules, datasets,
        "fid_weights" in rules, bool(rules & GPU_RULES), critics,
    )  # fmt: skip


def preflight_findings(plan):
    return [
        *common.check_device(S, PRESET, plan),
        *common.check_data(S, plan.datasets),
        *common.check_weights(plan.weights),
    ]


def _dry_run_requested():
    """Whether this Snakemake was started with -n: its own parser reads its command line
    (the workflow object knows only once the DAG is built, after the Snakefile)."""
    from snakemake.cli import get_argument_parser

    try:
        args, _ = get_argument_parser().parse_known_args(sys.argv[1:])
    except SystemExit:
        return False
    return bool(getattr(args, "dryrun", False))


def preflight_on_start():
    """A real local run: stop with one screen when a finding blocks (nothing started),
    else print the notes; then forward SIGTERM/SIGINT to the running jobs."""
    plan = plan_of(workflow.dag.needrun_jobs())
    findings = [
        f
        for f in preflight_findings(plan)
        if f.topic != "device" or workflow.local_exec  # cluster jobs run on their nodes
    ]
    if any(f.blocking for f in findings):
        raise SystemExit(common.screen(findings, PRESET, dry_run=False))
    if findings:
        print(common.screen(findings, PRESET, dry_run=True), file=sys.stderr)
    common.forward_stop_signals()


def show_failed_jobs():
    """onerror: the failed jobs' own messages (the last lines of their logs) on screen."""
    scheduler = getattr(workflow, "scheduler", None)
    # Failed jobs; after Ctrl-C the interrupted ones are still listed as running.
    jobs = [*getattr(scheduler, "failed", ()), *getattr(scheduler, "running", ())]
    failed = [(job.rule.name, [str(path) for path in job.log]) for job in dict.fromkeys(jobs)]
    if failed:
        print(common.failed_jobs_screen(failed), file=sys.stderr)


if workflow.is_main_process and _dry_run_requested():
    _findings = preflight_findings(whole_plan())
    if _findings:
        print(common.screen(_findings, PRESET, dry_run=True), file=sys.stderr)


wildcard_constraints:
    group="fid|critic",
    dataset="shapes|cifar10|celeba|folder",
    variant="|".join(VARIANTS),
    tag="[0-9a-f]{8}",
    seed=r"\d+",
    name="|".join(FIGURE_SPECS),
    probe="shift|noise",
    source="|".join(map(re.escape, FF.get("sources") or {})) or "no-source",
    ffgroup="sweep|ablation|wide",
    family="[a-z0-9-]+",
    dataroot="|".join(re.escape(data_root(d)) for d in DOWNLOADS) or "no-download",


localrules:
    all,
    reproduction,
    fixed_fake,
    download,
    fid_weights,
    samples,
    figure,
    table,
    fixed_fake_table,
    fixed_fake_ablation,
    fixed_fake_wide,
    fixed_fake_figure,
