"""scripts/fixed_fake_critics.py (issue 21): common random numbers across families, the
measured lam_eff against an independent dense computation, the Sobolev control against a
dense unweighted-density Laplacian built here, the gradient's frequency share and the AUC
by hand, the tables on synthetic results with a known answer, and the commands end to end
on tiny pools."""

import json
import math

import fixed_fake_critics as ffc
import numpy as np
import pytest
import torch

import wwgan
from conftest import TINY, dense_quadratic_form, invoke, one_error_line, run_step, tiny_config

pytestmark = pytest.mark.usefixtures("checkout_untouched")


def tiny_base(tmp_path, **overrides) -> wwgan.TrainConfig:
    values = dict(width=16, batch_size=4, optimizer="robustness", image_size=16)
    values.update(overrides)
    return tiny_config(tmp_path / "unused", **values)


def tiny_images(n: int, seed: int) -> torch.Tensor:
    return torch.randint(0, 256, (n, 3, 16, 16), generator=torch.Generator().manual_seed(seed),
                         dtype=torch.uint8)  # fmt: skip


REAL, FAKE = tiny_images(20, 1), tiny_images(12, 2)

# ---------------------------------------------------------------- common random numbers


def test_a_seed_gives_the_same_initial_weights_and_batches_in_every_family(tmp_path):
    base = tiny_base(tmp_path)
    traces = {}
    for family in ("wgan-gp", "wgan-gp-low-target", "wwgan-intensity", "wwgan-unit-mass-8nb",
                   "wwgan-intensity-alpha0", "sobolev"):  # fmt: skip
        for lam in (1.0, 30.0):
            _, record = ffc.train_critic(base, family, lam, 3, REAL, FAKE, 4, keep_trace=True)
            traces[family, lam] = record
    first = traces["wgan-gp", 1.0]
    assert first["schedule"]["real"].shape == (4, 4) and first["schedule"]["eps"].shape == (4, 4)
    assert int(first["schedule"]["real"].max()) < len(REAL)
    assert int(first["schedule"]["fake"].max()) < len(FAKE)
    for record in traces.values():
        for key in ("real", "fake", "eps"):
            assert torch.equal(record["schedule"][key], first["schedule"][key])
        for name, weights in first["initial_state"].items():
            assert torch.equal(record["initial_state"][name], weights)
    # the penalties differ, so the trained critics do (the same batches, other updates)
    assert traces["wgan-gp", 1.0]["trace"]["wasserstein"][-1] != pytest.approx(
        traces["sobolev", 1.0]["trace"]["wasserstein"][-1]
    )
    _, other = ffc.train_critic(base, "wgan-gp", 1.0, 4, REAL, FAKE, 4, keep_trace=True)
    assert not torch.equal(other["schedule"]["real"], first["schedule"]["real"])
    assert not torch.equal(other["initial_state"]["linear.weight"],
                           first["initial_state"]["linear.weight"])  # fmt: skip


def test_training_leaves_the_callers_random_state_alone(tmp_path):
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    ffc.train_critic(tiny_base(tmp_path), "wgan-gp", 1.0, 0, REAL, FAKE, 2)
    assert torch.equal(torch.rand(3), expected)


# ---------------------------------------------------------------- the measured strength


def _step0_scale(record, base, family, quadratic_form):
    """s at the first step, recomputed here: the initial weights, the schedule's first
    batches and eps, the input gradient by autograd, sqrt(form) / ||g||_2 per sample."""
    critic = wwgan.Critic(base.image_size, base.channels, base.width)
    critic.load_state_dict(record["initial_state"])
    schedule = record["schedule"]
    real = wwgan.to_unit_range(REAL[schedule["real"][0]])
    fake = wwgan.to_unit_range(FAKE[schedule["fake"][0]])
    eps = schedule["eps"][0].view(-1, 1, 1, 1)
    x_hat = (eps * real + (1 - eps) * fake).requires_grad_(True)
    (grad,) = torch.autograd.grad(critic(x_hat).sum(), x_hat)
    g = grad.double().numpy()
    values = quadratic_form(g, ((x_hat.detach().double() + 1) / 2).numpy())
    l2 = np.sqrt((g**2).sum(axis=(1, 2, 3)))
    return float(np.mean(np.sqrt(values) / l2))


