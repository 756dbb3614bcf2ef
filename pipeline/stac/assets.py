"""Band id -> asset href, whatever the catalog calls the band, and provider-specific signing.

Earth Search v1 (and the demo world) keys assets by common name (``blue``, ``nir08``, ``scl``);
the Planetary Computer by band id (``B02``, ``B8A``, ``SCL``). Both layouts are recognised per
item, so a static catalog in either layout works. Only Planetary Computer hrefs are signed, via
the ``planetary-computer`` package, imported when first needed; its ``sign_url`` leaves hrefs
outside Azure Blob Storage untouched without any network call.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Literal

import pystac

from pipeline.bands import EARTH_SEARCH_ASSET
from pipeline.errors import FetchError

Provider = Literal["earth-search", "planetary-computer", "static"]
Signer = Callable[[str], str]


def resolve_provider(provider: str, catalog: str) -> Provider:
    """The concrete provider of ``fetch.provider`` (``auto`` decided from the catalog string)."""
    if provider != "auto":
        return provider  # type: ignore[return-value]
    lowered = catalog.lower()
    if "planetarycomputer" in lowered:
        return "planetary-computer"
    if lowered.endswith(".json") or not lowered.startswith(("http://", "https://")):
        return "static"
    return "earth-search"


def asset_key(item: pystac.Item, band: str) -> str:
    """The key of ``band``'s asset in ``item`` (common name first, then band id).

    Raises:
        FetchError: the item has neither key, naming the keys it has.
    """
    for key in (EARTH_SEARCH_ASSET.get(band), band, band.lower()):
        if key and key in item.assets:
            return key
    raise FetchError(
        f"STAC item {item.id} has no asset for band {band} (looked for "
        f"{EARTH_SEARCH_ASSET.get(band)!r} and {band!r}; it has {sorted(item.assets)}). Use a "
        "Sentinel-2 L2A collection in Earth Search or Planetary Computer layout"
    )


def asset_href(item: pystac.Item, band: str) -> str:
    """Absolute href of ``band`` in ``item`` (relative hrefs resolved against the item's file)."""
    asset = item.assets[asset_key(item, band)]
    href = asset.get_absolute_href() or asset.href
    if "://" not in href:
        href = str(Path(href).resolve())
    return href


def _identity(href: str) -> str:
    return href


def signer_for(provider: Provider) -> Signer:
    """How hrefs of ``provider`` are made readable: PC SAS signing, or unchanged."""
    if provider != "planetary-computer":
        return _identity

    def sign(href: str) -> str:
        try:
            import planetary_computer  # imported lazily: only PC runs need it
        except ModuleNotFoundError as err:
            raise FetchError(
                "signing Planetary Computer asset URLs needs the 'planetary-computer' package; "
                "install the extra: `pip install 'solarfarm-pipeline[planetary-computer]'`"
            ) from err
        return str(planetary_computer.sign_url(href))

    return sign


def band_hrefs(item: pystac.Item, bands: tuple[str, ...], signer: Signer) -> dict[str, str]:
    """``{band: readable href}`` for ``bands`` of ``item``."""
    return {band: signer(asset_href(item, band)) for band in bands}
