"""``python -m generator.cli``: the ``sgl-gen`` command."""

from generator.cli import main

main()
