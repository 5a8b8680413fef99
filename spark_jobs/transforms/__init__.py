"""Pure transforms: DataFrame (or plain values) in, DataFrame out; no I/O, no wall clock."""
