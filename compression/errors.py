"""The one exception type for bad user input (configs, data files, artifacts).

Entry points catch `InputError` and print its message as a single line, so every
message must name the offending field and the valid range or choices.
"""


class InputError(ValueError):
  """Bad user input: a config value, a data file, a checkpoint or an artifact."""
