"""Settings for every test under ``tests/``.

Hypothesis: no per-example deadline. CI and development machines are small and shared
(two cores, servers and benchmarks beside the tests); a property must fail on a wrong
answer, never on a slow example. Each test keeps its own ``max_examples``.
"""

from hypothesis import HealthCheck, settings

settings.register_profile("nbdb", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("nbdb")
