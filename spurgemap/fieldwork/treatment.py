"""What a spray job needs: spray volume, product and water per zone and in total, tank loads, saving.

Why: a rate in L/ha is a carrier (spray) volume, not a dose. The product comes from the config's
treatment table (an example of label rates, never advice) and is applied per treated hectare, so
the saving against broadcast is the share of the site that is not sprayed.
"""

from __future__ import annotations

import math
from typing import Any

import pandas as pd

from spurgemap.config import SpurgemapConfig
from spurgemap.core.errors import InputError


def spray_volume(config: SpurgemapConfig) -> float | None:
    """The spray volume per hectare: `--carrier` (treatment.carrier_l_per_ha) or its older name `--rate`."""
    rate, carrier = config.zones.rate_l_per_ha, config.treatment.carrier_l_per_ha
    if rate is not None and rate <= 0:
        raise InputError(f"--rate {rate:g}: litres per hectare must be > 0")
    if rate is not None and carrier is not None and not math.isclose(rate, carrier):
        raise InputError(f"--rate {rate:g} and --carrier {carrier:g}: both are the spray volume per hectare; "
                         "give one")
    return rate if rate is not None else carrier


def dose_columns(area_ha: pd.Series, config: SpurgemapConfig) -> pd.DataFrame:
    """Per zone: rate (what terminals read; 1 = on/off without a volume), spray volume, product, water."""
    volume = spray_volume(config)
    product = config.treatment.chosen()
    out = pd.DataFrame(index=area_ha.index)
    out["rate"] = volume if volume is not None else 1.0
    out["spray_volume_l"] = (area_ha * volume).round(4) if volume is not None else None
    if product is not None:
        amount = (area_ha * product.rate_per_ha).round(4)
        out["product_" + product.unit.split("/")[0].lower()] = amount
        if volume is not None:
            liquid = amount if product.unit == "L/ha" else 0.0
            out["water_l"] = (area_ha * volume - liquid).round(4)
    return out


def dose_summary(config: SpurgemapConfig, treated_ha: float, site_ha: float) -> dict[str, Any]:
    """Totals: spray volume, product, water, tank loads, treated area and the saving against broadcast."""
    volume = spray_volume(config)
    t = config.treatment
    product = t.chosen()
    if product is not None and volume is not None and product.unit == "L/ha" and product.rate_per_ha >= volume:
        raise InputError(f"--carrier {volume:g}: the spray volume must exceed the product's own "
                         f"{product.rate_per_ha:g} L/ha ({product.name})")
    out: dict[str, Any] = {
        "spray_volume_l_per_ha": volume,
        "rate_field": "L/ha spray volume" if volume is not None else "1 = spray (on/off)",
        "spray_volume_l": round(treated_ha * volume, 3) if volume is not None else None,
        "treated_area_ha": round(treated_ha, 6), "broadcast_area_ha": round(site_ha, 6),
        "saving_vs_broadcast": round(1 - treated_ha / site_ha, 4) if site_ha else None,
        "product": None, "tank_l": t.tank_l, "tank_loads": None,
    }
    if volume is not None and t.tank_l:
        out["tank_loads"] = math.ceil(treated_ha * volume / t.tank_l - 1e-9)
        out["tank_loads_broadcast"] = math.ceil(site_ha * volume / t.tank_l - 1e-9)
    if product is not None:
        unit = product.unit.split("/")[0]
        amount, broadcast = treated_ha * product.rate_per_ha, site_ha * product.rate_per_ha
        out["product"] = {
            "name": product.name, "active_ingredient": product.active_ingredient,
            "rate_per_ha": product.rate_per_ha, "unit": product.unit, "source": product.source,
            "note": "example label rate from the config's treatment table, not advice; follow the product label",
            f"total_{unit.lower()}": round(amount, 4), f"broadcast_{unit.lower()}": round(broadcast, 4),
            f"saved_{unit.lower()}": round(broadcast - amount, 4)}
        if volume is not None:
            out["water_l"] = round(treated_ha * volume - (amount if product.unit == "L/ha" else 0.0), 3)
            if t.tank_l:
                per_tank = t.tank_l / volume * product.rate_per_ha  # product in one full tank
                out["product"][f"per_full_tank_{unit.lower()}"] = round(per_tank, 4)
    return out
