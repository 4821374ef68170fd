"""Exercise 2: how many times does a window fit?

Write ``out_size(size, kernel, stride=1, padding=0)``: the number of
positions a window of length ``kernel`` takes along an axis of length
``size`` padded with ``padding`` on each side, moving ``stride`` at a time.
It is the OH and OW of every conv and pooling layer.

Shapes: four ints in, one int out. For example out_size(28, 3) == 26 (the
first conv of the MNIST CNN), out_size(26, 2, 2) == 13 (its pooling),
out_size(5, 3, 1, 1) == 5 (padding 1 keeps a 3-wide window's size).

Hint: the first position is at 0 and the last must still fit inside
size + 2*padding; count the steps of `stride` between them, and round
down: a window that does not fit is not a position.

Grade it with:
    fastconv-check out_size.py:out_size --op out_size
"""


def out_size(size, kernel, stride=1, padding=0):
    """Window positions along one axis (an int)."""
    raise NotImplementedError("exercise 2: write out_size (see the instructions at the top of this file)")
