"""Copies between a batch of images and its padded copy, in Numba; line for
line the twin of ``layout_cython.pyx``.

x (N, C, H, W) and xp (N, C, H + 2*ph, W + 2*pw), both C-contiguous and of
one float dtype; the N*C planes are shared out between n_chunks threads.
NumPy made xp as a fill and a strided copy, paying its per-row overhead on
rows of 7 to 28 values: 1.7 ms of a cnn-deep training step at batch 64
(Intel Xeon, 2 threads), when ``fastconv.ops`` pads each conv's input
forward and backward. Here a plane is filled whole (one vector loop) and
x's rows copied over it: 0.18 -> 0.04 ms for cnn-deep conv3's input
(Cython).
"""
from numba import njit, prange


@njit(parallel=True, cache=True)
def pad(x, value, xp, n_chunks):
    """xp = x inside a border of value: ph = (Hp - H) // 2 rows above and
    below, pw = (Wp - W) // 2 columns left and right."""
    n_chan, h, w, hp, wp = x.shape[1], x.shape[2], x.shape[3], xp.shape[2], xp.shape[3]
    ph, pw, n_planes = (hp - h) // 2, (wp - w) // 2, x.shape[0] * n_chan
    for t in prange(n_chunks):
        for p in range(t * n_planes // n_chunks, (t + 1) * n_planes // n_chunks):
            plane = xp[p // n_chan, p % n_chan]
            plane[:] = value
            for y in range(h):
                plane[ph + y, pw:pw + w] = x[p // n_chan, p % n_chan, y]


@njit(parallel=True, cache=True)
def crop(xp, x, n_chunks):
    """x = the interior of xp: its rows ph = (Hp - H) // 2 to ph + H, its
    columns pw = (Wp - W) // 2 to pw + W."""
    n_chan, h, w = x.shape[1], x.shape[2], x.shape[3]
    ph, pw, n_planes = (xp.shape[2] - h) // 2, (xp.shape[3] - w) // 2, x.shape[0] * n_chan
    for t in prange(n_chunks):
        for p in range(t * n_planes // n_chunks, (t + 1) * n_planes // n_chunks):
            for y in range(h):
                x[p // n_chan, p % n_chan, y] = xp[p // n_chan, p % n_chan, ph + y, pw:pw + w]
