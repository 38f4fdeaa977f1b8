"""Segmentation head of the released segmentors, its model and test-time inference, class names and drawing."""
