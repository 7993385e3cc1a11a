"""SemiEarth: semi-supervised segmentation of remote-sensing images with VLM pseudo-label purification."""

__version__ = "0.1.0"
