"""The Dask side: a client (a local cluster, or any scheduler by address), the tasks, progress.

Dask does the scheduling, the placement on workers, and the retries: ``retries=`` for a task that
raises (a failed clone or push), and the scheduler's ``allowed-failures`` for a task whose worker
died while running it (it is resubmitted to another worker). Each experiment is one future, and
each future is reported once, when it completes.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import threading
import time
from collections.abc import Callable, Iterator

from sweep import report, task

POLL_S = 1.0  # how often the progress counts are refreshed


def cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


@contextlib.contextmanager
def client_for(scheduler: str | None, workers: int) -> Iterator:
    """A Dask client: connected to ``scheduler``, or to a new local cluster of ``workers`` processes
    with one thread each (one experiment at a time per worker)."""
    from distributed import Client, LocalCluster

    if scheduler:
        with Client(scheduler, timeout="30s") as client:
            yield client
        return
    with LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None,
                      scheduler_port=0, silence_logs=logging.CRITICAL) as cluster, Client(cluster) as client:
        yield client


class Running:
    """Experiments started on a worker and not finished yet, from the tasks' Dask events."""

    def __init__(self) -> None:
        self.names: set[str] = set()
        self.lock = threading.Lock()

    def __call__(self, event: tuple) -> None:
        _, message = event
        with self.lock:
            self.names.add(message["started"])

    def finish(self, name: str) -> None:
        with self.lock:
            self.names.discard(name)

    def count(self) -> int:
        with self.lock:
            return len(self.names)


def outcome(future, job: dict) -> dict:
    """The result of a completed future; a task that raised becomes ``status: error``."""
    if future.status == "finished":
        return future.result()
    try:
        error = future.exception()
        message = f"{type(error).__name__}: {error}"
    except Exception as exception:  # cancelled, or the scheduler lost it
        message = f"{type(exception).__name__}: {exception}"
    first, _, rest = message.partition("\n")
    return {"name": job["name"], "overrides": list(job["overrides"]), "status": "error", "error": first,
            "log": rest}


def prepare(client, job: dict, retries: int) -> dict:
    """Run the upstream stages once (one task) and wait for it; raises what the task raised."""
    key = f"prepare-{job['commit'][:8]}-{secrets.token_hex(3)}"
    return client.submit(by_value(task.prepare), job, key=key, retries=retries, pure=False).result()


def run_all(client, jobs: list[dict], retries: int, on_result: Callable[[dict], None],
            on_progress: Callable[[str], None], interval: float) -> list[dict]:
    """Submit one task per experiment and collect every result, reporting progress as they come."""
    from distributed import wait

    running = Running()
    client.subscribe_topic(task.TOPIC, running)
    token = secrets.token_hex(3)
    run_experiment = by_value(task.run_experiment)
    futures = {client.submit(run_experiment, job, key=f"{job['name']}-{job['commit'][:8]}-{token}",
                             retries=retries, pure=False): job for job in jobs}
    pending = set(futures)
    results: list[dict] = []
    last_line, last_time = "", 0.0
    try:
        while pending:
            try:
                done, pending = wait(pending, timeout=POLL_S, return_when="FIRST_COMPLETED")
            except TimeoutError:
                done = set()
            for future in done:
                result = outcome(future, futures[future])
                running.finish(result["name"])
                results.append(result)
                on_result(result)
            line = report.progress(report.counts(len(jobs), results, running.count()))
            if line != last_line or time.monotonic() - last_time >= interval:
                on_progress(line)
                last_line, last_time = line, time.monotonic()
    finally:
        client.unsubscribe_topic(task.TOPIC)
    return results


def ship_task_module() -> None:
    """Send ``sweep.task`` to the workers by value: they need DVC and the project, not this package."""
    import cloudpickle

    if task.__name__ not in cloudpickle.list_registry_pickle_by_value():
        cloudpickle.register_pickle_by_value(task)


def by_value(function: Callable) -> Callable:
    """``function`` wrapped so that plain pickle cannot serialise it: Dask then falls back to
    cloudpickle, which sends the registered ``sweep.task`` module's code along (the scheduler
    and the workers could not import it by name)."""
    ship_task_module()
    return lambda *arguments: function(*arguments)
