"""What the numbers say, in NumPy alone: accuracy, CAM scores, exemplars, selectivity."""
