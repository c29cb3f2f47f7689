#!/usr/bin/env python3
"""Makes world_map.csv, the country shapes of `%carbon intensity`'s map, ONCE (the CSV is committed).

Inputs (npm packages, unpacked with `npm pack world-atlas i18n-iso-countries` and `tar xzf`):
  * world-atlas 2.0.2, countries-110m.json: Natural Earth 1:110m admin-0 countries (public domain,
    https://www.naturalearthdata.com/about/terms-of-use/) as TopoJSON, ISO 3166-1 numeric ids;
    packaging by Mike Bostock, ISC licence.
  * i18n-iso-countries 7.14.0, codes.json and langs/en.json: ISO 3166-1 alpha-2/alpha-3/numeric
    codes and English names (MIT licence, widdix GmbH).

What it does: decodes the TopoJSON arcs (delta-encoded, quantized), joins them into rings, projects
each point with the Natural Earth projection (Šavrič et al. 2011, "A polynomial equation for the
Natural Earth projection", Cartography and Geographic Information Science 38(4)), crops at 57° S
(Antarctica has no intensity value and would take a quarter of the height), simplifies each ring
(Douglas-Peucker, 0.5 px), rounds to whole pixels and writes each country as a relative SVG path.
Every ISO 3166-1 country gets a row (its codes and names resolve `country=fr` / `France`), with an
empty path when Natural Earth has no shape at 1:110m (small islands, Luxembourg, …).

Usage: python3 gen_world_map.py WORLD_ATLAS_DIR I18N_ISO_COUNTRIES_DIR > world_map.csv
"""

import csv
import io
import json
import math
import sys

WIDTH = 800  # px, the map's width in the SVG
SOUTH, NORTH = -57.0, 84.0  # degrees: the crop (Tierra del Fuego to Greenland's tip)
TOLERANCE = 0.5  # px, Douglas-Peucker


def natural_earth(lon, lat):
    """Natural Earth projection (Šavrič et al. 2011), radians in, unit-sphere x/y out."""
    lam, phi = math.radians(lon), math.radians(lat)
    p2 = phi * phi
    p4 = p2 * p2
    x = lam * (0.870700 - 0.131979 * p2 + p4 * (-0.013791 + p4 * (0.003971 * p2 - 0.001529 * p4)))
    y = phi * (1.007226 + p2 * (0.015085 + p4 * (-0.044475 + 0.028874 * p2 - 0.005916 * p4)))
    return x, y


SCALE = WIDTH / (2 * natural_earth(180, 0)[0])
Y_TOP = natural_earth(0, NORTH)[1]
Y_BOTTOM = natural_earth(0, SOUTH)[1]
HEIGHT = math.ceil((Y_TOP - Y_BOTTOM) * SCALE)


def to_px(lon, lat):
    lat = max(SOUTH, min(NORTH, lat))
    x, y = natural_earth(lon, lat)
    return (x * SCALE + WIDTH / 2, (Y_TOP - y) * SCALE)


def decode_arcs(topo):
    sx, sy = topo["transform"]["scale"]
    tx, ty = topo["transform"]["translate"]
    arcs = []
    for arc in topo["arcs"]:
        x = y = 0
        pts = []
        for dx, dy in arc:
            x += dx
            y += dy
            pts.append((x * sx + tx, y * sy + ty))
        arcs.append(pts)
    return arcs


def ring(arcs, idxs):
    out = []
    for i in idxs:
        pts = arcs[i] if i >= 0 else list(reversed(arcs[~i]))
        out.extend(pts if not out else pts[1:])
    return out


def unwrap(pts):
    """Longitudes made continuous: world-atlas stitches rings across the antimeridian (Russia, Fiji)."""
    out = [pts[0]]
    for lon, lat in pts[1:]:
        prev = out[-1][0]
        while lon - prev > 180:
            lon -= 360
        while prev - lon > 180:
            lon += 360
        out.append((lon, lat))
    return out


def clip(pts, keep, cross):
    """Sutherland-Hodgman against one half-plane: keep(p) says inside, cross(a, b) the crossing."""
    out = []
    for i in range(len(pts)):
        a, b = pts[i - 1], pts[i]
        if keep(b):
            if not keep(a):
                out.append(cross(a, b))
            out.append(b)
        elif keep(a):
            out.append(cross(a, b))
    return out


def at_lon(x):
    def cross(a, b):
        t = (x - a[0]) / (b[0] - a[0])
        return (x, a[1] + t * (b[1] - a[1]))

    return cross


def split_antimeridian(pts):
    """The ring's pieces within [-180, 180]: itself, or its parts shifted by ±360."""
    u = unwrap(pts)
    pieces = []
    for shift in (0, -360, 360):
        r = [(lon + shift, lat) for lon, lat in u]
        r = clip(r, lambda p: p[0] <= 180, at_lon(180))
        r = clip(r, lambda p: p[0] >= -180, at_lon(-180))
        if len(r) >= 3:
            pieces.append(r)
    return pieces


def dp(pts, tol):
    """Douglas-Peucker on a list of (x, y)."""
    if len(pts) < 3:
        return pts
    (x0, y0), (x1, y1) = pts[0], pts[-1]
    dx, dy = x1 - x0, y1 - y0
    n = math.hypot(dx, dy)
    best, k = -1.0, 0
    for i in range(1, len(pts) - 1):
        px, py = pts[i]
        d = abs(dy * (px - x0) - dx * (py - y0)) / n if n else math.hypot(px - x0, py - y0)
        if d > best:
            best, k = d, i
    if best <= tol:
        return [pts[0], pts[-1]]
    return dp(pts[: k + 1], tol)[:-1] + dp(pts[k:], tol)


