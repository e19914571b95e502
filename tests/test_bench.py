"""The quadratic form's three implementations (slicing, Algorithm 2's convolutions, a
torch.sparse Laplacian) against a dense matrix built from Supp. Definition 10, and
`wwgan bench --quick` end to end. Benchmarks are not timed tests: nothing here asserts a
speed, only that the measurements run and report what they claim."""

import functools
import itertools
import json
import math

import numpy as np
import pytest
import torch

import wwgan

IMPLEMENTATIONS = {
    "slicing": wwgan.laplacian_quadratic_form,
    "conv": wwgan.laplacian_quadratic_form_conv,
    "sparse": wwgan.laplacian_quadratic_form_sparse,
}


def dense_laplacian(density: np.ndarray, neighborhood: int, alpha: float) -> np.ndarray:
    """L~(p) = D^T Lambda(p) D + alpha 1 1^T for one H x W channel graph, straight from
    Def. 10 and Remark 3: pixels i, j are joined when their centres are one pixel apart
    (weight 1) or, for the 8-neighbourhood, diagonal (weight 1/2 = 1 / squared length);
    d_i = weighted degree / total weighted degree."""
    height, width = density.shape
    coords = [(y, x) for y in range(height) for x in range(width)]
    n = len(coords)
    edges = []
    for i, j in itertools.combinations(range(n), 2):
        squared_length = (coords[i][0] - coords[j][0]) ** 2 + (coords[i][1] - coords[j][1]) ** 2
        if squared_length == 1 or (neighborhood == 8 and squared_length == 2):
            edges.append((i, j, 1.0 / squared_length))
    degree = np.zeros(n)
    for i, j, w in edges:
        degree[i] += w
        degree[j] += w
    d = degree / degree.sum()
    p = density.reshape(-1)
    D = np.zeros((len(edges), n))
    Lam = np.zeros((len(edges), len(edges)))
    for e, (i, j, w) in enumerate(edges):
        D[e, i], D[e, j] = math.sqrt(w), -math.sqrt(w)
        Lam[e, e] = 0.5 * (p[i] / d[i] + p[j] / d[j])
    return D.T @ Lam @ D + alpha * np.ones((n, n))


def dense_quadratic_form(grad, density, neighborhood, alpha):
    """sum over channels of g_c^T L~(p_c) g_c, and its gradient 2 L~ g, per sample."""
    values = np.zeros(grad.shape[0])
    gradients = np.zeros(grad.shape)
    for b, c in itertools.product(range(grad.shape[0]), range(grad.shape[1])):
        L = dense_laplacian(density[b, c], neighborhood, alpha)
        g = grad[b, c].reshape(-1)
        values[b] += g @ L @ g
        gradients[b, c] = (2 * L @ g).reshape(grad.shape[2:])
    return values, gradients


@pytest.mark.parametrize("name", list(IMPLEMENTATIONS))
@pytest.mark.parametrize("neighborhood,alpha,shape", [
    (4, 1.0, (2, 3, 5, 7)), (8, 1.0, (2, 2, 6, 4)), (4, 0.0, (1, 1, 3, 3)),
    (8, 2.5, (2, 1, 2, 5)), (4, 1.0, (1, 1, 1, 2)),
])
def test_quadratic_forms_match_dense_definition_10(name, neighborhood, alpha, shape):
    generator = torch.Generator().manual_seed(7)
    grad = torch.randn(shape, generator=generator, dtype=torch.float64, requires_grad=True)
    density = torch.rand(shape, generator=generator, dtype=torch.float64)
    value = IMPLEMENTATIONS[name](grad, density, alpha, neighborhood)
    (gradient,) = torch.autograd.grad(value.sum(), grad)
    expected_value, expected_gradient = dense_quadratic_form(
        grad.detach().numpy(), density.numpy(), neighborhood, alpha)
    np.testing.assert_allclose(value.detach().numpy(), expected_value, rtol=1e-10)
    np.testing.assert_allclose(gradient.numpy(), expected_gradient, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("neighborhood", [4, 8])
@pytest.mark.parametrize("size", [32, 64])
def test_float32_implementations_agree_at_image_sizes(neighborhood, size):
    generator = torch.Generator().manual_seed(size)
    grad = torch.randn(4, 3, size, size, generator=generator)
    density = torch.rand(4, 3, size, size, generator=generator)
    exact = wwgan.laplacian_quadratic_form(grad.double(), density.double(), 1.0, neighborhood)
    for name, fn in IMPLEMENTATIONS.items():
        value = fn(grad, density, 1.0, neighborhood)
        assert value.dtype == torch.float32
        torch.testing.assert_close(value.double(), exact, rtol=1e-5, atol=0,
                                   msg=lambda m, name=name: f"{name}: {m}")


def test_implementations_give_the_same_critic_update_through_double_backward():
    """In training the quadratic form takes the critic's input gradient (create_graph=True)
    and is backpropagated into the critic's weights: d/dtheta must agree. This includes
    the torch.compile'd form that `train --compile` uses (first-order differentiable only:
    the second-order part runs through g's eager graph)."""
    torch.manual_seed(0)
    critic = wwgan.Critic(16, 3, 16).double()
    x = torch.rand(3, 3, 16, 16, dtype=torch.float64) * 2 - 1
    density = wwgan.images_to_density(x)
    updates = {}
    compiled = {"compiled": functools.partial(wwgan.laplacian_quadratic_form, compiled=True)}
    for name, fn in {**IMPLEMENTATIONS, **compiled}.items():
        grad = wwgan.critic_input_gradient(critic, x)
        penalty = (wwgan.safe_sqrt(fn(grad, density, 1.0, 8)) - 1).square().mean()
        # The last bias does not change the input gradient: its update is None (unused).
        updates[name] = torch.autograd.grad(penalty, list(critic.parameters()),
                                            allow_unused=True)
    for name in ("conv", "sparse", "compiled"):
        for got, want in zip(updates[name], updates["slicing"]):
            assert (got is None) == (want is None)
            if want is not None:
                torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-12)
    # Every weight moves (biases only shift LeakyReLU kinks: zero second derivative).
    weights = [g for (name, _), g in zip(critic.named_parameters(), updates["slicing"])
               if name.endswith("weight")]
    assert len(weights) == 3 and all(bool(g.abs().max() > 0) for g in weights)