def test_measured_lam_eff_is_lam_times_s_and_s_matches_a_dense_computation(tmp_path):
    base = tiny_base(tmp_path)
    lam = 7.0
    _, record = ffc.train_critic(base, "wwgan-intensity", lam, 5, REAL, FAKE, 6, keep_trace=True)
    trace = record["trace"]
    np.testing.assert_allclose(trace["lam_eff"], lam * np.array(trace["s"]), rtol=1e-6)
    tail = math.ceil(ffc.TAIL_FRACTION * 6)  # 2 steps
    assert record["s"] == pytest.approx(np.mean(trace["s"][-tail:]))
    assert record["lam_eff"] == pytest.approx(lam * record["s"], rel=1e-6)
    # s at step 0 against Def. 10's dense L~ (conftest), density (x_hat + 1) / 2
    dense = _step0_scale(record, base, "wwgan-intensity",
                         lambda g, p: dense_quadratic_form(g, p, 4, 1.0)[0])  # fmt: skip
    assert record["s_start"] == pytest.approx(dense, rel=1e-4)
    assert 20 < record["s_start"] < 80  # Def. 10's intensity scale: ~40 on 16x16 too

    _, gp = ffc.train_critic(base, "wgan-gp", lam, 5, REAL, FAKE, 6)
    assert gp["trace"]["s"] == pytest.approx([1.0] * 6, rel=1e-6)
    assert gp["lam_eff"] == pytest.approx(lam, rel=1e-6)
    _, low = ffc.train_critic(base, "wgan-gp-low-target", lam, 5, REAL, FAKE, 6)
    assert low["target"] == ffc.LOW_TARGET
    assert low["lam_eff"] == pytest.approx(lam * ffc.LOW_TARGET, rel=1e-6)


def unweighted_laplacian(height: int, width: int, constant: float, alpha: float) -> np.ndarray:
    """L~ of one channel with the density a constant c, built as W's graph Laplacian
    diag(W 1) - W: W_ij = c (1/d_i + 1/d_j) / 2 for 4-neighbours i, j, where d_i =
    deg_i / sum deg (Def. 10's normalized degree), plus alpha 1 1^T."""
    n = height * width
    adjacency = np.zeros((n, n))
    for y in range(height):
        for x in range(width):
            for dy, dx in ((0, 1), (1, 0), (0, -1), (-1, 0)):
                if 0 <= y + dy < height and 0 <= x + dx < width:
                    adjacency[y * width + x, (y + dy) * width + x + dx] = 1.0
    degree = adjacency.sum(axis=1)
    inverse_d = degree.sum() / degree
    weights = adjacency * constant * 0.5 * (inverse_d[:, None] + inverse_d[None, :])
    return np.diag(weights.sum(axis=1)) - weights + alpha * np.ones((n, n))


def test_the_sobolev_control_is_the_dense_constant_density_laplacian(tmp_path):
    base = tiny_base(tmp_path)
    config = ffc.family_config(base, "sobolev", 3.0)
    torch.manual_seed(0)
    critic = wwgan.Critic(16, 3, 16)
    real, fake = wwgan.to_unit_range(REAL[:4]), wwgan.to_unit_range(FAKE[:4])
    eps = torch.tensor([0.1, 0.4, 0.7, 1.0]).view(-1, 1, 1, 1)
    loss, terms = ffc.family_objective("sobolev", config, critic, real, fake, eps)

    x_hat = (eps * real + (1 - eps) * fake).requires_grad_(True)
    (grad,) = torch.autograd.grad(critic(x_hat).sum(), x_hat)
    matrix = unweighted_laplacian(16, 16, ffc.SOBOLEV_DENSITY, config.alpha)
    g = grad.double().numpy().reshape(4, 3, -1)
    form = np.einsum("bci,ij,bcj->b", g, matrix, g)
    norms = np.sqrt(form)
    assert float(terms["grad_norm"]) == pytest.approx(norms.mean(), rel=1e-5)
    assert float(terms["penalty"]) == pytest.approx(3.0 * np.mean((norms - 1) ** 2), rel=1e-5)
    scores = critic(torch.cat([real, fake])).detach()
    wasserstein = float(scores[:4].mean() - scores[4:].mean())
    assert float(loss.detach()) == pytest.approx(float(terms["penalty"]) - wasserstein, rel=1e-5)
    l2 = np.sqrt((g**2).sum(axis=(1, 2)))
    assert float(terms["norm_scale"]) == pytest.approx(np.mean(norms / l2), rel=1e-5)
    # the image's density would give another value: the control really is image-blind
    weighted = dense_quadratic_form(grad.double().numpy(),
                                    ((x_hat.detach().double() + 1) / 2).numpy(), 4, 1.0)[0]  # fmt: skip
    assert not np.allclose(np.sqrt(weighted), norms, rtol=1e-3)


