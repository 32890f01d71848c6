import sys

from triton_operator.cli import main

sys.exit(main())
