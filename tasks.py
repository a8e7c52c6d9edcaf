"""k0slab's command line in a checkout: `invoke lab.up` serves the same tasks as the installed `k0slab` command.

    invoke --list            all tasks
    invoke --help lab.up     one task's options

The tasks live in k0slab/cli/, one module per namespace.
"""
from k0slab.cli import namespace

__all__ = ["namespace"]
