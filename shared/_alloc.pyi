"""Type stub for the compiled allocation kernels (``shared/_alloc.c``), as ``shared.allocation`` calls them.

Every array must be C-contiguous with exactly the stated length: ``n * n`` for a matrix, ``n`` for a
vector; float64 (buffer format ``'d'``) except ``state`` (int8, format ``'b'``). A wrong one raises
``TypeError``. The arrays the docs call "in place" must be writable.
"""

import numpy as np
from numpy.typing import NDArray

def check_cov(a: NDArray[np.float64], n: int, psd: bool, /) -> int:
    """Check an ``n × n`` covariance in one pass and symmetrise ``a`` in place when it is symmetric.

    Returns 0 ok, 1 NaN, 2 inf, 3 asymmetric, 4 the fast PSD test failed.
    """

def rp(
    sigma: NDArray[np.float64],
    b: NDArray[np.float64],
    y: NDArray[np.float64],
    n: int,
    tol: float,
    max_iter: int,
    mode: int,
    ccd_sweeps: int,
    /,
) -> tuple[int, int, float, int]:
    """Risk parity from ``y`` (updated in place); ``mode`` 0 Newton, 1 coordinate descent, 2 CCD then Newton.

    Returns ``(status, iterations, error, used)``: status 0 ok, non-zero when a Newton Hessian was not
    positive definite; ``used`` 0 Newton, 1 CCD, 2 CCD then Newton.
    """

def mv(
    q: NDArray[np.float64],
    c: NDArray[np.float64],
    a: NDArray[np.float64],
    lo: NDArray[np.float64],
    hi: NDArray[np.float64],
    x: NDArray[np.float64],
    state: NDArray[np.int8],
    n: int,
    max_iter: int,
    /,
) -> tuple[int, int, float]:
    """Primal active set for ``min ½x'Qx − c'x s.t. a'x = 1, lo ≤ x ≤ hi`` from a feasible ``x``.

    ``x`` and ``state`` (0 free, 1 at lo, 2 at hi) are updated in place. Returns
    ``(status, iterations, ν)``: status 0 converged, 1 out of iterations, 2 a singular or empty free
    block (the numpy solver goes on from ``x`` and ``state``).
    """
