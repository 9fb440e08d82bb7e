"""Command lines and config of Prometheus and the Pushgateway (Debian's binaries).

We start both ourselves on free ports, never the services the packages install: on loopback
beside the node agent, on the host's address beside a real node, whose pods push metrics.
Prometheus scrapes the Pushgateway with ``honor_labels: true`` (so a trial's ``job`` label
survives) and the operator's metrics endpoint, every second so tests wait little.
"""

from __future__ import annotations

import contextlib
import json
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import yaml

SCRAPE_INTERVAL = "1s"


def prometheus_config(pushgateway: str, operator_metrics: str) -> dict[str, Any]:
    return {
        "global": {"scrape_interval": SCRAPE_INTERVAL, "evaluation_interval": SCRAPE_INTERVAL},
        "scrape_configs": [
            {
                "job_name": "pushgateway",
                "honor_labels": True,
                "static_configs": [{"targets": [pushgateway]}],
            },
            {"job_name": "kubenas-operator", "static_configs": [{"targets": [operator_metrics]}]},
        ],
    }


def prometheus_argv(
    directory: Path, port: int, pushgateway: str, operator_metrics: str, host: str = "127.0.0.1"
) -> list[str]:
    """Write the config under ``directory`` and return the command line."""
    directory.mkdir(parents=True, exist_ok=True)
    config = directory / "prometheus.yml"
    config.write_text(yaml.safe_dump(prometheus_config(pushgateway, operator_metrics)))
    return [
        "prometheus",
        f"--config.file={config}",
        f"--storage.tsdb.path={directory / 'data'}",
        f"--web.listen-address={host}:{port}",
        "--web.enable-lifecycle",
        "--storage.tsdb.retention.time=1d",
        "--log.level=warn",
    ]


def pushgateway_argv(port: int, host: str = "127.0.0.1") -> list[str]:
    """In memory only: Debian's build persists to /var/lib/prometheus/pushgateway.data by
    default, which would carry one cluster's groups into every later one."""
    return [
        "prometheus-pushgateway",
        f"--web.listen-address={host}:{port}",
        "--persistence.file=",
        "--web.enable-admin-api",
        "--log.level=warn",
    ]


def wait_scraping(prometheus_url: str, job: str, timeout: float) -> None:
    """Until Prometheus has scraped ``job`` once. Its target discovery settles only after ~5 s;
    waiting here keeps that delay out of the first test that pushes a metric."""
    query = urllib.parse.urlencode({"query": f'up{{job="{job}"}} == 1'})
    url = f"{prometheus_url}/api/v1/query?{query}"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with (
            contextlib.suppress(OSError, urllib.error.URLError, ValueError),
            urllib.request.urlopen(url, timeout=2) as answer,
        ):
            if json.load(answer)["data"]["result"]:
                return
        time.sleep(0.3)
    raise TimeoutError(f"Prometheus at {prometheus_url} has not scraped {job} in {timeout:.0f} s")
