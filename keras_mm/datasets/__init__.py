"""Data sets: the embedded demo set and the AV-MNIST / BasicMotions builders."""
