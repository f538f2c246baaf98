"""A run's life: checks, start-up, the phased and streaming modes, retries and clean-up.

``run.execute`` is the entry point and ``sweep`` runs grids of runs through it; the
command line calls these and nothing below them calls back up.
"""
