"""convdiff: find, explain and repair what deep-learning model converters break.

The orchestrating process never imports TensorFlow or torch; every framework call runs in a
worker process (see :mod:`convdiff.runtime.pool`).
"""

__version__ = "0.1.0"
