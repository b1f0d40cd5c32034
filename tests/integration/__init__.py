# A package, so this folder's modules are imported as integration.conftest, integration.test_*:
# none can clash with a top-level module of tests/ (on sys.path through pyproject's pythonpath).
