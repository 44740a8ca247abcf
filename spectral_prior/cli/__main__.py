"""``python -m spectral_prior.cli`` (and ``torchrun -m spectral_prior.cli``): the ``spectral-prior`` command."""
import sys

from .main import main

if __name__ == "__main__":
    sys.exit(main())
