"""synthweb: web pages in, pretraining data for small language models out."""

__version__ = "0.1.0"
