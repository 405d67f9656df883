"""physlearn test suite."""
