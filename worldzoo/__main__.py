import sys

from worldzoo.cli import main

sys.exit(main())
