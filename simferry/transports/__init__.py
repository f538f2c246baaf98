"""Transports: how the arrays travel from simulations to trainers (one module each)."""
