"""Speed and memory benchmarks (never part of pytest).

Each module is a script run from the repository root as
`python -m benchmarks.<name>` (e.g. `python -m benchmarks.step_time`); the
arguments, synthetic batch and interleaved timing they share are in
`benchmarks.timing`.
"""
