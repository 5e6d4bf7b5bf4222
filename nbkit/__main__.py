import sys

from nbkit.cli import main

sys.exit(main())
