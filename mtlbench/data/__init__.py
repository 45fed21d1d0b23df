"""Datasets: cards and loaders, resized-array cache, splits and batch augmentation."""
