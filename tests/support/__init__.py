"""Helpers the test files share, importable as ``support.<module>`` (tests/conftest.py puts
tests/ on sys.path): ``aggregation`` (backends, tolerances, seeded clouds, input forms, one call
of every rule), ``experiments`` (tiny configs, rounds, matrices), ``readme`` (README blocks)."""
