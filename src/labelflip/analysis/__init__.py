"""Analysis: pure functions over label arrays (numpy in, numbers and arrays out)."""

from labelflip.analysis.counts import confusion_matrix, per_class_accuracy

__all__ = ["confusion_matrix", "per_class_accuracy"]
