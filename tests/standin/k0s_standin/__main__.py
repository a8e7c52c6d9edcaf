"""`python -m k0s_standin` runs the stand-in from its source tree."""
from .cli import run

run()
