"""Process-level settings of the test run."""
import os
import sys

import pytest


def pytest_sessionfinish(session, exitstatus):
    session.config._exit_status = int(exitstatus)


@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config):
    """End the process with pytest's own status once every result is reported.

    The suite starts and shuts down a Ray session per module, and Ray does not support
    that in one process (ray-project/ray#31145: state of an ended session can be touched
    after it is freed). One of three fresh-ci runs on 2026-11-30 passed every test and then
    died with SIGSEGV while the interpreter was exiting. Skipping the interpreter's
    finalisation keeps a test failure a failure and that crash out of the status; CI
    runs with -X faulthandler, so a crash while tests run still shows where it was.
    """
    status = getattr(config, "_exit_status", None)
    if status is not None:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(status)
