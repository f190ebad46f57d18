"""``python -m tdml_node`` is the same as the ``tdml-node`` command."""

from tdml_node.cli import main

main()
