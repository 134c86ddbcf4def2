"""python -m paper_venue serve [options] | python -m paper_venue drill [options]"""

from __future__ import annotations

import sys

from paper_venue.cli import main

if __name__ == "__main__":
    if sys.argv[1:2] not in (["serve"], ["drill"]):
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    sys.exit(main(sys.argv[1:]))
