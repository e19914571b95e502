# Data, the Inception weights and the reference statistics of FID.


rule download:
    output:
        touch("{dataroot}/.downloaded-{dataset}"),
    log:
        "{dataroot}/.download-{dataset}.log",
    conda:
        ENV
    params:
        root=lambda w: shlex.quote(w.dataroot),
    shell:
        "python -m wwgan download {wildcards.dataset} --root {params.root} > {log} 2>&1"


rule fid_weights:
    output:
        FID_WEIGHTS,
    log:
        "logs/fid-weights.log",
    conda:
        ENV
    shell:
        'python "$SCRIPTS/fid.py" weights --out {output} > {log} 2>&1'


rule fid_stats:
    input:
        data=lambda w: data_inputs(w.dataset),
        weights=FID_WEIGHTS,
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
        root=lambda w: shlex.quote(data_root(w.dataset)),
        size=lambda w: S["datasets"][w.dataset]["image_size"],
        num_images=S["fid_stats_images"],
        holdout=S["holdout"],
        ttur="" if S["fid_ttur_samples"] > 0 else "--no-ttur",
    shell:
        'OMP_NUM_THREADS={threads} python "$SCRIPTS/fid.py" stats --dataset {wildcards.dataset} '
        "--data-root {params.root} --image-size {params.size} --num-images {params.num_images} "
        "--holdout {params.holdout} --fid-weights {input.weights} {params.ttur} --out {output} "
        "> {log} 2>&1"
