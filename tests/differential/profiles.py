"""Hypothesis profiles for the differential suites.

HYPOTHESIS_PROFILE=ci (the default) runs a few examples per test, so that the whole directory
takes well under a minute on a loaded 2-core machine; HYPOTHESIS_PROFILE=fuzz (`make fuzz`)
runs thousands (FUZZ_EXAMPLES per test) and keeps the failures it finds in a database outside
the repository (HYPOTHESIS_DB, by default in the temporary directory).
"""

import os
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, settings
from hypothesis.database import DirectoryBasedExampleDatabase

_SLOW_IS_FINE = [HealthCheck.too_slow, HealthCheck.data_too_large,
                 HealthCheck.function_scoped_fixture]
settings.register_profile(
    "differential-ci", max_examples=50, deadline=None, database=None,
    suppress_health_check=_SLOW_IS_FINE,
    print_blob=True)
settings.register_profile(
    "differential-fuzz", max_examples=int(os.environ.get("FUZZ_EXAMPLES", "5000")), deadline=None,
    database=DirectoryBasedExampleDatabase(
        os.environ.get("HYPOTHESIS_DB",
                       str(Path(tempfile.gettempdir()) / "echonext-balancer-hypothesis"))),
    suppress_health_check=_SLOW_IS_FINE, print_blob=True)


def profile(scale: float = 1.0) -> settings:
    """The selected profile (env HYPOTHESIS_PROFILE), `scale` times its example count."""
    name = os.environ.get("HYPOTHESIS_PROFILE", "ci")
    # own names: the suite's settings never replace tests/conftest.py's `ci` and `fuzz`
    base = settings.get_profile("differential-fuzz" if name == "fuzz" else "differential-ci")
    return settings(base, max_examples=max(1, int(base.max_examples * scale)))

