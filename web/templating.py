"""Template filters and helpers (formatting only; no logic the views should own)."""
from __future__ import annotations

import time
from typing import Any

from flask import Flask, url_for


def money(value: Any) -> str:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return f"{value:,.2f}"
    return ""


def score(value: Any) -> str:
    return f"{value:.3f}" if isinstance(value, (int, float)) else "–"


def weight(value: Any) -> str:
    return f"{value:.2f}" if isinstance(value, (int, float)) else "–"


def duration(seconds: Any) -> str:
    if not isinstance(seconds, (int, float)):
        return "–"
    seconds = max(0.0, float(seconds))
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 60:
        return f"{seconds:.0f} s" if seconds >= 10 else f"{seconds:.1f} s"
    minutes, secs = divmod(int(round(seconds)), 60)
    if minutes < 60:
        return f"{minutes} min {secs:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


def ago(timestamp: Any) -> str:
    if not isinstance(timestamp, (int, float)):
        return ""
    return duration(time.time() - timestamp) + " ago"


def catalog_url(payload: dict) -> str | None:
    image = payload.get("image") if isinstance(payload, dict) else None
    if not isinstance(image, str) or not image:
        return None
    if image.startswith(("http://", "https://")):
        return image
    return url_for("ops.catalog_image", filename=image)


def init_app(app: Flask) -> None:
    app.jinja_env.filters.update(money=money, score=score, weight=weight, duration=duration, ago=ago)
    app.jinja_env.globals.update(catalog_url=catalog_url)
