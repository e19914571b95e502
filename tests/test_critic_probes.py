"""scripts/critic_probes.py (Figs. 4-5): the summary numbers on curves with known answers,
the FID-matched choice of snapshots, held-out images only, and both commands end to end
against the critic applied by hand."""

import json
import math

import numpy as np
import pytest
import torch
from PIL import Image

import critic_probes
import wwgan
from conftest import invoke, one_error_line, run_step, tiny_config

pytestmark = pytest.mark.usefixtures("checkout_untouched")

# ---------------------------------------------------------------- the perturbations


def test_salt_and_pepper_matches_appendix_c():
    images = torch.full((16, 3, 64, 64), 0.5)
    noisy = critic_probes.salt_and_pepper(images, 0.15, torch.Generator().manual_seed(0))
    assert set(noisy.unique().tolist()) <= {0.0, 0.5, 1.0}
    changed = noisy != 0.5
    assert changed.float().mean().item() == pytest.approx(0.15, abs=0.005)
    assert (noisy[changed] == 1.0).float().mean().item() == pytest.approx(0.5, abs=0.01)
    # per coordinate, not per pixel: all three channels change together ~0.15^3 of the time
    assert changed.all(dim=1).float().mean().item() == pytest.approx(0.15**3, abs=0.002)
    again = critic_probes.salt_and_pepper(images, 0.15, torch.Generator().manual_seed(0))
    assert torch.equal(noisy, again)


def test_shift_down_moves_rows_and_fills_black():
    images = torch.rand(2, 3, 5, 4) * 2 - 1
    shifted = critic_probes.shift_down(images)
    assert shifted.shape == (2, 6, 3, 5, 4)
    torch.testing.assert_close(shifted[:, 0], images)
    for k in range(1, 6):
        assert torch.equal(shifted[:, k, :, :k], torch.full_like(shifted[:, k, :, :k], -1.0))
        torch.testing.assert_close(shifted[:, k, :, k:], images[:, :, : 5 - k])


# ---------------------------------------------------------------- the summary numbers

STEPS = torch.arange(33, dtype=torch.float64)
MONOTONE = 5.0 - 0.3 * STEPS - 0.01 * STEPS**2  # a smooth fall, like Fig. 4's WWGAN
OSCILLATING = 0.5 * (-1.0) ** STEPS  # +-0.5 at every pixel, like Fig. 4's WGAN-GP
CONSTANT = torch.full((33,), 2.0, dtype=torch.float64)


def test_oscillation_ranks_a_smooth_curve_below_an_oscillating_one():
    """Roughness (mean |step| / spread) ranked a smooth fall of 100 spreads above a +-0.5
    oscillation; oscillation = total variation / range ranks them the way Fig. 4's claim
    does, whatever the scale."""
    curves = torch.stack([MONOTONE, OSCILLATING, CONSTANT, 100 * MONOTONE])
    oscillation = critic_probes.oscillation(curves)
    assert oscillation[0].item() == pytest.approx(1.0)  # monotone: TV = range
    assert oscillation[1].item() == pytest.approx(32.0)  # 32 steps of 1 over a range of 1
    assert oscillation[2].item() == 1.0  # constant: monotone by convention
    assert oscillation[3].item() == pytest.approx(1.0)  # scale-free
    # a monotone curve with one reversal: TV = range + twice the reversal
    bump = MONOTONE.clone()
    bump[10] += 1.0
    tv = (bump.diff().abs().sum() / (bump.max() - bump.min())).item()
    assert critic_probes.oscillation(bump[None]).item() == pytest.approx(tv)
    assert 1.0 < tv < 1.5


def test_sign_changes_count_reversals_of_the_step():
    curves = torch.stack([MONOTONE, OSCILLATING, CONSTANT])
    assert critic_probes.sign_changes(curves).tolist() == [0, 31, 0]
    flat_then_up = torch.tensor([[0.0, 0.0, 1.0, 1.0, 0.5]])  # zero steps are skipped
    assert critic_probes.sign_changes(flat_then_up).tolist() == [1]


def test_early_jump_is_the_largest_change_within_2_pixels_over_the_spread():
    curves = torch.stack([MONOTONE, OSCILLATING, CONSTANT])
    jumps = critic_probes.early_jump(curves, spread=0.5)
    expected = [(MONOTONE[0] - MONOTONE[2]).item() / 0.5, 1.0 / 0.5, 0.0]
    assert jumps.tolist() == pytest.approx(expected)


def test_cohens_d_by_hand():
    clean, noisy = torch.tensor([1.0, 3.0]), torch.tensor([5.0, 7.0])
    assert critic_probes.cohens_d(clean, noisy) == pytest.approx(-4 / math.sqrt(2))
    assert critic_probes.cohens_d(noisy, clean) == pytest.approx(4 / math.sqrt(2))


# ---------------------------------------------------------------- FID-matched snapshots


