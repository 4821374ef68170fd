"""Exercise 2, solved."""


def out_size(size, kernel, stride=1, padding=0):
    return (size + 2 * padding - kernel) // stride + 1
