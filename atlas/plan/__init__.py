"""Pure planning: config + model facts + dataset -> jobs with cache keys, estimates, checks."""
