"""A run's life: checks, start-up, the phased and streaming modes, retries and clean-up.

``run.execute`` is the entry point; the command line calls it and nothing below it calls
back up.
"""
