"""Benchmarks: each measures a subject against a baseline in the same run and
reports the ratio. `python -m bench --smoke` (CI) proves they run; `--full`
gives the figures recorded in the README."""
