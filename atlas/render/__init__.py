"""Rendering of the pictures atlas shows: filter visualizations, activations, Grad-CAM.

Importing this package is the first step towards TensorFlow in a build, so TensorFlow's
C++ start-up chatter is quietened here, before it loads.
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