@pytest.mark.parametrize("name", ["conv", "sparse"])
def test_shape_mismatch_is_a_clear_error(name):
    with pytest.raises(ValueError, match="must both be"):
        IMPLEMENTATIONS[name](torch.zeros(1, 3, 4, 4), torch.zeros(1, 3, 4, 5))


def _check_spread(spread):
    assert spread["n"] >= 1
    assert 0 < spread["min"] <= spread["p25"] <= spread["median"] <= spread["p75"] <= spread["max"]
    assert len(spread["samples"]) == spread["n"] and min(spread["samples"]) == spread["min"]


def test_bench_quick_writes_every_item(tmp_path, monkeypatch, capsys):
    monkeypatch.delattr(wwgan, "image_w2_distance", raising=False)
    out = tmp_path / "results" / "bench.json"
    wwgan.main(["bench", "--quick", "--out", str(out)])
    report = json.loads(out.read_text())
    assert set(report["items"]) == set(wwgan.BENCH_ITEMS)
    assert report["machine"]["torch"] == torch.__version__
    assert report["machine"]["cpu_count"] >= 1 and report["machine"]["date"]

    quadratic = report["items"]["quadratic_form"]["sizes"]["16"]
    for key, error in quadratic["max_relative_difference_to_slicing"].items():
        assert error < (1e-10 if key.endswith("float64") else 1e-5), key
    assert report["items"]["image_w2"]["skipped"] == "image_w2_distance not available"
    throughput = report["items"]["throughput"]
    for clock in ("wall", "cpu"):
        critic = report["items"]["critic_step"]["sizes"]["16"][clock]
        assert set(critic["seconds"]) == {"wgan-gp", "wgan-gp-control", "lp", "wwgan"}
        for spread in [*critic["seconds"].values(), *critic["ratio_to_wgan_gp"].values()]:
            _check_spread(spread)
        for mode in ("forward", "forward_backward"):
            assert set(quadratic[clock][mode]["seconds"]) == set(wwgan.QUADRATIC_FORM_CONTENDERS)
            for spread in quadratic[clock][mode]["seconds"].values():
                _check_spread(spread)
        assert set(throughput[clock]["ratio_to_wgan_gp"]) == {"wgan-gp-control", "wwgan"}
        for loss in ("wgan-gp", "wgan-gp-control", "wwgan"):
            entry = throughput[clock]["losses"][loss]
            per_iteration = entry["seconds_per_generator_iteration"]["median"]
            assert entry["images_per_second"] == pytest.approx(
                throughput["batch_size"] * throughput["n_critic"] / per_iteration)
            assert entry["cifar10_epoch_seconds"] == pytest.approx(
                50_000 / entry["images_per_second"])
    frechet = report["items"]["frechet_distance"]
    assert frechet["relative_difference"] < 1e-9 and frechet["fid"]["pytorch_fid"] > 0
    for clock in ("wall", "cpu"):
        assert set(frechet[clock]["speedup_over_pytorch_fid"]) == {
            "eigh", "eigh_reference_root_cached"}
        for spread in frechet[clock]["seconds"].values():
            _check_spread(spread)
    printed = capsys.readouterr().out
    assert "skipped: image_w2_distance not available" in printed or \
        "image_w2: image_w2_distance not available" in printed
    assert f"wrote {out}" in printed
    implied = report["derived"]["wwgan_over_wgan_gp"]["16"]["cpu"]
    parts = quadratic["cpu"]["forward_backward"]["seconds"]
    step = report["items"]["critic_step"]["sizes"]["16"]["cpu"]["seconds"]["wgan-gp"]
    assert implied == pytest.approx(1 + (parts["slicing"]["median"] - parts["l2"]["median"])
                                    / step["median"])


