"""The top floor: the `onair` command (`onair/cli.py`), its sub-command modules and the
all-in-one supervisor of `onair up`. It imports every role; nothing below imports it."""
