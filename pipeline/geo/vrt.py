"""GDAL virtual mosaics (VRT): one layer per UTM zone over many patch rasters.

A run writes one COG per patch; an analyst wants one layer per zone. :func:`zone_vrts` groups
rasters by CRS and writes, for each zone, a VRT (XML, source paths relative to the VRT so the
run folder can move) whose grid is the union of the sources' grids. Band descriptions,
nodata, scale/offset and a colour table are copied from the first source; later sources are
drawn over earlier ones where they have data.
"""

from __future__ import annotations

import html
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from os.path import relpath
from pathlib import Path

import numpy as np
import rasterio
from rasterio.errors import RasterioError

from pipeline.errors import GeoMismatchError, RasterError
from pipeline.geo.raster import Grid, union_grid
from pipeline.geo.styles import write_style
from pipeline.io import write_text

#: rasterio dtype -> VRT ``dataType``.
VRT_TYPES = {
    "uint8": "Byte",
    "uint16": "UInt16",
    "int16": "Int16",
    "uint32": "UInt32",
    "int32": "Int32",
    "float32": "Float32",
    "float64": "Float64",
}


@dataclass(frozen=True)
class SourceInfo:
    """What a VRT needs to know of one source raster."""

    path: Path
    grid: Grid
    dtype: str
    descriptions: tuple[str, ...]
    nodata: float | None
    scales: tuple[float, ...]
    offsets: tuple[float, ...]
    colormap: dict[int, tuple[int, int, int, int]] | None


def read_source(path: Path) -> SourceInfo:
    """The header of one source raster.

    Raises:
        RasterError: the file cannot be opened.
    """
    try:
        with rasterio.open(path) as src:
            try:
                colormap = src.colormap(1)
            except ValueError:
                colormap = None
            return SourceInfo(
                path,
                Grid(src.crs, src.transform, src.height, src.width),
                src.dtypes[0],
                tuple(d or "" for d in src.descriptions),
                src.nodata,
                tuple(src.scales),
                tuple(src.offsets),
                colormap,
            )
    except RasterioError as err:
        raise RasterError(f"cannot open {path} for a mosaic: {err}; re-run its stage") from err


def _number(value: float) -> str:
    return "nan" if np.isnan(value) else repr(float(value))


def _source_xml(info: SourceInfo, band: int, out: Grid, vrt: Path) -> str:
    col = (info.grid.transform.c - out.transform.c) / out.res
    row = (out.transform.f - info.grid.transform.f) / out.res
    rel = html.escape(relpath(info.path, vrt.parent))
    nodata = f"<NODATA>{_number(info.nodata)}</NODATA>" if info.nodata is not None else ""
    return (
        f'      <ComplexSource><SourceFilename relativeToVRT="1">{rel}</SourceFilename>'
        f"<SourceBand>{band}</SourceBand>"
        f'<SrcRect xOff="0" yOff="0" xSize="{info.grid.width}" ySize="{info.grid.height}"/>'
        f'<DstRect xOff="{col:.6f}" yOff="{row:.6f}" xSize="{info.grid.width}" '
        f'ySize="{info.grid.height}"/>{nodata}</ComplexSource>\n'
    )


def _band_xml(band: int, sources: Sequence[SourceInfo], out: Grid, vrt: Path) -> str:
    first = sources[0]
    parts = [f'    <VRTRasterBand dataType="{VRT_TYPES[first.dtype]}" band="{band}">\n']
    if first.descriptions[band - 1]:
        parts.append(
            f"      <Description>{html.escape(first.descriptions[band - 1])}</Description>\n"
        )
    if first.nodata is not None:
        parts.append(f"      <NoDataValue>{_number(first.nodata)}</NoDataValue>\n")
    if first.scales[band - 1] != 1 or first.offsets[band - 1] != 0:
        parts.append(
            f"      <Offset>{first.offsets[band - 1]!r}</Offset>"
            f"<Scale>{first.scales[band - 1]!r}</Scale>\n"
        )
    if band == 1 and first.colormap:
        entries = "".join(
            f'<Entry c1="{r}" c2="{g}" c3="{b}" c4="{a}"/>'
            for _, (r, g, b, a) in sorted(first.colormap.items())
        )
        top = max(first.colormap)
        if len(first.colormap) == top + 1:
            parts.append(
                f"      <ColorInterp>Palette</ColorInterp><ColorTable>{entries}</ColorTable>\n"
            )
    parts += [_source_xml(info, band, out, vrt) for info in sources]
    parts.append("    </VRTRasterBand>\n")
    return "".join(parts)


def vrt_xml(sources: Sequence[SourceInfo], vrt: Path) -> str:
    """The VRT document mosaicking ``sources`` (one CRS, one pixel size) for ``vrt``'s folder.

    Raises:
        GeoMismatchError: the sources differ in CRS, pixel size or band count.
    """
    out = union_grid([s.grid for s in sources])
    count = len(sources[0].descriptions)
    if any(len(s.descriptions) != count for s in sources):
        raise GeoMismatchError(
            f"cannot mosaic {vrt.name}: its sources have different band counts; "
            "re-run the stage that wrote them"
        )
    t = out.transform
    bands = "".join(_band_xml(b, sources, out, vrt) for b in range(1, count + 1))
    return (
        f'<VRTDataset rasterXSize="{out.width}" rasterYSize="{out.height}">\n'
        f"  <SRS>{html.escape(out.crs.to_wkt())}</SRS>\n"
        f"  <GeoTransform>{t.c!r}, {t.a!r}, 0.0, {t.f!r}, 0.0, {t.e!r}</GeoTransform>\n"
        f"{bands}</VRTDataset>\n"
    )


def zone_vrts(
    files: Sequence[Path],
    destination: Callable[[int], Path],
    style: Callable[[Path], str] | None = None,
) -> list[Path]:
    """Write one VRT per EPSG code of ``files`` at ``destination(epsg)``, and its QGIS style.

    Args:
        files: Rasters (COGs) to mosaic; sources that share a CRS share a VRT, in this order.
        destination: Where the VRT of an EPSG code goes (a :class:`~pipeline.paths.RunPaths`
            method).
        style: The QML of a written VRT (e.g. :func:`pipeline.geo.styles.patch_file_style`),
            written beside it; ``None``: no style.

    Returns:
        The VRTs and styles written, by EPSG code.

    Raises:
        RasterError: a source cannot be opened.
        GeoMismatchError: a source has no EPSG code, or sources of a zone disagree.
    """
    zones: dict[int, list[SourceInfo]] = {}
    for path in files:
        info = read_source(Path(path))
        epsg = info.grid.crs.to_epsg() if info.grid.crs else None
        if epsg is None:
            raise GeoMismatchError(f"{path} has no EPSG code; it cannot join a zone mosaic")
        zones.setdefault(epsg, []).append(info)
    written = []
    for epsg, sources in sorted(zones.items()):
        vrt = destination(epsg)
        written.append(write_text(vrt, vrt_xml(sources, vrt)))
        if style is not None:
            written.append(write_style(vrt, style(vrt)))
    return written
