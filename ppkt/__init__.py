"""ppkt: contrastive pixel-to-point knowledge transfer (PPKT) for 3D pretraining."""
__version__ = "0.1.0"
