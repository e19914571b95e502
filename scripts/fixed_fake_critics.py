"""Geometry or strength? Critics trained from scratch against a FIXED fake distribution, so
that two critics differ only by their penalty (issue 21).

    python scripts/fixed_fake_critics.py pool --source RUN_OR_SNAPSHOT --out pool.npz
    python scripts/fixed_fake_critics.py train --pool pool.npz --family wgan-gp \\
        --family wwgan-intensity --lam 1 --lam 10 --seed 0 --seed 1 --out critics.json
    python scripts/fixed_fake_critics.py table --results critics.json --out-md table.md

`pool` draws fake images once from a frozen generator (a run directory or a snapshot) and
saves them as uint8: a training pool the critics see and an evaluation pool they never
see. `train` trains one critic per (family, lam, seed) with the robustness Adam preset
against (real training images, the fake pool), with common random numbers: seed k gives
the same initial weights, the same real/fake batch indices and the same interpolation
weights eps in every family and at every lam. Each critic records its measured scale
s = constrained norm / ||grad||_2 and lam_eff = lam * s * t (means over the last fifth of
its steps) and is scored on held-out real images and unseen fakes: critic_probes' shift
metrics (Fig. 4) and noise metrics (Fig. 5), its real-vs-fake separation (AUC and the
score gap over the pooled std), and the share of its input gradient's energy above 0.25
cycles/px. `table` gives the dose-response (each metric against the measured lam_eff,
per family, 95% t intervals over seeds) and paired differences at matched lam_eff.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from pathlib import Path

import click
import numpy as np
import torch
import torch.nn as nn

from critic_probes import (
    NOISE_PROBABILITY,
    cohens_d,
    critic_values,
    early_jump,
    oscillation,
    probe_images,
    salt_and_pepper,
    shift_down,
    sign_changes,
)
from table import mean_ci95
from wwgan import (
    OPTIMIZER_PRESETS,
    Critic,
    TrainConfig,
    WWGANError,
    atomic_write,
    critic_input_gradient,
    critic_objective,
    generated_batches,
    laplacian_quadratic_form,
    load_dataset,
    load_models,
    load_run,
    refuse_overwriting_inputs,
    run_cli,
    safe_sqrt,
    select_device,
    to_unit_range,
    write_json,
)

# -- the families: one penalty each, everything else shared --

LARGE_ALPHA = 100.0  # "a large alpha": the 1 1^T term then outweighs the Laplacian's
# The Sobolev control's constant density: mid-grey's pixel mass (x + 1) / 2 at x = 0, near
# CIFAR-10's mean intensity (0.47), so its s is of the intensity-scale WWGAN's order.
SOBOLEV_DENSITY = 0.5
# The scale control: WGAN-GP with ||grad|| held at 1/40 instead of 1, about 1/s of the
# intensity-scale WWGAN (s ~ 42 at the start of training, README), so its critic has
# WWGAN's output and gradient scale.
LOW_TARGET = 0.025


def _wwgan_families() -> dict:
    families = {}
    for scale in ("intensity", "unit-mass"):
        base = dict(loss="wwgan", density_scale=scale)
        families[f"wwgan-{scale}"] = base
        families[f"wwgan-{scale}-alpha0"] = dict(base, alpha=0.0)
        families[f"wwgan-{scale}-alpha{LARGE_ALPHA:g}"] = dict(base, alpha=LARGE_ALPHA)
        families[f"wwgan-{scale}-8nb"] = dict(base, neighborhood=8)
    return families


# name -> TrainConfig fields, plus "constant_density" for the Sobolev control.
FAMILIES = {
    "wgan-gp": dict(loss="wgan-gp"),
    "wgan-gp-low-target": dict(loss="wgan-gp", lipschitz_target=LOW_TARGET),
    **_wwgan_families(),
    "sobolev": dict(loss="wwgan", constant_density=SOBOLEV_DENSITY),
}
FAMILY_NOTES = {
    "wgan-gp": "lam (||g||_2 - 1)^2",
    "wgan-gp-low-target": f"lam (||g||_2 - {LOW_TARGET:g})^2: the scale control",
    "sobolev": f"lam (sqrt(g^T L~(c) g) - 1)^2 with the density a constant c = "
    f"{SOBOLEV_DENSITY:g}: the image-independent graph Laplacian, Def. 10's 1/d_i kept "
    f"(a Sobolev-type norm)",
}
TAIL_FRACTION = 0.2  # s and lam_eff are averaged over the last fifth of the steps
HIGH_FREQUENCY = 0.25  # cycles per pixel
METRICS = {
    "oscillation": "shift: total variation of c(0..H) / its range (1 = monotone)",
    "sign_changes": "shift: sign changes of c(k+1) - c(k) (0 = monotone)",
    "early_jump": "shift: max |c(k) - c(0)| for k <= 2 px / std of c(0)",
    "abs_cohens_d": "noise: |Cohen's d| clean vs salt-and-pepper",
    "relative_gap": "noise: (clean - noisy) / (real - fake) mean scores",
    "auc": "held-out real vs unseen fake: AUC of the critic's scores",
    "separation": "held-out real vs unseen fake: mean score gap / pooled std",
    "high_freq_share": f"share of the input gradient's energy above {HIGH_FREQUENCY:g} "
    f"cycles/px (radial frequency)",
}


def family_config(base: TrainConfig, family: str, lam: float) -> TrainConfig:
    """`base` with the penalty of `family` at weight `lam` (the Sobolev control's config
    is the intensity WWGAN's; its density is replaced in `family_objective`)."""
    if family not in FAMILIES:
        raise WWGANError(f"unknown family {family!r}; choose from {', '.join(FAMILIES)}")
    fields = {k: v for k, v in FAMILIES[family].items() if k != "constant_density"}
    return dataclasses.replace(base, lam=float(lam), **fields)


def penalized_objective(config: TrainConfig, critic, real, fake, eps, density_of):
    """`wwgan.critic_objective` for the W2 penalty with the density given by
    `density_of(x_hat)` instead of the image at x_hat: mean D(fake) - mean D(real) +
    lam (sqrt(g^T L~(density) g) - t)^2, with the same logged terms. With
    density_of = images_to_density it is critic_objective itself (tested)."""
    scores = critic(torch.cat([real, fake]))
    critic_real, critic_fake = scores[: len(real)].mean(), scores[len(real) :].mean()
    x_hat = eps * real.detach() + (1.0 - eps) * fake.detach()
    grad = critic_input_gradient(critic, x_hat)
    norms = safe_sqrt(
        laplacian_quadratic_form(grad, density_of(x_hat), config.alpha, config.neighborhood)
    )
    l2_norms = safe_sqrt(grad.detach().square().sum(dim=(1, 2, 3)))
    penalty = config.lam * (norms - config.lipschitz_target).square().mean()
    critic_loss = critic_fake - critic_real + penalty
    scale = (norms.detach() / l2_norms).mean()
    return critic_loss, dict(
        critic_loss=critic_loss.detach(),
        penalty=penalty.detach(),
        wasserstein=(critic_real - critic_fake).detach(),
        grad_norm=norms.detach().mean(),
        grad_l2_norm=l2_norms.mean(),
        norm_scale=scale,
        lam_effective=config.lam * scale * config.lipschitz_target,
    )


def family_objective(family: str, config: TrainConfig, critic, real, fake, eps):
    """The critic loss and its terms for `family`: the trainer's own `critic_objective`,
    except the Sobolev control (a constant density in the same quadratic form)."""
    constant = FAMILIES[family].get("constant_density")
    if constant is None:
        return critic_objective(config, critic, real, fake, eps=eps)
    return penalized_objective(
        config, critic, real, fake, eps, lambda x_hat: torch.full_like(x_hat, constant)
    )


# -- common random numbers: everything random in a critic's training comes from its seed --


def initial_critic(config: TrainConfig, seed: int) -> Critic:
    """A fresh critic whose weights depend on `seed` only (torch's default initialisation
    under manual_seed(seed), in a forked RNG state so that callers' draws are unchanged)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return Critic(config.image_size, config.channels, config.width)


def batch_schedule(seed: int, steps: int, batch_size: int, num_real: int, num_fake: int):
    """Every step's real and fake batch indices and interpolation weights, drawn from one
    CPU generator seeded with `seed` only: {"real": (steps, B), "fake": (steps, B),
    "eps": (steps, B)}. The same for every family and lam at a seed."""
    rng = torch.Generator().manual_seed(seed)
    return dict(
        real=torch.randint(num_real, (steps, batch_size), generator=rng),
        fake=torch.randint(num_fake, (steps, batch_size), generator=rng),
        eps=torch.rand(steps, batch_size, generator=rng, dtype=torch.float32),
    )


def train_critic(
    base: TrainConfig, family: str, lam: float, seed: int, real_images, fake_images,
    steps: int, device="cpu", keep_trace: bool = False,
):  # fmt: skip
    """Train one critic from scratch against (real_images, fake_images), uint8 (N, C, H, W),
    with Adam at base.lr/beta1/beta2 for `steps` steps of base.batch_size. Returns (critic,
    record): record has family, lam, seed, steps, target, s and lam_eff (means over the
    last TAIL_FRACTION of the steps), s and lam_eff at the first step, the per-step
    traces of s, lam_eff and the W1 estimate, and seconds. With keep_trace, record
    also holds "schedule" (the batch_schedule used) and "initial_state" (the weights
    before the first step), for tests."""
    config = family_config(base, family, lam)
    device = torch.device(device)
    critic = initial_critic(config, seed)
    initial_state = {k: v.clone() for k, v in critic.state_dict().items()} if keep_trace else None
    critic.to(device).train()
    optimizer = torch.optim.Adam(
        critic.parameters(), lr=config.lr, betas=(config.beta1, config.beta2)
    )
    schedule = batch_schedule(seed, steps, config.batch_size, len(real_images), len(fake_images))
    traces = dict(s=[], lam_eff=[], wasserstein=[])
    started = time.perf_counter()
    for step in range(steps):
        real = to_unit_range(real_images[schedule["real"][step]]).to(device)
        fake = to_unit_range(fake_images[schedule["fake"][step]]).to(device)
        eps = schedule["eps"][step].view(-1, 1, 1, 1).to(device)
        loss, terms = family_objective(family, config, critic, real, fake, eps)
        if not torch.isfinite(loss):
            raise WWGANError(
                f"{family} at lam {lam:g}, seed {seed}: the critic loss is {float(loss)} at "
                f"step {step}; lower lam or the learning rate"
            )
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        traces["s"].append(float(terms["norm_scale"]))
        traces["lam_eff"].append(float(terms["lam_effective"]))
        traces["wasserstein"].append(float(terms["wasserstein"]))
    tail = max(1, math.ceil(TAIL_FRACTION * steps))
    record = dict(
        family=family, lam=float(lam), seed=int(seed), steps=int(steps),
        target=config.lipschitz_target,
        s=float(np.mean(traces["s"][-tail:])), lam_eff=float(np.mean(traces["lam_eff"][-tail:])),
        s_start=traces["s"][0] if steps else math.nan,
        lam_eff_start=traces["lam_eff"][0] if steps else math.nan,
        seconds=time.perf_counter() - started, trace=traces,
    )  # fmt: skip
    if keep_trace:
        record.update(schedule=schedule, initial_state=initial_state)
    return critic.eval(), record


# -- scoring on held-out real images and unseen fakes --


def high_frequency_share(grad: torch.Tensor, cutoff: float = HIGH_FREQUENCY) -> torch.Tensor:
    """Per sample, the share of the energy of grad (B, C, H, W) at spatial frequencies
    whose radial frequency sqrt(fy^2 + fx^2) exceeds `cutoff` cycles/px (2-D DFT over
    H, W of each channel, channels pooled): 0 for a constant, 1 for a checkerboard. (B,)."""
    power = torch.fft.fft2(grad.double()).abs().square()
    fy = torch.fft.fftfreq(grad.shape[-2], dtype=torch.float64)
    fx = torch.fft.fftfreq(grad.shape[-1], dtype=torch.float64)
    high = (fy[:, None].square() + fx[None, :].square()).sqrt() > cutoff
    total = power.sum(dim=(-3, -2, -1))
    return (power * high).sum(dim=(-3, -2, -1)) / total.clamp_min(1e-300)


def auc(positive: torch.Tensor, negative: torch.Tensor) -> float:
    """P(score of a positive > score of a negative) + P(tie) / 2: the area under the ROC
    curve, by the Mann-Whitney U statistic."""
    from scipy import stats

    u = stats.mannwhitneyu(positive.numpy(), negative.numpy(), alternative="two-sided").statistic
    return float(u) / (len(positive) * len(negative))


def input_gradients(critic: nn.Module, images: torch.Tensor, batch_size: int = 256):
    """d critic / d x at images in [-1, 1] (B, C, H, W), on CPU."""
    device = next(critic.parameters()).device
    out = []
    for i in range(0, len(images), batch_size):
        x = images[i : i + batch_size].to(device).requires_grad_(True)
        (grad,) = torch.autograd.grad(critic(x).sum(), x)
        out.append(grad.detach().cpu())
    return torch.cat(out)


def score_critic(
    critic: nn.Module, real_uint8, fake_uint8, shift_images: int = 64, noise_seed: int = 0,
    probability: float = NOISE_PROBABILITY,
) -> dict:  # fmt: skip
    """The metrics of METRICS for one critic on held-out real images and unseen fakes
    (uint8), means over images: shift probes on the first `shift_images` real images
    (critic_probes.shift_down and its summaries), noise probes on all of them
    (critic_probes.salt_and_pepper with a generator seeded by `noise_seed`), AUC and
    standardized gap of real vs fake scores, high_frequency_share of the input gradient
    at the real images."""
    real = to_unit_range(real_uint8)
    curves = critic_values(critic, shift_down(real[:shift_images]))
    spread = float(curves[:, 0].std())
    clean01 = real_uint8.float() / 255.0
    noisy01 = salt_and_pepper(clean01, probability, torch.Generator().manual_seed(noise_seed))
    clean = critic_values(critic, real)
    noisy = critic_values(critic, noisy01 * 2 - 1)
    fake = critic_values(critic, to_unit_range(fake_uint8))
    real_fake_gap = float(clean.mean() - fake.mean())
    pooled = math.sqrt(0.5 * (float(clean.var()) + float(fake.var())))
    grads = input_gradients(critic, real)
    d = cohens_d(clean, noisy)
    return dict(
        oscillation=float(oscillation(curves).mean()),
        sign_changes=float(sign_changes(curves).float().mean()),
        early_jump=float(early_jump(curves, spread).mean()),
        abs_cohens_d=abs(d), cohens_d=d,
        relative_gap=float(clean.mean() - noisy.mean()) / real_fake_gap,
        auc=auc(clean, fake), separation=real_fake_gap / pooled, real_fake_gap=real_fake_gap,
        high_freq_share=float(high_frequency_share(grads).mean()),
        critic_spread_real=spread, grad_l2_real=float(grads.flatten(1).norm(dim=1).mean()),
    )  # fmt: skip


# -- the fake pool --

POOL_KEYS = ("fake_train", "fake_eval", "meta")
DATA_FIELDS = ("dataset", "data_root", "image_size", "channels", "holdout", "celeba_crop")


def draw_pool(source, num_train: int, num_eval: int, seed: int = 0, device="cpu"):
    """(fake_train, fake_eval, meta) from the generator of `source` (a run directory:
    its latest checkpoint; or a snapshot/checkpoint file): uint8 images from latents of
    seed `seed` (training pool) and `seed + 1` (evaluation pool, never trained on);
    meta names the source and the data settings the real images follow."""
    source, device = Path(source), select_device(device)
    if source.is_dir():
        config, generator, _ = load_run(source, device)
        iteration = None
    else:
        config, generator, _, info = load_models(source, device)
        iteration = info["iteration"]

    def draw(count, latent_seed):
        return torch.cat(list(generated_batches(generator, count, 256, latent_seed, device)))

    meta = dict(
        source=str(source), iteration=iteration, loss=config.loss, label=config.label,
        generator_seed=config.seed, latent_seed=seed,
        data={name: getattr(config, name) for name in DATA_FIELDS},
    )  # fmt: skip
    return draw(num_train, seed).cpu(), draw(num_eval, seed + 1).cpu(), meta


def save_pool(path, fake_train, fake_eval, meta) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path) as f:
        np.savez(
            f, fake_train=fake_train.numpy(), fake_eval=fake_eval.numpy(),
            meta=np.array(json.dumps(meta)),
        )  # fmt: skip
    return path


def load_pool(path):
    """(fake_train, fake_eval, meta) of a pool written by `save_pool`; a file that is not
    one is a WWGANError."""
    try:
        with np.load(path, allow_pickle=False) as data:
            missing = [key for key in POOL_KEYS if key not in data.files]
            if missing:
                raise ValueError(f"no {', '.join(missing)}")
            train, evaluation = data["fake_train"], data["fake_eval"]
            meta = json.loads(str(data["meta"]))
    except (OSError, ValueError, KeyError, json.JSONDecodeError) as exc:
        raise WWGANError(f"{path}: not a fake pool written by `pool` ({exc})") from exc
    for name, array in (("fake_train", train), ("fake_eval", evaluation)):
        if array.dtype != np.uint8 or array.ndim != 4 or not len(array):
            raise WWGANError(f"{path}: {name} is {array.dtype} {array.shape}, not uint8 images")
    return torch.from_numpy(train), torch.from_numpy(evaluation), meta


# -- the experiment --


def run_experiment(
    pool, families, lams, seeds, steps=300, width=64, batch_size=64, data_root=None,
    real_images=0, num_images=256, shift_images=64, image_seed=0, noise_seed=0,
    allow_training_images=False, device="cpu", progress=None,
) -> dict:  # fmt: skip
    """Every (family, lam, seed) critic trained against the pool and scored: the payload
    that `train` writes."""
    fake_train, fake_eval, meta = load_pool(pool)
    data = dict(meta["data"], data_root=str(data_root or meta["data"]["data_root"]))
    base = TrainConfig(
        out="unused", **data, max_images=real_images, width=width, batch_size=batch_size,
        optimizer="robustness", device=str(device),
    )  # fmt: skip
    if fake_train.shape[1:] != (base.channels, base.image_size, base.image_size):
        raise WWGANError(f"{pool}: fakes are {tuple(fake_train.shape[1:])}, the data is "
                         f"{base.channels}x{base.image_size}x{base.image_size}")  # fmt: skip
    for family in families:
        family_config(base, family, 1.0)  # an unknown family fails before any training
    real_train = load_dataset(base)
    eval_real, _, _, source = probe_images(base, num_images, image_seed, allow_training_images)
    if num_images > len(fake_eval):
        raise WWGANError(f"{pool}: {len(fake_eval)} evaluation fakes, {num_images} asked for")
    eval_fake = fake_eval[:num_images]
    records = []
    for seed in seeds:
        for family in families:
            for lam in lams:
                critic, record = train_critic(
                    base, family, lam, seed, real_train, fake_train, steps, device
                )
                record.update(score_critic(critic, eval_real, eval_fake, shift_images,
                                           noise_seed))  # fmt: skip
                records.append(record)
                if progress:
                    progress(record)
    preset = OPTIMIZER_PRESETS["robustness"]
    return dict(
        experiment="fixed-fake-critics", pool=str(pool), pool_meta=meta,
        images=source, num_images=num_images, shift_images=shift_images,
        image_seed=image_seed, noise_seed=noise_seed, real_train_images=len(real_train),
        settings=dict(steps=steps, width=width, batch_size=batch_size, adam=preset,
                      tail_fraction=TAIL_FRACTION),
        families={f: dict(FAMILIES[f], note=FAMILY_NOTES.get(f, "")) for f in families},
        metrics=METRICS, critics=records,
    )  # fmt: skip


# -- the tables: dose-response and paired differences at matched lam_eff --


def load_records(paths) -> list[dict]:
    """The critics of `train` result files, each with its "setting": the family, or
    "family@steps" when the files hold critics of several lengths."""
    records = []
    for path in paths:
        try:
            payload = json.loads(Path(path).read_text())
            critics = (
                payload["critics"] if payload.get("experiment") == "fixed-fake-critics" else None
            )
        except (OSError, ValueError, AttributeError, TypeError) as exc:
            raise WWGANError(f"{path}: not a result of `train` ({exc})") from exc
        if critics is None:
            raise WWGANError(f"{path}: not a result of `fixed_fake_critics.py train`")
        records += [dict(r, pool=str(payload.get("pool", ""))) for r in critics]
    several = len({r["steps"] for r in records}) > 1
    for r in records:
        r["setting"] = f"{r['family']}@{r['steps']}" if several else r["family"]
    return records


def _interval(values) -> dict:
    mean, half = mean_ci95(values)
    return dict(mean=mean, half=half, n=len(values))


def dose_response(records, metrics=tuple(METRICS)) -> list[dict]:
    """One row per (setting, lam): the measured lam_eff and each metric as mean and 95%
    t half-width over the seeds."""
    groups = {}
    for r in records:
        groups.setdefault((r["setting"], r["lam"]), []).append(r)
    return [
        dict(setting=setting, lam=lam, lam_eff=_interval([r["lam_eff"] for r in group]),
             **{m: _interval([r[m] for r in group]) for m in metrics})
        for (setting, lam), group in sorted(groups.items())
    ]  # fmt: skip


def _distance(a: dict, b: dict, match: str) -> float:
    if match in ("lam_eff", "lam"):  # strengths compare by ratio
        return abs(math.log(b[match] / a[match]))
    return abs(b[match] - a[match])


def paired_differences(
    records, setting, reference, metrics=tuple(METRICS), match="lam_eff", max_ratio=2.0
) -> list[dict]:
    """For each lam of `setting`: per seed, its critic minus the `reference` critic of
    the SAME seed whose `match` (lam_eff, lam, or a metric such as separation) is
    nearest; a pair whose lam_eff (or lam) differs by more than the factor `max_ratio`
    is dropped. Each metric's difference as mean and 95% t half-width over the pairs, with
    whether the interval excludes 0, and the geometric mean ratio of the matched
    lam_effs (reference / setting)."""
    by_seed = {}
    for r in records:
        if r["setting"] == reference:
            by_seed.setdefault(r["seed"], []).append(r)
    rows = []
    lams = sorted({r["lam"] for r in records if r["setting"] == setting})
    for lam in lams:
        pairs = []
        for a in (r for r in records if r["setting"] == setting and r["lam"] == lam):
            candidates = by_seed.get(a["seed"], [])
            if not candidates:
                continue
            b = min(candidates, key=lambda c: _distance(a, c, match))
            if match in ("lam_eff", "lam") and _distance(a, b, match) > math.log(max_ratio):
                continue
            pairs.append((a, b))
        if not pairs:
            continue
        row = dict(
            setting=setting, reference=reference, lam=lam, match=match, n=len(pairs),
            lam_eff=float(np.exp(np.mean([math.log(a["lam_eff"]) for a, _ in pairs]))),
            lam_eff_ratio=float(np.exp(np.mean([math.log(b["lam_eff"] / a["lam_eff"])
                                               for a, b in pairs]))),
        )  # fmt: skip
        for m in metrics:
            interval = _interval([a[m] - b[m] for a, b in pairs])
            half = interval["half"]
            interval["excludes_zero"] = half is not None and abs(interval["mean"]) > half
            row[m] = interval
        rows.append(row)
    return rows


def _cell(interval: dict) -> str:
    if interval["half"] is None:
        return f"{interval['mean']:.4g} (n={interval['n']})"
    return f"{interval['mean']:.4g} ± {interval['half']:.2g} (n={interval['n']})"


def table_markdown(dose_rows, paired_rows, metrics=tuple(METRICS)) -> str:
    """The dose-response table and the paired table as Markdown."""
    lines = [
        "Dose-response: mean ± half-width of the 95% t interval over seeds.",
        "",
        "| setting | lam | lam_eff | " + " | ".join(metrics) + " |",
        "|---|---|---|" + "---|" * len(metrics),
    ]
    for row in dose_rows:
        cells = [_cell(row[m]) for m in metrics]
        lines.append(f"| {row['setting']} | {row['lam']:g} | {_cell(row['lam_eff'])} | "
                     + " | ".join(cells) + " |")  # fmt: skip
    lines += [
        "",
        "Paired differences (setting - reference, same seed, reference critic at the nearest "
        "match): mean ± 95% t half-width over seeds; * the interval excludes 0.",
        "",
        "| setting | reference | lam | match | lam_eff | ref/setting lam_eff | "
        + " | ".join(metrics) + " |",
        "|---|---|---|---|---|---|" + "---|" * len(metrics),
    ]  # fmt: skip
    for row in paired_rows:
        cells = [_cell(row[m]) + (" *" if row[m]["excludes_zero"] else "") for m in metrics]
        lines.append(
            f"| {row['setting']} | {row['reference']} | {row['lam']:g} | {row['match']} | "
            f"{row['lam_eff']:.4g} | {row['lam_eff_ratio']:.3g} | " + " | ".join(cells) + " |"
        )
    return "\n".join(lines) + "\n"


def build_tables(paths, reference="wgan-gp", pairs=(), match="lam_eff", max_ratio=2.0):
    """(dose rows, paired rows) of result files: `pairs` ("SETTING:REFERENCE"), or every
    setting against `reference`."""
    records = load_records(paths)
    settings = sorted({r["setting"] for r in records})
    if pairs:
        chosen = []
        for pair in pairs:
            setting, sep, ref = pair.partition(":")
            if not sep:
                raise WWGANError(f"--pair {pair!r}: write it as SETTING:REFERENCE")
            chosen.append((setting, ref))
    else:
        chosen = [(s, reference) for s in settings if s != reference]
    for name in {n for pair in chosen for n in pair}:
        if name not in settings:
            raise WWGANError(f"no critics of {name!r} in the results; they hold "
                             f"{', '.join(settings)}")  # fmt: skip
    paired = [row for s, r in chosen for row in paired_differences(records, s, r, match=match,
                                                                   max_ratio=max_ratio)]  # fmt: skip
    return dose_response(records), paired


# -- the verdict: geometry, strength or neither, by a rule fixed before the full run --

# The paper's claims, as (claim, the direction WWGAN should move the metric): Fig. 4 (the
# WWGAN critic is continuous under shifts, WGAN-GP's oscillates) and Fig. 5 (WGAN-GP's
# critic tells noisy from clean images, WWGAN's less), and the mechanism (less
# high-frequency gradient energy).
CLAIMS = {
    "sign_changes": ("shift", -1),
    "oscillation": ("shift", -1),
    "abs_cohens_d": ("noise", -1),
    "high_freq_share": ("mechanism", -1),
}
VERDICT_FAMILIES = ("wwgan-intensity", "wwgan-unit-mass")
# "The same within a quarter of the effect": a control is equivalent to WWGAN when its
# paired difference's 95% interval lies inside +-EQUIVALENCE_FRACTION of the WWGAN -
# WGAN-GP effect on that metric (a two one-sided tests reading of the interval).
EQUIVALENCE_FRACTION = 0.25
VERDICT_RULE = f"""\
Decision rule (fixed before the full run; `fixed_fake_critics.py verdict --help`):
- *at matched strength*: WWGAN minus WGAN-GP at WWGAN's measured lam_eff, same seed:
  WGAN-GP's metric interpolated (linearly in log lam_eff) between that seed's two critics
  whose lam_effs bracket it (a critic outside the seed's WGAN-GP range is left out), at
  each of WWGAN's lams. "yes" when at least half of these levels have a 95% interval over
  seeds that excludes 0 in the claimed direction and none in the other; "opposite" the
  same the other way; "mixed" when both occur; else "no".
- *strength alone*: WGAN-GP's own dose-response over the lam_eff span WWGAN reaches
  (x1/2 .. x2): per seed, the Spearman correlation of the metric with lam_eff; "yes" when
  its 95% interval over seeds excludes 0 in the claimed direction (a stiffer WGAN-GP
  penalty moves the metric the way WWGAN is claimed to).
- verdict: **geometry** when matched strength says yes (WWGAN differs from WGAN-GP at the
  same lam_eff); **strength** when it says no and strength alone says yes; **neither**
  when both say no; "against the claim" and "mixed" as above.
- controls, the same interpolation in their base family's dose-response: a control is *equivalent* to WWGAN on a metric when every
  level's interval lies within +-{EQUIVALENCE_FRACTION:g} x the WWGAN - WGAN-GP effect,
  *differs* when an interval excludes 0, else *not distinguishable* (too wide to tell).
"""


def _compact(row: dict, metric: str) -> dict:
    # the metric's interval holds n, the number of paired seeds
    return dict(lam=row["lam"], lam_eff=row["lam_eff"], lam_eff_ratio=row["lam_eff_ratio"],
                **row[metric])  # fmt: skip


def interpolated_differences(records, setting, reference, metric) -> list[dict]:
    """For each lam of `setting`: per seed, its critic's `metric` minus the `reference`
    dose-response of the SAME seed at exactly its measured lam_eff, interpolated linearly
    in log lam_eff between the two reference critics that bracket it (nearest-critic
    pairing would leave up to the grid's spacing of strength in the difference). Critics
    outside their seed's reference range are left out; a level needs 2 pairs. Rows as
    `paired_differences`' with lam_eff_ratio 1."""
    curves = {}
    for r in sorted(records, key=lambda r: r["lam_eff"]):
        if r["setting"] == reference and r["lam_eff"] > 0:
            curve = curves.setdefault(r["seed"], ([], []))
            curve[0].append(math.log(r["lam_eff"]))
            curve[1].append(r[metric])
    rows = []
    for lam in sorted({r["lam"] for r in records if r["setting"] == setting}):
        diffs, lam_effs = [], []
        for a in (r for r in records if r["setting"] == setting and r["lam"] == lam):
            x, y = curves.get(a["seed"], ([], []))
            if len(x) < 2 or not x[0] <= math.log(a["lam_eff"]) <= x[-1]:
                continue
            diffs.append(a[metric] - float(np.interp(math.log(a["lam_eff"]), x, y)))
            lam_effs.append(a["lam_eff"])
        if len(diffs) < 2:
            continue
        interval = _interval(diffs)
        interval["excludes_zero"] = abs(interval["mean"]) > interval["half"]
        rows.append(dict(setting=setting, reference=reference, lam=lam, match="lam_eff",
                         n=len(diffs), lam_eff=float(np.exp(np.mean(np.log(lam_effs)))),
                         lam_eff_ratio=1.0, **{metric: interval}))  # fmt: skip
    return rows


def matched_strength(records, setting, reference, metric, direction) -> dict:
    """`setting` minus `reference` on `metric` at matched lam_eff, level by level
    (`interpolated_differences`), read as yes / opposite / mixed / no (VERDICT_RULE)."""
    rows = interpolated_differences(records, setting, reference, metric)
    signs = [np.sign(r[metric]["mean"]) * direction for r in rows if r[metric]["excludes_zero"]]
    toward, against = signs.count(1), signs.count(-1)
    if not rows:
        answer = "untested"
    elif toward and against:
        answer = "mixed"
    else:
        answer = (
            "yes" if 2 * toward >= len(rows) else "opposite" if 2 * against >= len(rows) else "no"
        )
    return dict(answer=answer, toward=toward, against=against, levels=len(rows),
                rows=[_compact(r, metric) for r in rows])  # fmt: skip


def _spearman(x, y) -> float:
    """Spearman's rank correlation; 0 when either side is constant (no trend)."""
    from scipy.stats import spearmanr

    if np.ptp(x) == 0 or np.ptp(y) == 0:
        return 0.0
    return float(spearmanr(x, y).statistic)


def strength_alone(records, reference, metric, direction, lam_effs) -> dict:
    """Whether `reference`'s metric moves with its own strength over the span of
    `lam_effs` (x1/2 .. x2): per seed, Spearman's correlation of the metric with lam_eff
    over the reference critics in the span (3 or more); mean and 95% t interval over the
    seeds, read as yes (the claimed direction) / opposite / no."""
    low, high = min(lam_effs) / 2, max(lam_effs) * 2
    by_seed = {}
    for r in records:
        if r["setting"] == reference and low <= r["lam_eff"] <= high:
            by_seed.setdefault(r["seed"], []).append(r)
    rhos = [_spearman([r["lam_eff"] for r in group], [r[metric] for r in group])
            for group in by_seed.values() if len(group) >= 3]  # fmt: skip
    if len(rhos) < 2:
        return dict(answer="untested", span=[low, high], n=len(rhos))
    interval = _interval(rhos)
    excludes = interval["half"] is not None and abs(interval["mean"]) > interval["half"]
    sign = np.sign(interval["mean"]) * direction
    answer = "no" if not excludes else "yes" if sign > 0 else "opposite"
    return dict(answer=answer, span=[low, high], rho=interval)


def verdict_label(at_matched: str, alone: str) -> str:
    if at_matched == "yes":
        return "geometry" + (" (strength also moves it)" if alone == "yes" else "")
    if at_matched in ("opposite", "mixed"):
        return {"opposite": "against the claim at matched strength",
                "mixed": "mixed: the sign depends on the strength"}[at_matched]  # fmt: skip
    if at_matched == "untested":
        return "not tested (its lam_eff outside WGAN-GP's measured range)"
    if alone == "untested":  # too few WGAN-GP strengths to see a dose-response
        return "no difference at matched strength; strength alone not tested"
    return "strength" if alone == "yes" else "neither"


def control_reading(records, control, base, metric, effect) -> dict:
    """`control` minus `base` at matched lam_eff on `metric`: equivalent (every interval
    within +-EQUIVALENCE_FRACTION x |effect|), differs (an interval excludes 0), or not
    distinguishable; `effect` is the WWGAN - WGAN-GP difference it is measured against."""
    rows = interpolated_differences(records, control, base, metric)
    if not rows:
        return dict(answer="untested", rows=[])
    margin = EQUIVALENCE_FRACTION * abs(effect) if effect else None
    if any(r[metric]["excludes_zero"] for r in rows):
        answer = "differs"
    elif margin and all(r[metric]["half"] is not None
                        and abs(r[metric]["mean"]) + r[metric]["half"] < margin
                        for r in rows):  # fmt: skip
        answer = "equivalent"
    else:
        answer = "not distinguishable"
    return dict(answer=answer, margin=margin, rows=[_compact(r, metric) for r in rows])


# (control, the family it is compared with): the image's weighting (Sobolev: the same
# Laplacian with a constant density), L~'s parts, and the scale control.
CONTROLS = (
    ("sobolev", "wwgan-intensity"),
    *((f"wwgan-{scale}-{part}", f"wwgan-{scale}") for scale in ("intensity", "unit-mass")
      for part in ("alpha0", f"alpha{LARGE_ALPHA:g}", "8nb")),
)  # fmt: skip


def verdicts(records, reference="wgan-gp") -> dict:
    """The verdict of every (pool, WWGAN family, claim metric), and the controls' readings
    against their base family, for the critics of `train` (VERDICT_RULE)."""
    pools = {}
    for r in records:
        pools.setdefault(r.get("pool", ""), []).append(r)
    claims, controls = [], []
    for pool, group in sorted(pools.items()):
        settings = {r["setting"] for r in group}
        effects = {}
        for family in (f for f in VERDICT_FAMILIES if f in settings and reference in settings):
            for metric, (claim, direction) in CLAIMS.items():
                at_matched = matched_strength(group, family, reference, metric, direction)
                lam_effs = [r["lam_eff"] for r in group if r["setting"] == family]
                alone = strength_alone(group, reference, metric, direction, lam_effs)
                toward = [row["mean"] for row in at_matched["rows"] if row["excludes_zero"]]
                effects[family, metric] = float(np.mean(toward)) if toward else None
                claims.append(dict(pool=pool, family=family, claim=claim, metric=metric,
                                   matched=at_matched, strength=alone,
                                   verdict=verdict_label(at_matched["answer"], alone["answer"])))  # fmt: skip
            if "wgan-gp-low-target" in settings:  # the scale control, as a reference
                for metric, (_, direction) in CLAIMS.items():
                    m = matched_strength(group, family, "wgan-gp-low-target", metric, direction)
                    controls.append(dict(pool=pool, control=f"{family} vs wgan-gp-low-target",
                                         metric=metric, answer=m["answer"], rows=m["rows"]))  # fmt: skip
        for control, base in CONTROLS:
            if control not in settings or base not in settings:
                continue
            for metric in CLAIMS:
                reading = control_reading(group, control, base, metric, effects.get((base, metric)))
                controls.append(dict(pool=pool, control=f"{control} vs {base}", metric=metric,
                                     **reading))  # fmt: skip
    return dict(rule=VERDICT_RULE, claims=claims, controls=controls)


def verdict_markdown(result: dict) -> str:
    def levels(rows):
        return "; ".join(f"{r['lam_eff']:.3g}: {_cell(r)}{' *' if r['excludes_zero'] else ''}"
                         for r in rows) or "none"  # fmt: skip

    lines = [result["rule"], "| pool | family | claim | metric | at matched lam_eff (lam_eff: "
             "difference; * excludes 0) | WGAN-GP alone: Spearman rho over seeds | verdict |",
             "|---|---|---|---|---|---|---|"]  # fmt: skip
    for c in result["claims"]:
        alone = c["strength"]
        rho = _cell(alone["rho"]) if "rho" in alone else "n/a"
        lines.append(
            f"| {Path(c['pool']).stem} | {c['family']} | {c['claim']} | {c['metric']} | "
            f"{c['matched']['answer']} ({levels(c['matched']['rows'])}) | {alone['answer']} "
            f"({rho}, lam_eff {alone['span'][0]:.3g}-{alone['span'][1]:.3g}) | **{c['verdict']}** |"
        )
    if result["controls"]:
        lines += ["", "| pool | control | metric | paired difference at matched lam_eff | reading |",
                  "|---|---|---|---|---|"]  # fmt: skip
        for c in result["controls"]:
            margin = f" (margin +-{c['margin']:.3g})" if c.get("margin") else ""
            lines.append(f"| {Path(c['pool']).stem} | {c['control']} | {c['metric']} | "
                         f"{levels(c['rows'])} | {c['answer']}{margin} |")  # fmt: skip
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------------------
# CLI
# ----------------------------------------------------------------------------------------


@click.group(
    context_settings=dict(help_option_names=["-h", "--help"]),
    epilog="\b\nExample:\n  python scripts/fixed_fake_critics.py pool --source runs/wgan-gp/seed0 "
    "--out results/pool.npz\n  python scripts/fixed_fake_critics.py train --pool "
    "results/pool.npz --family wgan-gp --family wwgan-intensity --lam 1 --lam 10 --seed 0 "
    "--out results/critics.json\n  python scripts/fixed_fake_critics.py table --results "
    "results/critics.json --out-md results/critics.md",
)
def cli():
    """Critics trained against a fixed fake pool: geometry or strength (issue 21)."""


@cli.command(
    "pool",
    epilog="\b\nExample:\n  python scripts/fixed_fake_critics.py pool --source "
    "runs/wgan-gp/seed0 --num-train 10000 --num-eval 1000 --out results/pool.npz",
)
@click.option(
    "--source",
    required=True,
    type=click.Path(exists=True),
    help="Run directory (its latest checkpoint) or a snapshot/checkpoint file.",
)
@click.option(
    "--num-train",
    default=10_000,
    show_default=True,
    type=click.IntRange(1, 10**6),
    help="Fakes the critics train against.",
)
@click.option(
    "--num-eval",
    default=1_000,
    show_default=True,
    type=click.IntRange(1, 10**6),
    help="Fakes the critics never see, for scoring.",
)
@click.option(
    "--seed",
    default=0,
    show_default=True,
    type=click.IntRange(0, 2**62),
    help="Latent seed of the training pool (the evaluation pool uses seed + 1).",
)
@click.option("--device", default="cpu", show_default=True, help="auto | cpu | cuda[:N] | mps")
@click.option("--out", required=True, type=click.Path(dir_okay=False))
def pool_command(source, num_train, num_eval, seed, device, out):
    """Draw a fixed fake pool once from a frozen generator; save it as uint8 .npz."""
    refuse_overwriting_inputs([out], [source])
    fake_train, fake_eval, meta = draw_pool(source, num_train, num_eval, seed, device)
    save_pool(out, fake_train, fake_eval, meta)
    click.echo(f"wrote {out}: {len(fake_train)} + {len(fake_eval)} fakes of {source}")


@cli.command(
    "train",
    epilog="\b\nFamilies:\n"
    + "\n".join(f"  {name}" for name in FAMILIES)
    + "\n\n\b\nExample:\n  python scripts/fixed_fake_critics.py train --pool results/pool.npz "
    "--family wgan-gp --family wwgan-intensity --lam 1 --lam 10 --seed 0 --seed 1 --steps 300 "
    "--out results/critics.json",
)
@click.option("--pool", required=True, type=click.Path(exists=True, dir_okay=False))
@click.option(
    "--family",
    "families",
    multiple=True,
    required=True,
    help="Penalty family (repeat); see the list below.",
)
@click.option(
    "--lam",
    "lams",
    multiple=True,
    required=True,
    type=click.FloatRange(0, 1e9),
    help="Penalty weight (repeat).",
)
@click.option("--seed", "seeds", multiple=True, required=True,
              type=click.IntRange(0, 2**62), help="Critic seed (repeat): its initialisation "
              "and batches, the same in every family.")  # fmt: skip
@click.option("--steps", default=300, show_default=True, type=click.IntRange(1, 10**7))
@click.option("--width", default=64, show_default=True, type=click.IntRange(1, 8192))
@click.option("--batch-size", default=64, show_default=True, type=click.IntRange(1, 2**16))
@click.option(
    "--real-images",
    default=0,
    show_default=True,
    type=click.IntRange(min=0),
    help="Use at most N real training images (0: the whole training split).",
)
@click.option(
    "--data-root",
    default=None,
    type=click.Path(),
    help="Dataset root (default: the generator run's).",
)
@click.option(
    "--num-images",
    default=256,
    show_default=True,
    type=click.IntRange(min=2),
    help="Held-out real images (and as many unseen fakes) to score on.",
)
@click.option("--shift-images", default=64, show_default=True, type=click.IntRange(min=2))
@click.option("--image-seed", default=0, show_default=True, type=click.IntRange(0, 2**63 - 1))
@click.option("--noise-seed", default=0, show_default=True, type=click.IntRange(0, 2**63 - 1))
@click.option(
    "--allow-training-images",
    is_flag=True,
    help="Score on training images when the data has no held-out slice.",
)
@click.option("--device", default="cpu", show_default=True, help="auto | cpu | cuda[:N] | mps")
@click.option("--out", required=True, type=click.Path(dir_okay=False))
def train_command(out, device, **options):
    """Train and score critics from scratch against a fixed fake pool."""
    refuse_overwriting_inputs([out], [options["pool"]])
    if options["shift_images"] > options["num_images"]:
        raise WWGANError("--shift-images must not exceed --num-images")

    def report(r):
        click.echo(
            f"{r['family']} lam {r['lam']:g} seed {r['seed']}: s {r['s']:.3g}, lam_eff "
            f"{r['lam_eff']:.4g}, AUC {r['auc']:.3f}, oscillation {r['oscillation']:.2f}, "
            f"|d| {r['abs_cohens_d']:.2f}, high-freq {r['high_freq_share']:.3f} "
            f"({r['seconds']:.0f} s)"
        )

    payload = run_experiment(device=select_device(device), progress=report, **options)
    write_json(payload, out)
    click.echo(f"wrote {out}: {len(payload['critics'])} critics ({payload['images']})")


def write_report(text: str, payload: dict, out_md, out_json=None) -> None:
    """`text` to out_md and `payload` to out_json (when given), each atomically; echo text."""
    Path(out_md).parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(out_md, "w") as f:
        f.write(text)
    if out_json:
        write_json(payload, out_json)
    click.echo(text)


@cli.command(
    "table",
    epilog="\b\nExample:\n  python scripts/fixed_fake_critics.py table --results "
    "results/critics.json --reference wgan-gp --out-md results/critics.md --out-json "
    "results/critics-table.json",
)
@click.option(
    "--results",
    "paths",
    multiple=True,
    required=True,
    type=click.Path(exists=True, dir_okay=False),
    help="`train` output (repeat).",
)
@click.option(
    "--reference", default="wgan-gp", show_default=True, help="Setting every other is paired with."
)
@click.option(
    "--pair",
    "pairs",
    multiple=True,
    help="SETTING:REFERENCE to pair instead (repeat); a setting is a family, or "
    "family@steps when the results hold several lengths.",
)
@click.option(
    "--match",
    default="lam_eff",
    show_default=True,
    type=click.Choice(["lam_eff", "lam", "separation", "auc"]),
    help="What the paired reference critic is matched on.",
)
@click.option(
    "--max-ratio",
    default=2.0,
    show_default=True,
    type=click.FloatRange(1, min_open=False),
    help="Drop pairs whose matched lam_eff (or lam) differ by more than this factor.",
)
@click.option("--out-md", required=True, type=click.Path(dir_okay=False))
@click.option("--out-json", default=None, type=click.Path(dir_okay=False))
def table_command(paths, reference, pairs, match, max_ratio, out_md, out_json):
    """The dose-response table and paired differences at matched lam_eff."""
    refuse_overwriting_inputs([out_md, out_json], paths)
    dose, paired = build_tables(paths, reference, pairs, match, max_ratio)
    payload = dict(dose_response=dose, paired=paired, metrics=METRICS)
    write_report(table_markdown(dose, paired), payload, out_md, out_json)


@cli.command(
    "verdict",
    epilog="\b\nExample:\n  python scripts/fixed_fake_critics.py verdict --results "
    "results/sweep.json --results results/ablation.json --out-md results/verdict.md",
)
@click.option(
    "--results",
    "paths",
    multiple=True,
    required=True,
    type=click.Path(exists=True, dir_okay=False),
    help="`train` output (repeat); critics of different pools are judged per pool.",
)
@click.option(
    "--reference", default="wgan-gp", show_default=True, help="The strength-matched baseline."
)
@click.option("--out-md", required=True, type=click.Path(dir_okay=False))
@click.option("--out-json", default=None, type=click.Path(dir_okay=False))
def verdict_command(paths, reference, out_md, out_json):
    """Geometry, strength or neither, for each claim and WWGAN family: paired differences
    at matched lam_eff against WGAN-GP's own dose-response, by the rule printed at the
    top of the output; and the controls (Sobolev, L~'s parts, the scale control)."""
    refuse_overwriting_inputs([out_md, out_json], paths)
    result = verdicts(load_records(paths), reference)
    if not result["claims"]:
        raise WWGANError(f"no {reference} critics beside a WWGAN family "
                         f"({', '.join(VERDICT_FAMILIES)}) in the results")  # fmt: skip
    write_report(verdict_markdown(result), result, out_md, out_json)


if __name__ == "__main__":
    run_cli(cli)
