"""fastconv: convolutional networks from first principles on the CPU."""
__version__ = "0.1.0"
