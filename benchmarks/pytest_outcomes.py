"""A pytest plugin for the GPU lease's tests section (`device_check.py`, loaded with
`-p pytest_outcomes`): every test's outcome is recorded by name the moment it is known, so
that a run killed at its deadline still says what passed, what failed and why, and what
was still running.

WWGAN_TEST_OUTCOMES=FILE: one JSON object per line, flushed at once, written by the
process that reports (the xdist controller, or pytest itself without xdist):
  {"event": "collected", "nodeids": [...]}
  {"event": "start", "nodeid": ...}
  {"event": "report", "nodeid", "when" (setup|call|teardown), "outcome", "seconds",
   "worker", "longrepr" (the failure's text, or a skip's reason)}
WWGAN_TEST_LIMIT=SECONDS: a test whose setup or call runs longer fails there with the
stacks of its threads (SIGALRM, main thread only; pytest-timeout may be absent). A call
stuck inside C code fails when it returns; faulthandler_timeout dumps the stacks anyway.
"""

from __future__ import annotations

import contextlib
import faulthandler
import json
import os
import signal
import sys
import threading

import pytest

LONGREPR_CHARS = 6000  # the end of a traceback: where it failed, and the assertion


def _is_worker(config) -> bool:
    return hasattr(config, "workerinput")


class _Recorder:
    def __init__(self, path: str):
        self.path = path
        self.lock = threading.Lock()

    def write(self, **entry) -> None:
        """Append one line and close the file: what a kill leaves is whole lines."""
        with self.lock, open(self.path, "a") as f:
            f.write(json.dumps(entry) + "\n")


_recorder: _Recorder | None = None


def pytest_configure(config):
    global _recorder
    path = os.environ.get("WWGAN_TEST_OUTCOMES")
    if path and not _is_worker(config):
        _recorder = _Recorder(path)


def pytest_unconfigure(config):
    global _recorder
    if not _is_worker(config):
        _recorder = None


def pytest_collection_finish(session):
    if _recorder is not None and session.items:
        _recorder.write(event="collected", nodeids=[item.nodeid for item in session.items])


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_node_collection_finished(node, ids):
    if _recorder is not None:
        _recorder.write(event="collected", nodeids=list(ids), worker=node.gateway.id)


def pytest_runtest_logstart(nodeid, location):
    if _recorder is not None:
        _recorder.write(event="start", nodeid=nodeid)


def _longrepr(report) -> str | None:
    if report.longrepr is None:
        return None
    if report.skipped and isinstance(report.longrepr, tuple):  # (path, line, reason)
        return str(report.longrepr[2])
    return str(report.longrepr)[-LONGREPR_CHARS:]


def pytest_runtest_logreport(report):
    if _recorder is None:
        return
    if report.when != "call" and report.passed:
        return  # a setup or teardown that passed says nothing
    _recorder.write(
        event="report",
        nodeid=report.nodeid,
        when=report.when,
        outcome=report.outcome,
        seconds=round(report.duration, 3),
        worker=getattr(report, "node", None) and report.node.gateway.id,
        longrepr=_longrepr(report),
    )


class TestTimeLimit(Exception):
    """The test ran past WWGAN_TEST_LIMIT seconds."""


@contextlib.contextmanager
def _time_limit(seconds: float, what: str):
    if seconds <= 0 or threading.current_thread() is not threading.main_thread():
        yield
        return

    def expire(signum, frame):
        faulthandler.dump_traceback(file=sys.__stderr__, all_threads=True)
        raise TestTimeLimit(f"{what} ran past the tests section's per-test limit of {seconds:g} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def _limit() -> float:
    try:
        return float(os.environ.get("WWGAN_TEST_LIMIT", "0"))
    except ValueError:
        return 0.0


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_setup(item):
    with _time_limit(_limit(), "setup"):
        yield


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_call(item):
    with _time_limit(_limit(), "the test"):
        yield
