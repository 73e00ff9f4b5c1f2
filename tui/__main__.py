import sys

from lamina.tui.cli import main

sys.exit(main())
