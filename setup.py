"""Package discovery for the one distribution, ``physlearn``.

The design card keeps ``drivers/`` and ``simulators/`` at the top of the repository, but they
install as ``physlearn.drivers`` and ``physlearn.simulators`` (never as generic top-level
packages). pyproject.toml cannot say "every package below this folder, under that prefix", so
this file finds them: any subpackage added later ships without editing a list. Everything else
about the distribution is declared in pyproject.toml.
"""

from setuptools import find_packages, setup

ROOTS = {
    "physlearn": "physlearn",
    "physlearn.drivers": "drivers",
    "physlearn.simulators": "simulators",
}


def _packages() -> list[str]:
    found = []
    for name, folder in ROOTS.items():
        found.append(name)
        found += [f"{name}.{sub}" for sub in find_packages(folder) if f"{name}.{sub}" not in ROOTS]
    return found


setup(package_dir=ROOTS, packages=_packages())
