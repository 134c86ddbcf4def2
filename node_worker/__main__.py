import sys

from node_worker.worker import main

sys.exit(main())