def fake_run(root, name, fids, swds=None):
    """A run folder with empty snapshot files at 10, 20, ... and their fid_curve.csv."""
    run = root / name
    (run / "snapshots").mkdir(parents=True)
    swds = swds or [100.0] * len(fids)
    lines = ["iteration,train_seconds,fid,swd"]
    for n, (fid, swd) in enumerate(zip(fids, swds), start=1):
        (run / "snapshots" / f"snapshot_{10 * n:07d}.pt").touch()
        lines.append(f"{10 * n},{n}.0,{'' if fid is None else fid},{swd}")
    (run / "fid_curve.csv").write_text("\n".join(lines) + "\n")
    return run


def test_snapshot_closest_to_the_target_fid(tmp_path):
    a = fake_run(tmp_path, "a", [90, 52, 41, 30])
    b = fake_run(tmp_path, "b", [80, 60, 45, 38])
    chosen, protocol = critic_probes.select_snapshots([a, b], "fid", 40)
    assert [c["iteration"] for c in chosen] == [30, 40]  # FID 41 and 38
    assert protocol["matched_on"] == "fid" and protocol["target"] == 40 and not protocol["note"]


def test_unreachable_target_falls_back_to_the_lowest_fid_every_run_reaches(tmp_path):
    a = fake_run(tmp_path, "a", [150, 120, 95, 100])  # best 95
    b = fake_run(tmp_path, "b", [140, 110, 104, 101])  # best 101: the binding run
    chosen, protocol = critic_probes.select_snapshots([a, b], "fid", 40)
    assert protocol["target"] == 101 and "lowest FID every run reaches" in protocol["note"]
    assert [c["iteration"] for c in chosen] == [40, 40]  # a: 100 is closest to 101
    assert [c["fid"] for c in chosen] == [100, 101]


def test_without_fid_the_match_is_on_swd_and_says_so(tmp_path):
    a = fake_run(tmp_path, "a", [None] * 3, swds=[300, 200, 250])
    b = fake_run(tmp_path, "b", [None] * 3, swds=[310, 260, 240])
    chosen, protocol = critic_probes.select_snapshots([a, b], "fid", 40)
    assert protocol["matched_on"] == "swd" and "FID is off" in protocol["note"]
    assert protocol["target"] == 240 and [c["iteration"] for c in chosen] == [30, 30]
    last, protocol = critic_probes.select_snapshots([a, b], "last", 40)
    assert [c["iteration"] for c in last] == [30, 30] and protocol["matched_on"] == "last"


def test_a_run_without_a_curve_or_snapshots_is_a_clear_error(tmp_path):
    run = fake_run(tmp_path, "a", [50])
    (run / "fid_curve.csv").unlink()
    with pytest.raises(wwgan.WWGANError, match="fid_curve.csv not found"):
        critic_probes.select_snapshots([run], "fid", 40)
    (tmp_path / "empty").mkdir()
    with pytest.raises(wwgan.WWGANError, match="no snapshots"):
        critic_probes.select_snapshots([tmp_path / "empty"], "last", 40)


