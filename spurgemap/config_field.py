"""Config sections of the field outputs (issue 24): the treatment table and the zone outputs.

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
