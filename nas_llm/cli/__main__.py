"""``python -m nas_llm.cli ...`` (how ``--workers`` starts its worker processes)."""
import sys

from nas_llm.cli import main

sys.exit(main())
