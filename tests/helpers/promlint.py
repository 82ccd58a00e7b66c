"""The rules of `promtool check metrics` (client_golang's promlint), applied to a /metrics page read by
prometheus_client's own text parser, plus the naming page's base-unit rule promlint leaves out (0-1 ratios,
not percent), so a page that passes here passes promtool and reads right in Grafana."""

from __future__ import annotations

import re

from prometheus_client.parser import text_string_to_metric_families

# promlint's units: a name part that is one of these (optionally SI/IEC-prefixed) must be the base unit.
UNITS = {
    **{
        u: u
        for u in ("amperes", "bytes", "celsius", "grams", "joules", "kelvin", "meters", "metres", "seconds", "volts")
    },
    **{"minutes": "seconds", "hours": "seconds", "days": "seconds", "weeks": "seconds"},
    **{"kelvins": "kelvin", "fahrenheit": "celsius", "rankine": "celsius"},
    **{"inches": "meters", "yards": "meters", "miles": "meters", "bits": "bytes", "calories": "joules"},
    **{"pounds": "grams", "ounces": "grams", "percent": "ratio", "percentage": "ratio"},
}
PREFIXES = ("pico", "nano", "micro", "milli", "centi", "deci", "deca", "hecto", "kilo", "kibi", "mega", "mibi")
PREFIXES += ("giga", "gibi", "tera", "tebi", "peta", "pebi")
ABBREVIATIONS = ("s", "ms", "us", "ns", "sec", "b", "kb", "mb", "gb", "tb", "pb", "m", "h", "d")
TYPES_IN_NAME = ("counter", "gauge", "summary", "histogram", "gauge_histogram")
CAMEL = re.compile(r"[a-z][A-Z]")


def _unit_problem(name: str) -> str:
    for part in name.split("_"):
        for prefix in ("", *PREFIXES):
            unit = part[len(prefix) :] if part.startswith(prefix) else None
            if unit in UNITS:
                return "" if UNITS[unit] == part else f'use base unit "{UNITS[unit]}" instead of "{part}"'
    return ""


def lint(text: str) -> list[str]:
    """Every problem on the page, as "name: problem"; [] when promtool would accept it."""
    declared = dict(re.findall(r"^# TYPE (\S+) (\S+)$", text, re.M))
    helped = {name for name, help_text in re.findall(r"^# HELP (\S+) ?(.*)$", text, re.M) if help_text.strip()}
    problems: list[str] = []
    seen_series: set[tuple[str, tuple[tuple[str, str], ...]]] = set()
    for family in text_string_to_metric_families(text):
        # the parser drops a counter's "_total"; promtool judges the name on the TYPE line
        name = family.name if family.name in declared else f"{family.name}_total"
        kind = declared.get(name, "untyped")

        def problem(message: str, metric: str = name) -> None:
            problems.append(f"{metric}: {message}")

        if kind == "untyped":
            problem("no TYPE line")
        if name not in helped:
            problem("no help text")
        if kind == "counter" and not name.endswith("_total"):
            problem('counter metrics should have "_total" suffix')
        if kind not in ("counter", "untyped") and name.endswith("_total"):
            problem('non-counter metrics should not have "_total" suffix')
        if kind != "histogram" and name.endswith("_bucket"):
            problem('non-histogram metrics should not have "_bucket" suffix')
        if kind not in ("histogram", "summary") and name.endswith(("_count", "_sum")):
            problem('non-histogram and non-summary metrics should not have "_count"/"_sum" suffix')
        if kind != "gauge" and name.endswith("_timestamp_seconds"):
            problem('non-gauge metrics should not have "_timestamp_seconds" suffix')
        if unit := _unit_problem(name):
            problem(unit)
        lower = name.lower()
        for t in TYPES_IN_NAME:
            if f"_{t}_" in lower or lower.endswith(f"_{t}"):
                problem(f"metric name should not include type '{t}'")
        for a in ABBREVIATIONS:
            if f"_{a}_" in lower or lower.endswith(f"_{a}"):
                problem("metric names should not contain abbreviated units")
        if ":" in name:
            problem("metric names should not contain ':'")
        if CAMEL.search(name) or not re.fullmatch(r"[a-z_][a-z0-9_]*", name):
            problem("metric names should be written in 'snake_case'")
        for sample in family.samples:
            for label in sample.labels:
                if CAMEL.search(label):
                    problem("label names should be written in 'snake_case' not 'camelCase'")
                if label == "le" and kind != "histogram":
                    problem('non-histogram metrics should not have "le" label')
                if label == "quantile" and kind != "summary":
                    problem('non-summary metrics should not have "quantile" label')
            key = (sample.name, tuple(sorted(sample.labels.items())))
            if key in seen_series:
                problem("duplicate series", sample.name)
            seen_series.add(key)
    return sorted(set(problems))
