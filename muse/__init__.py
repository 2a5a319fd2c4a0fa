"""MUSE: planar complex32 language models with verified numerics."""

from muse.complex import ComplexTensor

__version__ = "0.1.0"
__all__ = ["ComplexTensor", "__version__"]
