"""Spark jobs: pure DataFrame transforms (``transforms``) plus thin Delta I/O (``io``)."""
