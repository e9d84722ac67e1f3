"""Shared, framework-free building blocks used by every stage.

Nothing in this package imports TensorFlow or PyTorch: each stage process imports at most one
framework (importing TensorFlow and then torchvision in one process segfaults).
"""
