"""Rendering of the pictures atlas shows: filter visualizations, activations, Grad-CAM."""
