"""fastconv: convolutional networks from first principles on the CPU."""
from fastconv import threads as _threads

__version__ = "0.1.0"

# Before NumPy and Numba start their thread pools (see fastconv.threads).
_threads.wait_quietly()
