"""``ComplexTensor``: a complex tensor stored as two real planes in ONE tensor.

The backing tensor ``planes`` has shape ``(2, *shape)``: plane 0 holds every real
part, plane 1 every imaginary part (``[RRR...III...]``).  With float16 planes this
is "planar complex32": half the bytes of complex64.  Shape ops return views of the
planes.  Arithmetic lives in :mod:`muse.complex.ops` and :mod:`muse.complex.linalg`
(precision policy: :mod:`muse.complex._policy`); ``muse/complex/__init__.py`` attaches
them once as the operators (+ - * / @, unary -) and methods (``conj``, ``abs``, ``sum``, ...),
so this module imports no op module.  Autograd flows through ``planes`` with
PyTorch's convention: ``z.grad`` = dL/dRe z + i dL/dIm z.
"""

from __future__ import annotations

import torch

from muse._checks import FLOAT_DTYPES, check_float_tensor
from muse.complex._shape import logical_dim, plane_dim, shape_args

_COMPLEX_OF = {torch.float16: torch.complex32, torch.float32: torch.complex64, torch.float64: torch.complex128}
_PLANE_OF = {v: k for k, v in _COMPLEX_OF.items()}


def plane_dtype(dtype: torch.dtype) -> torch.dtype:
    """Map a complex dtype (or a plane dtype) to the plane dtype; TypeError otherwise."""
    if dtype in FLOAT_DTYPES:
        return dtype
    if dtype in _PLANE_OF:
        return _PLANE_OF[dtype]
    raise TypeError(
        f"dtype must be float16/float32/float64 or complex32/complex64/complex128, got {dtype}"
    )


