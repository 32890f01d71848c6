"""`python -m triton_operator.repository serve|sync ...` (the same as `triton-operator repository ...`)."""

import sys

from triton_operator.repository.cli import main

sys.exit(main())
