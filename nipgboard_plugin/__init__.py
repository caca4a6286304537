"""NIPGBoard: label large image sets with pretrained networks, UMAP and graph clustering."""

__version__ = "0.1.0"
