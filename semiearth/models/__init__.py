"""Segmentation models and frozen encoders."""
