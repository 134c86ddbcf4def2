import sys

from telegram_bridge.cli import main

sys.exit(main())
