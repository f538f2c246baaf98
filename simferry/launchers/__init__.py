"""Launchers: who starts the simulation and trainer processes (one module each)."""