def area(pts):
    return 0.5 * sum(pts[i - 1][0] * pts[i][1] - pts[i][0] * pts[i - 1][1] for i in range(len(pts)))


def centroid(pts):
    a = area(pts)
    if abs(a) < 1e-9:
        return sum(p[0] for p in pts) / len(pts), sum(p[1] for p in pts) / len(pts)
    cx = cy = 0.0
    for i in range(len(pts)):
        (x0, y0), (x1, y1) = pts[i - 1], pts[i]
        c = x0 * y1 - x1 * y0
        cx += (x0 + x1) * c
        cy += (y0 + y1) * c
    return cx / (6 * a), cy / (6 * a)


def shape(arcs, geom):
    polys = geom["arcs"] if geom["type"] == "MultiPolygon" else [geom["arcs"]]
    parts, biggest = [], (0.0, None)
    for poly in polys:
        for r_i, r in enumerate(poly):
            for piece in split_antimeridian(ring(arcs, r)):
                pts = [to_px(lon, lat) for lon, lat in piece]
                if pts[0] != pts[-1]:
                    pts.append(pts[0])
                simple = dp(pts, TOLERANCE)
                ip = []
                for x, y in simple:
                    p = (round(x), round(y))
                    if not ip or ip[-1] != p:
                        ip.append(p)
                if len(ip) > 1 and ip[0] == ip[-1]:
                    ip.pop()
                if len(ip) < 3 or (abs(area(ip)) < 1.0 and len(polys) > 1):
                    continue  # a speck below a pixel: invisible at this scale
                parts.append(ip)
                a = abs(area(pts))
                if r_i == 0 and a > biggest[0]:
                    biggest = (a, pts)
    d = []
    for ip in parts:
        x0, y0 = ip[0]
        seg = [f"M{x0} {y0}l"]
        px, py = x0, y0
        nums = []
        for x, y in ip[1:]:
            nums.append(f"{x - px} {y - py}")
            px, py = x, y
        seg.append(" ".join(nums).replace(" -", "-"))
        seg.append("z")
        d.append("".join(seg))
    label = centroid(biggest[1]) if biggest[1] else (0, 0)
    return "".join(d), label


def main():
    wa, iso = sys.argv[1], sys.argv[2]
    topo = json.load(open(f"{wa}/countries-110m.json"))
    arcs = decode_arcs(topo)
    codes = json.load(open(f"{iso}/codes.json"))
    en = json.load(open(f"{iso}/langs/en.json"))["countries"]
    by_num = {num: (a2, a3) for a2, a3, num, *_ in codes}
    rows = {}
    for a2, a3, num, *_ in codes:
        names = en.get(a2, [])
        names = [names] if isinstance(names, str) else list(names)
        rows[a3] = {"iso3": a3, "iso2": a2, "num": num, "names": names, "path": "", "lx": "", "ly": ""}
    # Kosovo has no ISO 3166-1 code; XK/XKX is the user-assigned code the EU and IMF use.
    rows["XKX"] = {"iso3": "XKX", "iso2": "XK", "num": "", "names": ["Kosovo"], "path": "", "lx": "", "ly": ""}
    extra = []  # shapes without an ISO code (N. Cyprus, Somaliland): drawn, never coloured
    for g in topo["objects"]["countries"]["geometries"]:
        name = g["properties"]["name"]
        d, (lx, ly) = shape(arcs, g)
        if name == "Antarctica":
            continue  # below the crop; its row keeps the codes
        if g.get("id") in by_num:
            r = rows[by_num[g["id"]][1]]
        elif name == "Kosovo":
            r = rows["XKX"]
        else:
            extra.append({"iso3": "", "iso2": "", "num": "", "names": [name], "path": d, "lx": "", "ly": ""})
            continue
        if name not in r["names"]:
            r["names"].append(name)
        r["path"] = r["path"] + d
        r["lx"], r["ly"] = f"{lx:.0f}", f"{ly:.0f}"
    out = io.StringIO()
    out.write(
        "# Country shapes for %carbon intensity's world map, made once by gen_world_map.py (read it for how).\n"
        "# Shapes: Natural Earth 1:110m admin-0 countries (public domain), from the npm package world-atlas 2.0.2\n"
        "#   (countries-110m.json, ISC licence, Mike Bostock). Codes and English names: npm i18n-iso-countries 7.14.0\n"
        "#   (MIT licence, widdix GmbH); Kosovo: XK/XKX (user-assigned). N. Cyprus and Somaliland have no code.\n"
        f"# Natural Earth projection (Šavrič et al. 2011), {WIDTH} x {HEIGHT} px, cropped at {-SOUTH:.0f}° S and {NORTH:.0f}° N;\n"
        f"#   rings simplified (Douglas-Peucker {TOLERANCE} px) and rounded to whole pixels; path: SVG path data.\n"
        "# names: '|'-separated; label_x/label_y: centroid of the largest ring (where the configured zone is marked).\n"
        f"# size: {WIDTH} {HEIGHT}\n"
    )
    w = csv.writer(out, lineterminator="\n")
    w.writerow(["iso3", "iso2", "numeric", "names", "label_x", "label_y", "path"])
    for r in sorted(rows.values(), key=lambda r: r["iso3"]) + extra:
        w.writerow([r["iso3"], r["iso2"], r["num"], "|".join(r["names"]), r["lx"], r["ly"], r["path"]])
    sys.stdout.write(out.getvalue())


if __name__ == "__main__":
    main()
