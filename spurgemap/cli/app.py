"""The `spurgemap` command: parses options, calls one library entry point, prints the result."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from spurgemap import __version__
from spurgemap.cli.campaign import predict_campaign
from spurgemap.cli.options import (
    STATE,
    ConfigOpt,
    Key,
    OverwriteOpt,
    SchedulerOpt,
    SetOpt,
    WorkersOpt,
    install_sigterm,
    load_cli_config,
    out,
    parse_numbers,
    run_guarded,
    setup_logging,
    split_list,
    warn_tiny_model,
)
from spurgemap.cli.printing import print_tile_summary
from spurgemap.core.errors import InputError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Map leafy spurge from drone orthomosaics.")


@app.callback()
def main(
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks and debug logs.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Only warnings and errors.")] = False,
) -> None:
    STATE["debug"] = debug
    setup_logging(debug, quiet)


@app.command("demo-data")
def demo_data(
    out_dir: Annotated[Path, typer.Argument(help="Folder to write the demo field data into.")],
    sites: Annotated[int | None, typer.Option(help="Number of sites (>= 1)."), Key("demo.sites")] = None,
    size: Annotated[int | None, typer.Option(help="Orthomosaic edge in pixels per site."), Key("demo.size_px")] = None,
    seed: Annotated[int | None, typer.Option(help="Random seed; same seed, same data."), Key("demo.seed")] = None,
    years: Annotated[int | None, typer.Option(help="Seasons per site (2+: later flights show spread)."),
                     Key("demo.years")] = None,
    config: ConfigOpt = None,
    set_: SetOpt = None,
    overwrite: OverwriteOpt = False,
) -> None:
    """Generate synthetic drone orthomosaics, plots and a survey (the embedded demo data)."""
    # Deferred: a command loads only its own stage (fast --help, torch-free predict).
    from spurgemap.demo.pipeline import write_demo_data

    def go() -> None:
        cfg = load_cli_config(config, set_, **{"demo.sites": sites, "demo.size_px": size, "demo.seed": seed,
                                                 "demo.years": years})
        res = write_demo_data(cfg, out_dir, overwrite=overwrite)
        out.print(f"demo data: {len(res.site_ids)} sites, {res.n_plots} plots "
                  f"({res.n_present} with spurge), {res.megapixels:.0f} Mpx in {res.seconds:.1f} s "
                  f"-> {out_dir}")

    run_guarded(go)


@app.command()
def tile(
    orthos: Annotated[list[Path], typer.Argument(help="Orthomosaic GeoTIFF(s).")],
    plots: Annotated[Path, typer.Option(help="Plot polygons or survey points (GeoJSON/GPKG/SHP/CSV).")],
    out_dir: Annotated[Path, typer.Option("--out", help="Tile set folder to create.")],
    survey: Annotated[Path | None, typer.Option(help="Survey CSV: site_id, plot_id, presence.")] = None,
    verify: Annotated[Path | None, typer.Option(help="Per-tile verification CSV: tile_id, presence.")] = None,
    tile_size: Annotated[int | None, typer.Option(help="Tile edge in pixels."), Key("tile.tile_size_px")] = None,
    gsd: Annotated[float | None, typer.Option(help="Resample tiles to this ground resolution (m/px), so a "
                                                   "tile covers tile size x GSD metres on every flight."),
                   Key("tile.gsd_m")] = None,
    min_valid: Annotated[float | None, typer.Option(help="Minimum share of valid pixels per tile."),
                         Key("tile.min_valid_fraction")] = None,
    bands: Annotated[str | None, typer.Option(help="Red,green,blue band numbers, e.g. 3,2,1."),
                     Key("tile.bands")] = None,
    value_range: Annotated[str | None, typer.Option(help="LO,HI of 16-bit/float pixels -> 0..255."),
                           Key("tile.value_range")] = None,
    plot_size: Annotated[float | None, typer.Option(help="Plot edge in metres for point surveys."),
                         Key("tile.point_plot_size_m")] = None,
    crs: Annotated[str | None, typer.Option(help="CRS of the plots file if it has none.")] = None,
    threads: Annotated[int | None, typer.Option(help="Reader/writer threads in this process."),
                       Key("tile.threads")] = None,
    workers: WorkersOpt = None,
    scheduler: SchedulerOpt = None,
    config: ConfigOpt = None,
    set_: SetOpt = None,
    overwrite: OverwriteOpt = False,
) -> None:
    """Cut orthomosaics into plot-aligned tiles labelled from the botanists' survey.

    With --workers or --scheduler, each orthomosaic's plots are cut by a Dask task (same tile set).
    """
    # Deferred: a command loads only its own stage (fast --help, torch-free predict).
    from spurgemap.tile import TileInputs, run_tile

    def go() -> None:
        cfg = load_cli_config(config, set_, **{
            "tile.tile_size_px": tile_size, "tile.gsd_m": gsd, "tile.min_valid_fraction": min_valid,
            "tile.bands": parse_numbers(bands, 3, "--bands", int),
            "tile.value_range": parse_numbers(value_range, 2, "--value-range"),
            "tile.point_plot_size_m": plot_size, "tile.threads": threads})
        inputs = TileInputs(orthos, plots, out_dir, survey, verify, crs, overwrite)
        if workers is None and scheduler is None:
            res = run_tile(cfg, inputs)
        else:
            # Deferred: Dask loads only when asked for.
            from spurgemap.campaign.tiling import run_tile_distributed

            res, dashboard = run_tile_distributed(cfg, inputs, workers, scheduler)
            if dashboard:
                out.print(f"Dask dashboard: {dashboard}")
        print_tile_summary(res)

    run_guarded(go)


@app.command()
def train(
    tiles_dir: Annotated[Path, typer.Argument(help="Tile set folder written by `spurgemap tile`.")],
    out_dir: Annotated[Path, typer.Option("--out", help="Run folder: model.spurge, metrics.json, pictures.")],
    synthetic: Annotated[list[Path] | None, typer.Option(help="Synthetic set folder(s) from `augment`.")] = None,
    backbone: Annotated[str | None, typer.Option(help="tf_efficientnet_lite0, resnet18, resnet50 or a timm name."),
                        Key("train.backbone")]
    = None,
    weights: Annotated[Path | None, typer.Option(help="Local weights file for the backbone."),
                       Key("train.weights")] = None,
    mode: Annotated[str | None, typer.Option(help="probe (frozen backbone) or finetune."), Key("train.mode")] = None,
    trainable_blocks: Annotated[int | None, typer.Option(
        help="With --mode finetune: train only the last N backbone stages (default: every layer)."),
                                Key("train.trainable_blocks")] = None,
    epochs: Annotated[int | None, typer.Option(help="Training epochs."), Key("train.epochs")] = None,
    val_sites: Annotated[str | None, typer.Option(help="Validation sites, comma-separated."),
                         Key("train.val_sites")] = None,
    test_sites: Annotated[str | None, typer.Option(help="Test sites, never used for selection."),
                          Key("train.test_sites")] = None,
    shots: Annotated[int | None, typer.Option(help="K training tiles per class (few-shot)."),
                     Key("train.shots")] = None,
    seed: Annotated[int | None, typer.Option(help="Seed for sampling and training."), Key("seed")] = None,
    device: Annotated[str | None, typer.Option(help="auto, cpu or cuda."), Key("train.device")] = None,
    folds: Annotated[int | None, typer.Option(help="Grouped folds that each hold both classes (0: one per site)."),
                     Key("train.folds")]
    = None,
    group_by: Annotated[str | None, typer.Option(help="site, or spatial: sites closer than --spatial-distance "
                                                      "are one group."), Key("train.group_by")] = None,
    spatial_distance: Annotated[float | None, typer.Option(help="Metres for --group-by spatial."),
                                Key("train.spatial_distance_m")] = None,
    labels: Annotated[str | None, typer.Option(help="tile, or plot-mil: a present plot has >= 1 present tile."),
                      Key("train.labels")]
    = None,
    feature_cache: Annotated[Path | None, typer.Option(help="Folder reusing backbone features across runs.")] = None,
    operating_point: Annotated[str | None, typer.Option(help="balanced, recall=R or precision=P."),
                               Key("train.operating_point")] = None,
    config: ConfigOpt = None,
    set_: SetOpt = None,
    overwrite: OverwriteOpt = False,
) -> None:
    """Train a presence / absence classifier, validated on held-out sites."""
    # Deferred: a command loads only its own stage (fast --help, torch-free predict).
    from spurgemap.train import TrainInputs, run_train

    def go() -> None:
        cfg = load_cli_config(config, set_, **{
            "train.backbone": backbone, "train.weights": str(weights) if weights else None,
            "train.mode": mode, "train.trainable_blocks": trainable_blocks, "train.epochs": epochs,
            "train.val_sites": split_list(val_sites),
            "train.test_sites": split_list(test_sites), "train.shots": shots, "seed": seed,
            "train.device": device, "train.folds": folds, "train.group_by": group_by,
            "train.spatial_distance_m": spatial_distance, "train.labels": labels,
            "train.operating_point": operating_point})
        res = run_train(cfg, TrainInputs(tiles_dir, out_dir, list(synthetic or []), overwrite, feature_cache))
        m = res.metrics
        out.print(f"validation ({m['selection']}): balanced accuracy {m['balanced_accuracy']:.3f}, "
                  f"ROC-AUC {m['validation']['roc_auc'] or float('nan'):.3f}, threshold {m['threshold']:.3f}, "
                  f"best epoch {m['best_epoch']}; operating point {m['operating_point']} "
                  f"({m['operating_point_result']}), "
                  f"calibration {m['calibration']['method']} (ECE {m['reliability']['ece']:.3f}, cross-fitted), "
                  f"context weight {m['context']['lambda']:g}")
        if "test" in m:
            out.print(f"test sites: balanced accuracy {m['test']['balanced_accuracy']:.3f}")
        sa = m["present_plot_tiles_scored_absent"]
        if sa["of"]:
            out.print(f"{sa['tiles']} of {sa['of']} validation tiles of present plots scored absent "
                      f"({100 * sa['share']:.0f} %; labels: {m['labels']})")
        out.print(f"{'resumed, ' if res.resumed else ''}{res.seconds:.1f} s -> {res.bundle}")

    run_guarded(go)


@app.command()
def predict(
    model: Annotated[Path, typer.Option(help="Model bundle (model.spurge) from `spurgemap train`.")],
    out_dir: Annotated[Path, typer.Option("--out", help="Folder for the maps.")],
    orthos: Annotated[list[Path] | None, typer.Argument(
        help="Orthomosaic GeoTIFF(s) or globs; more than one runs a campaign on Dask.")] = None,
    aoi: Annotated[Path | None, typer.Option(help="Polygons limiting the mapped area (any CRS).")] = None,
    plots: Annotated[Path | None, typer.Option(help="Plot polygons for per-plot spurge area.")] = None,
    stride: Annotated[int | None, typer.Option(help="Map cell size in px; divides the tile size."),
                      Key("predict.stride_px")] = None,
    tta: Annotated[bool | None, typer.Option("--tta/--no-tta", help="Average the 8 flips/rotations."),
                   Key("predict.tta")] = None,
    batch_size: Annotated[int | None, typer.Option(help="Tiles per inference batch."),
                          Key("predict.batch_size")] = None,
    device: Annotated[str | None, typer.Option(help="auto, cpu or cuda."), Key("predict.device")] = None,
    backend: Annotated[str | None, typer.Option(help="auto, openvino or onnx (CPU), or torch."),
                       Key("predict.backend")] = None,
    list_file: Annotated[Path | None, typer.Option("--list", help="Text file: one orthomosaic path per line.")]
    = None,
    workers: WorkersOpt = None,
    scheduler: SchedulerOpt = None,
    campaign_crs: Annotated[str | None, typer.Option(
        help="CRS of campaign_presence.gpkg (default: the first finished map's CRS).")] = None,
    config: ConfigOpt = None,
    set_: SetOpt = None,
    overwrite: OverwriteOpt = False,
) -> None:
    """Map the species (labels.species) over whole orthomosaics: GeoTIFF, GeoJSON and GeoPackage for QGIS.

    Several orthomosaics (paths, globs, --list) run as a campaign: one Dask task per orthomosaic into
    OUT/<name>/, plus OUT/campaign_summary.csv and OUT/campaign_presence.gpkg.
    """
    # Deferred: a command loads only its own stage (fast --help, torch-free predict).
    from spurgemap.campaign import expand_orthos
    from spurgemap.predict import PredictInputs, run_predict

    def go() -> None:
        cfg = load_cli_config(config, set_, **{"predict.stride_px": stride, "predict.tta": tta,
                                       "predict.batch_size": batch_size, "predict.device": device,
                                       "predict.backend": backend})
        paths = expand_orthos(list(orthos or []), list_file)
        if len(paths) > 1:
            predict_campaign(cfg, paths, model, out_dir, aoi, plots, overwrite, workers, scheduler, campaign_crs)
            return
        res = run_predict(cfg, PredictInputs(paths[0], model, out_dir, aoi, plots, overwrite))
        s = res.summary
        out.print(f"{res.predicted} of {res.tiles} tiles mapped with {res.backend} in {res.seconds:.1f} s: "
                  f"{res.tiles_per_second:.1f} tiles/s, {s.hectares_per_hour or 0:.1f} ha/h")
        out.print(f"{s.species} on {s.present_area_ha:.4f} ha of {s.mapped_area_ha:.4f} ha mapped "
                  f"({100 * s.present_share:.1f} %) -> {res.out}")
        out.print(f"low confidence (< {s.low_confidence_below}) on {100 * s.low_confidence_share:.1f} % "
                  f"of the mapped area (see {res.files['confidence'].name})")

    run_guarded(go)


@app.command()
def export(
    bundle: Annotated[Path, typer.Argument(help="Model bundle (model.spurge).")],
    onnx: Annotated[Path, typer.Option("--onnx", help="ONNX file to write, for the Deepness QGIS plugin.")],
) -> None:
    """Export a bundle to ONNX with the metadata the Deepness QGIS plugin reads."""
    # Deferred: a command loads only its own stage (fast --help, torch-free predict).
    from spurgemap.predict.deepness import export_deepness

    def go() -> None:
        meta = export_deepness(bundle, onnx)
        out.print(f"wrote {onnx} ({meta['model_type']}, tile {meta['tile_size']} px, "
                  f"{meta['resolution']:.2f} cm/px)")

    run_guarded(go)


@app.command()
def demo(
    out_dir: Annotated[Path, typer.Argument(help="Folder for the whole demo run.")],
    sites: Annotated[int | None, typer.Option(help="Number of demo sites."), Key("demo.sites")] = None,
    size: Annotated[int | None, typer.Option(help="Orthomosaic edge in pixels per site."), Key("demo.size_px")] = None,
    config: ConfigOpt = None,
    set_: SetOpt = None,
    overwrite: OverwriteOpt = False,
) -> None:
    """The main job on the demo data: demo data -> tile -> train -> predict -> change, zones, survey plan."""
    # Deferred: a command loads only its own stage (fast --help, torch-free predict).
    from spurgemap.demo.pipeline import run_demo

    def go() -> None:
        cfg = load_cli_config(config, set_, **{"demo.sites": sites, "demo.size_px": size})
        res = run_demo(cfg, out_dir, overwrite=overwrite)
        for stage, status in res.stages.items():
            out.print(f"{stage:>10}: {status}")

    run_guarded(go)


@app.command()
def evaluate(
    tiles_dir: Annotated[Path, typer.Argument(help="Tile set folder written by `spurgemap tile`.")],
    out_dir: Annotated[Path, typer.Option("--out", help="Evaluation folder (results.csv, summary.md, runs/).")],
    methods: Annotated[str | None, typer.Option(
        help="baseline, randaugment, augment methods (dafusion, ...), each optionally +randaugment."),
                       Key("evaluate.methods")] = None,
    shots: Annotated[str | None, typer.Option(help="k values, e.g. 1,2,4,8,16."), Key("evaluate.shots")] = None,
    seeds: Annotated[str | None, typer.Option(help="Seeds, e.g. 0,1,2 or 0-7."), Key("evaluate.seeds")] = None,
    diffusion_model: Annotated[str | None, typer.Option(help="Diffusion model for generative methods."),
                               Key("evaluate.diffusion_model")] = None,
    val_sites: Annotated[str | None, typer.Option(help="Validation sites (selection), comma-separated."),
                         Key("evaluate.val_sites")] = None,
    test_sites: Annotated[str | None, typer.Option(help="Test sites (reported, never selected on)."),
                          Key("evaluate.test_sites")] = None,
    protocol: Annotated[str | None, typer.Option(
        help="default, or reference: the DA-Fusion paper's settings (M=50, 50 epochs Adam 1e-4, its prompts)."),
                        Key("evaluate.protocol")] = None,
    workers: WorkersOpt = None,
    scheduler: SchedulerOpt = None,
    config: ConfigOpt = None,
    set_: SetOpt = None,
) -> None:
    """The DA-Fusion few-shot experiment: methods x k x seeds, cached and resumable; with --workers or
    --scheduler, grid cells run as Dask tasks (one GPU per worker when present)."""
    # Deferred: a command loads only its own stage (fast --help, torch-free predict).
    from spurgemap.evaluate import EvaluateInputs, run_evaluate

    def ints(text: str | None, name: str) -> list[int] | None:
        if text is None:
            return None
        values: list[int] = []
        try:
            for part in text.split(","):
                lo, _, hi = part.strip().partition("-")
                values += list(range(int(lo), int(hi) + 1)) if hi else [int(lo)]
        except ValueError:
            raise InputError(f"{name} {text!r}: expected integers like 0,1,2 or 0-7") from None
        return values

    def go() -> None:
        cfg = load_cli_config(config, set_, **{
            "evaluate.methods": split_list(methods), "evaluate.shots": ints(shots, "--shots"),
            "evaluate.seeds": ints(seeds, "--seeds"), "evaluate.protocol": protocol,
            "evaluate.diffusion_model": diffusion_model, "evaluate.val_sites": split_list(val_sites),
            "evaluate.test_sites": split_list(test_sites)})
        if workers is None and scheduler is None:
            res = run_evaluate(cfg, EvaluateInputs(tiles_dir, out_dir))
        else:  # Deferred: Dask loads only when asked for.
            from spurgemap.campaign.grid import run_evaluate_distributed

            res = run_evaluate_distributed(cfg, EvaluateInputs(tiles_dir, out_dir), workers, scheduler)
        out.print(f"{res.runs} runs ({res.trained} trained now, {res.runs - res.trained} cached) in "
                  f"{res.seconds:.1f} s; validation {res.val_sites}, test {res.test_sites} -> {res.out}/summary.md")
        if res.tiny_model:
            warn_tiny_model("the generative methods' numbers measure mechanics, not benefit")

    run_guarded(go)


@app.command()
def info(path: Annotated[Path, typer.Argument(help="An orthomosaic, a tile set folder or a bundle.")]) -> None:
    """Print the essentials of an orthomosaic or a tile set."""
    # Deferred: a command loads only its own stage (fast --help, torch-free predict).
    from spurgemap.info import describe

    def go() -> None:
        out.print_json(json.dumps(describe(path), default=str))

    run_guarded(go)


@app.command()
def version() -> None:
    """Print the spurgemap version."""
    out.print(__version__)


from spurgemap.cli.augment import augment_app  # noqa: E402  (sub-apps register after the commands above
from spurgemap.cli.fieldwork import register as register_fieldwork  # noqa: E402  so --help lists them last)

app.add_typer(augment_app, name="augment")
register_fieldwork(app)


def run() -> None:  # console-script entry point
    install_sigterm()
    app(prog_name="spurgemap")


if __name__ == "__main__":
    run()
