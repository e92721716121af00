"""Parses a /metrics answer with the Prometheus project's own Python client and prints its
families as JSON: [{"name", "type", "samples": [[name, labels, value], ...]}, ...].

Usage: prometheus_parse.py prometheus|openmetrics < exposition

The OpenMetrics parser is strict (it refuses what the standard refuses). The parser of the
Prometheus text format 0.0.4 is lenient about one thing Prometheus's own scraper is not: it
accepts a counter whose # TYPE line names the family without `_total`. So each sample is also
checked here to carry the name its # TYPE line gave (or that name with a histogram's or
summary's suffix), as Prometheus matches them.
"""

import json
import math
import sys

from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as parse_openmetrics,
)
from prometheus_client.parser import text_string_to_metric_families as parse_prometheus

SUFFIXES = {
    "histogram": ("_bucket", "_sum", "_count"),
    "summary": ("_sum", "_count"),
}


def check_names(text):
    typed = {}
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ", 3)
            if name in typed:
                raise ValueError(f"second # TYPE line for {name}")
            typed[name] = kind
        elif line and not line.startswith("#"):
            sample = line.split("{", 1)[0].split(" ", 1)[0]
            if sample in typed:
                continue
            family = next(
                (
                    name
                    for name, kind in typed.items()
                    for suffix in SUFFIXES.get(kind, ())
                    if sample == name + suffix
                ),
                None,
            )
            if family is None:
                raise ValueError(f"sample {sample} has no # TYPE line of its own")


def value(v):
    if math.isinf(v):
        return "+Inf" if v > 0 else "-Inf"
    return v


def main():
    fmt = sys.argv[1]
    text = sys.stdin.read()
    if fmt == "prometheus":
        check_names(text)
        families = parse_prometheus(text)
    elif fmt == "openmetrics":
        families = parse_openmetrics(text)
    else:
        raise SystemExit(f"unknown format {fmt}")
    out = [
        {
            "name": f.name,
            "type": f.type,
            "samples": [[s.name, s.labels, value(s.value)] for s in f.samples],
        }
        for f in families
    ]
    json.dump(out, sys.stdout)


main()
