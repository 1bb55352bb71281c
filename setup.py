"""Builds the one compiled part, the fused scan kernel (everything else is in pyproject.toml)."""
from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "shards._scan",
            sources=["shards/_scan.c"],
            # -ffp-contract=off: scores must equal the numpy oracle's bit for bit (no FMA).
            extra_compile_args=["-O3", "-ffp-contract=off", "-std=c11"],
        )
    ]
)
