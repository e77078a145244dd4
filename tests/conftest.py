"""Shared pytest setup: import paths and a freshly seeded, reported ``rng`` fixture."""

from __future__ import annotations

import importlib.util
import os
import secrets
import sys
from collections.abc import Generator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

_ROOT = Path(__file__).resolve().parent.parent
SEED_ENV = "QUANTDEBUG_TEST_SEED"  # set to replay a failure's seed

if importlib.util.find_spec("quantdebug") is None:
    sys.path.insert(0, str(_ROOT / "src"))
_tests_spec = importlib.util.find_spec("tests")
if _tests_spec is None or str(_ROOT / "tests") not in list(_tests_spec.submodule_search_locations or []):
    sys.path.insert(0, str(_ROOT))  # so ``from tests.models import ...`` works without PYTHONPATH


@pytest.fixture
def rng(request: pytest.FixtureRequest) -> np.random.Generator:
    """A ``np.random.Generator`` from a fresh 32-bit seed (or ``$QUANTDEBUG_TEST_SEED``), shown on failure."""
    env = os.environ.get(SEED_ENV)
    seed = int(env) if env else secrets.randbits(32)
    request.node.user_properties.append(("rng_seed", seed))
    return np.random.default_rng(seed)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[None, Any, None]:
    """Append the rng seed to the report of a failed test."""
    outcome = yield
    report: pytest.TestReport = outcome.get_result()
    if report.failed:
        for name, value in item.user_properties:
            if name == "rng_seed":
                report.sections.append(("rng seed", f"rng seed {value} (replay with {SEED_ENV}={value})"))
