"""`spurgemap augment ...`: generation (the default subcommand), learn-tokens and tiny-model."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from typer.core import TyperGroup

from spurgemap.cli.options import (
    ConfigOpt,
    Key,
    OverwriteOpt,
    SetOpt,
    load_cli_config,
    out,
    run_guarded,
    split_list,
    warn_tiny_model,
)
from spurgemap.core.errors import InputError
from spurgemap.core.workdir import staged_dir


class _DefaultRun(TyperGroup):
    """`spurgemap augment TILES ...` means `spurgemap augment run TILES ...`."""

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        if args and args[0] not in self.commands and args[0] not in ("--help", "-h"):
            args = ["run", *args]
        return super().parse_args(ctx, args)


augment_app = typer.Typer(cls=_DefaultRun, no_args_is_help=True, add_completion=False,
                          help="Make synthetic training tiles with a diffusion model (DA-Fusion and others).")

ModelOpt = Annotated[str | None, typer.Option(
    "--model", help="Diffusers folder, .safetensors checkpoint or a hub id in the local HF cache."),
                     Key("augment.model")]
SitesOpt = Annotated[str | None, typer.Option(help="Only tiles of these training sites, comma-separated."),
                     Key("augment.sites")]
ShotsOpt = Annotated[int | None, typer.Option(help="K tiles per class from those sites."), Key("augment.shots")]
SeedOpt = Annotated[int | None, typer.Option(help="Seed: same seed, same tiles, tokens and images."), Key("seed")]
DeviceOpt = Annotated[str | None, typer.Option(help="auto, cpu or cuda."), Key("augment.device")]
AllowDownloadOpt = Annotated[bool, typer.Option("--allow-download", help="Fetch a hub id if not cached."),
                             Key("augment.allow_download")]
EraseOpt = Annotated[list[str] | None, typer.Option(
    "--erase", help="Concept to erase from the UNet first (ESD), e.g. \"leafy spurge\"; repeatable."),
                     Key("augment.erase.concepts")]


def _floats(text: str | None) -> list[float] | None:
    if text is None:
        return None
    try:
        return [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise InputError(f"--strengths {text!r}: expected comma-separated numbers, e.g. 0.25,0.5,0.75,1.0") from None


def _common(model: str | None, sites: str | None, shots: int | None, seed: int | None,
            device: str | None, token_steps: int | None, allow_download: bool | None,
            erase: list[str] | None) -> dict[str, Any]:
    return {"augment.model": model, "augment.sites": split_list(sites), "augment.shots": shots, "seed": seed,
            "augment.device": device, "augment.tokens.steps": token_steps,
            "augment.allow_download": allow_download or None, "augment.erase.concepts": erase or None}


@augment_app.command("run")
def run(
    tiles_dir: Annotated[Path, typer.Argument(help="Tile set folder written by `spurgemap tile`.")],
    out_dir: Annotated[Path, typer.Option("--out", help="Synthetic set folder (images, manifest.csv).")],
    method: Annotated[str | None, typer.Option(
        help="dafusion, real-guidance, text2img, boomerang, latent-perturb, inpaint or compose."),
                      Key("augment.method")] = None,
    model: ModelOpt = None,
    tokens: Annotated[Path | None, typer.Option(help="Class tokens from `augment learn-tokens`.")] = None,
    num_synthetic: Annotated[int | None, typer.Option(help="Synthetic tiles per real tile (M)."),
                             Key("augment.num_synthetic")] = None,
    token_steps: Annotated[int | None, typer.Option(help="Textual-inversion steps per class."),
                           Key("augment.tokens.steps")] = None,
    steps: Annotated[int | None, typer.Option(help="Denoising steps at strength 1."), Key("augment.steps")] = None,
    strengths: Annotated[str | None, typer.Option(help="SDEdit strengths to draw from, e.g. 0.25,0.5,0.75,1.0."),
                         Key("augment.strengths")]
    = None,
    guidance: Annotated[float | None, typer.Option(help="Classifier-free guidance scale."),
                        Key("augment.guidance")] = None,
    prompt: Annotated[str | None, typer.Option(help="Prompt template with {token}."), Key("augment.prompt")] = None,
    mask_layer: Annotated[Path | None, typer.Option(help="Polygons to edit (inpaint with mask=layer)."),
                          Key("augment.inpaint.mask")] = None,
    sites: SitesOpt = None,
    shots: ShotsOpt = None,
    seed: SeedOpt = None,
    batch_size: Annotated[int | None, typer.Option(help="Images per diffusion call."),
                          Key("augment.batch_size")] = None,
    device: DeviceOpt = None,
    allow_download: AllowDownloadOpt = False,
    erase: EraseOpt = None,
    config: ConfigOpt = None,
    set_: SetOpt = None,
    overwrite: OverwriteOpt = False,
) -> None:
    """Generate synthetic tiles from the real ones (learning class tokens first when needed).

    Several GPUs: `accelerate launch --num_processes N -m spurgemap.cli augment run ...` splits the jobs
    by rank (same images as one process); rank 0 learns the tokens first and writes the manifest.
    """
    # Deferred: a command loads only its own stage (fast --help, torch-free predict).
    from spurgemap.augment.stage import AugmentInputs, run_augment
    from spurgemap.campaign.processes import launched_ranks

    def go() -> None:
        common = _common(model, sites, shots, seed, device, token_steps, allow_download, erase)
        cfg = load_cli_config(config, set_, **common, **{
            "augment.method": method, "augment.num_synthetic": num_synthetic, "augment.steps": steps,
            "augment.strengths": _floats(strengths), "augment.guidance": guidance, "augment.prompt": prompt,
            "augment.batch_size": batch_size, "augment.inpaint.mask": "layer" if mask_layer else None})
        ranks = launched_ranks()  # `accelerate launch -m spurgemap.cli augment ...`: jobs split by rank
        res = run_augment(cfg, AugmentInputs(tiles_dir, out_dir, tokens, mask_layer, None, overwrite,
                                             ranks.rank, ranks.world, ranks.barrier))
        if not ranks.main:
            return
        if ranks.world > 1:
            out.print(f"{ranks.world} processes (accelerate): jobs split by rank, rank 0 wrote the manifest")
        if res.token_result:
            t = res.token_result
            out.print(f"class tokens learned from {t.tiles_used} tiles ({t.steps} steps per class, {t.seconds:.1f} s)"
                      f" -> {t.out}")
        per = ", ".join(f"{k}: {v}" for k, v in sorted(res.per_method.items()))
        out.print(f"{res.images} synthetic tiles ({per}); {res.generated} made this run"
                  f"{' (resumed)' if res.resumed else ''} in {res.seconds:.1f} s, {res.images_per_second:.2f} img/s"
                  f" -> {res.out}")
        bad = {m: c for m, c in res.guard.items() if c["retried"] or c["skipped"]}
        if bad:
            out.print("NaN / constant images: " + "; ".join(
                f"{m}: {c['retried']} kept after a retry, {c['skipped']} skipped" for m, c in sorted(bad.items()))
                + f" (skipped.csv in {res.out})")
        if res.tiny_model:
            warn_tiny_model("the images test the mechanics only and carry no information about spurge")

    run_guarded(go)


@augment_app.command("learn-tokens")
def learn_tokens(
    tiles_dir: Annotated[Path, typer.Argument(help="Tile set folder written by `spurgemap tile`.")],
    out_dir: Annotated[Path, typer.Option("--out", help="Token folder to write (safetensors per class).")],
    model: ModelOpt = None,
    token_steps: Annotated[int | None, typer.Option("--steps", help="Steps per class (reference: 1000)."),
                           Key("augment.tokens.steps")] = None,
    sites: SitesOpt = None,
    shots: ShotsOpt = None,
    seed: SeedOpt = None,
    device: DeviceOpt = None,
    allow_download: AllowDownloadOpt = False,
    erase: EraseOpt = None,
    config: ConfigOpt = None,
    set_: SetOpt = None,
    overwrite: OverwriteOpt = False,
) -> None:
    """Learn one token per class (textual inversion) from training tiles only."""
    # Deferred: a command loads only its own stage (fast --help, torch-free predict).
    from spurgemap.augment.stage import TokenInputs, run_learn_tokens

    def go() -> None:
        cfg = load_cli_config(config, set_, **_common(model, sites, shots, seed, device, token_steps, allow_download,
                                              erase))
        res = run_learn_tokens(cfg, TokenInputs(tiles_dir, out_dir, None, overwrite))
        for label, token in res.tokens.items():
            out.print(f"{token} ({label}): loss {res.loss_before[token]:.4f} -> {res.loss_after[token]:.4f}")
        out.print(f"{res.steps} steps per class from {res.tiles_used} tiles in {res.seconds:.1f} s "
                  f"({2 * res.steps / max(res.seconds, 1e-9):.2f} steps/s) -> {res.out}")
        if res.tiny_model:
            warn_tiny_model("the tokens test the mechanics only")

    run_guarded(go)


@augment_app.command("tiny-model")
def tiny_model(
    out_dir: Annotated[Path, typer.Argument(help="Folder for a tiny random diffusers model.")],
    seed: SeedOpt = None,
) -> None:
    """Write a tiny randomly initialised Stable Diffusion (for trying the mechanics without weights)."""
    # Deferred: a command loads only its own stage (fast --help, torch-free predict).
    from spurgemap.augment.tiny import write_tiny_model

    def go() -> None:
        with staged_dir(out_dir, False, "augment tiny-model") as tmp:
            write_tiny_model(tmp, seed=seed or 0)
        out.print(f"tiny random diffusion model (64 px, random weights: mechanics only) -> {out_dir}")

    run_guarded(go)