def test_the_mirrored_objective_with_the_image_density_is_the_trainers(tmp_path):
    config = ffc.family_config(tiny_base(tmp_path), "wwgan-unit-mass", 5.0)
    torch.manual_seed(1)
    critic = wwgan.Critic(16, 3, 16)
    real, fake = wwgan.to_unit_range(REAL[:4]), wwgan.to_unit_range(FAKE[:4])
    eps = torch.tensor([0.2, 0.5, 0.6, 0.9]).view(-1, 1, 1, 1)
    ours, our_terms = ffc.penalized_objective(
        config, critic, real, fake, eps, lambda x: wwgan.images_to_density(x, "unit-mass")
    )
    theirs, their_terms = wwgan.critic_objective(config, critic, real, fake, eps=eps)
    torch.testing.assert_close(ours, theirs)
    for name, value in their_terms.items():
        torch.testing.assert_close(torch.as_tensor(our_terms[name]), torch.as_tensor(value))


# ---------------------------------------------------------------- the new measurements


def test_high_frequency_share_of_known_patterns():
    x = torch.arange(32, dtype=torch.float64)
    xx = x[None, :].expand(32, 32)
    fast = torch.cos(2 * math.pi * 0.375 * xx)  # 0.375 cycles/px > 0.25
    slow = torch.cos(2 * math.pi * 0.125 * xx)
    checker = (-1.0) ** (x[:, None] + x[None, :])
    grads = torch.stack([fast, slow, torch.ones(32, 32), checker])[:, None].expand(4, 3, 32, 32)
    shares = ffc.high_frequency_share(grads)
    assert shares.tolist() == pytest.approx([1.0, 0.0, 0.0, 1.0], abs=1e-12)
    # white noise spreads its energy evenly: the share is the fraction of DFT bins above
    frequencies = [k / 32 if k < 16 else (k - 32) / 32 for k in range(32)]
    above = sum(math.hypot(u, v) > 0.25 for u in frequencies for v in frequencies) / 32**2
    noise = torch.randn(400, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    assert float(ffc.high_frequency_share(noise).mean()) == pytest.approx(above, abs=0.005)


def test_auc_by_counting_pairs():
    rng = np.random.default_rng(0)
    positive = torch.tensor(np.round(rng.normal(0.5, 1, 37), 1))  # rounded: ties happen
    negative = torch.tensor(np.round(rng.normal(0.0, 1, 29), 1))
    wins = sum(float(p > n) + 0.5 * float(p == n) for p in positive for n in negative)
    assert ffc.auc(positive, negative) == pytest.approx(wins / (37 * 29))
    assert ffc.auc(torch.tensor([2.0, 3.0]), torch.tensor([0.0, 1.0])) == 1.0


# ---------------------------------------------------------------- the tables, known answers

METRIC = "oscillation"
TRUE_SLOPE = 2.0


def synthetic_records(delta: dict, seeds=10, seed_sd=1.0, noise_sd=0.05, rng_seed=0):
    """Critics whose metric is 2 log10(lam_eff) + a seed effect shared by every family at
    that seed (sd seed_sd) + the family's delta + independent noise (sd noise_sd); the
    reference wgan-gp is also measured between the other families' lam_effs."""
    rng = np.random.default_rng(rng_seed)
    seed_effect = rng.normal(0, seed_sd, seeds)
    grids = {family: [1.0, 10.0, 100.0, 1000.0] for family in delta}
    grids["wgan-gp"] = [1.0, 3.0, 10.0, 30.0, 100.0, 300.0, 1000.0]
    records = []
    for family, grid in grids.items():
        for lam_eff in grid:
            for k in range(seeds):
                measured = lam_eff * math.exp(rng.normal(0, 0.02))  # s varies a little
                value = (TRUE_SLOPE * math.log10(measured) + seed_effect[k]
                         + delta.get(family, 0.0) + rng.normal(0, noise_sd))  # fmt: skip
                records.append(dict(family=family, setting=family, lam=lam_eff / 40, seed=k,
                                    steps=10, lam_eff=measured,
                                    **{m: value for m in ffc.METRICS}))  # fmt: skip
    return records


def test_paired_differences_recover_a_known_difference_that_unpaired_intervals_miss():
    records = synthetic_records({"wwgan-intensity": 0.5, "sobolev": 0.0})
    rows = ffc.paired_differences(records, "wwgan-intensity", "wgan-gp", metrics=(METRIC,))
    assert len(rows) == 4
    for row in rows:
        interval = row[METRIC]
        assert row["n"] == 10
        assert row["lam_eff_ratio"] == pytest.approx(1.0, abs=0.03)  # nearest, not 3x away
        assert abs(interval["mean"] - 0.5) < interval["half"] < 0.1  # contains the truth
        assert interval["excludes_zero"]
    null = ffc.paired_differences(records, "sobolev", "wgan-gp", metrics=(METRIC,))
    assert all(abs(row[METRIC]["mean"]) < row[METRIC]["half"] for row in null)
    assert not any(row[METRIC]["excludes_zero"] for row in null)

    # the dose-response: per-family means follow 2 log10(lam_eff) within their intervals,
    # which are wide (the seed effect) and overlap although the families differ by 0.5
    dose = {(r["setting"], r["lam"]): r for r in ffc.dose_response(records, (METRIC,))}
    for lam_eff in (1.0, 10.0, 100.0, 1000.0):
        gp, ww = dose["wgan-gp", lam_eff / 40], dose["wwgan-intensity", lam_eff / 40]
        assert gp["lam_eff"]["mean"] == pytest.approx(lam_eff, rel=0.03)
        truth = TRUE_SLOPE * math.log10(lam_eff) + np.mean(
            np.random.default_rng(0).normal(0, 1.0, 10)
        )  # the seed effects' mean, the same draw as synthetic_records'
        assert abs(gp[METRIC]["mean"] - truth) < gp[METRIC]["half"]
        assert gp[METRIC]["half"] > 0.5 and ww[METRIC]["half"] > 0.5
        assert (
            abs(ww[METRIC]["mean"] - gp[METRIC]["mean"]) < gp[METRIC]["half"] + ww[METRIC]["half"]
        )


def test_pairs_beyond_the_ratio_are_dropped_and_matching_on_another_column():
    records = synthetic_records({"wwgan-intensity": 0.5}, seeds=3)
    for r in records:
        if r["setting"] == "wwgan-intensity":
            r["lam_eff"] *= 1e4  # far beyond every reference critic
    assert ffc.paired_differences(records, "wwgan-intensity", "wgan-gp") == []
    rows = ffc.paired_differences(records, "wwgan-intensity", "wgan-gp", match="lam")
    assert [row["lam"] for row in rows] == [0.025, 0.25, 2.5, 25.0]
    assert all(row["lam_eff_ratio"] == pytest.approx(1e-4, rel=0.1) for row in rows)
    for r in records:
        if r["setting"] == "wwgan-intensity":
            r["lam"] *= 1e4  # now >= 10x the largest reference lam: beyond max_ratio 2
    assert ffc.paired_differences(records, "wwgan-intensity", "wgan-gp", match="lam") == []
    rows = ffc.paired_differences(records, "wwgan-intensity", "wgan-gp", match="lam", max_ratio=1e4)
    assert len(rows) == 4


# ------------------------------------------------ the verdict: rule applied to known answers


def claim_records(value_of, families=("wgan-gp", "wwgan-intensity"), seeds=10, noise_sd=0.05,
                  pool="pool.npz", rng_seed=1):  # fmt: skip
    """Critics whose every metric is value_of(family, lam_eff) + a seed effect shared by
    every family at that seed + independent noise, on the lam_eff grids of
    synthetic_records, all from one pool."""
    rng = np.random.default_rng(rng_seed)
    seed_effect = rng.normal(0, 1.0, seeds)
    records = []
    for family in families:
        grid = [1.0, 3.0, 10.0, 30.0, 100.0, 300.0, 1000.0] if family.startswith("wgan-gp") \
            else [1.0, 10.0, 100.0, 1000.0]  # fmt: skip
        for lam_eff in grid:
            for k in range(seeds):
                value = value_of(family, lam_eff) + seed_effect[k] + rng.normal(0, noise_sd)
                records.append(dict(family=family, setting=family, lam=lam_eff / 40, seed=k,
                                    steps=10, lam_eff=lam_eff, pool=pool,
                                    **{m: value for m in ffc.METRICS}))  # fmt: skip
    return records


def wwgan_minus(delta):
    """WWGAN families `delta(lam_eff)` below WGAN-GP's constant 5."""
    return lambda family, e: 5.0 - (delta(e) if family.startswith("wwgan") else 0.0)


@pytest.mark.parametrize(
    "value_of, verdict",
    [
        (wwgan_minus(lambda e: 1.0), "geometry"),  # lower at every strength, flat in it
        (lambda f, e: 5.0 - math.log10(e), "strength"),  # one curve: strength explains it
        (lambda f, e: 5.0, "neither"),
        (wwgan_minus(lambda e: -1.0), "against the claim at matched strength"),
        (
            lambda f, e: 5.0 - math.log10(e) - f.startswith("wwgan"),
            "geometry (strength also moves it)",
        ),  # fmt: skip
        (wwgan_minus(lambda e: 1.0 if e < 50 else -1.0), "mixed: the sign depends on the strength"),
    ],
)
def test_verdict_rule_on_curves_with_a_known_answer(value_of, verdict):
    result = ffc.verdicts(claim_records(value_of))
    assert {c["metric"] for c in result["claims"]} == set(ffc.CLAIMS)
    for claim in result["claims"]:
        assert claim["verdict"] == verdict, claim
        assert claim["matched"]["levels"] == 4  # every WWGAN lam within WGAN-GP's range


def test_matching_interpolates_the_reference_curve_so_a_grid_offset_is_not_called_geometry():
    # one curve, steep in strength; WWGAN's measured lam_effs sit 1.7x above the WGAN-GP
    # grid points, where nearest-critic pairing leaves 2 * log10(1.7) = 0.46 of strength
    records = claim_records(lambda f, e: 5.0 - 2 * math.log10(e))
    for r in records:
        if r["family"] == "wwgan-intensity":
            r["lam_eff"] *= 1.7
            r.update({m: r[m] - 2 * math.log10(1.7) for m in ffc.METRICS})  # on the curve
    nearest = ffc.paired_differences(records, "wwgan-intensity", "wgan-gp", metrics=(METRIC,))
    assert all(row[METRIC]["excludes_zero"] for row in nearest)  # the offset, read as an effect
    interpolated = ffc.interpolated_differences(records, "wwgan-intensity", "wgan-gp", METRIC)
    assert [row["lam"] for row in interpolated] == [0.025, 0.25, 2.5]  # 1,700 > the grid's 1,000
    for row in interpolated:
        # linear interpolation of a curve linear in log lam_eff: exact up to the noise
        assert abs(row[METRIC]["mean"]) < 0.05 and not row[METRIC]["excludes_zero"]
    assert {c["verdict"] for c in ffc.verdicts(records)["claims"]} == {"strength"}


def test_verdict_is_per_pool_and_says_when_nothing_is_matched_or_strength_is_untested():
    records = claim_records(wwgan_minus(lambda e: 1.0), pool="a.npz")
    records += claim_records(lambda f, e: 5.0, pool="b.npz", rng_seed=2)
    flat = claim_records(lambda f, e: 5.0, pool="c.npz", rng_seed=3)
    records += [r for r in flat if r["family"] != "wgan-gp" or r["lam_eff"] in (1.0, 3.0)]
    for r in records:
        if r["pool"] == "b.npz" and r["family"] == "wwgan-intensity":
            r["lam_eff"] *= 1e5  # beyond every WGAN-GP critic
    result = ffc.verdicts(records)
    by_pool = {(c["pool"], c["verdict"]) for c in result["claims"]}
    assert by_pool == {("a.npz", "geometry"),
                       ("b.npz", "not tested (its lam_eff outside WGAN-GP's measured range)"),
                       ("c.npz", "no difference at matched strength; strength alone not tested")}  # fmt: skip


def test_controls_equivalent_different_or_too_wide_to_tell():
    families = ("wgan-gp", "wwgan-intensity", "sobolev", "wwgan-intensity-alpha0",
                "wwgan-intensity-8nb", "wgan-gp-low-target")  # fmt: skip
    offset = {"sobolev": 0.0, "wwgan-intensity-alpha0": 0.5, "wwgan-intensity-8nb": 0.0}
    records = claim_records(
        lambda f, e: 5.0 - (f != "wgan-gp" and f != "wgan-gp-low-target") + offset.get(f, 0.0),
        families=families,
    )
    rng = np.random.default_rng(3)
    for r in records:
        if r["family"] == "wwgan-intensity-8nb":  # noise far wider than the effect
            for m in ffc.METRICS:
                r[m] += rng.normal(0, 3.0)
    result = ffc.verdicts(records)
    readings = {(c["control"], c["metric"]): c for c in result["controls"]}
    for metric in ffc.CLAIMS:
        sobolev = readings["sobolev vs wwgan-intensity", metric]
        assert sobolev["answer"] == "equivalent"
        assert sobolev["margin"] == pytest.approx(0.25, rel=0.05)  # a quarter of the effect 1
        assert readings["wwgan-intensity-alpha0 vs wwgan-intensity", metric]["answer"] == "differs"
        assert readings["wwgan-intensity-8nb vs wwgan-intensity", metric]["answer"] == (
            "not distinguishable"
        )
        # the scale control is WGAN-GP's curve: WWGAN is still lower against it
        assert readings["wwgan-intensity vs wgan-gp-low-target", metric]["answer"] == "yes"


def test_verdict_command_writes_the_rule_and_the_table(tmp_path, capsys):
    results = tmp_path / "critics.json"
    critics = claim_records(wwgan_minus(lambda e: 1.0), seeds=4)
    for c in critics:
        del c["setting"], c["pool"]  # as `train` writes them
    results.write_text(json.dumps(dict(experiment="fixed-fake-critics", pool="pools/early.npz",
                                       critics=critics)))  # fmt: skip
    md, js = tmp_path / "verdict.md", tmp_path / "verdict.json"
    code, _, err = invoke(capsys, "fixed_fake_critics", "verdict", "--results", results,
                          "--out-md", md, "--out-json", js)  # fmt: skip
    assert code == 0, err
    text = md.read_text()
    assert text.startswith("Decision rule") and "| early | wwgan-intensity | shift |" in text
    assert text.count("| **geometry** |") == len(ffc.CLAIMS)
    assert json.loads(js.read_text())["claims"][0]["matched"]["levels"] == 4
    only_gp = tmp_path / "gp.json"
    only_gp.write_text(json.dumps(dict(experiment="fixed-fake-critics", critics=[
        c for c in critics if c["family"] == "wgan-gp"])))  # fmt: skip
    code, _, err = invoke(capsys, "fixed_fake_critics", "verdict", "--results", only_gp,
                          "--out-md", tmp_path / "v2.md")  # fmt: skip
    assert "no wgan-gp critics beside a WWGAN family" in one_error_line(code, err)
    assert not (tmp_path / "v2.md").exists()


# ---------------------------------------------------------------- the commands end to end


def tiny_pool(path, n_train=24, n_eval=8, **data):
    meta = dict(source="test", iteration=None, loss="wgan-gp", label="", generator_seed=0,
                latent_seed=0, data=dict(dataset="shapes", data_root="data", image_size=16,
                                         channels=3, holdout=0, celeba_crop=108, **data))  # fmt: skip
    return ffc.save_pool(path, tiny_images(n_train, 5), tiny_images(n_eval, 6), meta)


def test_pool_is_the_frozen_generators_samples(tmp_path):
    run = tmp_path / "gen"
    run_step("wwgan", "train", "--out", run, "--dataset", "shapes", "--loss", "wgan-gp",
             "--device", "cpu", *TINY)  # fmt: skip
    out = tmp_path / "pool.npz"
    run_step("fixed_fake_critics", "pool", "--source", run, "--num-train", 10, "--num-eval",
             6, "--seed", 3, "--out", out)  # fmt: skip
    train, evaluation, meta = ffc.load_pool(out)
    _, generator, _ = wwgan.load_run(run)
    expected = torch.cat(list(wwgan.generated_batches(generator, 10, 256, 3)))
    assert torch.equal(train, expected)
    assert torch.equal(evaluation, torch.cat(list(wwgan.generated_batches(generator, 6, 256, 4))))
    assert meta["data"]["dataset"] == "shapes" and meta["data"]["image_size"] == 16


def test_train_and_table_commands_end_to_end(tmp_path, capsys):
    pool = tiny_pool(tmp_path / "pool.npz")
    out = tmp_path / "critics.json"
    code, stdout, err = invoke(
        capsys, "fixed_fake_critics", "train", "--pool", pool, "--family", "wgan-gp",
        "--family", "sobolev", "--lam", 1, "--lam", 10, "--seed", 0, "--seed", 1, "--steps",
        3, "--width", 16, "--batch-size", 4, "--num-images", 8, "--shift-images", 4,
        "--data-root", tmp_path, "--out", out,
    )  # fmt: skip
    assert code == 0, err
    payload = json.loads(out.read_text())
    critics = payload["critics"]
    assert [(c["family"], c["lam"], c["seed"]) for c in critics] == [
        (f, lam, s) for s in (0, 1) for f in ("wgan-gp", "sobolev") for lam in (1.0, 10.0)
    ]
    for c in critics:
        assert all(math.isfinite(c[m]) for m in ffc.METRICS), c
        assert 0 <= c["auc"] <= 1 and 0 <= c["high_freq_share"] <= 1
    assert "shapes test draw" in payload["images"]
    md = tmp_path / "table.md"
    code, stdout, err = invoke(capsys, "fixed_fake_critics", "table", "--results", out,
                               "--match", "lam", "--out-md", md, "--out-json",
                               tmp_path / "t.json")  # fmt: skip
    assert code == 0, err
    table = json.loads((tmp_path / "t.json").read_text())
    assert [r["setting"] for r in table["dose_response"]] == ["sobolev"] * 2 + ["wgan-gp"] * 2
    assert [(r["setting"], r["n"]) for r in table["paired"]] == [("sobolev", 2)] * 2
    assert "| sobolev | wgan-gp |" in md.read_text()
    run_step("figures", "dose-response", "--input", out, "--out", tmp_path / "fig")
    assert (tmp_path / "fig.png").stat().st_size > 0 and (tmp_path / "fig.pdf").exists()


def test_bad_inputs_are_one_line(tmp_path, capsys):
    pool = tiny_pool(tmp_path / "pool.npz")
    not_a_pool = tmp_path / "x.npz"
    not_a_pool.write_text("hello")
    common = ["--lam", 1, "--seed", 0, "--steps", 1, "--width", 16, "--num-images", 4,
              "--shift-images", 2, "--data-root", tmp_path, "--out", tmp_path / "o.json"]  # fmt: skip
    cases = [
        (["train", "--pool", pool, "--family", "nope", *common], "unknown family 'nope'"),
        (["train", "--pool", not_a_pool, "--family", "wgan-gp", *common], "not a fake pool"),
        (
            [
                "train",
                "--pool",
                pool,
                "--family",
                "wgan-gp",
                *common[:-2],
                "--num-images",
                100,
                "--out",
                tmp_path / "o.json",
            ],
            "100 asked for",
        ),  # fmt: skip
        (["table", "--results", pool, "--out-md", tmp_path / "t.md"], "not a result"),
    ]
    results = tmp_path / "r.json"
    results.write_text(json.dumps(dict(experiment="fixed-fake-critics", critics=[
        dict(family="wgan-gp", lam=1.0, seed=0, steps=3, lam_eff=1.0,
             **{m: 0.0 for m in ffc.METRICS})])))  # fmt: skip
    cases += [
        (
            ["table", "--results", results, "--pair", "wgan-gp", "--out-md", tmp_path / "t.md"],
            "SETTING:REFERENCE",
        ),
        (
            [
                "table",
                "--results",
                results,
                "--reference",
                "sobolev",
                "--out-md",
                tmp_path / "t.md",
            ],
            "no critics of 'sobolev'",
        ),  # fmt: skip
    ]
    for argv, message in cases:
        code, _, err = invoke(capsys, "fixed_fake_critics", *argv)
        assert message in one_error_line(code, err), (argv, err)
    assert not (tmp_path / "o.json").exists() and not (tmp_path / "t.md").exists()
