"""Config sections of the field commands: survey-plan, zones (with the treatment table) and change.

Why a module of its own: config.py holds the stage sections and is near the 400-line limit;
``spurgemap.config`` re-exports these, so there is still one schema.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

TERMINALS = ("generic", "deere", "trimble", "raven", "agfusion")
Terminal = Literal["generic", "deere", "trimble", "raven", "agfusion"]


class _Section(BaseModel):
    # the same rules as config.py's sections: unknown keys and nan/inf are refused
    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)


class Product(_Section):
    """One herbicide of the treatment table: a label rate per hectare and where it comes from."""

    name: str = Field(min_length=1)
    active_ingredient: str = ""
    rate_per_ha: float = Field(gt=0.0)
    unit: Literal["L/ha", "kg/ha"] = "L/ha"  # L/ha: a liquid, part of the tank mix; kg/ha: a dry product
    source: str = ""  # where the rate comes from (label, extension guide), in words


# An EXAMPLE table from the product labels' leafy-spurge rates, converted to metric. Not advice:
# the label on the container, the applicator's licence and local rules decide what is applied.
EXAMPLE_PRODUCTS = [
    Product(name="picloram", active_ingredient="picloram 240 g ae/L (Tordon 22K)", rate_per_ha=2.34,
            source="EXAMPLE: Tordon 22K label (Corteva), leafy spurge 1-2 qt/acre; 1 qt/acre = 2.34 L/ha. "
                   "Restricted use. Check the current label before use."),
    Product(name="imazapic", active_ingredient="imazapic 240 g ae/L (Plateau)", rate_per_ha=0.88,
            source="EXAMPLE: Plateau label (BASF), leafy spurge 8-12 fl oz/acre with MSO, fall; "
                   "12 fl oz/acre = 0.88 L/ha. Check the current label before use."),
]


class TreatmentConfig(_Section):
    """Product and carrier of `spurgemap zones`: the dose per zone, tank loads, saving against broadcast."""

    products: list[Product] = EXAMPLE_PRODUCTS  # first, so that `product` is checked against it
    product: str | None = None  # a name from `products`; null: no product figures
    carrier_l_per_ha: float | None = Field(None, gt=0.0)  # spray volume (water + product) per hectare
    tank_l: float | None = Field(None, gt=0.0)  # sprayer tank, for the number of tank loads

    @field_validator("product")
    @classmethod
    def _known_product(cls, value: str | None, info: ValidationInfo) -> str | None:
        names = [p.name for p in info.data.get("products", [])]
        if value is not None and value not in names:
            raise ValueError(f"unknown product {value!r}; the treatment table has {', '.join(names)}")
        return value

    def chosen(self) -> Product | None:
        return next((p for p in self.products if p.name == self.product), None)


class SurveyPlanConfig(_Section):
    """`spurgemap survey-plan`: which cells to visit next, and in what order (checked by the stage)."""

    n: int = 20  # >= 1, checked by the stage
    min_spacing_m: float = Field(20.0, ge=0.0, le=10_000.0)
    start_lonlat: tuple[float, float] | None = None  # default: the map's south-west corner
    seed: int = 0
    band_edges_pct: tuple[float, ...] = (20.0, 40.0, 60.0, 80.0)  # inner edges of the probability bands
    # an "uncertain" visit needs 1 - confidence >= this (sits' min_uncert): 0.2 < p < 0.8 at t = 0.5
    min_uncertainty: float = Field(0.4, ge=0.0, le=1.0)

    @field_validator("start_lonlat")
    @classmethod
    def _lonlat(cls, value: tuple[float, float] | None) -> tuple[float, float] | None:
        if value is not None and not (-180 <= value[0] <= 180 and -90 <= value[1] <= 90):
            raise ValueError("expected LON,LAT in degrees (WGS 84), longitude first, e.g. -110.5,45.7")
        return value


class ZonesConfig(_Section):
    """`spurgemap zones`: spot-spray treatment zones from the presence cells."""

    buffer_m: float = Field(1.0, ge=0.0, le=1000.0)  # metres; more than 1 km is no spot spray
    min_area_m2: float = Field(1.0, ge=0.0, le=1e6)
    simplify_m: float = Field(0.25, ge=0.0, le=1000.0)  # clamped to buffer_m (it must not eat the buffer)
    rate_l_per_ha: float | None = Field(None, gt=0.0, le=2000.0)  # spray volume (old name of --carrier)
    # -- issue 24: prescriptions and records (terminal profiles, zone cap, ISOXML, record columns)
    terminals: list[Terminal] = Field(["generic"], min_length=1)  # Shapefile profiles, one Shapefile each
    max_zones: int | None = Field(None, ge=1, le=253)  # null: the terminals' cap (agfusion 100, ISOXML 253)
    merge_step_m: float = Field(0.5, gt=0.0)  # buffer step when zones are merged to fit the cap
    isoxml_grid: bool = False  # TASKDATA as a type-2 grid of zone codes instead of zone polygons
    records: Literal["generic", "eddmaps"] = "generic"  # column spellings of infestations.csv/.gpkg


class ChangeConfig(_Section):
    """`spurgemap change`: when two maps' grids differ enough to warn."""

    max_offset_cells: float = Field(0.25, ge=0.0)  # grid offset, as a fraction of a cell
    max_resolution_diff: float = Field(0.05, ge=0.0)  # relative difference in cell size
