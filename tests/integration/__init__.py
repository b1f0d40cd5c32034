# A package, so this folder's conftest.py is imported as integration.conftest and never replaces
# tests/conftest.py, which the unit tests import as `conftest`.
