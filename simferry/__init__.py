"""simferry: how should data travel from simulations to the models that train on them?"""

__version__ = "0.1.0"
