"""One distribution: the gateway, the runtime, the SPANK glue and the shared site layer."""
from setuptools import setup

setup(
    name="shifter-hpc",
    version="0.1.0",
    description="Containers for HPC batch jobs: image gateway, runtime and Slurm integration",
    python_requires=">=3.11",
    packages=["shifter_site", "imagegw", "runtime", "spank", "shifter_wlm"],
    package_data={"spank": ["*.c"]},
    install_requires=[
        "PyYAML>=6",
        "msgspec>=0.18",
        "structlog>=23",
        "cffi>=1.15",
        "httpx>=0.24",
        "isal>=1.0",
        "zstandard>=0.21",
        "fastapi>=0.100",
        "uvicorn>=0.23",
        "SQLAlchemy>=2.0",
        "psycopg>=3.1",
        "prometheus_client>=0.17",
    ],
    # runtime/_syscalls: compiled cffi module (API mode: no cdef parsing at launch)
    setup_requires=["cffi>=1.15"],
    cffi_modules=["runtime/syscalls_build.py:ffi"],
    # matplotlib in test too: tests/unit/test_bench_report.py renders the report's plots
    extras_require={"test": ["pytest>=7", "pytest-mock>=3", "hypothesis>=6", "matplotlib>=3.6"],
                    # make bench: the simulated shared filesystem (bench/slowfs.py) and the report's plots
                    "bench": ["mfusepy>=3", "matplotlib>=3.6"]},
    entry_points={
        "console_scripts": [
            "shifter=shifter_wlm.batch:main",
            "shifterimg=imagegw.cli:main",
            "shifter-gateway=imagegw.service:main",
            "shifter-config=shifter_site.cli:main",
        ]
    },
)
