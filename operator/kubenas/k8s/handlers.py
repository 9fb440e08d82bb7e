"""Thin kopf handlers: one daemon per NASExperiment runs reconcile passes, woken by watch events
on its trials and Jobs; everything else lives in :mod:`kubenas.k8s.reconcile`."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import kopf
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from kubenas.k8s import metrics_source, operator_metrics
from kubenas.k8s.client import Api
from kubenas.k8s.reconcile import ExperimentReconciler
from kubenas.k8s.settings import (
    EXPERIMENTS,
    GROUP,
    LABEL_EXPERIMENT,
    LABEL_MANAGED_BY,
    MANAGER,
    TRIALS,
    VERSION,
    OperatorSettings,
)

RUNNING_POLL_SECONDS = 3.0
RECONCILE_THREADS = 64
ERROR_BACKOFF_SECONDS = 2.0

_settings = OperatorSettings()
_wakeups: dict[tuple[str, str], asyncio.Event] = {}


def configure(settings: OperatorSettings) -> None:
    """Set before kopf starts (``kubenas operator`` does it from its flags)."""
    global _settings
    _settings = settings


def _wake(namespace: str | None, experiment: str | None) -> None:
    """Run the experiment's next pass now (its daemon may be waiting for a poll timeout)."""
    if namespace and experiment and (event := _wakeups.get((namespace, experiment))):
        event.set()


async def _serve_metrics(port: int) -> web.AppRunner:
    async def metrics(_: web.Request) -> web.Response:
        return web.Response(body=generate_latest(), headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def healthz(_: web.Request) -> web.Response:
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/healthz", healthz)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "0.0.0.0", port).start()
    return runner


@kopf.on.startup()
async def startup(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    settings.posting.level = logging.WARNING
    settings.watching.server_timeout = 60
    settings.watching.client_timeout = 90
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix="kubenas.io")
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix="kubenas.io", key="last-handled-configuration"
    )
    settings.persistence.finalizer = "kubenas.io/cleanup"
    memo.metrics_server = await _serve_metrics(_settings.metrics_port)
    # Each experiment's passes run in a worker thread; asyncio's default pool (cores + 4) would
    # queue ten concurrent experiments behind each other.
    asyncio.get_running_loop().set_default_executor(
        ThreadPoolExecutor(max_workers=RECONCILE_THREADS)
    )


@kopf.on.cleanup()
async def cleanup(memo: kopf.Memo, **_: Any) -> None:
    runner = memo.get("metrics_server")
    if runner is not None:
        await runner.cleanup()


@kopf.daemon(GROUP, VERSION, EXPERIMENTS, cancellation_timeout=10.0)
async def run_experiment(
    *,
    namespace: str | None,
    name: str,
    body: kopf.Body,
    stopped: kopf.DaemonStopped,
    logger: logging.Logger | logging.LoggerAdapter[Any],
    **_: Any,
) -> None:
    """Reconcile until the experiment is deleted: right away after any watched change, every few
    seconds while trials run (to read their progress), otherwise only when woken."""
    assert namespace is not None, "NASExperiment is namespaced"
    wake = _wakeups.setdefault((namespace, name), asyncio.Event())
    api = Api()
    reconciler = ExperimentReconciler(api, _settings, namespace, name)
    try:
        while not stopped:
            wake.clear()
            started = time.perf_counter()
            try:
                outcome = await asyncio.to_thread(reconciler.reconcile)
            except Exception as exc:  # any API or bug error: report, back off, retry
                operator_metrics.RECONCILE_ERRORS.inc()
                logger.exception("reconcile of %s/%s failed", namespace, name)
                kopf.warn(body, reason="ReconcileError", message=str(exc)[:1000])
                await asyncio.sleep(ERROR_BACKOFF_SECONDS)
                continue
            finally:
                operator_metrics.RECONCILE_SECONDS.observe(time.perf_counter() - started)
            for kind, reason, message in outcome.events:
                kopf.event(body, type=kind, reason=reason, message=message)
            timeout = RUNNING_POLL_SECONDS if outcome.running else None
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(wake.wait(), timeout)
    finally:
        api.close()


@kopf.on.event(GROUP, VERSION, EXPERIMENTS)
def experiment_changed(*, namespace: str | None, name: str, **_: Any) -> None:
    _wake(namespace, name)


@kopf.on.event(GROUP, VERSION, TRIALS, labels={LABEL_MANAGED_BY: MANAGER})
def trial_changed(*, namespace: str | None, labels: Mapping[str, str], **_: Any) -> None:
    _wake(namespace, labels.get(LABEL_EXPERIMENT))


@kopf.on.event("batch", "v1", "jobs", labels={LABEL_MANAGED_BY: MANAGER})
def job_changed(*, namespace: str | None, labels: Mapping[str, str], **_: Any) -> None:
    _wake(namespace, labels.get(LABEL_EXPERIMENT))


@kopf.on.delete(GROUP, VERSION, EXPERIMENTS)
def experiment_deleted(*, namespace: str | None, name: str, spec: kopf.Spec, **_: Any) -> None:
    """Trials, Jobs and pods go by owner references; Pushgateway groups are ours to remove.

    A trainer still running would push its group back after we delete it, so the experiment's
    Jobs are deleted first and the handler retries until their pods are gone.
    """
    assert namespace is not None
    _wakeups.pop((namespace, name), None)
    metric = (spec.get("objective") or {}).get("metric", "val_accuracy")
    operator_metrics.forget_experiment(namespace, name, metric)
    if not _settings.pushgateway_url:
        return
    api = Api()
    try:
        for job in api.list_jobs(namespace, name):
            api.delete_job(namespace, job["metadata"]["name"])
        if api.list_experiment_pods(namespace, name):
            raise kopf.TemporaryError("waiting for trial pods to stop", delay=2)
        for trial in api.list_trials(namespace, name):
            metrics_source.delete_push_group(
                _settings.pushgateway_url, namespace, name, trial["metadata"]["name"]
            )
    finally:
        api.close()
