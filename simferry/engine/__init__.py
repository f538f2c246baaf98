"""Running work: a run's lifecycle and the grids of runs a sweep is made of."""
