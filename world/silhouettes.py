"""Parametric silhouettes of the categories and the emblem glyphs, as drawing primitives.

Geometry only: coordinates are in the unit square (x right, y down); `world.render` scales
and draws them. Each category function takes three shape parameters in [0, 1] and returns
the body (main colour + pattern), the trim (trim colour), the details (seams, in the outline
colour) and the anchors where the emblem may sit.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Literal, Union

Point = tuple[float, float]
Box = tuple[float, float, float, float]


@dataclass(frozen=True)
class Poly:
    points: tuple[Point, ...]  # closed polygon


@dataclass(frozen=True)
class Ellipse:
    box: Box  # bounding box x0, y0, x1, y1


@dataclass(frozen=True)
class Ring:
    box: Box  # bounding box of the outer edge
    width: float  # band width, unit coordinates


@dataclass(frozen=True)
class RRect:
    box: Box  # x0, y0, x1, y1
    radius: float  # corner radius, unit coordinates


@dataclass(frozen=True)
class Line:
    points: tuple[Point, ...]  # open polyline
    width: float  # stroke width, unit coordinates


Prim = Union[Poly, Ellipse, Ring, RRect, Line]


@dataclass(frozen=True)
class Silhouette:
    body: tuple[Prim, ...]  # filled with the main colour and the pattern
    trim: tuple[Prim, ...]  # filled with the trim colour, drawn over the body
    details: tuple[Prim, ...]  # seams and edges, drawn in the outline colour
    anchors: tuple[Point, Point, Point]  # emblem centres, indexed by ProductSpec.emblem_pos
    emblem_size: float  # emblem height, unit coordinates (0.16 of the side = ~10 px at 64x64)


def _lerp(p: Point, q: Point, t: float) -> Point:
    return (p[0] + (q[0] - p[0]) * t, p[1] + (q[1] - p[1]) * t)


def _mirror(points: tuple[Point, ...]) -> tuple[Point, ...]:
    return tuple((1.0 - x, y) for x, y in points)


def _x_at(p: Point, q: Point, y: float) -> float:
    """x of segment p-q at height y."""
    return p[0] + (q[0] - p[0]) * (y - p[1]) / (q[1] - p[1])


def dress(a: float, b: float, c: float) -> Silhouette:
    sh = 0.12 + 0.04 * a  # half shoulder width
    hem = 0.80 + 0.08 * c  # hem height (length)
    hh = 0.22 + 0.12 * b  # half hem width (flare)
    wl, wr = (0.40, 0.42), (0.60, 0.42)
    hl, hr = (0.5 - hh, hem), (0.5 + hh, hem)
    body = Poly((
        (0.5 - sh, 0.10), (0.44, 0.10), (0.5, 0.16 + 0.04 * a), (0.56, 0.10), (0.5 + sh, 0.10),
        (0.5 + sh - 0.01, 0.24), wr, hr, hl, wl, (0.5 - sh + 0.01, 0.24),
    ))
    belt = Poly(((0.395, 0.40), (0.605, 0.40), (_x_at(wr, hr, 0.465), 0.465), (_x_at(wl, hl, 0.465), 0.465)))
    y0 = hem - 0.06
    band = Poly(((_x_at(wl, hl, y0), y0), (_x_at(wr, hr, y0), y0), hr, hl))
    return Silhouette(
        body=(body,), trim=(belt, band), details=(),
        anchors=((0.5, 0.29), (0.41, 0.64), (0.59, 0.64)), emblem_size=0.16,
    )


def t_shirt(a: float, b: float, c: float) -> Silhouette:
    bw = 0.19 + 0.04 * b  # half body width
    hem = 0.80 + 0.06 * c
    ln = 0.13 + 0.06 * a  # sleeve length
    s, arm = (0.5 - bw, 0.17), (0.5 - bw, 0.39)
    o1 = (s[0] - ln, s[1] + 0.75 * ln)
    o2 = (o1[0] + 0.09, o1[1] + 0.10)
    left = ((0.43, 0.15), s, o1, o2, arm, (0.5 - bw, hem))
    body = Poly(left + tuple(reversed(_mirror(left))) + ((0.5, 0.21),))
    d = (s[0] - o1[0], s[1] - o1[1])
    n = math.hypot(*d)
    k = 0.05 / n
    cuff = (o1, o2, (o2[0] + d[0] * k, o2[1] + d[1] * k), (o1[0] + d[0] * k, o1[1] + d[1] * k))
    collar = Line(((0.41, 0.145), (0.5, 0.215), (0.59, 0.145)), 0.045)
    return Silhouette(
        body=(body,), trim=(collar, Poly(cuff), Poly(_mirror(cuff))), details=(),
        anchors=((0.41, 0.34), (0.5, 0.53), (0.59, 0.71)), emblem_size=0.16,
    )


def trousers(a: float, b: float, c: float) -> Silhouette:
    hw = 0.19 + 0.03 * a  # half width at the waist
    xo = 0.5 - hw - 0.06 * b  # outer hem x (flare)
    xi = min(xo + 0.15 + 0.04 * a, 0.485)  # inner hem x
    crotch = 0.38 + 0.04 * c
    leg = ((0.5 - hw, 0.17), (0.5, 0.17), (0.5, crotch), (xi, 0.90), (xo, 0.90))
    waist = RRect((0.5 - hw, 0.10, 0.5 + hw, 0.175), 0.015)
    y0 = 0.85
    cuff = ((_x_at(leg[0], leg[4], y0), y0), (_x_at(leg[2], leg[3], y0), y0), leg[3], leg[4])
    return Silhouette(
        body=(Poly(leg), Poly(_mirror(leg)), waist), trim=(waist, Poly(cuff), Poly(_mirror(cuff))),
        details=(Line(((0.5, 0.175), (0.5, crotch - 0.02)), 0.012),),
        anchors=((0.38, 0.32), (0.62, 0.32), (0.39, 0.64)), emblem_size=0.15,
    )


def sneaker(a: float, b: float, c: float) -> Silhouette:
    h = 0.05 * a  # taller upper
    toe = 0.80 + 0.04 * b  # where the toe cap starts
    heel = 0.40 - h - 0.04 * c
    upper = Poly((
        (0.10, 0.68), (0.11, heel), (0.22, heel - 0.02), (0.33, heel + 0.04), (0.43, 0.33 - h),
        (0.52, 0.39 - h), (toe, 0.55), (0.93, 0.62), (0.93, 0.68),
    ))
    cap = Ellipse((toe - 0.16, 0.50, 0.95, 0.72))
    sole = RRect((0.07, 0.66, 0.95, 0.77), 0.045)
    laces = Line(((0.45, 0.40 - h), (0.52, 0.46 - h), (0.58, 0.43 - h), (0.63, 0.49 - h)), 0.02)
    return Silhouette(
        body=(upper, cap), trim=(sole,), details=(laces,),
        anchors=((0.25, 0.54), (0.45, 0.56), (0.68, 0.60)), emblem_size=0.15,
    )


def backpack(a: float, b: float, c: float) -> Silhouette:
    hw = 0.22 + 0.05 * a
    r = 0.06 + 0.10 * b
    top = 0.20
    pocket_top = 0.60 - 0.05 * c
    px0, px1 = 0.5 - hw + 0.06, 0.5 + hw - 0.06
    body = RRect((0.5 - hw, top, 0.5 + hw, 0.88), r)
    handle = Ring((0.40, 0.09, 0.60, 0.27), 0.035)
    flap = RRect((px0, pocket_top, px1, pocket_top + 0.06), 0.02)
    pocket = Line(((px0, pocket_top + 0.06), (px0, 0.83), (px1, 0.83), (px1, pocket_top + 0.06)), 0.014)
    zip_line = Line(((0.5 - hw + 0.05, top + 0.07), (0.5 + hw - 0.05, top + 0.07)), 0.014)
    return Silhouette(
        body=(body,), trim=(handle, flap), details=(pocket, zip_line),
        anchors=((0.39, 0.41), (0.61, 0.41), (0.5, 0.75)), emblem_size=0.16,
    )


def mug(a: float, b: float, c: float) -> Silhouette:
    cx, hw = 0.43, 0.18 + 0.05 * a
    top = 0.28 - 0.06 * b
    body = RRect((cx - hw, top, cx + hw, 0.82), 0.06)
    handle = Ring((cx + hw - 0.07, 0.38, cx + hw + 0.15 + 0.05 * c, 0.70), 0.065)
    rim = RRect((cx - hw, top, cx + hw, top + 0.06), 0.02)
    return Silhouette(
        body=(body,), trim=(handle, rim), details=(),
        anchors=((cx, 0.47), (cx - 0.09, 0.67), (cx + 0.09, 0.67)), emblem_size=0.16,
    )


def teapot(a: float, b: float, c: float) -> Silhouette:
    bw = 0.22 + 0.04 * a
    lift = 0.04 * c
    body = Ellipse((0.5 - bw, 0.36, 0.5 + bw, 0.86))
    tip = 0.10 - 0.04 * b
    spout = Poly(((0.5 - bw + 0.06, 0.56), (0.5 - bw + 0.08, 0.72), (tip + 0.07, 0.44), (tip, 0.38), (tip + 0.02, 0.35)))
    handle = Ring((0.5 + bw - 0.08, 0.44, 0.5 + bw + 0.14, 0.76), 0.055)
    lid = Ellipse((0.35, 0.31 - lift, 0.65, 0.43))
    knob = Ellipse((0.45, 0.23 - lift, 0.55, 0.33 - lift))
    return Silhouette(
        body=(body, spout, handle), trim=(lid, knob), details=(),
        anchors=((0.40, 0.58), (0.60, 0.58), (0.5, 0.74)), emblem_size=0.16,
    )


def lamp(a: float, b: float, c: float) -> Silhouette:
    tw, bwd = 0.12 + 0.03 * a, 0.25 + 0.06 * a  # shade half widths, top and bottom
    st = 0.08 + 0.05 * b  # shade top
    sb = 0.50
    shade = ((0.5 - tw, st), (0.5 + tw, st), (0.5 + bwd, sb), (0.5 - bwd, sb))
    y0 = sb - 0.06
    band = Poly(((_x_at(shade[3], shade[0], y0), y0), (_x_at(shade[2], shade[1], y0), y0), shade[2], shade[3]))
    bw = 0.13 + 0.06 * c
    stem = RRect((0.47, sb, 0.53, 0.82), 0.01)
    base = RRect((0.5 - bw, 0.80, 0.5 + bw, 0.90), 0.04)
    return Silhouette(
        body=(Poly(shade), stem), trim=(band, base), details=(),
        anchors=((0.5, st + 0.12), (0.38, 0.36), (0.62, 0.36)), emblem_size=0.15,
    )


SILHOUETTES: dict[str, Callable[[float, float, float], Silhouette]] = {
    "dress": dress, "t-shirt": t_shirt, "trousers": trousers, "sneaker": sneaker,
    "backpack": backpack, "mug": mug, "teapot": teapot, "lamp": lamp,
}

# ---- emblem glyphs: primitives in [-1, 1]^2; "fg" is the emblem ink, "bg" cuts back to the halo
Ink = Literal["fg", "bg"]


def _star() -> Poly:
    pts = []
    for i in range(10):
        r = 1.0 if i % 2 == 0 else 0.42
        t = -math.pi / 2 + i * math.pi / 5
        pts.append((r * math.cos(t), r * math.sin(t) + 0.08))
    return Poly(tuple(pts))


GLYPHS: dict[str, tuple[tuple[Prim, Ink], ...]] = {
    "star": ((_star(), "fg"),),
    "heart": ((Ellipse((-1.0, -0.85, 0.05, 0.2)), "fg"), (Ellipse((-0.05, -0.85, 1.0, 0.2)), "fg"),
              (Poly(((-0.97, -0.2), (0.97, -0.2), (0.0, 0.95))), "fg")),
    "cross": ((Poly(((-0.3, -1), (0.3, -1), (0.3, 1), (-0.3, 1))), "fg"),
              (Poly(((-1, -0.3), (1, -0.3), (1, 0.3), (-1, 0.3))), "fg")),
    "ring": ((Ring((-1.0, -1.0, 1.0, 1.0), 0.34), "fg"),),
    "triangle": ((Poly(((0.0, -1.0), (1.0, 0.8), (-1.0, 0.8))), "fg"),),
    "diamond": ((Poly(((0.0, -1.0), (0.75, 0.0), (0.0, 1.0), (-0.75, 0.0))), "fg"),),
    "bar": ((Poly(((-1, -0.36), (1, -0.36), (1, 0.36), (-1, 0.36))), "fg"),),
    "chevron": ((Poly(((-1, -0.75), (0, 0.1), (1, -0.75), (1, 0.05), (0, 0.9), (-1, 0.05))), "fg"),),
    "crescent": ((Ellipse((-1.0, -1.0, 1.0, 1.0)), "fg"), (Ellipse((-0.35, -1.1, 1.35, 0.6)), "bg")),
    "square": ((Poly(((-0.78, -0.78), (0.78, -0.78), (0.78, 0.78), (-0.78, 0.78))), "fg"),),
    "arrow": ((Poly(((0, -1), (0.95, 0.05), (0.36, 0.05), (0.36, 1), (-0.36, 1), (-0.36, 0.05), (-0.95, 0.05))), "fg"),),
    "hourglass": ((Poly(((-0.9, -1), (0.9, -1), (0.12, 0), (0.9, 1), (-0.9, 1), (-0.12, 0))), "fg"),),
}
