# cython: boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""Copies between a batch of images and its padded copy, in Cython; line for
line the twin of ``layout_numba.py``.

x (N, C, H, W) and xp (N, C, H + 2*ph, W + 2*pw), both C-contiguous and of
one float dtype; the N*C planes are shared out between n_chunks threads.
NumPy made xp as a fill and a strided copy, paying its per-row overhead on
rows of 7 to 28 values: 1.7 ms of a cnn-deep training step at batch 64
(Intel Xeon, 2 threads), when ``fastconv.ops`` pads each conv's input
forward and backward. Here a plane is filled whole (one vector loop) and
x's rows copied over it: 0.18 -> 0.04 ms for cnn-deep conv3's input.
"""
from cython cimport floating
from cython.parallel cimport prange
from libc.string cimport memcpy


def pad(const floating[:, :, :, ::1] x, floating value, floating[:, :, :, ::1] xp, Py_ssize_t n_chunks):
    """xp = x inside a border of value: ph = (Hp - H) // 2 rows above and
    below, pw = (Wp - W) // 2 columns left and right."""
    cdef Py_ssize_t n_chan = x.shape[1], h = x.shape[2], w = x.shape[3], hp = xp.shape[2], wp = xp.shape[3]
    cdef Py_ssize_t ph = (hp - h) // 2, pw = (wp - w) // 2, n_planes = x.shape[0] * n_chan
    cdef Py_ssize_t t, p, y, j
    cdef floating *plane
    with nogil:
        for t in prange(n_chunks, schedule="static", num_threads=n_chunks):
            for p in range(t * n_planes // n_chunks, (t + 1) * n_planes // n_chunks):
                plane = &xp[p // n_chan, p % n_chan, 0, 0]
                for j in range(hp * wp):
                    plane[j] = value
                for y in range(h):
                    memcpy(&plane[(ph + y) * wp + pw], &x[p // n_chan, p % n_chan, y, 0], w * sizeof(floating))


def crop(const floating[:, :, :, ::1] xp, floating[:, :, :, ::1] x, Py_ssize_t n_chunks):
    """x = the interior of xp: its rows ph = (Hp - H) // 2 to ph + H, its
    columns pw = (Wp - W) // 2 to pw + W."""
    cdef Py_ssize_t n_chan = x.shape[1], h = x.shape[2], w = x.shape[3]
    cdef Py_ssize_t ph = (xp.shape[2] - h) // 2, pw = (xp.shape[3] - w) // 2, n_planes = x.shape[0] * n_chan
    cdef Py_ssize_t t, p, y
    with nogil:
        for t in prange(n_chunks, schedule="static", num_threads=n_chunks):
            for p in range(t * n_planes // n_chunks, (t + 1) * n_planes // n_chunks):
                for y in range(h):
                    memcpy(&x[p // n_chan, p % n_chan, y, 0], &xp[p // n_chan, p % n_chan, ph + y, pw],
                           w * sizeof(floating))
