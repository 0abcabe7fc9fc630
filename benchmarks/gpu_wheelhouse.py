"""Build ./wheelhouse: exactly the wheels a bare GPU machine with python and torch lacks for gpu_suite.py.

    python benchmarks/gpu_wheelhouse.py [--torch 2.14.1] [--python 3.11] [--out wheelhouse] [--list]

Why: the GPU machines reach no package registry and only files beside the working tree travel there
(at most 64 MiB). The needs are the suite's direct imports (NEEDS) and their declared requirements,
resolved from this environment's installed versions (known to work together), minus what torch itself
brings; no GIS library is among them. torchvision must match the machine's torch: --torch picks it.
Wheels are downloaded with `pip download --no-deps --only-binary :all:` for manylinux x86_64; the
script lists each with its size and fails when the total passes --limit-mib (64).
"""

from __future__ import annotations

import argparse
import importlib.metadata as md
import re
import subprocess
import sys
from pathlib import Path

from packaging.markers import default_environment
from packaging.requirements import Requirement

# What gpu_suite.py and the spurgemap modules it runs import (torch aside)
NEEDS = ["diffusers", "transformers", "timm", "torchvision", "pydantic", "PyYAML", "safetensors", "numpy",
         "pillow", "huggingface_hub", "tokenizers"]
# torch is on the machine; the rest are declared but never imported on the suite's path (hub downloads and
# CLI, transformers' kernel hub): tests/test_gpu_bench.py runs the suite with these blocked
SKIP = {"torch", "hf-xet", "kernels", "typer", "click", "shellingham", "tomlkit", "rich", "pygments",
        "markdown-it-py", "mdurl", "annotated-doc"}


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def closure(names: list[str], env: dict[str, str]) -> dict[str, str]:
    """Distribution -> installed version, for `names` and their non-extra requirements (recursively)."""
    out: dict[str, str] = {}
    todo = list(names)
    while todo:
        name = todo.pop()
        key = _norm(name)
        if key in out:
            continue
        try:
            out[key] = md.version(name)
        except md.PackageNotFoundError:
            raise SystemExit(f"{name}: not installed here; install the project's environment first") from None
        for text in md.requires(name) or []:
            req = Requirement(text)
            if req.marker is not None and not req.marker.evaluate({**env, "extra": ""}):
                continue
            todo.append(req.name)
    return out


def torchvision_for(torch_version: str) -> str:
    """torchvision's release for a torch release: 2.N.x -> 0.(N+15).x (the same pairing PyTorch publishes)."""
    major, minor, *rest = torch_version.split("+")[0].split(".")
    if major != "2":
        raise SystemExit(f"--torch {torch_version}: only torch 2.x is mapped to a torchvision release")
    return f"0.{int(minor) + 15}.{rest[0] if rest else 0}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--torch", default=md.version("torch").split("+")[0], help="torch on the GPU machine")
    ap.add_argument("--python", default=f"{sys.version_info.major}.{sys.version_info.minor}")
    ap.add_argument("--out", type=Path, default=Path("wheelhouse"))
    ap.add_argument("--limit-mib", type=float, default=64.0)
    ap.add_argument("--list", action="store_true", help="print what would be downloaded, download nothing")
    args = ap.parse_args()
    env = default_environment()
    env["python_version"] = args.python
    have = closure(["torch"], env)  # torch and everything it pulls in are on the machine
    want = {k: v for k, v in closure(NEEDS, env).items() if k not in have and k not in SKIP}
    want["torchvision"] = torchvision_for(args.torch)
    pins = [f"{k}=={v}" for k, v in sorted(want.items())]
    if args.list:
        print("\n".join(pins))
        return
    args.out.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary", ":all:", "--dest",
           str(args.out), "--python-version", args.python, "--implementation", "cp",
           "--platform", "manylinux_2_28_x86_64", "--platform", "manylinux2014_x86_64",
           "--platform", "manylinux_2_17_x86_64", "--platform", "any", *pins]
    subprocess.run(cmd, check=True)
    (args.out / "requirements.txt").write_text("\n".join(pins) + "\n")
    wheels = sorted(args.out.glob("*.whl"))
    total = sum(w.stat().st_size for w in wheels)
    for w in wheels:
        print(f"{w.stat().st_size / 2**20:8.2f} MiB  {w.name}")
    print(f"{total / 2**20:8.2f} MiB  in all ({len(wheels)} wheels, limit {args.limit_mib:g} MiB) -> {args.out}")
    if total > args.limit_mib * 2**20:
        raise SystemExit(f"the wheelhouse is {total / 2**20:.1f} MiB, over --limit-mib {args.limit_mib:g}")


if __name__ == "__main__":
    main()
