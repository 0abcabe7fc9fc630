"""One config for all stages: YAML file, schema defaults, overrides, one-line errors."""

from __future__ import annotations

import pytest
import yaml

from spurgemap.config import DEFAULT_CONFIG, SpurgemapConfig, dump_config, load_config
from spurgemap.core.errors import InputError


def test_default_yaml_matches_schema_defaults():
    # the package falls back to schema defaults when installed without configs/; they must agree
    assert load_config() == SpurgemapConfig()
    assert yaml.safe_load(DEFAULT_CONFIG.read_text()) == SpurgemapConfig().model_dump(mode="json")


def test_overrides_in_order_file_then_set_then_cli(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("tile:\n  tile_size_px: 200\n  min_valid_fraction: 0.5\n")
    cfg = load_config(f, {"tile.min_valid_fraction": 0.7, "tile.threads": None},
                      ["tile.tile_size_px=128", "labels.present=[si, oui]"])
    assert cfg.tile.tile_size_px == 128 and cfg.tile.min_valid_fraction == 0.7
    assert cfg.tile.threads == 2  # None = not given on the CLI, keeps the file/default value
    assert cfg.labels.present == ["si", "oui"]
    assert load_config(f).tile.tile_size_px == 200
    again = yaml.safe_load(dump_config(cfg))
    assert SpurgemapConfig.model_validate(again) == cfg


@pytest.mark.parametrize("text,fragment", [
    ("tile: {tile_size_px: -3}", "tile.tile_size_px"),
    ("tile: {unknown_key: 1}", "tile.unknown_key"),
    ("[1, 2", "not valid YAML"),
    ("- a list", "YAML mapping"),
])
def test_bad_config_files_are_one_line_errors(tmp_path, text, fragment):
    f = tmp_path / "bad.yaml"
    f.write_text(text)
    with pytest.raises(InputError, match=fragment) as err:
        load_config(f)
    assert str(f) in str(err.value) and "\n" not in str(err.value)


def test_bad_set_syntax():
    with pytest.raises(InputError, match="KEY=VALUE"):
        load_config(sets=["tile.tile_size_px"])
    with pytest.raises(InputError, match=r"missing\.yaml: config file not found"):
        load_config(DEFAULT_CONFIG.parent / "missing.yaml")


def test_old_tile_workers_key_is_read_as_threads_with_a_warning(tmp_path, caplog):
    """tile.workers (reader/writer threads) was renamed so that "workers" means Dask workers everywhere."""
    f = tmp_path / "old.yaml"
    f.write_text("tile:\n  workers: 5\n")
    with caplog.at_level("WARNING"):
        cfg = load_config(f)
    assert cfg.tile.threads == 5 and "tile.workers is deprecated" in caplog.text
    assert load_config(sets=["tile.workers=3"]).tile.threads == 3
    assert "workers" not in yaml.safe_load(dump_config(cfg))["tile"]
