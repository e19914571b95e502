# The experiments on the critics and the data: shift and noise (Figs. 4-5), neighbours
# (Fig. 1), the motivating example (Fig. 3).


rule probe:
    input:
        [f"{run}/fid_curve.csv" for run in CRITIC_RUNS],
        data_inputs(CRITIC_DATASET),
    output:
        f"{RESULTS}/{{probe}}.json",
    log:
        f"{LOGS}/{{probe}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/{{probe}}.tsv"
    conda:
        ENV
    threads: S["threads"]["eval"]
    params:
        probe=probe_flags,
        num_images=lambda w: S[w.probe]["num_images"],
    shell:
        'OMP_NUM_THREADS={threads} python "$SCRIPTS/critic_probes.py" {wildcards.probe} '
        "{params.probe} --num-images {params.num_images} --out {output} > {log} 2>&1"


rule neighbours:
    input:
        data_inputs(common.neighbours_dataset(S)),
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
        dataset=common.neighbours_dataset(S),
        root=lambda w: shlex.quote(data_root(common.neighbours_dataset(S))),
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
