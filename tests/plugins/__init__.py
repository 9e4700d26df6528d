"""A selection method defined outside the package: one module and one YAML (tests/test_methods.py)."""