# ---------------------------------------------------------------- both commands, end to end


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Two tiny runs on 16x16 shapes with snapshots at 2 and 4 and their SWD curves."""
    root = tmp_path_factory.mktemp("runs")
    paths = {}
    for seed, loss in enumerate(("wgan-gp", "wwgan")):
        out = root / loss
        config = tiny_config(out, loss=loss, seed=seed, iterations=4, snapshot_every=2,
                             label=f"{loss} variant")  # fmt: skip
        wwgan.train(config, progress=False)
        run_step("fid", "curve", out, "--no-fid", "--num-samples", 16, "--device", "cpu",
                 "--no-progress")  # fmt: skip
        paths[loss] = out
    return paths


def critic_at(run, iteration, images_unit):
    _, _, critic, _ = wwgan.load_models(run / "snapshots" / f"snapshot_{iteration:07d}.pt")
    with torch.no_grad():
        return critic(images_unit).double().numpy()


def test_shift_command(runs, tmp_path):
    out = tmp_path / "shift.json"
    run_step("critic_probes", "shift", "--run", runs["wgan-gp"], "--run", runs["wwgan"],
             "--num-images", 6, "--out", out)  # fmt: skip
    payload = json.loads(out.read_text())
    assert payload["protocol"]["matched_on"] == "swd"  # the curves have no FID
    assert payload["images"].startswith("shapes test draw")  # not training images
    config = tiny_config(tmp_path)
    images, _, _ = wwgan.evaluation_images(config)
    picked = images[torch.tensor(payload["image_indices"])]
    for entry, loss in zip(payload["runs"], ("wgan-gp", "wwgan")):
        assert entry["label"] == f"{loss} variant" and entry["snapshot_iteration"] in (2, 4)
        curves = np.array(entry["curves"])
        assert curves.shape == (6, 17)
        # step 0 is the matched snapshot's critic on the held-out images, step 16 on black
        step0 = critic_at(runs[loss], entry["snapshot_iteration"], wwgan.to_unit_range(picked))
        np.testing.assert_allclose(curves[:, 0], step0, rtol=1e-5, atol=1e-6)
        black = critic_at(runs[loss], entry["snapshot_iteration"], torch.full((1, 3, 16, 16), -1.0))
        np.testing.assert_allclose(curves[:, -1], black[0], rtol=1e-5, atol=1e-6)
        # the per-image numbers are the functions above applied to these curves
        tensor = torch.tensor(curves)
        spread = float(tensor[:, 0].std())
        for name, values in (
            ("oscillation", critic_probes.oscillation(tensor)),
            ("sign_changes", critic_probes.sign_changes(tensor).double()),
            ("early_jump", critic_probes.early_jump(tensor, spread)),
        ):
            np.testing.assert_allclose(entry["per_image"][name], values, rtol=1e-5)
            assert entry[name] == pytest.approx(float(values.mean()), rel=1e-5)
    run_step("figures", "shift", "--input", out, "--out", tmp_path / "fig" / "shift")
    assert (tmp_path / "fig" / "shift.png").stat().st_size > 0
    assert (tmp_path / "fig" / "shift.pdf").exists()


def test_noise_command(runs, tmp_path):
    out = tmp_path / "noise.json"
    run_step("critic_probes", "noise", "--run", runs["wwgan"], "--run", runs["wgan-gp"],
             "--num-images", 6, "--match", "last", "--out", out)  # fmt: skip
    payload = json.loads(out.read_text())
    images, _, _ = wwgan.evaluation_images(tiny_config(tmp_path))
    clean01 = images[torch.tensor(payload["image_indices"])].float() / 255
    noisy01 = critic_probes.salt_and_pepper(clean01, 0.15, torch.Generator().manual_seed(0))
    for entry, loss in zip(payload["runs"], ("wwgan", "wgan-gp")):
        assert entry["snapshot_iteration"] == 4  # --match last
        clean = critic_at(runs[loss], 4, clean01 * 2 - 1)
        noisy = critic_at(runs[loss], 4, noisy01 * 2 - 1)
        np.testing.assert_allclose(entry["clean"], clean, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(entry["noisy"], noisy, rtol=1e-5, atol=1e-6)
        pooled = math.sqrt((clean.var(ddof=1) + noisy.var(ddof=1)) / 2)
        assert entry["cohens_d"] == pytest.approx((clean.mean() - noisy.mean()) / pooled, rel=1e-5)
        fake = np.array(entry["fake"])
        assert entry["relative_gap"] == pytest.approx(
            (clean.mean() - noisy.mean()) / (clean.mean() - fake.mean()), rel=1e-5
        )
    run_step("figures", "noise", "--input", out, "--out", tmp_path / "noise")
    assert (tmp_path / "noise.png").exists() and (tmp_path / "noise.pdf").exists()
    with pytest.raises(wwgan.WWGANError, match="not a `critic_probes.py shift` result"):
        run_step("figures", "shift", "--input", out, "--out", tmp_path / "x")


# ---------------------------------------------------------------- held-out images only


def image_folder(root, count=40):
    root.mkdir()
    for n, image in enumerate(wwgan.make_shapes(count, 16, seed=5)):
        Image.fromarray(image.permute(1, 2, 0).numpy()).save(root / f"{n:03d}.png")
    return root


def test_held_out_slice_is_excluded_from_training_and_is_what_the_probes_use(tmp_path):
    folder = image_folder(tmp_path / "images")
    config = wwgan.TrainConfig(dataset="folder", data_root=str(folder), image_size=16,
                               cache_dir="", holdout=10)  # fmt: skip
    everything = wwgan.load_dataset(wwgan.TrainConfig.from_dict({**config.to_dict(), "holdout": 0}))
    train, held = wwgan.holdout_indices(len(everything), 10)
    assert len(held) == 10 and not set(train) & set(held) and len(train) + 10 == len(everything)
    assert torch.equal(wwgan.load_dataset(config), everything[torch.from_numpy(train)])
    images, _, source = wwgan.evaluation_images(config)
    assert torch.equal(images, everything[torch.from_numpy(held)])
    assert "held-out slice" in source and "10 of its 40" in source
    # max_images subsets the training part; the held-out slice does not move
    smaller = wwgan.TrainConfig.from_dict({**config.to_dict(), "max_images": 8})
    assert len(wwgan.load_dataset(smaller)) == 8
    assert torch.equal(wwgan.evaluation_images(smaller)[0], images)


def test_probes_refuse_training_images_unless_asked(tmp_path, capsys):
    folder = image_folder(tmp_path / "images")
    run = tmp_path / "run"
    wwgan.train(tiny_config(run, dataset="folder", data_root=str(folder), cache_dir="",
                            iterations=2, snapshot_every=2, max_images=0), progress=False)  # fmt: skip
    args = [
        "shift",
        "--run",
        run,
        "--match",
        "last",
        "--num-images",
        4,
        "--out",
        tmp_path / "s.json",
    ]
    code, _, err = invoke(capsys, "critic_probes", *args)
    line = one_error_line(code, err)
    assert "has no test split and the runs held out no images" in line
    assert "--allow-training-images" in line and not (tmp_path / "s.json").exists()
    code, _, err = invoke(capsys, "critic_probes", *args, "--allow-training-images")
    assert code == 0 and "evaluating on training images" in err
    payload = json.loads((tmp_path / "s.json").read_text())
    assert payload["images"].startswith("training images")
