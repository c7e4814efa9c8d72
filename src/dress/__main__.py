import sys

from dress.cli import main

sys.exit(main())
