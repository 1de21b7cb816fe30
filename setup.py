"""tf1prune: channel pruning for TensorFlow-1-style graphs."""
from setuptools import find_packages, setup

setup(
    name="tf1prune",
    version="0.1.0",
    description="Channel pruner for TF1 graphs, sessions, checkpoints and frozen .pb files",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    packages=find_packages(include=["tf1prune", "tf1prune.*"]),
    python_requires=">=3.7",
    install_requires=["numpy", "protobuf", "absl-py"],
    extras_require={
        "cpu": ["tensorflow-cpu"],
        "tf": ["tensorflow"],
        "keras": ["tf_keras", "tf-slim"],
        "dask": ["distributed"],
        "report": ["matplotlib"],
        "test": ["pytest", "hypothesis", "tf_keras", "tf-slim", "distributed", "matplotlib"],
    },
    entry_points={
        "console_scripts": [
            "tf1prune-analyze=tf1prune.cli.analyze:run",
            "tf1prune-convert=tf1prune.cli.convert:run",
            "tf1prune-benchmark=tf1prune.cli.benchmark:run",
            "tf1prune-strip-checkpoint=tf1prune.cli.strip_checkpoint:run",
        ],
    },
)
