"""Offline lm-eval tasks: YAMLs in this folder over the files in $LADDER_DATA/eval (see loaders.py)."""