def _exact_w2(a, b):
    """W2 between unit-mass (…, S, S) histograms by POT's exact solver, pixel spacing 1."""
    import ot

    size = a.shape[-1]
    ys, xs = np.meshgrid(np.arange(size), np.arange(size), indexing="ij")
    centres = np.stack([ys.ravel(), xs.ravel()], 1).astype(np.float64)
    cost = ot.dist(centres, centres)
    a2, b2 = np.broadcast_arrays(a.cpu().numpy(), b.cpu().numpy())
    flat_a, flat_b = a2.reshape(-1, size * size), b2.reshape(-1, size * size)
    values = [math.sqrt(ot.emd2(x, y, cost)) for x, y in zip(flat_a, flat_b)]
    return torch.tensor(values, dtype=torch.float64).reshape(a2.shape[:-2])


@pytest.mark.parametrize("scale", [1.0, 1.01])
def test_image_w2_item_reports_the_error_against_exact_emd(monkeypatch, scale):
    monkeypatch.setattr(wwgan, "image_w2_distance", lambda a, b: scale * _exact_w2(a, b),
                        raising=False)
    result = wwgan.bench_image_w2(torch.device("cpu"), size=8, pairs=3, repeats=2)
    assert result["relative_error"]["max"] == pytest.approx(scale - 1.0, abs=1e-9)
    assert len(result["w2_exact"]) == 3 and min(result["w2_exact"]) > 0
    for clock in ("wall", "cpu"):
        assert set(result[clock]["speedup_over_emd2"]) == {
            "image_w2_batched", "image_w2_one_pair_per_call", "sinkhorn_matmul_floor"}
        for spread in result[clock]["seconds_per_pair"].values():
            _check_spread(spread)


def test_image_w2_item_records_a_contract_mismatch(monkeypatch):
    monkeypatch.setattr(wwgan, "image_w2_distance", lambda a, b: torch.zeros(5), raising=False)
    result = wwgan.bench_image_w2(torch.device("cpu"), size=8, pairs=3, repeats=1)
    assert "expected (3,)" in result["error"]


def test_real_image_w2_distance_fits_the_bench_contract():
    if not hasattr(wwgan, "image_w2_distance"):
        pytest.skip("image_w2_distance not in this wwgan.py (experiments branch not merged)")
    result = wwgan.bench_image_w2(torch.device("cpu"), size=8, pairs=2, repeats=1)
    assert "error" not in result, result.get("error")
    assert math.isfinite(result["relative_error"]["max"])


def test_train_accepts_performance_options(tmp_path):
    out = tmp_path / "run"
    wwgan.main(["train", "--out", str(out), "--iterations", "2", "--image-size", "16",
                "--width", "16", "--batch-size", "4", "--no-tf32", "--no-cudnn-benchmark",
                "--no-progress", "--max-images", "32"])
    config = json.loads((out / "config.json").read_text())
    assert (config["tf32"], config["cudnn_benchmark"], config["compile"]) == (False, False, False)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_train_restores_global_backend_flags_on_cuda(tmp_path):
    before = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32,
              torch.backends.cudnn.benchmark)
    config = wwgan.TrainConfig(out=str(tmp_path / "run"), iterations=2, image_size=16, width=16,
                               batch_size=4, device="cuda", max_images=32)
    wwgan.train(config, progress=False)
    assert (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32,
            torch.backends.cudnn.benchmark) == before


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
        config = wwgan.TrainConfig(out=str(tmp_path / f"run{compile_}"), iterations=2,
                                   image_size=16, width=16, batch_size=4, max_images=32,
                                   compile=compile_, log_every=1, device="cpu")
        wwgan.train(config, progress=False)
        rows[compile_] = [json.loads(line) for line in
                          (tmp_path / f"run{compile_}" / "metrics.jsonl").read_text().splitlines()]
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
        for (name, got), (_, want) in zip(compiled_model.state_dict().items(),
                                          eager_model.state_dict().items(), strict=True):
            if name not in noisy:
                torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-6,
                                           msg=lambda m, name=name: f"{name}: {m}")
    moved = generator.state_dict()["main.0.weight"] - initial_generator.state_dict()["main.0.weight"]
    assert moved.abs().max() > 1e-5  # the compiled views trained the saved modules


def test_w2_matmul_floor_does_no_more_matmuls_than_the_solver(monkeypatch):
    """The floor is a ceiling on the solver's speed-up only if the solver itself runs at
    least as many of those matmuls, even for a pair that converges at once."""
    calls = []
    real_matmul = torch.matmul
    monkeypatch.setattr(torch, "matmul", lambda *args: calls.append(1) or real_matmul(*args))
    image = torch.rand(1, 16, 16, dtype=torch.float64) + 0.5
    wwgan._w2_matmul_floor(image)()
    floor = len(calls)
    calls.clear()
    wwgan.image_w2_distance(image, image.flip(-1))
    assert floor == 4 * (len(wwgan._w2_annealing(16, 16, wwgan.W2_EPSILON)) + wwgan.W2_MIN_FINAL)
    assert floor <= len(calls)
