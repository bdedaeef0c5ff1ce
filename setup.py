"""Which packages the wheel holds: dim's modules, and the Hydra config tree (``configs/``), which
ships as the package ``dim.configs`` so an installed ``dim`` finds its configs from any working
directory.  Derived from the folders, so a new module or config group needs no edit here; the
rest of the metadata is in pyproject.toml."""

from pathlib import Path

from setuptools import find_packages, setup

root = Path(__file__).parent
config_groups = sorted(
    "dim.configs." + ".".join(p.relative_to(root / "configs").parts)
    for p in (root / "configs").rglob("*")
    if p.is_dir() and p.name != "__pycache__"
)
setup(packages=[*find_packages(include=["dim", "dim.*"]), "dim.configs", *config_groups])
