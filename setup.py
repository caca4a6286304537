"""NIPGBoard: a TensorBoard plugin for labelling large image sets with pretrained networks."""
from setuptools import find_packages, setup

setup(
    name="nipgboard-plugin",
    version="0.1.0",
    description="Label tens of thousands of images with pretrained-network features, UMAP and graph clustering, inside TensorBoard.",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.10",
    packages=find_packages(include=["nipgboard_plugin", "nipgboard_plugin.*"]),
    package_data={"nipgboard_plugin": ["static/*", "static/**/*"]},
    install_requires=[
        "numpy>=1.24",
        "scipy>=1.10",
        "scikit-learn>=1.3",
        "threadpoolctl>=3.1",  # also scikit-learn's; used directly to pin BLAS threads
        "Pillow>=10.0",
        "onnx>=1.15",
        "onnxruntime>=1.17",
        "tensorboard>=2.16",
        "tqdm>=4.60",
        "umap-learn>=0.5.5",
        "python-louvain>=0.16",
        "networkx>=3.0",
    ],
    extras_require={
        # torch is pinned: an unpinned torch pulls gigabytes of CUDA packages.
        "torch": ["torch==2.13.0"],
        # The source paper's Keras applications on TensorFlow (exported to ONNX by tf2onnx).
        "keras": ["keras>=3.0", "tensorflow-cpu>=2.16", "tf2onnx>=1.16"],
        # Extraction over a Ray cluster (Ray Data + actors holding ONNX Runtime sessions).
        "ray": ["ray[data]>=2.40"],
        # Foundation models (DINOv2, CLIP, SigLIP image towers) through their own loaders.
        "transformers": ["transformers>=4.45", "torch==2.13.0"],
        "test": ["pytest>=7", "scikit-image>=0.22"],
    },
    entry_points={
        "tensorboard_plugins": ["nipgboard = nipgboard_plugin.plugin:NipgboardLoader"],
        "console_scripts": ["nipgboard = nipgboard_plugin.cli:main"],
    },
    classifiers=[
        "Programming Language :: Python :: 3",
        "Topic :: Scientific/Engineering :: Image Recognition",
    ],
)
