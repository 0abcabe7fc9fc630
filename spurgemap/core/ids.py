"""User ids as file names: ids from user files never become paths outside the output folder."""

from __future__ import annotations

import re

_SAFE = re.compile(r"[^A-Za-z0-9._-]+")


def safe_id(value: str) -> str:
    """A file-name-safe form of a user id."""
    text = _SAFE.sub("_", str(value).strip()).strip("._")
    return text[:100]


# File and folder names drone software gives every project's orthomosaic (OpenDroneMap, WebODM,
# Pix4D, the demo): they say nothing about the site, so the folder above is the site's name.
GENERIC_NAMES = {"ortho", "orthomosaic", "orthophoto", "odm_orthophoto", "odm_orthophoto_cog", "mosaic",
                 "rgb", "map", "maps", "result", "results", "output", "outputs", "2_mosaic", "3_dsm_ortho",
                 "sites", "orthos", "orthomosaics", "data"}


def site_id_of(names: list[str]) -> str:
    """The first name that is not a generic drone-software name, made file-safe ("" if none).

    Why: `tile` matches a plot to the orthomosaic whose folder or file name is its site id, so
    `sites/site01/ortho.tif` is site01 and `field7/odm_orthophoto/odm_orthophoto.tif` is field7.
    """
    for name in names:
        safe = safe_id(name)
        if safe and safe.lower() not in GENERIC_NAMES:
            return safe
    return ""