class ComplexTensor:
    """Planar complex tensor backed by ``planes`` of shape ``(2, *shape)``."""

    __slots__ = ("_planes",)

    def __init__(self, planes: torch.Tensor):
        check_float_tensor("planes", planes)
        if planes.dim() < 1 or planes.shape[0] != 2:
            raise ValueError(
                f"planes must have shape (2, *shape) (plane 0 real, plane 1 imaginary), "
                f"got {tuple(planes.shape)}"
            )
        self._planes = planes

    @classmethod
    def from_planes(cls, real: torch.Tensor, imag: torch.Tensor) -> ComplexTensor:
        """Stack separate real and imaginary tensors (same shape, dtype, device) into planes."""
        check_float_tensor("real", real)
        check_float_tensor("imag", imag)
        if real.shape != imag.shape:
            raise ValueError(
                f"real and imag must have the same shape, got {tuple(real.shape)} and {tuple(imag.shape)}"
            )
        if real.dtype != imag.dtype:
            raise TypeError(f"real and imag must have the same dtype, got {real.dtype} and {imag.dtype}")
        if real.device != imag.device:
            raise ValueError(f"real is on {real.device} but imag is on {imag.device}")
        return cls(torch.stack((real, imag)))

    # ------------------------------------------------------------------ storage
    @property
    def planes(self) -> torch.Tensor:
        return self._planes

    @property
    def real(self) -> torch.Tensor:
        return self._planes[0]

    @property
    def imag(self) -> torch.Tensor:
        return self._planes[1]

    @property
    def shape(self) -> torch.Size:
        return self._planes.shape[1:]

    def size(self, dim: int | None = None):
        return self.shape if dim is None else self.shape[logical_dim(self.ndim, dim)]

    @property
    def ndim(self) -> int:
        return self._planes.dim() - 1

    def dim(self) -> int:
        return self.ndim

    def numel(self) -> int:
        return self.shape.numel()

    def __len__(self) -> int:
        if self.ndim == 0:
            raise TypeError("len() of a 0-d ComplexTensor")
        return self.shape[0]

    @property
    def dtype(self) -> torch.dtype:
        """The plane dtype (float16 for planar complex32)."""
        return self._planes.dtype

    @property
    def complex_dtype(self) -> torch.dtype:
        """The native complex dtype with the same precision (complex32/64/128)."""
        return _COMPLEX_OF[self._planes.dtype]

    @property
    def device(self) -> torch.device:
        return self._planes.device

    @property
    def is_cuda(self) -> bool:
        return self._planes.is_cuda

    def is_planar(self) -> bool:
        """True iff every real part precedes every imaginary part in memory.

        Holds for any view that keeps the plane axis outermost (slicing and
        transposing inside a plane keep it; interleaved layouts break it).
        """
        p = self._planes
        if p.dim() < 1 or p.shape[0] != 2 or p.dtype not in FLOAT_DTYPES:
            return False
        if p.numel() == 0:
            return True
        plane_span = 1 + sum((s - 1) * abs(st) for s, st in zip(p.shape[1:], p.stride()[1:], strict=True))
        return p.stride(0) >= plane_span

    # ----------------------------------------------------------------- autograd
    @property
    def requires_grad(self) -> bool:
        return self._planes.requires_grad

    def requires_grad_(self, requires_grad: bool = True) -> ComplexTensor:
        self._planes.requires_grad_(requires_grad)
        return self

    @property
    def grad(self) -> ComplexTensor | None:
        g = self._planes.grad
        return None if g is None else ComplexTensor(g)

    @property
    def is_leaf(self) -> bool:
        return self._planes.is_leaf

    def retain_grad(self) -> ComplexTensor:
        self._planes.retain_grad()
        return self

    def detach(self) -> ComplexTensor:
        return ComplexTensor(self._planes.detach())

    def clone(self) -> ComplexTensor:
        return ComplexTensor(self._planes.clone())

    def contiguous(self) -> ComplexTensor:
        return ComplexTensor(self._planes.contiguous())

    # ------------------------------------------------------------ device/dtype
    def to(self, *args, **kwargs) -> ComplexTensor:
        """Like ``Tensor.to``; a complex dtype is mapped to its plane dtype (complex32 -> float16)."""
        args = tuple(plane_dtype(a) if isinstance(a, torch.dtype) else a for a in args)
        if "dtype" in kwargs and kwargs["dtype"] is not None:
            kwargs["dtype"] = plane_dtype(kwargs["dtype"])
        return ComplexTensor(self._planes.to(*args, **kwargs))

    def cpu(self) -> ComplexTensor:
        return ComplexTensor(self._planes.cpu())

    def cuda(self, device=None) -> ComplexTensor:
        return ComplexTensor(self._planes.cuda(device))

    def half(self) -> ComplexTensor:
        return self.to(torch.float16)

    def float(self) -> ComplexTensor:
        return self.to(torch.float32)

    def double(self) -> ComplexTensor:
        return self.to(torch.float64)

    # ---------------------------------------------------------------- shape ops
    def view(self, *shape) -> ComplexTensor:
        return ComplexTensor(self._planes.view(2, *shape_args(shape)))

    def reshape(self, *shape) -> ComplexTensor:
        return ComplexTensor(self._planes.reshape(2, *shape_args(shape)))

    def flatten(self, start_dim: int = 0, end_dim: int = -1) -> ComplexTensor:
        if self.ndim == 0:
            return self.reshape(1)
        return ComplexTensor(self._planes.flatten(plane_dim(self.ndim, start_dim), plane_dim(self.ndim, end_dim)))

    def permute(self, *dims) -> ComplexTensor:
        dims = shape_args(dims)
        if len(dims) != self.ndim:
            raise ValueError(f"permute needs {self.ndim} dims, got {len(dims)}")
        return ComplexTensor(self._planes.permute(0, *(plane_dim(self.ndim, d) for d in dims)))

    def transpose(self, dim0: int, dim1: int) -> ComplexTensor:
        return ComplexTensor(self._planes.transpose(plane_dim(self.ndim, dim0), plane_dim(self.ndim, dim1)))

    @property
    def T(self) -> ComplexTensor:  # noqa: N802 - mirrors torch.Tensor.T
        return self.permute(*reversed(range(self.ndim)))

    def unsqueeze(self, dim: int) -> ComplexTensor:
        return ComplexTensor(self._planes.unsqueeze(plane_dim(self.ndim, dim, extra=1)))

    def squeeze(self, dim: int | None = None) -> ComplexTensor:
        if dim is None:
            keep = [s for s in self.shape if s != 1]
            return ComplexTensor(self._planes.reshape(2, *keep))
        return ComplexTensor(self._planes.squeeze(plane_dim(self.ndim, dim)))

    def expand(self, *sizes) -> ComplexTensor:
        sizes = shape_args(sizes)
        p = self._planes
        if len(sizes) > self.ndim:  # new leading dims go after the plane axis, not before it
            p = p[(slice(None),) + (None,) * (len(sizes) - self.ndim)]
        return ComplexTensor(p.expand(2, *sizes))

    def __getitem__(self, index) -> ComplexTensor:
        if not isinstance(index, tuple):
            index = (index,)
        return ComplexTensor(self._planes[(slice(None), *index)])

    def __pos__(self) -> ComplexTensor:
        return self

    def isfinite(self) -> torch.Tensor:
        """Elementwise: both parts finite."""
        return torch.isfinite(self._planes).all(dim=0)

    # ------------------------------------------------------------- comparison
    __array_ufunc__ = None  # numpy defers: np.float64(2) * z calls z.__rmul__, never an object array
    # ==/!= are muse.complex.eq/ne, attached in muse/complex/__init__.py

    def __bool__(self) -> bool:
        """True iff the one element is nonzero; more than one element is ambiguous (ValueError)."""
        if self.numel() != 1:
            raise ValueError(
                f"the truth value of a ComplexTensor with {self.numel()} elements is ambiguous; "
                "use (z == w).all() or .any()"
            )
        return bool((self._planes != 0).any())

    def __repr__(self) -> str:
        grad = ", requires_grad=True" if self.requires_grad else ""
        return (
            f"ComplexTensor(shape={tuple(self.shape)}, dtype={self.complex_dtype}, "
            f"device={self.device}{grad},\n  real={self.real},\n  imag={self.imag})"
        )

    __hash__ = object.__hash__
