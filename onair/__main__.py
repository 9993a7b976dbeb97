"""`python -m onair …` is the `onair` command."""

from __future__ import annotations

import sys

from onair.cli import main

sys.exit(main())
