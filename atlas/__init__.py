"""atlas: a static-site generator that shows what convolutional networks see."""

__version__ = "0.1.0"
