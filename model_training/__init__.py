"""Synthetic data, datasets, the ConvNeXt model, training, evaluation and the model bundle."""
