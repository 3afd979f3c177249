"""The clinic's diabetes model: synthetic patients, a logistic-regression recipe, evaluation."""

__version__ = "1.0.0"
