"""jmedseg: 2D medical image segmentation on Jittor."""
__version__ = "0.1.0"
